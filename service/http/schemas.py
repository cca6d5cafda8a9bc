"""The request and response schemas of the HTTP port's routes (`components.schemas` of `/openapi.json`): every
object closed, as the handlers refuse unknown fields; the tests check every real answer against them."""

from __future__ import annotations

from typing import Any

from service.http.fields import MAX_TIMEOUT_MS
from service.types import FinishReason, ModelState

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: Schema, example: Any = None) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {"application/json": content}


TIMEOUT_DESCRIPTION = (
    "milliseconds this request may take, as a gRPC deadline: its time in the queue, and a generation to its end "
    "(504 when it passes; in a stream, an `error` event after the text so far)"
)
TIMEOUT_SCHEMA: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_MS}

DATATYPES = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]
PARAMETERS: Schema = {"type": "object", "additionalProperties": {"type": ["string", "number", "integer", "boolean"]}}
TENSOR_DATA: Schema = {
    "description": "row-major values, flat or nested; BYTES as strings",
    "type": ["array", "number", "integer", "boolean", "string"],
}


def _object(properties: dict[str, Schema], required: list[str], description: str = "") -> Schema:
    schema: Schema = {"type": "object", "properties": properties, "required": required}
    if description:
        schema["description"] = description
    return schema


STRING, INTEGER, NUMBER, BOOLEAN = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
COUNT = {"type": "integer", "minimum": 0}
MODEL_NAME = {"model_name": STRING, "model_version": STRING}
STAT_KINDS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
FINISHED: dict[str, Schema] = {
    "finish_reason": {"type": "string", "enum": [r.value for r in FinishReason]},
    "prompt_tokens": COUNT,
    "generated_tokens": COUNT,
    "prompt_truncated": BOOLEAN,
    **MODEL_NAME,
}


def _tensor(description: str) -> Schema:
    """A V2 tensor in a request or a response: the same fields either way."""
    return _object(
        {
            "name": STRING,
            "shape": {"type": "array", "items": COUNT},
            "datatype": {"type": "string", "enum": DATATYPES},
            "parameters": PARAMETERS,
            "data": TENSOR_DATA,
        },
        ["name", "shape", "datatype"],
        description,
    )


