"""`deepserve-train {cnn,rnn,transformer,all}`: train, export to ONNX, verify, write models/<name>/."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("training")

RECIPES = ("cnn", "rnn", "transformer")
STEP = "transformer-step"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepserve-train",
        description="Train the example models offline, export them to ONNX, prove parity, write a model repository.",
    )
    parser.add_argument(
        "model",
        choices=[*RECIPES, "all", STEP],
        help=f"which model to train (all: the three defaults); {STEP}: add the KV-cache step model "
        "(decoder_step.onnx) to an already trained textgen entry in --output, without retraining",
    )
    parser.add_argument(
        "--data",
        type=Path,
        nargs="+",
        default=None,
        help="cnn: image folder root/<class>/*.png|jpg; rnn: CSV with text,label columns; "
        "transformer: UTF-8 text files or folders of *.txt (default: the bundled data)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="maximum epochs (early stopping may end sooner)")
    parser.add_argument("--output", type=Path, default=Path("models"), help="model repository folder")
    parser.add_argument(
        "--name", default=None, help="model folder name (default: digits_cnn, sentiment_rnn, textgen_transformer)"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed for splits and training")
    parser.add_argument("--limit", type=int, default=None, help="use at most this many training examples")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and the summary")
    return parser


def _settings(kind: str, args: argparse.Namespace):
    if kind == "cnn":
        from training.digits import DigitsSettings as Settings
    elif kind == "rnn":
        from training.sentiment import SentimentSettings as Settings
    else:
        from training.textgen import TextgenSettings as Settings
    values = {"epochs": args.epochs, "name": args.name, "seed": args.seed, "limit": args.limit}
    if args.data:
        values["data"] = args.data if kind == "transformer" else args.data[0]
    return Settings(**{k: v for k, v in values.items() if v is not None})


def _runner(kind: str):
    if kind == "cnn":
        from training.digits import run
    elif kind == "rnn":
        from training.sentiment import run
    else:
        from training.textgen import run
    return run


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    kinds = RECIPES if args.model == "all" else (args.model,)
    if args.model == "all" and (args.data or args.name):
        print("deepserve-train: --data and --name need a single model, not `all`", file=sys.stderr)
        return 2
    if args.model == STEP:
        from training.textgen_step import add_to_entry

        entry = args.output / (args.name or "textgen_transformer")
        export = add_to_entry(entry)
        print(f"{STEP}: wrote {export.path} (max |diff| vs model.onnx {export.max_abs_diff:.3g}); updated "
              f"{entry / 'config.yaml'} and {entry / 'model_card.json'}")  # fmt: skip
        return 0
    args.output.mkdir(parents=True, exist_ok=True)
    for kind in kinds:
        settings = _settings(kind, args)
        log.info("training %s: %s", kind, {k: v for k, v in dataclasses.asdict(settings).items() if v is not None})
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="deepserve-train-") as workdir:
            entry = _runner(kind)(settings, args.output, Path(workdir))
        print(f"{kind}: wrote {entry} in {time.monotonic() - start:.0f}s (see {entry / 'model_card.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
