"""textgen_transformer on its held-out completion prompts (training/eval/textgen_prompts.jsonl).

Each prompt (a function's signature and docstring from a test module of the standard library, never trained
on) is completed through the KV-cache step model, token by token, with the server's own sampler. Measured:

The prompt goes in whole, final newline included (the tokenizer keeps every newline a token of its own, so
the model has seen that token before an indented line).

- `parse_share`: the share of prompts whose completed function parses with `ast`. The function's body is
  the generated text up to the first non-blank line back at column 0 (where the function ends) or the end
  of the text; a body cut by the token budget loses its last, unfinished line. An empty body fails.
- `finished_share`: the share whose function ended (a line back at column 0, or end of text) in the budget.
- `loop_share`: the share whose generated tokens hold a loop: a span of at least `LOOP_SPAN` tokens that is
  one block of 1..32 tokens repeated at least three times.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.batching.sampling import sample
from service.config import ModelConfig
from service.types import SamplingParams

PROMPTS_FILE = Path(__file__).parent / "eval" / "textgen_prompts.jsonl"
MAX_NEW_TOKENS = 128
LOOP_SPAN, LOOP_PERIODS = 48, range(1, 33)
DEFAULT_TEMPERATURE, DEFAULT_TOP_P, DEFAULT_REPETITION_PENALTY = 0.4, 0.9, 1.15
"""What a request that leaves temperature, top_p and repetition_penalty unset gets (config.yaml `generation`).
Penalty 1.3 was picked on these 50 test prompts for the 5-pass model (it ended greedy loops: 0.48 of greedy
completions loop without a penalty). For the 9-pass model it was re-picked on 50 prompts made the same way from
the *validation* modules (make_textgen_prompts' rule on `corpus.validation`), not on these: over four sampling
seeds, the parse share of sampled completions was 0.47 at penalty 1.3 (temperature 0.4), 0.595 at 1.15, 0.605
at 1.15 / temperature 0.2 and 0.58 at 1.2 / temperature 0.3, with at most 0.04 loops; greedy at 1.15 loops in
0.02 of them (0.2 at 1.1). Code repeats its tokens (`self`, brackets, indentation), so a strong penalty
pushes the model off valid syntax."""


@dataclass(frozen=True)
class Prompt:
    id: int
    module: str
    function: str
    prompt: str
    reference: str


def load_prompts(path: Path = PROMPTS_FILE) -> list[Prompt]:
    return [Prompt(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def with_sampling_defaults(config: ModelConfig) -> ModelConfig:
    generation = config.generation.model_copy(  # type: ignore[union-attr]
        update={
            "default_temperature": DEFAULT_TEMPERATURE,
            "default_top_p": DEFAULT_TOP_P,
            "default_repetition_penalty": DEFAULT_REPETITION_PENALTY,
        }
    )
    return config.model_copy(update={"generation": generation})


class StepDecoder:
    """One sequence at a time through the step model: prefill the prompt, then one token per step."""

    def __init__(self, step_model: Path, context: int, eos: int | None):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(step_model), options, providers=["CPUExecutionProvider"])
        keys = [i for i in self.session.get_inputs() if i.name.startswith("past_key_")]
        self.layers, self.heads, self.head_dim = len(keys), int(keys[0].shape[1]), int(keys[0].shape[3])
        self.context, self.eos = context, eos

    def generate(self, ids: list[int], max_new: int, params: SamplingParams) -> list[int]:
        rng = np.random.default_rng(params.seed)
        names = [f"past_{kind}_{layer}" for layer in range(self.layers) for kind in ("key", "value")]
        cache = {n: np.zeros((1, self.heads, 0, self.head_dim), np.float32) for n in names}
        new, out = list(ids), []
        while len(out) < max_new and len(ids) + len(out) < self.context:
            start = len(ids) + len(out) - len(new)
            feed = {
                "token_ids": np.array([new], np.int64),
                "positions": np.arange(start, start + len(new), dtype=np.int64)[None],
                "past_mask": np.ones((1, start), np.int64),
                **cache,
            }
            logits, *fresh = self.session.run(None, feed)
            cache = {n: np.concatenate([cache[n], f], axis=2) for n, f in zip(names, fresh, strict=True)}
            token = sample(logits[0, -1], params, rng, out)
            if token == self.eos:
                break
            out.append(token)
            new = [token]
        return out


def function_body(generated: str, cut_by_budget: bool) -> tuple[str, bool]:
    """The generated body of a function whose prompt ends with its docstring's line, and whether it ended."""
    lines = generated.split("\n")
    for i, line in enumerate(lines):
        if line.strip() and not line[0].isspace():
            return "\n".join(lines[:i]), True
    if cut_by_budget:
        return "\n".join(lines[:-1]), False
    return generated, True


def parses(prompt: str, body: str) -> bool:
    """`body` follows `prompt` (which ends with a newline)."""
    if not body.strip():
        return False
    try:
        ast.parse(prompt + body)
    except (SyntaxError, ValueError):
        return False
    return True


def loops(tokens: list[int]) -> bool:
    """A span of at least LOOP_SPAN tokens made of one block of p tokens repeated at least three times."""
    t = np.asarray(tokens)
    for p in LOOP_PERIODS:
        if len(t) < max(LOOP_SPAN, 3 * p):
            break
        same = np.concatenate([[0], (t[p:] == t[:-p]).astype(np.int8), [0]])
        edges = np.flatnonzero(np.diff(same))
        runs = edges[1::2] - edges[::2]  # lengths of the runs where t[i] == t[i + p]
        if len(runs) and (runs.max() >= 2 * p) and runs.max() + p >= LOOP_SPAN:
            return True
    return False


def _complete(decoder: StepDecoder, tokenizer, bos: int | None, prompts: list[Prompt], params: dict) -> dict:
    rows = []
    for item in prompts:
        ids = ([bos] if bos is not None else []) + tokenizer.encode(item.prompt, add_special_tokens=False).ids
        sampling = SamplingParams(seed=item.id, **params)
        tokens = decoder.generate(ids, MAX_NEW_TOKENS, sampling)
        text = tokenizer.decode(tokens)
        cut = len(tokens) == MAX_NEW_TOKENS or len(ids) + len(tokens) >= decoder.context
        body, finished = function_body(text, cut)
        rows.append(
            {
                "id": item.id,
                "body": body,
                "parses": parses(item.prompt, body),
                "finished": finished,
                "loops": loops(tokens),
            }
        )
    count = len(rows)
    return {
        "sampling": {**params, "seed": "the prompt's id"},
        "parse_share": sum(r["parses"] for r in rows) / count,
        "finished_share": sum(r["finished"] for r in rows) / count,
        "loop_share": sum(r["loops"] for r in rows) / count,
        "completions": rows,
    }


def evaluate(
    step_model: Path,
    tokenizer,
    config: ModelConfig,
    prompts: list[Prompt] | None = None,
    modes: tuple[str, ...] = ("sampled", "greedy", "greedy_unpenalized"),
) -> dict:
    """Completions of the held-out prompts with the config's default sampling ("sampled", seeded by prompt)
    and greedy ("greedy", with the config's default repetition penalty; "greedy_unpenalized" without), with
    their parse, finished and loop shares."""
    generation = config.generation
    assert generation is not None
    prompts = load_prompts() if prompts is None else prompts
    decoder = StepDecoder(step_model, generation.context_length, generation.eos_id)
    penalty = {"repetition_penalty": generation.default_repetition_penalty}
    params = {
        "sampled": {"temperature": generation.default_temperature, "top_p": generation.default_top_p, **penalty},
        "greedy": {"temperature": 0.0, **penalty},
        "greedy_unpenalized": {"temperature": 0.0},
    }
    return {
        "prompts": len(prompts),
        "source": f"{PROMPTS_FILE.parent.name}/{PROMPTS_FILE.name}: function signatures and docstrings from the "
        "held-out test modules (training/eval/make_textgen_prompts.py)",
        "max_new_tokens": MAX_NEW_TOKENS,
        "method": (__doc__ or "").split("\n\n", 1)[1].strip(),
        **{mode: _complete(decoder, tokenizer, generation.bos_id, prompts, params[mode]) for mode in modes},
    }
