"""The reference point for benchmarks/load.py: a minimal grpc.aio server calling onnxruntime per request.

It implements ``inference.GRPCInferenceService/ModelInfer`` for one model, with no checks, no
statistics, no versions: raw FP32 in (``np.frombuffer``), one ``session.run`` in a thread pool (or,
with ``--inline``, on the event loop thread itself), raw bytes out; plus ``ModelReady`` and
``ModelMetadata`` so that ``driftline bench`` can drive it. Anything driftline costs beyond this is
its own per-request overhead.

    python benchmarks/baseline_server.py --model REGISTRY/housing/1/model.onnx --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import onnxruntime as ort
from driftline.proto import grpc_service_pb2 as pb


def open_session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as driftline's default: batch-1 tabular calls gain nothing from more
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def infer_handler(session: ort.InferenceSession, pool: ThreadPoolExecutor | None):
    input_name = session.get_inputs()[0].name
    output_name = session.get_outputs()[0].name
    width = session.get_inputs()[0].shape[1]

    async def model_infer(request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        rows = np.frombuffer(request.raw_input_contents[0], dtype="<f4").reshape(-1, width)
        if pool is None:  # --inline: a microsecond-scale call costs less than the hop to a thread
            (prediction,) = session.run([output_name], {input_name: rows})
        else:
            # onnxruntime releases the GIL in run(), so the loop keeps reading requests meanwhile.
            loop = asyncio.get_running_loop()
            (prediction,) = await loop.run_in_executor(pool, session.run, [output_name], {input_name: rows})
        response = pb.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
        response.outputs.add(name=output_name, datatype="FP32", shape=list(prediction.shape))
        response.raw_output_contents.append(prediction.astype("<f4", copy=False).tobytes())
        return response

    return model_infer


def metadata_handlers(session: ort.InferenceSession) -> dict[str, grpc.RpcMethodHandler]:
    tensor, output = session.get_inputs()[0], session.get_outputs()[0]
    metadata = pb.ModelMetadataResponse(name="model", versions=["1"], platform="onnxruntime_onnx")
    metadata.inputs.add(name=tensor.name, datatype="FP32", shape=[-1, tensor.shape[1]])
    metadata.outputs.add(name=output.name, datatype="FP32", shape=[-1, 1])

    async def model_metadata(request, context):
        return metadata

    async def model_ready(request, context):
        return pb.ModelReadyResponse(ready=True)

    return {
        "ModelMetadata": grpc.unary_unary_rpc_method_handler(
            model_metadata, request_deserializer=pb.ModelMetadataRequest.FromString,
            response_serializer=pb.ModelMetadataResponse.SerializeToString),
        "ModelReady": grpc.unary_unary_rpc_method_handler(
            model_ready, request_deserializer=pb.ModelReadyRequest.FromString,
            response_serializer=pb.ModelReadyResponse.SerializeToString),
    }


async def serve(model: str, host: str, port: int, threads: int, inline: bool = False) -> None:
    session = open_session(model)
    pool = None if inline else ThreadPoolExecutor(max_workers=threads)
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 0),  # never share a port with another server by accident
            # driftline's limits, so large --rows-per-request runs compare like for like
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ]
    )
    method = grpc.unary_unary_rpc_method_handler(
        infer_handler(session, pool),
        request_deserializer=pb.ModelInferRequest.FromString,
        response_serializer=pb.ModelInferResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("inference.GRPCInferenceService",
                                              {"ModelInfer": method, **metadata_handlers(session)})]
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    # Same shape as driftline's ready line, so load.py reads the port the same way.
    print(f"baseline serving {os.path.basename(model)} on {host}:{bound} (CPUExecutionProvider)", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="path to a model.onnx with one FP32 [-1, width] input")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed once listening)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="concurrent onnxruntime calls")
    p.add_argument("--inline", action="store_true", help="call onnxruntime on the event loop thread, no pool")
    args = p.parse_args()
    asyncio.run(serve(args.model, args.host, args.port, args.threads, args.inline))


if __name__ == "__main__":
    main()
