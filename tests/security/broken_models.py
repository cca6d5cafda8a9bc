"""A repository with a model broken in each way a client can see, and what each one's load error says."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.tiny_models import make_repository
from tests.tiny_task_models import write_lm, write_quadrants, write_sentiment

BROKEN = {
    "bad_yaml": "config.yaml is not valid YAML at line 3, column 1",
    "bad_key": "invalid config.yaml: unknown key `bogus`",
    "bad_onnx": "cannot load 1/model.onnx: the file is not a valid ONNX model (the server log has the details)",
    "no_version": "no version folder with a model.onnx (expected 1/model.onnx in its folder)",
    "warmup_fails": "1/model.onnx failed its warm-up run of `warmup` sample 'short rows'; check that it accepts the "
    "sample's data (the server log has the details)",
    "labels_outside": "`labels` must name a file inside the model's folder, got '../../outside/secret.txt'",
    "no_tokenizer": "cannot read 'tokenizer.json' (`text.tokenizer`): there is no such file in the model's folder",
    "bad_tokenizer": "cannot read 'tokenizer.json' (`text.tokenizer`): it could not be read as a Hugging Face "
    "tokenizers file (the server log has the details)",
    "bad_labels": "cannot read 'labels.txt' (`labels`): it is not UTF-8 text (byte 0)",
    "no_step_model": "`generation.step_model` is 'decoder_step.onnx' but there is no such file in the version "
    "folder (1/decoder_step.onnx)",
}
"""Broken model → what its load error says (after "model '<name>': ")."""


def broken_repository(tmp_path: Path) -> Path:
    root = make_repository(tmp_path / "models", names=("add_sub",))
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("top_secret\n" * 4)
    good = yaml.safe_load((root / "add_sub" / "config.yaml").read_text())

    def copy(name: str, config: object) -> Path:
        folder = root / name
        (folder / "1").mkdir(parents=True)
        (folder / "1" / "model.onnx").write_bytes((root / "add_sub" / "1" / "model.onnx").read_bytes())
        (folder / "config.yaml").write_text(config if isinstance(config, str) else yaml.safe_dump(config))
        return folder

    copy("bad_yaml", "max_batch_size: 8\ninputs: [\n")
    copy("bad_key", {**good, "bogus": 1})
    (copy("bad_onnx", good) / "1" / "model.onnx").write_bytes(b"\x00 not an onnx file")
    (copy("no_version", good) / "1" / "model.onnx").unlink()
    variable = [{**spec, "dims": [-1]} for spec in good["inputs"]]  # the graph has 4: warm-up on [1, 1] fails
    outputs = [{**s, "dims": [-1]} for s in good["outputs"]]
    copy("warmup_fails", {**good, "inputs": variable, "outputs": outputs, "warmup": [{"name": "short rows"}]})
    config = yaml.safe_load((write_quadrants(root, "labels_outside") / "config.yaml").read_text())
    (root / "labels_outside" / "config.yaml").write_text(
        yaml.safe_dump({**config, "labels": "../../outside/secret.txt"})
    )
    (write_sentiment(root, "no_tokenizer") / "tokenizer.json").unlink()
    (write_sentiment(root, "bad_tokenizer") / "tokenizer.json").write_text('{"version": "1.0", "model": {')
    (write_sentiment(root, "bad_labels") / "labels.txt").write_bytes(b"\xffnegative\nneutral\npositive\n")
    write_lm(root, "no_step_model", step_model="decoder_step.onnx")
    write_quadrants(root)
    return root
