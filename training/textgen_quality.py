"""textgen_transformer's quality bar (issue 13) and the committed human reading of its completions
(training/eval/textgen_reading.json) that the bar counts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

READING_FILE = Path(__file__).parent / "eval" / "textgen_reading.json"
"""A person's reading of the committed model's completions: which of them read as coherent (issue 13)."""


def reading(onnx_path: Path) -> dict | None:
    """The committed reading when it is of this very model.onnx (by sha256); None: nobody has read its output."""
    if not READING_FILE.is_file():
        return None
    found = json.loads(READING_FILE.read_text(encoding="utf-8"))
    return found if found["model_onnx_sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest() else None


def quality_bar(perplexity: float, trigram: float, evaluation: dict, read: dict | None = None) -> dict:
    """Issue 13's bars for the card: perplexity under half the trigram's, most default-sampled completions
    parse, a reader calls a clear majority (over 60%) of those read coherent (`reading`; unread fails), and
    neither default sampling nor greedy decoding (with the default repetition penalty) loops."""
    coherent = len(read["coherent"]) / len(read["read"]) if read else 0.0
    bars = {
        "perplexity_below_half_the_trigram": perplexity < 0.5 * trigram,
        "default_sampling_completions_parse": evaluation["sampled"]["parse_share"] >= 0.5,
        "a_reader_finds_a_clear_majority_coherent": coherent > 0.6,
        "default_sampling_does_not_loop": evaluation["sampled"]["loop_share"] <= 0.1,
        "greedy_does_not_loop": evaluation["greedy"]["loop_share"] <= 0.1,
    }
    reader = {"read": len(read["read"]), "coherent": len(read["coherent"]), "verdict": read["verdict"]} if read else {}
    return {
        **bars,
        "perplexity_ratio_to_trigram": round(perplexity / trigram, 3),
        "reading": reader
        or f"nobody has read this model's completions ({READING_FILE.parent.name}/{READING_FILE.name})",
        "met": all(bars.values()),
    }
