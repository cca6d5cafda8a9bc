"""Write textgen_prompts.jsonl: 50 completion prompts from the held-out *test* modules of the standard library.

Each prompt is a function's signature and docstring (dedented to column 0, decorators left out); the
function's own body is kept as `reference` for a reader to compare with. Functions qualify when their body
after the docstring is 1 to 20 lines and the prompt at most 600 characters; the 50 are taken round-robin
across the modules, each module's in source order, so no module dominates. The test modules are never
trained on (training/textgen_corpus.py), so neither are these prompts.

    .venv/bin/python -m training.eval.make_textgen_prompts
"""

from __future__ import annotations

import ast
import itertools
import json
import textwrap
from pathlib import Path

from training.textgen_corpus import load_stdlib

OUT = Path(__file__).with_name("textgen_prompts.jsonl")
COUNT = 50


def _candidates(module: str, text: str) -> list[dict]:
    lines = text.splitlines(keepends=True)
    found = []
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or ast.get_docstring(node) is None:
            continue
        docstring, rest = node.body[0], node.body[1:]
        if not rest or docstring.end_lineno is None or node.end_lineno is None:
            continue
        prompt = textwrap.dedent("".join(lines[node.lineno - 1 : docstring.end_lineno]))
        body = "".join(lines[docstring.end_lineno : node.end_lineno])
        if 1 <= len(body.strip("\n").splitlines()) <= 20 and len(prompt) <= 600:
            indent = len(lines[node.lineno - 1]) - len(lines[node.lineno - 1].lstrip())
            body = "".join(line[indent:] for line in body.splitlines(keepends=True))
            found.append({"module": module, "function": node.name, "prompt": prompt, "reference": body})
    return sorted(found, key=lambda c: c["prompt"])  # ast.walk is breadth-first; keep a stable order


def main() -> None:
    corpus = load_stdlib()
    by_module: dict[str, list[dict]] = {}
    for source in corpus.test:
        by_module.setdefault(source.module, []).extend(_candidates(source.module, source.text))
    queues = [by_module[m] for m in sorted(by_module) if by_module[m]]
    chosen = [c for c in itertools.chain.from_iterable(itertools.zip_longest(*queues)) if c][:COUNT]
    with OUT.open("w", encoding="utf-8") as out:
        for i, item in enumerate(chosen):
            out.write(json.dumps({"id": i, **item}, ensure_ascii=False) + "\n")
    print(f"wrote {len(chosen)} prompts from {len({c['module'] for c in chosen})} modules to {OUT}")


if __name__ == "__main__":
    main()
