"""perf_analyzer `-i http` against the HTTP port (issue 16): it reads the model's metadata and configuration, then
measures with Triton's binary data extension and with JSON tensors, and every request it sends is answered.

perf_analyzer lives in the bench's own virtualenv (`.bench-venvs/perf`, made by `make bench` / bench/venvs.py, with
Debian's libb64): where it has not been installed this test is skipped, saying so, rather than installing it."""

from __future__ import annotations

import ctypes.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bench import perf_analyzer, venvs
from tests.conftest import FREE_PORT, RunningServer
from tests.integration.conftest import serving


@pytest.fixture(scope="module")
def perf() -> tuple[Path, dict[str, str]]:
    stamp = venvs.VENVS / "perf" / ".bench-requirements"
    if not stamp.exists() or stamp.read_text() != "\n".join(venvs.PERF_ANALYZER) or not ctypes.util.find_library("b64"):
        pytest.skip("perf_analyzer is not installed here: `make bench` installs it (.bench-venvs/perf, libb64-0d)")
    return venvs.perf_analyzer()


@pytest.fixture(scope="module")
def server(model_repo: Path) -> Iterator[RunningServer]:
    yield from serving(model_repo, http_port=FREE_PORT)


def _answered(server: RunningServer, code: str) -> float:
    """HTTP V2 requests to add_sub counted with `code` in deepserve_requests_total."""
    metric = server.app.metrics.registry.get_sample_value(
        "deepserve_requests_total", {"model": "add_sub", "version": "1", "api": "http_v2", "code": code}
    )
    return metric or 0.0


@pytest.mark.parametrize("tensor_format", ["binary", "json"])
def test_perf_analyzer_measures_over_http(
    perf: tuple[Path, dict[str, str]], server: RunningServer, tmp_path: Path, tensor_format: str
) -> None:
    inputs = {name: np.arange(4, dtype=np.float32).reshape(1, 4) for name in ("INPUT0", "INPUT1")}
    data = perf_analyzer.input_data(tmp_path / "input.json", inputs)
    target = perf_analyzer.Target(f"127.0.0.1:{server.app.http_port}", "http", tensor_format)
    before = _answered(server, "200")
    measured = perf_analyzer.run(*perf, target, "add_sub", 4, data, window_ms=500, stability=100_000, max_trials=3)
    assert isinstance(measured, perf_analyzer.PerfPoint), measured
    assert measured.throughput > 0 and measured.p50_us > 0
    assert _answered(server, "200") - before >= measured.throughput * 0.5  # perf_analyzer's requests, all answered
    assert not [code for code in ("400", "404", "413", "500", "503") if _answered(server, code)]
