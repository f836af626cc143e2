"""KServe's Python model server (``kserve.ModelServer``) serving an ONNX model with onnxruntime.

A ``kserve.Model`` whose ``predict`` runs one ``session.run`` (CPU, one intra-op thread), served by
``kserve.ModelServer`` with its gRPC (Open Inference Protocol v2) server, per-request latency logging
off. KServe hard-codes its listen addresses ("[::]" for gRPC, "0.0.0.0" for REST); this script
rewrites both to 127.0.0.1 before the server starts, so nothing listens beyond loopback. Run in
KServe's own virtual environment by ``benchmarks/compare.py``:

    python kserve_server.py --model model.onnx --grpc-port P --http-port P2
"""

from __future__ import annotations

import argparse

import grpc.aio
import kserve
import numpy as np
import onnxruntime as ort
import uvicorn
from kserve import InferRequest, InferResponse, Model, ModelServer
from kserve.protocol.infer_type import InferOutput

_add_port = grpc.aio._server.Server.add_insecure_port  # noqa: SLF001
grpc.aio._server.Server.add_insecure_port = lambda self, address: _add_port(  # noqa: SLF001
    self, address.replace("[::]", "127.0.0.1"))
_config_init = uvicorn.Config.__init__


def _loopback_config(self, *args, **kwargs):
    kwargs["host"] = "127.0.0.1"
    _config_init(self, *args, **kwargs)


uvicorn.Config.__init__ = _loopback_config


class OnnxModel(Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        tensor = self.session.get_inputs()[0]
        self.input_name, self.width = tensor.name, tensor.shape[1]
        self.output_name = self.session.get_outputs()[0].name
        self.ready = True

    async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        rows = payload.inputs[0].as_numpy().astype(np.float32, copy=False).reshape(-1, self.width)
        (prediction,) = self.session.run([self.output_name], {self.input_name: rows})
        output = InferOutput(name=self.output_name, shape=list(prediction.shape), datatype="FP32")
        output.set_data_from_numpy(prediction, binary_data=payload.from_grpc)
        return InferResponse(model_name=self.name, infer_outputs=[output], response_id=payload.id,
                             use_binary_outputs=payload.from_grpc)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--name", default="housing")
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--http-port", type=int, required=True)
    args = p.parse_args()
    model = OnnxModel(args.name, args.model)
    print(f"kserve {kserve.__name__} serving {args.name} on 127.0.0.1:{args.grpc_port} (CPUExecutionProvider)",
          flush=True)
    ModelServer(grpc_port=args.grpc_port, http_port=args.http_port, workers=1,
                enable_latency_logging=False).start([model])


if __name__ == "__main__":
    main()
