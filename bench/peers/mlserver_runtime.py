"""MLServer peer's runtime (runs in MLServer's own virtualenv, .bench-venvs/mlserver): ONNX Runtime called
inline in `predict`, as MLServer's own sync runtimes do. model-settings.json gives the model file as
`parameters.uri` and the session options (bench/peers/ort_session.py) as `parameters.extra.ort`.

Outputs go out without MLServer's `parameters: {"content_type": "np"}`: perf_analyzer's HTTP client (tritonclient
2.41) reads `binary_data_size` from any output that has parameters and fails on every answer that lacks it."""

from __future__ import annotations

from typing import Any

from mlserver import MLModel  # type: ignore[import-not-found]
from mlserver.codecs import NumpyCodec  # type: ignore[import-not-found]
from mlserver.types import InferenceRequest, InferenceResponse  # type: ignore[import-not-found]

from bench.peers.ort_session import session


class OnnxModel(MLModel):  # type: ignore[misc]
    async def load(self) -> bool:
        parameters: Any = self.settings.parameters
        self.session = session(parameters.uri, parameters.extra["ort"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        results = self.session.run(None, {self.input_name: x})
        outputs = [NumpyCodec.encode_output(n, y) for n, y in zip(self.output_names, results, strict=True)]
        for output in outputs:
            output.parameters = None
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=outputs)
