"""The bench's own virtualenvs under .bench-venvs/ (git-ignored), apart from the project's .venv: tools whose
pins clash with the project's (perf_analyzer's tritonclient 2.41, MLServer 1.7.1)."""

from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENVS = ROOT / ".bench-venvs"

PERF_ANALYZER = ("tritonclient[grpc]==2.41.0", "nvidia-cuda-runtime-cu12")  # 2.41.0: the last wheel with the binary
MLSERVER = ("mlserver==1.7.1", "onnxruntime", "uvloop<0.22")


class Unavailable(Exception):
    """A tool the bench could not install; the message says why and what to do."""


def ensure(name: str, requirements: tuple[str, ...]) -> Path:
    """.bench-venvs/<name> with `requirements` installed (once: a stamp file records them); its bin folder."""
    venv = VENVS / name
    stamp = venv / ".bench-requirements"
    wanted = "\n".join(requirements)
    if stamp.exists() and stamp.read_text() == wanted:
        return venv / "bin"
    print(f"# installing {' '.join(requirements)} into {venv.relative_to(ROOT)} (once)", flush=True)
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    done = subprocess.run([*pip, *requirements], capture_output=True, text=True)
    if done.returncode:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.startswith("ERROR")]
        raise Unavailable(f"pip could not install {' '.join(requirements)}: {' '.join(lines[-2:]) or 'see pip'}")
    stamp.write_text(wanted)
    return venv / "bin"


def perf_analyzer() -> tuple[Path, dict[str, str]]:
    """perf_analyzer's path and the environment it runs in (libcudart from the venv on LD_LIBRARY_PATH).
    `DEEPSERVE_PERF_ANALYZER=/path/to/perf_analyzer` uses that binary instead, with its folder on
    LD_LIBRARY_PATH (where scripts/gpu/pack.py's bundle puts libb64 and libcudart), as on a machine that cannot
    install packages."""
    given = os.environ.get("DEEPSERVE_PERF_ANALYZER")
    if given:
        binary = Path(given)
        if not binary.is_file():
            raise Unavailable(f"DEEPSERVE_PERF_ANALYZER={given}: no such file")
        env = dict(os.environ)
        paths = [str(binary.parent), env.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(paths).rstrip(os.pathsep)
        return binary, env
    if not ctypes.util.find_library("b64"):
        install = ["apt-get", "install", "-y", "-q", "libb64-0d"]
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise Unavailable("perf_analyzer needs Debian's libb64-0d: run `apt-get install -y libb64-0d` as root")
        print("# installing libb64-0d for perf_analyzer (apt-get)", flush=True)
        if subprocess.run(install, capture_output=True).returncode:
            raise Unavailable("`apt-get install -y libb64-0d` failed; perf_analyzer needs it")
    binary = ensure("perf", PERF_ANALYZER) / "perf_analyzer"
    if not binary.exists():
        raise Unavailable(f"{binary} missing: the tritonclient wheel did not bundle perf_analyzer")
    cudart = sorted((binary.parents[1] / "lib").glob("python3*/site-packages/nvidia/cuda_runtime/lib"))
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*map(str, cudart), env.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)
    return binary, env


def mlserver() -> Path:
    """Python of MLServer's virtualenv."""
    return ensure("mlserver", MLSERVER) / "python"
