"""Typed Python client for the task APIs: ImageClassifier, SentimentAnalyzer, TextGenerator.

    with TaskClient("127.0.0.1:8001") as client:
        client.classify([Path("digit.png").read_bytes()], top_k=3)
        client.analyze(["What a wonderful day"])
        stream = client.generate("Once upon a time", max_new_tokens=32, seed=7)
        for text in stream:
            print(text, end="", flush=True)
        print(stream.summary.finish_reason)

`target` is whatever gRPC accepts: `host:port`, or `dns:///host:port` to spread calls over every address
the name resolves to (the channel balances round-robin). Failures raise `ClientError` carrying the gRPC
status code and the server's message.

A server with TLS and bearer tokens (docs/security.md):

    TaskClient("infer.example.com:8001", tls_ca_file="ca.pem", token=os.environ["DEEPSERVE_TOKEN"])

`tls_ca_file` (and/or a client certificate, `tls_cert_file` + `tls_key_file`, for mutual TLS) makes the
channel TLS; `token` is sent as `authorization: Bearer <token>` metadata with every call. gRPC's own call
credentials refuse plaintext channels, so the token goes as per-call metadata, which also works against a
plaintext server on this machine (development); to any other host without TLS it warns (`UserWarning`).
"""

from __future__ import annotations

import ipaddress
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import grpc

from service.grpc._generated.deepserve.v1 import image_classifier_pb2 as ic
from service.grpc._generated.deepserve.v1 import image_classifier_pb2_grpc as ic_grpc
from service.grpc._generated.deepserve.v1 import sentiment_analyzer_pb2 as sa
from service.grpc._generated.deepserve.v1 import sentiment_analyzer_pb2_grpc as sa_grpc
from service.grpc._generated.deepserve.v1 import text_generator_pb2 as tg
from service.grpc._generated.deepserve.v1 import text_generator_pb2_grpc as tg_grpc

DEFAULT_TARGET = "127.0.0.1:8001"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class ClientError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class LabelScore:
    label: str
    probability: float
    index: int


@dataclass(frozen=True, slots=True)
class Classifications:
    model: str
    version: str
    results: list[list[LabelScore]]
    """Per image, the top-k labels, most probable first."""


@dataclass(frozen=True, slots=True)
class Sentiment:
    label: str
    probability: float
    scores: dict[str, float]
    tokens: int
    truncated: bool


@dataclass(frozen=True, slots=True)
class Sentiments:
    model: str
    version: str
    results: list[Sentiment]


@dataclass(frozen=True, slots=True)
class GenerationSummary:
    finish_reason: str
    """length, stop, eos, context or cancelled."""
    prompt_tokens: int
    generated_tokens: int
    prompt_truncated: bool
    model: str
    version: str


class GenerationStream:
    """Iterate for the text pieces as they arrive; `summary` is set once the stream has ended."""

    def __init__(self, call: grpc.Call) -> None:
        self._call = call
        self.summary: GenerationSummary | None = None

    def __iter__(self) -> Iterator[str]:
        try:
            for message in self._call:  # type: ignore[attr-defined]
                if message.WhichOneof("event") == "delta":
                    yield message.delta.text
                else:
                    f = message.finished
                    reason = tg.FinishReason.Name(f.finish_reason).removeprefix("FINISH_REASON_").lower()
                    self.summary = GenerationSummary(
                        reason, f.prompt_tokens, f.generated_tokens, f.prompt_truncated, f.model_name, f.model_version
                    )
        except grpc.RpcError as err:
            raise _client_error(err) from None

    def text(self) -> str:
        """The whole generated text (waits for the end)."""
        return "".join(self)

    def cancel(self) -> None:
        self._call.cancel()


