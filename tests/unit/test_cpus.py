"""The default intra-op thread count from fake cgroup files: v2, v1, fractional limits, missing files, affinity."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.cpus import CpuBudget, cgroup_cpu_limit, cpu_budget


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    return root


V1 = ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")


@pytest.mark.parametrize(
    ("files", "limit", "threads"),
    [
        pytest.param({"cpu.max": "max 100000"}, None, 0, id="v2-no-limit"),
        pytest.param({"cpu.max": "200000 100000"}, 2.0, 2, id="v2-2"),
        pytest.param({"cpu.max": "150000 100000"}, 1.5, 2, id="v2-1.5"),
        pytest.param({"cpu.max": "50000 100000"}, 0.5, 1, id="v2-0.5"),
        pytest.param({"cpu.max": "1000 100000"}, 0.01, 1, id="v2-tiny"),
        pytest.param({V1[0]: "300000", V1[1]: "100000"}, 3.0, 3, id="v1-3"),
        pytest.param({V1[0]: "-1", V1[1]: "100000"}, None, 0, id="v1-no-limit"),
        pytest.param({V1[0]: "300000"}, None, 0, id="v1-no-period"),
        pytest.param(
            {"cpu,cpuacct/cpu.cfs_quota_us": "250000", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
            2.5,
            3,
            id="v1-cpuacct",
        ),
        pytest.param({}, None, 0, id="missing"),
        pytest.param({"cpu.max": "garbage"}, None, 0, id="v2-garbage"),
        pytest.param({"cpu.max": "100000 0"}, None, 0, id="v2-zero-period"),
    ],
)
def test_threads_follow_the_cgroup_limit(tmp_path: Path, files: dict, limit: float | None, threads: int) -> None:
    budget = cpu_budget(write(tmp_path, files), affinity=32)
    assert budget.limit == (pytest.approx(limit) if limit is not None else None)
    assert budget.threads == threads


def test_v2_wins_over_v1_files(tmp_path: Path) -> None:
    root = write(
        tmp_path, {"cpu.max": "100000 100000", "cpu/cpu.cfs_quota_us": "400000", "cpu/cpu.cfs_period_us": "100000"}
    )
    assert cgroup_cpu_limit(root) == 1.0


def test_affinity_smaller_than_the_quota_caps_the_threads(tmp_path: Path) -> None:
    root = write(tmp_path, {"cpu.max": "800000 100000"})
    assert cpu_budget(root, affinity=3).threads == 3
    assert cpu_budget(root, affinity=16).threads == 8


def test_no_limit_leaves_the_choice_to_onnx_runtime_unless_the_process_is_pinned() -> None:
    assert CpuBudget(limit=None, affinity=16, machine=16).threads == 0
    assert CpuBudget(limit=None, affinity=1).threads == 0  # the machine's size unknown: not pinned
    assert CpuBudget(limit=None, affinity=2, machine=16).threads == 2  # taskset -c 0,1 on 16 cores
    assert CpuBudget(limit=4.0, affinity=2, machine=16).threads == 2
    assert CpuBudget(limit=4.0, affinity=0).threads == 1  # never fewer than one thread


def test_onnx_runtime_itself_ignores_the_affinity_mask() -> None:
    """Why the pinned case is ours to size: ONNX Runtime's default pool counts the machine's cores. Pinned to one
    CPU, a default session still starts worker threads on a machine with more cores."""
    if (os.cpu_count() or 1) < 2 or not hasattr(os, "sched_setaffinity"):
        pytest.skip("needs a machine with two CPUs or more, and sched_setaffinity")
    code = (
        "import os, onnxruntime as ort, onnx\n"
        "from onnx import helper, TensorProto\n"
        "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "x = helper.make_tensor_value_info('x', TensorProto.FLOAT, [1])\n"
        "g = helper.make_graph([helper.make_node('Identity', ['x'], ['y'])], 'g', [x],\n"
        "    [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1])])\n"
        "m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)])\n"
        "before = len(os.listdir('/proc/self/task'))\n"
        "s = ort.InferenceSession(m.SerializeToString(), providers=['CPUExecutionProvider'])\n"
        "print(len(os.listdir('/proc/self/task')) - before)\n"
    )
    added = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert added >= 1  # a pool of one thread (the caller) would add none


def test_the_real_machine_gives_a_sane_answer() -> None:
    budget = cpu_budget()
    assert budget.affinity >= 1
    assert budget.threads == 0 or 1 <= budget.threads <= budget.affinity
