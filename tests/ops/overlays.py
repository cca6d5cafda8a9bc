"""Throwaway kustomize overlays on k8s/overlays for the ops tests, and what to read from what kustomize builds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from tests.ops.test_manifests import ROOT, by_kind

Objects = dict[tuple[str, str], dict[str, Any]]
FILE_SETTINGS = (
    "DEEPSERVE_TLS_CERT_FILE",
    "DEEPSERVE_TLS_KEY_FILE",
    "DEEPSERVE_TLS_CLIENT_CA_FILE",
    "DEEPSERVE_AUTH_TOKENS_FILE",
)
"""The settings that name a mounted file (TLS and tokens)."""

# Each overlay has its own namespace, so that both can run side by side (k8s/overlays/gpu).
NAMESPACES = {"cpu": "deepserve", "gpu": "deepserve-gpu"}


def overlay(tmp_path: Path, base: str, components: tuple[str, ...] = (), patches: list[Any] | None = None) -> Path:
    """A throwaway overlay on k8s/overlays/<base> (kustomize wants relative paths to other folders)."""
    folder = tmp_path / f"{base}-{'-'.join(components) or 'plain'}"
    folder.mkdir()
    k8s = os.path.relpath(ROOT / "k8s", folder)
    kustomization: dict[str, Any] = {
        "resources": [f"{k8s}/overlays/{base}"],
        "components": [f"{k8s}/components/{c}" for c in components],
    }
    if patches:
        kustomization["patches"] = patches
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return folder


def container_and_volumes(objects: Objects) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    pod = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    return pod["containers"][0], {v["name"]: v for v in pod["volumes"]}


def namespaced_in(objects: Objects, namespace: str) -> None:
    for (kind, name), o in objects.items():
        if kind != "Namespace":
            assert o["metadata"].get("namespace") == namespace, f"{kind}/{name} is not in {namespace}"
