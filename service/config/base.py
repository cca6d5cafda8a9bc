"""What every part of the model config shares: the strict base model, datatypes, tasks, the file name."""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, ConfigDict

CONFIG_FILE = "config.yaml"


class Task(str, enum.Enum):
    IMAGE_CLASSIFICATION = "image_classification"
    SENTIMENT = "sentiment"
    TEXT_GENERATION = "text_generation"
    RAW = "raw"


# Open Inference Protocol datatype strings and the numpy dtype each one maps to.
DATATYPES: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}
INTEGER_DATATYPES = frozenset(("UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"))
Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
