"""Execution providers: the choice as a pure function, `--device` checks, CUDA provider options, and a CUDA that
does not start."""

from __future__ import annotations

from pathlib import Path

import pytest

from service import runtime
from service.config import Device
from service.errors import ConfigError, ModelLoadError
from service.runtime import CPU, CUDA, ModelSession, check_device, choose_providers
from tests.unit.runtime_helpers import add_sub_config

BOTH = [CUDA, CPU]
CPU_ONLY = [CPU]


# ---- provider selection ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("device", "preferred", "available", "expected"),
    [
        (Device.AUTO, None, BOTH, [CUDA, CPU]),
        (Device.AUTO, None, CPU_ONLY, [CPU]),
        (Device.AUTO, None, ["TensorrtExecutionProvider", *BOTH], [CUDA, CPU]),
        (Device.CPU, None, BOTH, [CPU]),
        (Device.CPU, ("cuda",), BOTH, [CPU]),
        (Device.CUDA, None, BOTH, [CUDA, CPU]),
        (Device.AUTO, ("cpu",), BOTH, [CPU]),
        (Device.AUTO, ("cuda",), BOTH, [CUDA, CPU]),
        (Device.AUTO, ("cuda",), CPU_ONLY, [CPU]),
        (Device.AUTO, ("cpu", "cuda"), BOTH, [CPU, CUDA]),
        (Device.CUDA, ("cpu",), BOTH, [CPU]),
        (Device.AUTO, (), BOTH, [CUDA, CPU]),
    ],
)
def test_choose_providers(
    device: Device, preferred: tuple[str, ...] | None, available: list[str], expected: list[str]
) -> None:
    assert choose_providers(device, preferred, available) == expected


@pytest.mark.parametrize("preferred", [None, ("cuda",), ("cuda", "cpu")])
def test_cuda_requested_without_cuda_is_a_config_error(preferred: tuple[str, ...] | None) -> None:
    with pytest.raises(ConfigError) as info:
        choose_providers(Device.CUDA, preferred, CPU_ONLY)
    assert "no CUDAExecutionProvider" in str(info.value)


def test_check_device_message_says_what_is_available_and_how_to_fix() -> None:
    with pytest.raises(ConfigError) as info:
        check_device(Device.CUDA, ["CPUExecutionProvider", "AzureExecutionProvider"])
    message = str(info.value)
    assert "--device cuda was requested" in message
    assert "available: CPUExecutionProvider, AzureExecutionProvider" in message
    assert "onnxruntime-gpu" in message and "--device auto|cpu" in message
    with pytest.raises(ConfigError, match="available: none"):
        check_device(Device.CUDA, [])


@pytest.mark.parametrize(("device", "available"), [(Device.CUDA, BOTH), (Device.AUTO, CPU_ONLY), (Device.CPU, [])])
def test_check_device_accepts(device: Device, available: list[str]) -> None:
    check_device(device, available)


# ---- CUDA options (docs/gpu.md has the GPU measurements) ---------------------------------------------------
def test_cuda_options_reach_onnx_runtime_in_its_own_names() -> None:
    config = add_sub_config(
        execution={
            "cuda": {
                "device_id": 1,
                "gpu_mem_limit": "512MiB",
                "arena_extend_strategy": "next_power_of_two",
                "cudnn_conv_algo_search": "exhaustive",
                "use_tf32": True,
            }
        }
    )
    assert config.execution.cuda.provider_options() == {
        "device_id": "1",
        "gpu_mem_limit": str(512 * 1024**2),
        "arena_extend_strategy": "kNextPowerOfTwo",
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "use_tf32": "1",
        "do_copy_in_default_stream": "1",
    }
    defaults = add_sub_config().execution.cuda.provider_options()
    assert defaults["gpu_mem_limit"] == str(2 * 1024**3), "the arena must be limited unless configured"
    assert defaults["arena_extend_strategy"] == "kSameAsRequested"
    assert defaults["cudnn_conv_algo_search"] == "HEURISTIC"
    assert defaults["use_tf32"] == "0"


@pytest.mark.parametrize(
    ("cuda", "fragment"),
    [
        ({"gpu_mem_limit": "1KiB"}, "gpu_mem_limit"),
        ({"gpu_mem_limit": "lots"}, "gpu_mem_limit"),
        ({"device_id": -1}, "device_id"),
        ({"arena_extend_strategy": "grow"}, "arena_extend_strategy"),
        ({"cudnn_conv_algo_search": "fast"}, "cudnn_conv_algo_search"),
        ({"use_tf32": "yes"}, "use_tf32"),
        ({"graphs": True}, "graphs"),
    ],
)
def test_bad_cuda_options_are_load_errors_naming_the_key(cuda: dict, fragment: str) -> None:
    with pytest.raises(ModelLoadError) as info:
        add_sub_config(execution={"cuda": cuda})
    assert "add_sub" in str(info.value) and fragment in str(info.value)


# ---- a CUDA that does not start ----------------------------------------------------------------------------
def test_cuda_that_does_not_start_is_a_load_error_under_device_cuda(
    add_sub_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """onnxruntime without CUDA here stands for CUDA failing to start: asked for CUDA first, ONNX Runtime runs
    the session on the CPU and only prints a notice. `--device cuda` (strict) refuses; `auto` warns."""
    if CUDA in runtime.available_providers():
        pytest.skip("this onnxruntime has CUDA: the fallback cannot be provoked this way")
    with pytest.raises(ModelLoadError) as info:
        ModelSession(add_sub_file, add_sub_config(), [CUDA, CPU], strict=True)
    message = str(info.value)
    assert "'add_sub'" in message and "1/model.onnx" in message and "CPUExecutionProvider" in message
    assert "--device cuda never falls back" in message
    session = ModelSession(add_sub_file, add_sub_config(), [CUDA, CPU], strict=False)
    assert session.providers == [CPU]
    assert any("asked for the CUDA execution provider" in r.getMessage() for r in caplog.records)


def test_cpu_sessions_never_count_as_a_fallback(add_sub_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    ModelSession(add_sub_file, add_sub_config(), [CPU], strict=True)
    assert not any("CUDA" in r.getMessage() for r in caplog.records)
