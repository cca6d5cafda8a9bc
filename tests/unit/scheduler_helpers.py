"""What the generation scheduler tests share: a letter detokenizer, a recording forward function, and short ways to
make a scheduler, submit a prompt and collect its stream (no ONNX Runtime, no tokenizer)."""

from __future__ import annotations

import threading
import time

import numpy as np

from service.batching.decoders import RecomputeDecoder
from service.batching.scheduler import GenerationScheduler, GenerationStream, SchedulerConfig
from service.batching.sequences import Finished, TextChunk
from service.types import SamplingParams

VOCAB = 26
GREEDY = SamplingParams(temperature=0.0)


class Letters:
    """Detokenizer: token i is the letter chr(97 + i); stops when `stop` appears (the text ends before it)."""

    def __init__(self, stop: str = "") -> None:
        self.text, self.sent, self.stop = "", 0, stop

    def add(self, token_id: int) -> tuple[str, bool]:
        self.text += chr(97 + token_id)
        end, stopped = len(self.text), False
        if self.stop and self.stop in self.text:
            end, stopped = self.text.index(self.stop), True
        delta, self.sent = self.text[self.sent : end], max(self.sent, end)
        return delta, stopped

    def flush(self) -> str:
        delta, self.sent = self.text[self.sent :], len(self.text)
        return delta


class Recorder:
    """forward(): next token = current token + 1 (mod VOCAB); records every batch it is given."""

    def __init__(self, delay: float = 0.0, table: np.ndarray | None = None) -> None:
        self.delay = delay
        self.table = table
        self.batches: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.threads: set[str] = set()

    def __call__(self, token_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.batches.append(token_ids.copy())
        self.masks.append(mask.copy())
        self.threads.add(threading.current_thread().name)
        if self.delay:
            time.sleep(self.delay)
        if self.table is not None:
            return self.table[token_ids]
        logits = np.zeros((*token_ids.shape, VOCAB), dtype=np.float32)
        np.put_along_axis(logits, ((token_ids + 1) % VOCAB)[..., None], 10.0, axis=-1)
        return logits


def make(forward: Recorder, start: bool = True, **config: object) -> GenerationScheduler:
    settings = {"context_length": 64, "max_active_sequences": 4, "max_waiting": 8, **config}
    scheduler = GenerationScheduler("test", [RecomputeDecoder(forward)], SchedulerConfig(**settings))  # type: ignore[arg-type]
    if start:
        scheduler.start()
    return scheduler


async def collect(stream: GenerationStream) -> tuple[str, Finished]:
    text, last = "", None
    async for event in stream:
        if isinstance(event, TextChunk):
            text += event.text
        else:
            last = event
    assert isinstance(last, Finished)
    return text, last


def submit(scheduler: GenerationScheduler, prompt: list[int], max_new: int, **kwargs: object) -> GenerationStream:
    sampling = kwargs.pop("sampling", GREEDY)
    return scheduler.submit(prompt, max_new, sampling, Letters(str(kwargs.pop("stop", ""))), **kwargs)  # type: ignore[arg-type]
