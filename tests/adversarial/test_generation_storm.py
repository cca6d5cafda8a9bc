"""A hostile mix of Generate streams against the committed textgen_transformer, whose lanes run in a child process
on the CPU (`generation.engine: auto`): streams read to the end, streams cancelled after a few tokens, deadlines
that pass before the first token or mid-stream, and clients that stop reading for a while, 40 at a time. Every
call ends as its client meant it to, the server counts each as its client saw it, nothing stays in flight, the
engine child stops computing, the next request is served, and the server logs no error (a status sent into a call
that gRPC had just ended by its deadline was logged as an ERROR with a traceback: `errors.gone_by_deadline`)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from pathlib import Path

import grpc

from bench.load import descendants
from service.grpc._generated.deepserve.v1 import text_generator_pb2 as tg
from service.grpc._generated.deepserve.v1 import text_generator_pb2_grpc as tg_grpc
from tests.adversarial.clients import requests_counted
from tests.ops.servers import Server, metric
from tests.waiting import eventually

MODEL = "textgen_transformer"
KINDS = ("full", "cancel", "deadline", "stall")


async def storm(address: str, calls: int, at_once: int, seed: int = 7) -> Counter[tuple[str, str]]:
    """(kind, status the client saw) of each call."""
    rng = random.Random(seed)
    outcomes: Counter[tuple[str, str]] = Counter()
    gate = asyncio.Semaphore(at_once)

    async def one(stub: tg_grpc.TextGeneratorStub, i: int) -> None:
        kind = rng.choice(KINDS)
        request = tg.GenerateRequest(
            prompt=rng.choice(["def f(x):", "import os\n", "class A:"]) * rng.randint(1, 30),
            # a call to time out or cancel asks for more than it gets before that, so that it does not end OK on
            # the server just as the client gives up (the server could not count it as the client saw it)
            max_new_tokens=rng.randint(1, 200) if kind in ("full", "stall") else rng.randint(200, 250),
            model_name=MODEL,
            seed=i,
        )
        cancel_after = rng.randint(1, 8)
        async with gate:
            call = stub.Generate(request, timeout=rng.uniform(0.005, 0.3) if kind == "deadline" else 120)
            code, got = "OK", 0
            try:
                async for _ in call:
                    got += 1
                    if kind == "cancel" and got == cancel_after:
                        # False when the call had already ended: its last message was this one (a short text)
                        code = "CANCELLED" if call.cancel() else "OK"
                        break
                    if kind == "stall" and got == 2:
                        await asyncio.sleep(rng.uniform(0.2, 1.0))  # reads nothing for a while
            except grpc.aio.AioRpcError as err:
                code = err.code().name
            outcomes[kind, code] += 1

    async with grpc.aio.insecure_channel(address) as channel:
        stub = tg_grpc.TextGeneratorStub(channel)
        await asyncio.gather(*(one(stub, i) for i in range(calls)))
    return outcomes


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def errors_logged(server: Server, since: int) -> list[str]:
    """Lines of the server's log past byte `since` at level error or critical."""
    lines = server.log_path.read_bytes()[since:].decode(errors="replace").splitlines()
    found = []
    for line in lines:
        try:
            level = json.loads(line).get("level")
        except ValueError:
            level = "error" if "Traceback" in line else None
        if level in ("error", "critical"):
            found.append(line[:600])
    return found


def test_a_storm_of_cancelled_timed_out_and_stalled_streams_leaves_the_server_clean(committed: Server) -> None:
    assert committed.proc is not None
    children = descendants(committed.proc.pid)
    assert len(children) == 1  # the lane's engine process (engine: auto, on the CPU)
    log_start = committed.log_path.stat().st_size
    before = requests_counted(committed, model=MODEL, api="generate")

    outcomes = asyncio.run(storm(committed.address, 240, 40))

    seen = Counter(code for _, code in outcomes.elements())
    assert set(seen) <= {"OK", "CANCELLED", "DEADLINE_EXCEEDED"}, outcomes
    assert {kind for kind, _ in outcomes} == set(KINDS), outcomes
    assert outcomes["deadline", "DEADLINE_EXCEEDED"] > 0 and outcomes["cancel", "CANCELLED"] > 0, outcomes
    assert all(code == "OK" for kind, code in outcomes if kind in ("full", "stall")), outcomes
    labels = {"model": MODEL, "version": "1"}
    gauges = ("deepserve_inflight_requests", "deepserve_generation_active_sequences")
    assert eventually(lambda: all(metric(committed.scrape(), g, **labels) == 0 for g in gauges), 30)
    counted = requests_counted(committed, model=MODEL, api="generate") - before
    assert counted["OK"] == seen["OK"], (counted, seen)
    # gRPC core ends a call whose deadline passes before the server picks it up without deepserve seeing it, and a
    # client whose own timer fires well before the server's copy of the deadline resets the stream (CANCELLED)
    ended = counted["CANCELLED"] + counted["DEADLINE_EXCEEDED"]
    assert seen["CANCELLED"] <= ended <= seen["CANCELLED"] + seen["DEADLINE_EXCEEDED"], (counted, seen)
    assert set(counted) <= {"OK", "CANCELLED", "DEADLINE_EXCEEDED"}, counted

    assert descendants(committed.proc.pid) == children  # the child lived through it
    child = next(iter(children))
    spent = cpu_seconds(child)
    time.sleep(1.0)
    assert cpu_seconds(child) - spent < 0.1  # nothing computed for the calls that ended (a busy child: ~1 s)

    async def fresh() -> int:
        async with grpc.aio.insecure_channel(committed.address) as channel:
            stub = tg_grpc.TextGeneratorStub(channel)
            request = tg.GenerateRequest(prompt="def g():", max_new_tokens=20, model_name=MODEL, seed=1)
            return sum([1 async for event in stub.Generate(request, timeout=60) if event.HasField("finished")])

    assert asyncio.run(fresh()) == 1
    assert errors_logged(committed, log_start) == []
