"""PyTriton (NVIDIA's Triton Inference Server driven from Python) serving an ONNX model with onnxruntime.

Triton's C++ server takes the gRPC calls and runs its dynamic batcher; each batch goes to this
process's Python callable, which runs onnxruntime (CPU, one intra-op thread). Run in PyTriton's own
virtual environment by ``benchmarks/compare.py``; Triton's Python backend stub links the system
libpython, so LD_LIBRARY_PATH must include the interpreter's LIBDIR (compare.py sets it).

    python pytriton_server.py --model model.onnx --grpc-port P --http-port P2 --metrics-port P3 [--max-batch-size 64]
"""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--name", default="housing")
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--metrics-port", type=int, required=True)
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--max-queue-delay-us", type=int, default=500)
    p.add_argument("--instances", type=int, default=1, help="Python model instances (processes)")
    args = p.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(args.model, sess_options=options, providers=["CPUExecutionProvider"])
    tensor = session.get_inputs()[0]
    input_name, width = tensor.name, tensor.shape[1]
    output_name = session.get_outputs()[0].name

    @batch
    def infer(**inputs):
        rows = inputs[input_name].astype(np.float32, copy=False)
        (prediction,) = session.run([output_name], {input_name: rows})
        return {output_name: prediction.reshape(len(rows), -1)}

    config = TritonConfig(grpc_address="127.0.0.1", grpc_port=args.grpc_port, http_address="127.0.0.1",
                          http_port=args.http_port, metrics_port=args.metrics_port, allow_metrics=False,
                          allow_cpu_metrics=False, allow_gpu_metrics=False)
    batcher = DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us) if args.max_batch_size > 1 else None
    with Triton(config=config) as triton:
        triton.bind(
            model_name=args.name,
            infer_func=[infer] * args.instances,
            inputs=[Tensor(name=input_name, dtype=np.float32, shape=(width,))],
            outputs=[Tensor(name=output_name, dtype=np.float32, shape=(-1,))],
            config=ModelConfig(max_batch_size=max(args.max_batch_size, 1), batcher=batcher),
            strict=False,
        )
        print(f"pytriton serving {args.name} on 127.0.0.1:{args.grpc_port} (CPUExecutionProvider)", flush=True)
        triton.serve()


if __name__ == "__main__":
    main()
