"""bench/gpu.py (docs/gpu.md) as a dry run on the CPU: the script that a GPU machine gets once must not rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_bench_runs_its_checks_on_the_cpu(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "bench/gpu.py",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
            "--only",
            "env",
            "providers",
            "parity",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "gpu.json").read_text())
    assert set(results) == {"env", "providers", "parity"}
    assert all("error" not in section for section in results.values()), results
    found = results["providers"]["result"]
    for model in ("digits_cnn", "sentiment_rnn", "textgen_transformer"):
        assert found[model]["providers"] == ["CPUExecutionProvider"]
        assert found[model]["nodes"]["CPUExecutionProvider"] > 0
        assert results["parity"]["result"][model]["within_1e-4"] is True
    assert found["textgen_transformer"]["step_providers"] == ["CPUExecutionProvider"]
    assert set(results["parity"]["result"]["textgen_transformer"]) >= {"step_prefill_max_abs", "step_decode_max_abs"}
