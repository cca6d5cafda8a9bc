"""`deepserve-train {cnn,rnn,transformer,all}`: train, export to ONNX, verify, write models/<name>/."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
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
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="transformer: continue training a trained entry (its tokenizer and model.onnx weights); "
        "--epochs then counts the continued passes",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and the summary")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also TensorFlow's, absl's and tf2onnx's own log lines"
    )
    return parser


NOISY_LOGGERS = ("tensorflow", "absl", "tf2onnx", "h5py")


def _import_tensorflow(verbose: bool) -> None:
    """Import TensorFlow, by default without its noise: the C++ lines it prints while importing (absl, oneDNN;
    TF_CPP_MIN_LOG_LEVEL does not reach them, so standard error goes to /dev/null during the import), later C++ lines
    (CPU features, GPUs, a harmless `NodeDef mentions attribute` error) and absl's and tf2onnx's INFO lines.
    An explicit TF_CPP_MIN_LOG_LEVEL wins; a failed import still raises."""
    if verbose:
        importlib.import_module("tensorflow")
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            importlib.import_module("tensorflow")
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


def _last_time(entry: Path) -> str:
    """How long the model in `entry` took to train, from its model card, as a rough estimate for this run."""
    try:
        seconds = json.loads((entry / "model_card.json").read_text())["training"]["seconds"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return f"; its model card says training took {_duration(seconds)} last time"


def _settings(kind: str, args: argparse.Namespace):
    if kind == "cnn":
        from training.digits import DigitsSettings as Settings
    elif kind == "rnn":
        from training.sentiment import SentimentSettings as Settings
    else:
        from training.textgen import TextgenSettings as Settings
    values = {"epochs": args.epochs, "name": args.name, "seed": args.seed, "limit": args.limit}
    if kind == "transformer" and args.init_from is not None:
        values |= {"init_from": args.init_from, "continue_epochs": values.pop("epochs")}
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
        print(
            f"{STEP}: wrote {export.path} (max |diff| vs model.onnx {export.max_abs_diff:.3g}); updated "
            f"{entry / 'config.yaml'} and {entry / 'model_card.json'}"
        )
        return 0
    try:
        _import_tensorflow(args.verbose)
    except ModuleNotFoundError as err:
        print(
            f"deepserve-train: {err.name} is missing; install the train extra: make install-train "
            "(or .venv/bin/pip install -e '.[dev,train]')",
            file=sys.stderr,
        )
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    first = time.monotonic()
    for i, kind in enumerate(kinds, 1):
        settings = _settings(kind, args)
        estimate = "" if args.epochs or args.limit or args.data else _last_time(args.output / settings.name)
        print(f"[{i}/{len(kinds)}] {kind}: training {args.output / settings.name}{estimate}", flush=True)
        log.info("training %s: %s", kind, {k: v for k, v in dataclasses.asdict(settings).items() if v is not None})
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="deepserve-train-") as workdir:
            entry = _runner(kind)(settings, args.output, Path(workdir))
        print(
            f"[{i}/{len(kinds)}] {kind}: wrote {entry} in {_duration(time.monotonic() - start)} "
            f"(see {entry / 'model_card.json'})",
            flush=True,
        )
    if len(kinds) > 1:
        print(f"trained {len(kinds)} models in {_duration(time.monotonic() - first)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
