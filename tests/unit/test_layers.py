"""The import rules of docs/architecture.md, checked on the source: the edges (grpc/, http/, client/) sit on the
core and never the other way round, the core's three packages (batching/, tasks/, runtime/) don't import each
other, and only the gRPC side touches grpc or the generated stubs."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "service"
EDGES = {"grpc", "http", "client", "metrics_http"}
"""The protocol edges: the gRPC and HTTP ports, the metrics port and the client side."""
CORE_PACKAGES = {"batching", "tasks", "runtime"}
ROOTS = {"app", "cli", "__main__"}
"""The composition root and the command line: they may wire any layer."""


def modules() -> dict[str, set[str]]:
    """Each module of `service` (its name inside the package, e.g. `grpc.v2`) → the modules it imports."""
    found = {}
    for path in SERVICE.rglob("*.py"):
        if "_generated" in path.parts:
            continue
        name = ".".join(path.relative_to(SERVICE).with_suffix("").parts)
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
        found[name] = imported
    return found


MODULES = modules()


def part(module: str) -> str:
    """The first component of a module inside `service` (`grpc` for `grpc.v2`, `pipeline` for `pipeline`)."""
    return module.split(".")[0]


def inside(imported: str) -> str | None:
    """The module inside `service` that an import names, or None for one outside."""
    return imported.removeprefix("service.") if imported.startswith("service.") else None


def violations(allowed: Callable[[str, str], bool]) -> list[str]:
    return [
        f"{module} imports {imported}"
        for module, imports in sorted(MODULES.items())
        for imported in sorted(imports)
        if not allowed(module, imported)
    ]


def test_the_walk_finds_the_packages() -> None:
    assert {"grpc.v2", "http.server", "client.tasks", "batching.batcher", "tasks.sentiment", "runtime.session"} <= set(
        MODULES
    )


def test_nothing_below_the_edges_imports_them() -> None:
    def allowed(module: str, imported: str) -> bool:
        target = inside(imported)
        return target is None or part(target) not in EDGES or part(module) in EDGES | ROOTS

    assert violations(allowed) == []


def test_the_core_packages_do_not_import_each_other() -> None:
    def allowed(module: str, imported: str) -> bool:
        target = inside(imported)
        if target is None or part(module) not in CORE_PACKAGES:
            return True
        return part(target) == part(module) or part(target) not in CORE_PACKAGES | EDGES

    assert violations(allowed) == []


def test_the_edges_reach_the_core_through_its_facades() -> None:
    """grpc/ and http/ call task_apis, the registry and the pipeline; batching, tasks and runtime are theirs."""

    def allowed(module: str, imported: str) -> bool:
        target = inside(imported)
        return target is None or part(module) not in {"grpc", "http"} or part(target) not in CORE_PACKAGES

    assert violations(allowed) == []


@pytest.mark.parametrize("library", ["grpc", "grpc_health", "grpc_reflection"])
def test_only_the_grpc_side_imports_grpc(library: str) -> None:
    def allowed(module: str, imported: str) -> bool:
        named = imported == library or imported.startswith(f"{library}.")
        return not named or part(module) in {"grpc", "client", "app"}

    assert violations(allowed) == []


def test_only_the_grpc_side_imports_the_generated_stubs() -> None:
    def allowed(module: str, imported: str) -> bool:
        return "_generated" not in imported or part(module) in {"grpc", "client"}

    assert violations(allowed) == []


def test_the_server_never_imports_training_or_tensorflow() -> None:
    def allowed(module: str, imported: str) -> bool:
        return part(imported) not in {"training", "tensorflow", "tf2onnx", "keras"}

    assert violations(allowed) == []
