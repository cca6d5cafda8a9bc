"""The committed digits_cnn on the evaluation pages (training/eval/digit_pages), through a real server: the
ImageClassifier task API over gRPC, as a user sending their own photos and scans would call it."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.client import TaskClient
from tests.conftest import RunningServer
from tests.integration.tasks.conftest import serve_committed

PAGES = Path(__file__).resolve().parents[3] / "training" / "eval" / "digit_pages.csv"


@pytest.fixture(scope="module")
def digits_server() -> Iterator[RunningServer]:
    yield from serve_committed("digits_cnn")


def test_digits_anywhere_on_a_page(digits_server: RunningServer) -> None:
    with PAGES.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    images = [(PAGES.parent / row["file"]).read_bytes() for row in rows]
    with TaskClient(digits_server.address, timeout=60) as client:
        answers = [
            best[0].label
            for start in range(0, len(images), 32)
            for best in client.classify(images[start : start + 32], top_k=1, model="digits_cnn").results
        ]
    right = [answer == row["label"] for answer, row in zip(answers, rows, strict=True)]
    wrong = Counter(
        f"{row['kind']}/{row['polarity']}/{row['format']}" for row, ok in zip(rows, right, strict=True) if not ok
    )
    assert len(rows) >= 100
    assert sum(right) / len(rows) >= 0.95, wrong
