"""Scale-out: three `deepserve serve` processes behind one client channel that balances round robin over
all three addresses (what `dns:///<headless service>` gives a client in Kubernetes).

Each replica's own /metrics must show a fair share of the traffic, and stopping one replica gracefully
(SIGTERM, as the kubelet does) must fail no request of a client that keeps sending.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from tests.ops.servers import Server, add_sub_request, check_add_sub, metric, v2_stub
from tests.tiny_models import make_repository

pytestmark = pytest.mark.ops

REPLICAS = 3
REQUESTS = 300
# The client side of the deployment guide: round robin over every resolved address, and gRPC client
# health checking so a replica that reports NOT_SERVING (draining) leaves the rotation at once.
SERVICE_CONFIG = {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    root = tmp_path_factory.mktemp("scale_out")
    repo = make_repository(root / "models", ("add_sub",))
    servers = [Server(repo, root / f"replica{i}.log", grace_seconds=5).start() for i in range(REPLICAS)]
    try:
        for server in servers:
            server.wait_serving()
        yield servers
    finally:
        for server in servers:
            server.kill()


@pytest.fixture(scope="module")
def channel(replicas: list[Server]) -> Iterator[grpc.Channel]:
    target = "ipv4:" + ",".join(s.address for s in replicas)
    options = [("grpc.service_config", json.dumps(SERVICE_CONFIG))]
    with grpc.insecure_channel(target, options=options) as ch:
        yield ch


def ok_requests(server: Server) -> float:
    return metric(server.scrape(), "deepserve_requests_total", model="add_sub", api="v2", code="OK")


def wait_all_connected(stub, replicas: list[Server], timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    """Round robin only uses subchannels that are READY: send until every replica has answered one."""
    deadline = time.monotonic() + timeout
    while not all(ok_requests(s) > 0 for s in replicas):
        assert time.monotonic() < deadline, "the client never reached every replica"
        check_add_sub(stub.ModelInfer(add_sub_request(1.0), timeout=10), 1.0)


def test_round_robin_spreads_requests_evenly(replicas: list[Server], channel: grpc.Channel) -> None:
    stub = v2_stub(channel)
    wait_all_connected(stub, replicas)
    before = [ok_requests(s) for s in replicas]

    for i in range(REQUESTS):
        check_add_sub(stub.ModelInfer(add_sub_request(float(i)), timeout=10), float(i))

    shares = [ok_requests(s) - b for s, b in zip(replicas, before, strict=True)]
    assert sum(shares) == REQUESTS, f"replicas counted {shares}, expected {REQUESTS} in all"
    fair = REQUESTS / REPLICAS
    for i, share in enumerate(shares):
        assert 0.8 * fair <= share <= 1.2 * fair, f"replica {i} served {share} of {REQUESTS}: shares {shares}"


class Sender:
    """Client threads that send until told to stop, counting successes and failures."""

    def __init__(self, stub, threads: int = 8) -> None:  # type: ignore[no-untyped-def]
        self.stub = stub
        self.ok = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(threads)]

    def _run(self, t: int) -> None:
        i = 0
        while not self.stop.is_set():
            value = float(t * 1_000_000 + i)
            try:
                check_add_sub(self.stub.ModelInfer(add_sub_request(value), timeout=10), value)
                with self.lock:
                    self.ok += 1
            except grpc.RpcError as err:
                with self.lock:
                    self.failures.append(f"{err.code().name}: {err.details()}")
            i += 1

    def __enter__(self) -> Sender:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        start = self.ok
        while self.ok - start < count:
            assert time.monotonic() < deadline, f"only {self.ok - start} of {count} requests in {timeout}s"
            time.sleep(0.05)


def test_graceful_stop_of_one_replica_fails_no_request(replicas: list[Server], channel: grpc.Channel) -> None:
    stub = v2_stub(channel)
    wait_all_connected(stub, replicas)
    leaving, staying = replicas[0], replicas[1:]

    with Sender(stub) as sender:
        sender.wait_for(200)
        code = leaving.terminate()
        after_stop = [ok_requests(s) for s in staying]
        sender.wait_for(200)
        sent = sender.ok

    assert code == 0, f"replica exited {code} after SIGTERM:\n{leaving.log()}"
    assert not sender.failures, f"{len(sender.failures)} of {sent} requests failed: {sender.failures[:5]}"
    served_after = [ok_requests(s) - a for s, a in zip(staying, after_stop, strict=True)]
    assert all(n > 0 for n in served_after), f"the remaining replicas served {served_after} after the stop"
    log = leaving.log()  # it went through the drain path, not a crash
    assert "draining" in log and "stopped" in log, log


def test_rolling_restart_fails_no_request(replicas: list[Server], channel: grpc.Channel) -> None:
    """Each replica in turn drains, exits and comes back on its address, as in a rolling update, while
    the client keeps sending: every request succeeds and each restarted replica takes traffic again."""
    stub = v2_stub(channel)
    with Sender(stub) as sender:
        sender.wait_for(100)
        for server in replicas:
            if server.proc is not None and server.proc.poll() is None:
                assert server.terminate() == 0, server.log()
            server.start().wait_serving()
            before = ok_requests(server)
            wait_until(lambda s=server, b=before: ok_requests(s) > b, 30, f"{server.address} got no traffic back")
            sender.wait_for(100)
        sent = sender.ok
    assert not sender.failures, f"{len(sender.failures)} of {sent} requests failed: {sender.failures[:5]}"


def wait_until(condition, timeout: float, message: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.1)