class TaskClient:
    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        timeout: float | None = 60.0,
        *,
        token: str | None = None,
        tls_ca_file: str | Path | None = None,
        tls_cert_file: str | Path | None = None,
        tls_key_file: str | Path | None = None,
    ) -> None:
        """`timeout` (seconds) applies to each call; None waits as long as it takes. `token`: the bearer token
        for a server with --auth-tokens-file. `tls_ca_file`: PEM CA that signed the server's certificate (the
        system's roots when only a client certificate is given); `tls_cert_file` + `tls_key_file`: the client
        certificate and key, for mutual TLS. Files that cannot be read raise OSError; bad arguments ValueError."""
        self.target = target
        self.timeout = timeout
        self._metadata = _bearer(token)
        options = [
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        credentials = channel_credentials(tls_ca_file, tls_cert_file, tls_key_file)
        if credentials is not None:
            self.channel = grpc.secure_channel(target, credentials, options=options)
        else:
            if token is not None and not is_local(target):
                warnings.warn(
                    f"sending the bearer token to {target} without TLS, readable on the network; pass the server's "
                    "CA (tls_ca_file, --tls-ca-file) to use TLS",
                    stacklevel=2,
                )
            self.channel = grpc.insecure_channel(target, options=options)
        self._classifier = ic_grpc.ImageClassifierStub(self.channel)
        self._sentiment = sa_grpc.SentimentAnalyzerStub(self.channel)
        self._generator = tg_grpc.TextGeneratorStub(self.channel)

    def classify(self, images: Sequence[bytes], top_k: int = 0, model: str = "", version: str = "") -> Classifications:
        request = ic.ClassifyRequest(images=images, top_k=top_k, model_name=model, model_version=version)
        try:
            response = self._classifier.Classify(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise _client_error(err) from None
        results = [[LabelScore(s.label, s.probability, s.index) for s in c.labels] for c in response.classifications]
        return Classifications(response.model_name, response.model_version, results)

    def analyze(self, texts: Sequence[str], model: str = "", version: str = "") -> Sentiments:
        request = sa.AnalyzeRequest(texts=texts, model_name=model, model_version=version)
        try:
            response = self._sentiment.Analyze(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise _client_error(err) from None
        results = [
            Sentiment(s.label, s.probability, {c.label: c.probability for c in s.scores}, s.tokens, s.truncated)
            for s in response.sentiments
        ]
        return Sentiments(response.model_name, response.model_version, results)

    def generate(
        self,
        prompt: str,
        *,
        max_new_tokens: int = 0,
        temperature: float | None = None,
        top_k: int = 0,
        top_p: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] = (),
        model: str = "",
        version: str = "",
        repetition_penalty: float | None = None,
    ) -> GenerationStream:
        """Starts generating at once; iterate the result for the text as it is produced."""
        request = tg.GenerateRequest(
            prompt=prompt,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            stop=stop,
            model_name=model,
            model_version=version,
            repetition_penalty=repetition_penalty,
        )
        return GenerationStream(self._generator.Generate(request, timeout=self.timeout, metadata=self._metadata))

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> TaskClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def channel_credentials(
    ca_file: str | Path | None, cert_file: str | Path | None, key_file: str | Path | None
) -> grpc.ChannelCredentials | None:
    """TLS credentials from PEM files, or None (plaintext) when no file is given."""
    if ca_file is None and cert_file is None and key_file is None:
        return None
    if (cert_file is None) != (key_file is None):
        raise ValueError("a client certificate needs its key: pass both the certificate and key files, or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file), private_key=_read(key_file), certificate_chain=_read(cert_file)
    )


def is_local(target: str) -> bool:
    """Whether `target` is this machine (loopback or a Unix socket), where plaintext does not cross a network."""
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    address = target.split(":///", 1)[1] if ":///" in target else target
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 or address.startswith("[") else address
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bearer(token: str | None) -> tuple[tuple[str, str], ...] | None:
    if token is None:
        return None
    token = token.strip()
    if not token or " " in token or not (token.isascii() and token.isprintable()):
        raise ValueError("the token must be one word of printable ASCII (no spaces or line breaks)")
    return (("authorization", f"Bearer {token}"),)


def _read(path: str | Path | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


def _client_error(err: grpc.RpcError) -> ClientError:
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    return ClientError(code, details or code.name.lower())
