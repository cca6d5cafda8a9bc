"""What the TextGenerator shows outside its stream: generation metrics for generation models only, and its health
and reflection entries, serving only while a model serves text generation."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from service.client import ClientError, TaskClient
from tests.conftest import RunningServer, start_server
from tests.integration.tasks.calls import PROMPT
from tests.tiny_task_models import write_quadrants


def test_generation_metrics(task_server: RunningServer, client: TaskClient) -> None:
    registry = task_server.app.metrics.registry
    labels = {"model": "tiny_lm", "version": "1"}
    tokens = registry.get_sample_value("deepserve_generation_tokens_total", labels) or 0
    ttft = registry.get_sample_value("deepserve_generation_time_to_first_token_seconds_count", labels) or 0
    client.generate(PROMPT, max_new_tokens=7, temperature=0.0, model="tiny_lm").text()
    assert registry.get_sample_value("deepserve_generation_tokens_total", labels) == tokens + 7
    assert registry.get_sample_value("deepserve_generation_time_to_first_token_seconds_count", labels) == ttft + 1
    assert registry.get_sample_value("deepserve_generation_inter_token_latency_seconds_count", labels)


def test_generation_metrics_only_for_generation_models(task_server: RunningServer) -> None:
    """Scraped over HTTP: every loaded model has its serving metrics; only text_generation models have the
    generation ones (no series of zeros for the others)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{task_server.app.metrics_port}/metrics", timeout=5) as response:
        families = list(text_string_to_metric_families(response.read().decode()))
    models = lambda prefix: {  # noqa: E731
        s.labels["model"] for f in families if f.name.startswith(prefix) for s in f.samples if "model" in s.labels
    }
    assert models("deepserve_queue_capacity") == {"quadrants", "tiny_sentiment", "tiny_lm", "slow_lm"}
    assert models("deepserve_generation_") == {"tiny_lm", "slow_lm"}
    for family in ("tokens", "active_sequences", "waiting_sequences", "time_to_first_token_seconds"):
        assert models(f"deepserve_generation_{family}") == {"tiny_lm", "slow_lm"}, family


def test_health_and_reflection_list_the_task_services(task_server: RunningServer) -> None:
    with grpc.insecure_channel(task_server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("deepserve.v1.TextGenerator", "deepserve.v1.ImageClassifier", "deepserve.v1.SentimentAnalyzer"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
            assert status == health_pb2.HealthCheckResponse.SERVING, service
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answer = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in answer.list_services_response.service}
    assert {"deepserve.v1.TextGenerator", "deepserve.v1.ImageClassifier", "deepserve.v1.SentimentAnalyzer"} <= names


def test_task_services_are_not_serving_without_their_models(tmp_path: Path) -> None:
    running = start_server(write_quadrants(tmp_path).parent)
    try:
        with grpc.insecure_channel(running.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            check = lambda name: health.Check(health_pb2.HealthCheckRequest(service=name)).status  # noqa: E731
            assert check("deepserve.v1.ImageClassifier") == health_pb2.HealthCheckResponse.SERVING
            assert check("deepserve.v1.TextGenerator") == health_pb2.HealthCheckResponse.NOT_SERVING
        with TaskClient(running.address) as client, pytest.raises(ClientError) as caught:
            client.generate(PROMPT).text()
        assert caught.value.code is grpc.StatusCode.NOT_FOUND
        assert "no loaded model serves the task 'text_generation'" in caught.value.message
    finally:
        running.stop()
