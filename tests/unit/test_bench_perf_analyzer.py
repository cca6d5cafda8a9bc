"""bench/perf_analyzer.py: reading perf_analyzer's CSV and its server-side breakdown (captured from 2.41.0)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import venvs
from bench.perf_analyzer import PerfPoint, Target, command, median, parse_csv, parse_server, point

WITH_SERVER = """Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,\
Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,\
p95 latency,p99 latency
1,664.07,2,722,8,1,759,7,0,1379,1564,2365,5100
"""
WITHOUT_SERVER = """Concurrency,Inferences/Second,Client Send,Client Recv,p50 latency,p90 latency,\
p95 latency,p99 latency
8,841.561,2,0,1033,1216,1788,6208
"""
STDOUT = """  Server:
    Inference count: 2394
    Avg request latency: 996 usec (overhead 220 usec + queue 8 usec + compute input 1 usec + compute infer 759 usec \
+ compute output 7 usec)
"""


def test_csv_rows_are_numbers() -> None:
    (row,) = parse_csv(WITH_SERVER)
    assert row["Concurrency"] == 1 and row["Inferences/Second"] == 664.07 and row["Server Compute Infer"] == 759


def test_point_with_server_breakdown() -> None:
    p = point(WITH_SERVER, STDOUT)
    assert (p.concurrency, p.throughput, p.p50_us, p.p99_us) == (1, 664.07, 1379, 5100)
    assert p.server_us == {
        "request": 996,
        "overhead": 220,
        "queue": 8,
        "compute_input": 1,
        "compute_infer": 759,
        "compute_output": 7,
    }


def test_point_without_server_statistics() -> None:
    p = point(WITHOUT_SERVER, "Client:\n    Throughput: 841.561 infer/sec\n")
    assert (p.concurrency, p.p50_us, p.server_us) == (8, 1033, None)
    assert parse_server("") is None


def test_command_per_protocol() -> None:
    args = (Path("pa"), "m", 8, Path("in.json"), 2000, 30, 4, Path("out.csv"))
    grpc = command(args[0], Target("127.0.0.1:1"), *args[1:])
    assert grpc[grpc.index("-i") + 1] == "grpc" and not any("tensor-format" in a for a in grpc)
    http = command(args[0], Target("127.0.0.1:2", "http", "json"), *args[1:])
    assert http[http.index("-i") + 1] == "http" and http[http.index("-u") + 1] == "127.0.0.1:2"
    assert {"--input-tensor-format=json", "--output-tensor-format=json"} <= set(http)
    with pytest.raises(ValueError):
        Target("127.0.0.1:2", "rest")


def test_a_perf_analyzer_named_by_the_environment_is_used_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DEEPSERVE_PERF_ANALYZER (a machine that cannot build .bench-venvs): that binary, its folder on the library
    path; a path that is not a file is refused, never replaced by an install."""
    binary = tmp_path / "perf" / "perf_analyzer"
    binary.parent.mkdir()
    binary.write_bytes(b"")
    monkeypatch.setenv("DEEPSERVE_PERF_ANALYZER", str(binary))
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/lib")
    found, env = venvs.perf_analyzer()
    assert found == binary
    assert env["LD_LIBRARY_PATH"].split(":") == [str(binary.parent), "/opt/lib"]
    monkeypatch.setenv("DEEPSERVE_PERF_ANALYZER", str(tmp_path / "missing"))
    with pytest.raises(venvs.Unavailable, match="no such file"):
        venvs.perf_analyzer()


def test_rounds_reduce_to_the_median_of_each_field() -> None:
    rounds = [
        PerfPoint(8, 1000.0, 6000.0, 9000.0, {"request": 500.0, "compute_infer": 400.0}),
        PerfPoint(8, 1300.0, 5000.0, 7000.0, {"request": 450.0, "compute_infer": 380.0}, stable=False),
        PerfPoint(8, 1100.0, 5500.0, 12000.0, {"request": 700.0, "compute_infer": 390.0}),
    ]
    got = median(rounds)
    assert (got.concurrency, got.throughput, got.p50_us, got.p99_us) == (8, 1100.0, 5500.0, 9000.0)
    assert got.server_us == {"request": 500.0, "compute_infer": 390.0}
    assert not got.stable  # one round never settled
    assert median([PerfPoint(1, 900.0, 1000.0, 2000.0, None), rounds[0]]).server_us is None
