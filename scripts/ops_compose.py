"""Checks of scripts/ops_consistency.py on the docker compose deployment: the scrape config, Grafana
provisioning, and the Docker build context."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from scripts.ops_files import (
    DASHBOARD,
    METRICS_PATH,
    Problems,
    load_yaml,
)


# ------------------------------------------------------------------------------------------ compose
def dockerfile_env(root: Path) -> dict[str, str]:
    """ENV values of the Dockerfile (the runtime stage's win: later lines override earlier ones)."""
    text = (root / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if re.match(r"\s*ENV\s", line, re.IGNORECASE):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def server_setting(root: Path, service: dict[str, Any], name: str) -> str | None:
    """A DEEPSERVE_* setting as the compose service's container sees it: its environment, else the image's."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment if "=" in item)
    if name in environment:
        return str(environment[name])
    return dockerfile_env(root).get(name)


def container_ports(service: dict[str, Any]) -> set[int]:
    ports = set()
    for spec in service.get("ports", []):
        if isinstance(spec, dict):
            ports.add(int(spec["target"]))
        else:
            ports.add(int(str(spec).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def check_compose_scrape(root: Path) -> Problems:
    problems = []
    compose = load_yaml(root / "docker-compose.yml")["services"]
    config = load_yaml(root / "deploy/prometheus/prometheus.yml")
    jobs = {job["job_name"]: job for job in config.get("scrape_configs", [])}
    job = jobs.get("deepserve")
    if job is None:
        return ["deploy/prometheus/prometheus.yml has no scrape job deepserve (the rules' job label)"]
    if job.get("metrics_path", "/metrics") != METRICS_PATH:
        problems.append(f"the deepserve job scrapes {job.get('metrics_path')}; the server answers only {METRICS_PATH}")
    targets: list[tuple[str, int]] = []
    for sd in job.get("dns_sd_configs", []):
        targets += [(name, int(sd["port"])) for name in sd["names"]]
    for static in job.get("static_configs", []):
        for target in static["targets"]:
            host, _, port = target.rpartition(":")
            targets.append((host, int(port)))
    if not targets:
        problems.append("the deepserve job has no targets")
    for host, port in targets:
        service = compose.get(host)
        if service is None:
            problems.append(f"the deepserve job scrapes {host}:{port}, but compose has no service {host}")
            continue
        metrics_port = server_setting(root, service, "DEEPSERVE_METRICS_PORT")
        if metrics_port is None or int(metrics_port) != port:
            problems.append(
                f"the deepserve job scrapes {host}:{port}, but the server there serves metrics on {metrics_port} "
                "(DEEPSERVE_METRICS_PORT of the compose service, else of the Dockerfile)"
            )
        elif int(metrics_port) not in container_ports(service):
            problems.append(f"compose service {host} does not publish its metrics port {metrics_port}")
    return problems


# ------------------------------------------------------------------------------------------ grafana
def prometheus_port(service: dict[str, Any]) -> int:
    for arg in service.get("command") or []:
        if str(arg).startswith("--web.listen-address="):
            return int(str(arg).rsplit(":", 1)[-1])
    return 9090


def compose_mount(service: dict[str, Any], source: str) -> str | None:
    """Where a bind mount of `source` (a path relative to the compose file) lands in the container."""
    for volume in service.get("volumes", []):
        host, _, rest = str(volume).partition(":")
        if PurePosixPath(host.removeprefix("./")) == PurePosixPath(source):
            return rest.split(":")[0]
    return None


def check_grafana(root: Path) -> Problems:
    problems = []
    compose = load_yaml(root / "docker-compose.yml")["services"]
    provisioning = root / "deploy/grafana/provisioning"
    datasources = [
        ds
        for path in sorted((provisioning / "datasources").glob("*.y*ml"))
        for ds in load_yaml(path).get("datasources", [])
    ]
    prometheus = [ds for ds in datasources if ds.get("type") == "prometheus"]
    if not prometheus:
        problems.append("deploy/grafana/provisioning provisions no Prometheus data source")
    for ds in prometheus:
        url = urlsplit(ds.get("url", ""))
        service = compose.get(url.hostname or "")
        image = str((service or {}).get("image", ""))
        if service is None or "prometheus" not in image:
            problems.append(f"Grafana data source {ds.get('name')}: {ds.get('url')} is not the compose Prometheus")
        elif url.scheme != "http" or (url.port or 80) != prometheus_port(service) or url.path not in ("", "/"):
            problems.append(
                f"Grafana data source {ds.get('name')}: {ds.get('url')}, but Prometheus listens on "
                f"http://{url.hostname}:{prometheus_port(service)}"
            )
    # The dashboard's datasource variable defaults to a provisioned data source's uid.
    dashboard = json.loads((root / DASHBOARD).read_text())
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "datasource":
            uid = (variable.get("current") or {}).get("value")
            if uid and uid not in {ds.get("uid") for ds in prometheus}:
                problems.append(f"the dashboard's data source defaults to uid {uid!r}, which is not provisioned")
    # The dashboard provider reads the folder compose mounts the dashboards into.
    grafana = next((s for s in compose.values() if "grafana" in str(s.get("image", ""))), None)
    mounted = compose_mount(grafana or {}, "deploy/grafana/dashboards")
    for path in sorted((provisioning / "dashboards").glob("*.y*ml")):
        for provider in load_yaml(path).get("providers", []):
            folder = provider.get("options", {}).get("path")
            if folder != mounted:
                problems.append(
                    f"Grafana dashboard provider reads {folder}; compose mounts the dashboards at {mounted}"
                )
    return problems


# ------------------------------------------------------------------------------------ docker context
def dockerignore_patterns(root: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """(.dockerignore's patterns as (exception, regex)), with Docker's semantics: Go filepath.Match plus `**`,
    patterns relative to the context root, later patterns win."""
    patterns = []
    path = root / ".dockerignore"
    for line in path.read_text().splitlines() if path.exists() else []:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = str(PurePosixPath(line.removeprefix("!").strip().lstrip("/")))
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.find("]", i)
                regex += pattern[i : end + 1].replace("[!", "[^") if end > 0 else re.escape("[")
                i = end + 1 if end > 0 else i + 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        patterns.append((exception, re.compile(regex + "$")))
    return patterns


def in_context(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether a file (path relative to the context) is sent: a pattern matches the path or a parent of it."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for exception, regex in patterns:
        if any(regex.match(prefix) for prefix in prefixes):
            included = exception
    return included


def copy_sources(root: Path) -> list[tuple[int, str]]:
    """(line, source) of every COPY/ADD of the Dockerfile that reads the build context."""
    sources = []
    lines = (root / "Dockerfile").read_text().splitlines()
    i = 0
    while i < len(lines):
        number, line = i + 1, lines[i]
        while line.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line.rstrip()[:-1] + " " + lines[i]
        i += 1
        match = re.match(r"\s*(COPY|ADD)\s+(.*)", line, re.IGNORECASE)
        if not match:
            continue
        rest = match.group(2).strip()
        options = re.findall(r"--(\w[\w-]*)(?:=\S+)?\s+", rest)
        rest = re.sub(r"^(?:--\w[\w-]*(?:=\S+)?\s+)*", "", rest)
        if "from" in options:
            continue  # from another stage or image, not the context
        args = json.loads(rest) if rest.startswith("[") else rest.split()
        sources += [(number, src) for src in args[:-1] if not re.match(r"\w+://", src)]
    return sources


def check_docker_context(root: Path) -> Problems:
    problems = []
    patterns = dockerignore_patterns(root)
    for line, source in copy_sources(root):
        relative = str(PurePosixPath(source.lstrip("./") or "."))
        target = root / relative
        if "*" in relative or "?" in relative:
            found = [p for p in root.glob(relative)]
        else:
            found = [target] if target.exists() else []
        if not found:
            problems.append(f"Dockerfile:{line}: COPY {source}: no such path in the build context")
            continue
        files = []
        for path in found:
            files += [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        sent = [f for f in files if in_context(f.relative_to(root).as_posix(), patterns)]
        if not sent:
            problems.append(f"Dockerfile:{line}: COPY {source}: .dockerignore excludes it from the build context")
    return problems
