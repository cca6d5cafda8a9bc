"""Typed settings: the server's flags/env (`ServerSettings`, settings.py) and each model's `config.yaml`
(`ModelConfig`, model.py; its sections in sections.py, execution.py and tasks.py).

Both are validated when they are loaded; a bad value is an error that names the key and says how to fix
it. This package knows nothing of gRPC, ONNX Runtime or TensorFlow, so `training/` can import it to write
configs the server accepts. Import from here: `from service.config import ModelConfig`.
"""

from service.config.base import CONFIG_FILE, DATATYPES, INTEGER_DATATYPES, Datatype, Task
from service.config.execution import CudaExecution, Execution
from service.config.model import (
    ModelConfig,
    dump_model_config,
    inside,
    load_model_config,
    model_files,
    parse_model_config,
)
from service.config.sections import (
    DynamicBatching,
    Limits,
    TensorSpec,
    VersionPolicy,
    WarmupInput,
    WarmupSample,
)
from service.config.settings import Device, PositiveInt, ServerSettings
from service.config.tasks import Generation, ImagePreprocessing, Normalization, TextPreprocessing

__all__ = [
    "CONFIG_FILE",
    "DATATYPES",
    "INTEGER_DATATYPES",
    "CudaExecution",
    "Datatype",
    "Device",
    "DynamicBatching",
    "Execution",
    "Generation",
    "ImagePreprocessing",
    "Limits",
    "ModelConfig",
    "Normalization",
    "PositiveInt",
    "ServerSettings",
    "Task",
    "TensorSpec",
    "TextPreprocessing",
    "VersionPolicy",
    "WarmupInput",
    "WarmupSample",
    "dump_model_config",
    "inside",
    "load_model_config",
    "model_files",
    "parse_model_config",
]
