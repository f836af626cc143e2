"""An MLServer custom runtime that runs an ONNX model with onnxruntime (CPU, one intra-op thread).

MLServer ships no ONNX runtime of its own, so this is the smallest faithful one: decode the first
input with MLServer's NumpyCodec, one ``session.run``, encode the first output. It is loaded by
``benchmarks/compare.py`` through ``model-settings.json`` (``"implementation": "mlserver_onnx.OnnxModel"``,
``"parameters": {"uri": "/path/model.onnx"}``), in MLServer's own virtual environment.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxModel(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # as driftline's default
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(self.settings.parameters.uri, sess_options=options,
                                             providers=["CPUExecutionProvider"])
        tensor = self._session.get_inputs()[0]
        self._input, self._width = tensor.name, tensor.shape[1]
        self._output = self._session.get_outputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False).reshape(-1, self._width)
        (prediction,) = self._session.run([self._output], {self._input: rows})
        return InferenceResponse(model_name=self.name, model_version=self.version,
                                 outputs=[NumpyCodec.encode_output(self._output, prediction)])