SCHEMAS: dict[str, Schema] = {
    "Error": _object({"error": STRING}, ["error"], "every error's body, with the status from the one HTTP table"),
    "Live": _object({"live": BOOLEAN}, ["live"]),
    "Ready": _object({"ready": BOOLEAN}, ["ready"]),
    "ModelReady": _object({"name": STRING, "ready": BOOLEAN}, ["name", "ready"]),
    "ServerMetadata": _object(
        {"name": STRING, "version": STRING, "extensions": {"type": "array", "items": STRING}},
        ["name", "version", "extensions"],
    ),
    "TensorMetadata": _object(
        {
            "name": STRING,
            "datatype": {"type": "string", "enum": DATATYPES},
            "shape": {"type": "array", "items": INTEGER},
        },
        ["name", "datatype", "shape"],
    ),
    "ModelMetadata": _object(
        {
            "name": STRING,
            "versions": {"type": "array", "items": STRING},
            "platform": STRING,
            "inputs": {"type": "array", "items": ref("TensorMetadata")},
            "outputs": {"type": "array", "items": ref("TensorMetadata")},
        },
        ["name", "versions", "platform", "inputs", "outputs"],
    ),
    "ConfigTensor": _object(
        {
            "name": STRING,
            "data_type": {"type": "string", "enum": [f"TYPE_{d}" for d in DATATYPES if d != "BYTES"] + ["TYPE_STRING"]},
            "dims": {"type": "array", "items": INTEGER},
        },
        ["name", "data_type", "dims"],
    ),
    "ModelConfig": _object(
        {
            "name": STRING,
            "platform": STRING,
            "backend": STRING,
            "version_policy": _object(
                {"specific": _object({"versions": {"type": "array", "items": INTEGER}}, ["versions"])}, ["specific"]
            ),
            "max_batch_size": COUNT,
            "input": {"type": "array", "items": ref("ConfigTensor")},
            "output": {"type": "array", "items": ref("ConfigTensor")},
            "instance_group": {
                "type": "array",
                "items": _object(
                    {"name": STRING, "count": COUNT, "kind": {"type": "string", "enum": ["KIND_CPU"]}},
                    ["name", "count", "kind"],
                ),
            },
            "default_model_filename": STRING,
            "dynamic_batching": _object(
                {
                    "preferred_batch_size": {"type": "array", "items": INTEGER},
                    "max_queue_delay_microseconds": COUNT,
                    "default_queue_policy": _object(
                        {
                            "max_queue_size": COUNT,
                            "default_timeout_microseconds": COUNT,
                            "allow_timeout_override": BOOLEAN,
                        },
                        ["max_queue_size"],
                    ),
                },
                ["preferred_batch_size", "max_queue_delay_microseconds", "default_queue_policy"],
                "present when the model batches dynamically",
            ),
        },
        [
            "name",
            "platform",
            "backend",
            "version_policy",
            "max_batch_size",
            "input",
            "output",
            "instance_group",
            "default_model_filename",
        ],
        "Triton's model configuration (the JSON of inference.ModelConfig)",
    ),
    "InferInput": _tensor("`data`, or the parameter `binary_data_size` (binary data extension)"),
    "InferRequestedOutput": _object(
        {"name": STRING, "parameters": PARAMETERS},
        ["name"],
        "parameter `binary_data`: answer this output as binary data",
    ),
    "InferRequest": _object(
        {
            "id": STRING,
            "parameters": PARAMETERS,
            "inputs": {"type": "array", "items": ref("InferInput"), "minItems": 1},
            "outputs": {"type": "array", "items": ref("InferRequestedOutput")},
        },
        ["inputs"],
        "parameters: `timeout` (µs in the queue at most), `binary_data_output`",
    ),
    "InferOutput": _tensor("`data` (flat, row-major), or the parameter `binary_data_size`"),
    "InferResponse": _object(
        {**MODEL_NAME, "id": STRING, "outputs": {"type": "array", "items": ref("InferOutput")}},
        ["model_name", "model_version", "outputs"],
    ),
    "Label": _object({"label": STRING, "probability": NUMBER, "index": COUNT}, ["label", "probability", "index"]),
    "ClassifyResponse": _object(
        {
            **MODEL_NAME,
            "classifications": {
                "type": "array",
                "items": _object({"labels": {"type": "array", "items": ref("Label")}}, ["labels"]),
            },
        },
        ["model_name", "model_version", "classifications"],
        "one entry per image, in order",
    ),
    "SentimentRequest": _object(
        {
            "texts": {"type": "array", "items": STRING, "minItems": 1},
            "model": {**STRING, "description": "default: the server's sentiment model"},
            "version": {**STRING, "description": "default: the newest loaded"},
            "timeout_ms": {**TIMEOUT_SCHEMA, "description": TIMEOUT_DESCRIPTION},
        },
        ["texts"],
    ),
    "Sentiment": _object(
        {
            "label": STRING,
            "probability": NUMBER,
            "tokens": COUNT,
            "truncated": BOOLEAN,
            "scores": {
                "type": "array",
                "items": _object({"label": STRING, "probability": NUMBER}, ["label", "probability"]),
            },
        },
        ["label", "probability", "tokens", "truncated", "scores"],
    ),
    "SentimentResponse": _object(
        {**MODEL_NAME, "sentiments": {"type": "array", "items": ref("Sentiment")}},
        ["model_name", "model_version", "sentiments"],
        "one entry per text, in order",
    ),
    "GenerateRequest": _object(
        {
            "prompt": {"type": "string", "minLength": 1, "description": "longer than the context: its last tokens"},
            "max_new_tokens": {**COUNT, "description": "0 (default): the model's default"},
            "temperature": {
                "type": "number",
                "minimum": 0,
                "maximum": 10,
                "description": "0: greedy; default: the model's (generation.default_temperature)",
            },
            "top_k": {**COUNT, "description": "sample among the k most probable tokens; 0: no limit"},
            "top_p": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 1,
                "description": "nucleus sampling; default: the model's (generation.default_top_p)",
            },
            "seed": {**COUNT, "description": "the same seed, prompt and parameters give the same text"},
            "repetition_penalty": {
                "type": "number",
                "minimum": 1,
                "maximum": 10,
                "description": "tokens already generated get their logits divided by it (multiplied when negative); "
                "1: none; default: the model's (generation.default_repetition_penalty)",
            },
            "stop": {
                "type": ["string", "array"],
                "items": STRING,
                "maxItems": 8,
                "description": "stop when the text contains one of these (not returned)",
            },
            "model": {**STRING, "description": "default: the server's text_generation model"},
            "version": {**STRING, "description": "default: the newest loaded"},
            "stream": {"type": "boolean", "default": False, "description": "answer with Server-Sent Events"},
            "timeout_ms": {**TIMEOUT_SCHEMA, "description": TIMEOUT_DESCRIPTION},
        },
        ["prompt"],
    ),
    "RepositoryIndexRequest": _object(
        {"ready": {"type": "boolean", "default": False, "description": "only the versions that serve"}}, []
    ),
    "RepositoryIndexEntry": _object(
        {
            "name": STRING,
            "version": STRING,
            "state": {"type": "string", "enum": [s.value for s in ModelState]},
            "reason": STRING,
        },
        ["name", "version", "state", "reason"],
    ),
    "RepositoryModelRequest": _object({"parameters": PARAMETERS}, []),
    "StatisticDuration": _object({"count": COUNT, "ns": COUNT}, ["count", "ns"]),
    "ModelStatistics": _object(
        {
            "name": STRING,
            "version": STRING,
            "last_inference": {**COUNT, "description": "milliseconds since the epoch"},
            "inference_count": COUNT,
            "execution_count": COUNT,
            "inference_stats": _object({k: ref("StatisticDuration") for k in STAT_KINDS}, list(STAT_KINDS)),
            "batch_stats": {
                "type": "array",
                "items": _object(
                    {"batch_size": COUNT, **{k: ref("StatisticDuration") for k in STAT_KINDS[3:]}},
                    ["batch_size", *STAT_KINDS[3:]],
                ),
            },
        },
        ["name", "version", "last_inference", "inference_count", "execution_count", "inference_stats", "batch_stats"],
    ),
    "ModelStatisticsResponse": _object(
        {"model_stats": {"type": "array", "items": ref("ModelStatistics")}}, ["model_stats"]
    ),
    "GenerateResponse": _object({"text": STRING, **FINISHED}, ["text", *FINISHED]),
    "GenerationDelta": _object({"text": STRING}, ["text"], "`event: delta`: new text to append"),
    "GenerationFinished": _object(FINISHED, list(FINISHED), "`event: finished`, the last event"),
    "GenerationStreamError": _object(
        {"error": STRING, "status": INTEGER},
        ["error", "status"],
        "`event: error`: the generation failed after the stream began",
    ),
}
for _schema in SCHEMAS.values():  # every object here is closed, as the handlers refuse unknown fields
    _schema["additionalProperties"] = False
