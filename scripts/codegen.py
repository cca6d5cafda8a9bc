"""Generate the protobuf/gRPC stubs from `protos/` into `service/grpc/_generated`.

Build tooling, not part of the served package: run by `make install` (and the Docker build) as
`python scripts/codegen.py` from a checkout. The generated imports
are rewritten to absolute package imports so nothing needs to be added to `sys.path`, and the
messages are registered in a private descriptor pool (`_generated/_pool.py`) rather than protobuf's
global one: other libraries that ship the same `inference` package (tritonclient, KServe) can then
be imported in the same process without "duplicate symbol" errors.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTOS = ROOT / "protos"
OUT = ROOT / "service" / "grpc" / "_generated"
PACKAGE = "service.grpc._generated"


def generate(protos: Path = PROTOS, out: Path = OUT) -> list[Path]:
    from grpc_tools import protoc  # dev/build-time dependency only

    files = sorted(p.relative_to(protos).as_posix() for p in protos.rglob("*.proto"))
    if not files:
        raise SystemExit(f"no .proto files under {protos}")
    out.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{protos}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", *files]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    top = sorted({f.split("/")[0] for f in files})
    pattern = re.compile(rf"^(from|import) ({'|'.join(map(re.escape, top))})(\.|\s)", re.M)
    written = []
    for path in out.rglob("*.py*"):
        text = pattern.sub(lambda m: f"{m[1]} {PACKAGE}.{m[2]}{m[3]}", path.read_text())
        if path.suffix == ".py" and "_descriptor_pool.Default()" in text:
            text = text.replace("_descriptor_pool.Default()", "_private_pool.POOL")
            text = text.replace(
                "from google.protobuf import descriptor_pool as _descriptor_pool",
                f"from {PACKAGE} import _pool as _private_pool",
            )
        path.write_text(text)
        written.append(path)
    (out / "_pool.py").write_text(
        '"""Descriptor pool of the deepserve stubs, apart from protobuf\'s global one."""\n\n'
        "from google.protobuf import descriptor_pool\n\nPOOL = descriptor_pool.DescriptorPool()\n"
    )
    for folder in [out, *[p for p in out.rglob("*") if p.is_dir()]]:
        (folder / "__init__.py").touch()
    return written


if __name__ == "__main__":
    paths = generate()
    print(f"generated {len(paths)} files in {OUT}", file=sys.stderr)
