"""The floor for server CPU per request: a grpc.aio server whose inference handlers do nothing.

``ModelInfer`` parses the request (as any server must) and answers one constant, pre-built response;
``ModelStreamInfer`` answers every message of a stream the same way. ``ModelMetadata`` and
``ServerLive`` / ``ServerReady`` / ``ModelReady`` answer too, so ``driftline bench`` and
``perf_analyzer`` can drive it like a real model. No onnxruntime, no batching, no checks: whatever a
real server spends per request beyond this is its own work.

    python benchmarks/empty_server.py --port 0 [--width 11]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal

import grpc
import numpy as np
from driftline.proto import grpc_service_pb2 as pb

SERVICE = "inference.GRPCInferenceService"


def answers(model: str, width: int) -> dict:
    """Every method's constant answer (``empty_cpp_server.py`` serializes these for the C++ empty server, so
    that both send the same bytes)."""
    answer = pb.ModelInferResponse(model_name=model, model_version="1")
    answer.outputs.add(name="prediction", datatype="FP32", shape=[1, 1])
    answer.raw_output_contents.append(np.zeros(1, dtype="<f4").tobytes())
    metadata = pb.ModelMetadataResponse(name=model, versions=["1"], platform="empty")
    metadata.inputs.add(name="input", datatype="FP32", shape=[-1, width])
    metadata.outputs.add(name="prediction", datatype="FP32", shape=[-1, 1])
    return {"ModelInfer": answer, "ModelStreamInfer": pb.ModelStreamInferResponse(infer_response=answer),
            "ModelMetadata": metadata, "ServerLive": pb.ServerLiveResponse(live=True),
            "ServerReady": pb.ServerReadyResponse(ready=True), "ModelReady": pb.ModelReadyResponse(ready=True)}


def handlers(model: str, width: int) -> dict[str, grpc.RpcMethodHandler]:
    constant = answers(model, width)
    answer, stream_answer, metadata = constant["ModelInfer"], constant["ModelStreamInfer"], constant["ModelMetadata"]

    async def model_infer(request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        return answer

    async def model_stream_infer(requests, context):
        async for _request in requests:
            yield stream_answer

    async def model_metadata(request, context):
        return metadata

    async def live(request, context):
        return constant["ServerLive"]

    async def ready(request, context):
        return constant["ServerReady"]

    async def model_ready(request, context):
        return constant["ModelReady"]

    def unary(fn, request_type, response_type):
        return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=request_type.FromString,
                                                   response_serializer=response_type.SerializeToString)

    return {
        "ModelInfer": unary(model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
        "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(
            model_stream_infer, request_deserializer=pb.ModelInferRequest.FromString,
            response_serializer=pb.ModelStreamInferResponse.SerializeToString),
        "ModelMetadata": unary(model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
        "ServerLive": unary(live, pb.ServerLiveRequest, pb.ServerLiveResponse),
        "ServerReady": unary(ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
        "ModelReady": unary(model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
    }


async def serve(host: str, port: int, model: str, width: int) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers(model, width))])
    bound = server.add_insecure_port(f"{host}:{port}")
    gc.collect()
    gc.freeze()
    await server.start()
    print(f"empty serving {model} on {host}:{bound} (no model)", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


def arguments(description: str | None) -> argparse.Namespace:
    """The command line of both empty servers (this one and empty_cpp_server.py)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed once listening)")
    p.add_argument("--model", default="housing", help="the name it answers to (any name is served)")
    p.add_argument("--width", type=int, default=11, help="features per row in ModelMetadata")
    return p.parse_args()


def main() -> None:
    args = arguments(__doc__)
    asyncio.run(serve(args.host, args.port, args.model, args.width))


if __name__ == "__main__":
    main()
