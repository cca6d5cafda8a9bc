"""textgen_transformer's KV-cache step model: derive it, prove it decodes what model.onnx computes, record it.

Used by `training.textgen.run` for every trained transformer, and by `deepserve-train transformer-step` to
add the step model to an entry trained before it existed (from its committed model.onnx and held-out
parity examples; no TensorFlow needed).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from service.config import CONFIG_FILE, load_model_config
from training.decoder_step import STEP_FILE, derive_step_model
from training.repository import CARD_FILE, MODEL_FILE, VERSION, config_yaml
from training.step_parity import PARITY_TOLERANCE, check_step_parity, step_parity

log = logging.getLogger("training")

KV_CACHE = f"KV-cache decoding graph in {VERSION}/{STEP_FILE} (same weights)"

CONTRACT = (
    "inputs token_ids, positions INT64 [batch, new], past_mask INT64 [batch, past], past_key_<l>/past_value_<l> "
    "FP32 [batch, heads, past, head_dim] per layer; outputs logits FP32 [batch, new, vocab], "
    "new_key_<l>/new_value_<l> FP32 [batch, heads, new, head_dim]; new tokens attend to valid past slots "
    "and causally to each other (prefill: new = prompt, past = 0; decoding: new = 1)"
)


@dataclass(frozen=True)
class StepExport:
    path: Path
    max_abs_diff: float
    """Incremental decoding against model.onnx, every real position of the held-out rows."""
    examples: int
    nodes: int
    max_abs_diff_vs_keras: float | None = None


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _full_logits(full_model: Path, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    sess, count = _session(full_model), len(inputs["token_ids"])
    return np.concatenate(
        [sess.run(None, {k: v[i : i + 16] for k, v in inputs.items()})[0] for i in range(0, count, 16)]
    )


def export_step_model(
    full_model: Path,
    path: Path,
    heads: int,
    held_out: Mapping[str, np.ndarray],
    context: int,
    keras_logits: np.ndarray | None = None,
) -> StepExport:
    """Write the step graph of `full_model` to `path`; fail (StepExportError) unless prefill followed by one
    token at a time reproduces model.onnx's logits at every real position of `held_out` within 1e-4.
    `keras_logits` (the Keras model's on `held_out`, every position) are compared too when given."""
    proto = derive_step_model(full_model, path, heads)
    step = _session(path)
    diff = check_step_parity(step, held_out, _full_logits(full_model, held_out), context)
    vs_keras = None
    if keras_logits is not None:
        vs_keras = step_parity(step, held_out, keras_logits, context)
        if not vs_keras <= PARITY_TOLERANCE:
            raise RuntimeError(f"{path.name}: incremental decoding differs from Keras by {vs_keras:.3g}")
    examples = len(held_out["token_ids"])
    log.info("%s: incremental decoding vs model.onnx on %d held-out rows: max |diff| = %.3g", path.name, examples, diff)
    return StepExport(path, diff, examples, len(proto.graph.node), vs_keras)


def card_section(export: StepExport) -> dict:
    return {
        "file": f"{VERSION}/{export.path.name}",
        "config_key": "generation.step_model",
        "contract": CONTRACT,
        "built_with": "onnx.helper from the weights in model.onnx (training/decoder_step.py); opset 17",
        "nodes": export.nodes,
        "parity": {
            "max_abs_diff": export.max_abs_diff,
            **({"max_abs_diff_vs_keras": export.max_abs_diff_vs_keras} if export.max_abs_diff_vs_keras else {}),
            "examples": export.examples,
            "tolerance": PARITY_TOLERANCE,
            "against": "model.onnx's logits at every real position of the held-out parity rows; each row is "
            "prefilled with its first tokens (1..length, varied) and then decoded one token at a time, ten rows "
            "at a time in a fixed-size cache whose free slots hold noise",
        },
    }


def add_to_entry(entry: Path) -> StepExport:
    """Derive, check and register the step model of an existing textgen entry (config.yaml, model card)."""
    config = load_model_config(entry)
    card = json.loads((entry / CARD_FILE).read_text(encoding="utf-8"))
    if config.generation is None:
        raise ValueError(f"{entry} is not a text_generation entry")
    reference = np.load(entry / "parity_reference.npz")
    held_out = {k.removeprefix("input_"): reference[k] for k in reference.files if k.startswith("input_")}
    version = entry / str(VERSION)
    export = export_step_model(
        version / MODEL_FILE,
        version / STEP_FILE,
        card["model"]["spec"]["heads"],
        held_out,
        config.generation.context_length,
    )
    generation = config.generation.model_copy(update={"step_model": STEP_FILE})
    (entry / CONFIG_FILE).write_text(config_yaml(config.model_copy(update={"generation": generation})), "utf-8")
    card["kv_cache"] = card_section(export)
    card["model"]["architecture"] = card["model"]["architecture"].replace("no KV cache", KV_CACHE)
    card["files"][f"{VERSION}/{STEP_FILE}"] = (version / STEP_FILE).stat().st_size
    (entry / CARD_FILE).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    load_model_config(entry)
    onnx.checker.check_model(str(version / STEP_FILE), full_check=True)
    return export
