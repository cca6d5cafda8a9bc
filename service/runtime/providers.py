"""Execution providers: which ones a model's sessions ask for (the server's --device, the model's
`execution.providers`, what ONNX Runtime offers), and whether a session got the one it asked for."""

from __future__ import annotations

from collections.abc import Sequence

import onnxruntime as ort

from service.config import Device
from service.errors import ConfigError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
_PROVIDER_NAMES = {"cuda": CUDA, "cpu": CPU}


def check_device(device: Device, available: Sequence[str]) -> None:
    """Fail start-up when `--device cuda` is asked for and CUDA is missing."""
    if device is Device.CUDA and CUDA not in available:
        raise ConfigError(
            "--device cuda was requested but onnxruntime offers no CUDAExecutionProvider "
            f"(available: {', '.join(available) or 'none'}); install the `gpu` extra (onnxruntime-gpu) "
            "on a machine with CUDA, or use --device auto|cpu"
        )


def choose_providers(device: Device, preferred: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """Execution providers for one model, most preferred first; CPU is always the last resort.

    `device` is the server-wide choice, `preferred` the model's own `execution.providers` (names
    `cuda`/`cpu`), `available` what `onnxruntime.get_available_providers()` offers.
    """
    if device is Device.CPU:
        wanted = ["cpu"]
    elif preferred:
        wanted = list(preferred)
    else:
        wanted = ["cuda", "cpu"]
    chosen = [_PROVIDER_NAMES[w] for w in wanted if _PROVIDER_NAMES[w] in available]
    if device is Device.CUDA and CUDA not in chosen and "cuda" in wanted:
        check_device(device, available)
    if CPU not in chosen:
        chosen.append(CPU)
    return chosen


def with_options(providers: Sequence[str], options: dict[str, str]) -> list[str | tuple[str, dict[str, str]]]:
    """`providers` as `onnxruntime.InferenceSession` takes them: CUDA with its provider `options`."""
    return [(name, options) if name == CUDA else name for name in providers]


def fell_back(session: ort.InferenceSession, asked: list[str], options: dict[str, str]) -> str | None:
    """What ONNX Runtime did instead of running on CUDA with `options`, when it did. When creating the CUDA
    provider fails (no cuDNN, a bad device id), its Python binding retries by itself: with CUDA's default
    options (device 0, an arena without a limit), then on the CPU, and only prints a notice."""
    if asked[:1] != [CUDA]:
        return None
    running = session.get_providers()
    if running[:1] != [CUDA]:
        return f"ONNX Runtime runs it on {running}: CUDA or cuDNN failed to start"
    actual = session.get_provider_options().get(CUDA, {})
    differ = [key for key in ("device_id", "gpu_mem_limit") if key in actual and actual[key] != options[key]]
    if differ:
        return (
            "ONNX Runtime runs it with CUDA's default options instead ("
            + ", ".join(f"{key} {actual[key]}, not {options[key]}" for key in differ)
            + ")"
        )
    return None


def available_providers() -> list[str]:
    return list(ort.get_available_providers())
