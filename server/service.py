"""The gRPC handlers: thin adapters from protocol messages to the repository and the request path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc

from driftline import __version__
from driftline.errors import InvalidInput, NotFound, Unavailable
from driftline.proto import driftline_pb2 as dpb
from driftline.proto import driftline_pb2_grpc
from driftline.proto import grpc_service_pb2 as pb
from driftline.proto import grpc_service_pb2_grpc
from driftline.registry import TensorSpec
from driftline.server import status
from driftline.server.decode import decode_rows, requested_outputs
from driftline.server.encode import encode_response
from driftline.server.model import ServedVersion
from driftline.server.repository import ModelRepository, parse_version
from driftline.server.run import Runner
from driftline.server.stats import Duration

EXTENSIONS = ("model_repository", "statistics", "driftline")
PLATFORM = "onnxruntime_onnx"


class InferenceService(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, repository: ModelRepository, runner: Runner) -> None:
        self.repository = repository
        self.runner = runner

    # -- health and metadata ------------------------------------------------------------------
    @status.unary
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    @status.unary
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.repository.ready())

    @status.unary
    async def ModelReady(self, request, context):
        try:
            self.repository.get(request.name, request.version)
        except (NotFound, Unavailable):
            return pb.ModelReadyResponse(ready=False)  # readiness is an answer, not an error
        return pb.ModelReadyResponse(ready=True)

    @status.unary
    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name="driftline", version=__version__, extensions=EXTENSIONS)

    @status.unary
    async def ModelMetadata(self, request, context):
        served = self.repository.get(request.name, request.version)
        slot = self.repository.slot(request.name)
        return pb.ModelMetadataResponse(
            name=served.name,
            versions=[str(v) for v in sorted(slot.loaded)],
            platform=PLATFORM,
            inputs=[_tensor_metadata(served.input)],
            outputs=[_tensor_metadata(o) for o in served.outputs],
        )

    # -- inference ----------------------------------------------------------------------------
    @status.unary
    async def ModelInfer(self, request, context):
        return await self._infer(request)

    async def ModelStreamInfer(self, request_iterator, context) -> AsyncIterator[pb.ModelStreamInferResponse]:
        # Errors travel in-band, one per message, so one bad request does not end the stream.
        async for request in request_iterator:
            try:
                response = await self._infer(request)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - mapped like the unary boundary, in-band
                _, message = status.message_of(exc)
                yield pb.ModelStreamInferResponse(error_message=message)
                continue
            yield pb.ModelStreamInferResponse(infer_response=response)

    async def _infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        started = time.perf_counter_ns()
        served = self.repository.get(request.model_name, request.model_version)
        try:
            rows = decode_rows(request, served)
            names = requested_outputs(request, served)
            outputs = await self.runner.run(served, rows, names)
            response = encode_response(request, served, names, outputs)
        except BaseException:
            served.stats.failed(time.perf_counter_ns() - started)
            raise
        served.stats.succeeded(len(rows), time.perf_counter_ns() - started)
        return response

    # -- statistics and repository extensions -------------------------------------------------
    @status.unary
    async def ModelStatistics(self, request, context):
        response = pb.ModelStatisticsResponse()
        names = [request.name] if request.name else self.repository.names()
        for name in names:
            loaded = self.repository.slot(name).loaded
            if request.version:
                number = parse_version(request.version)
                if number not in loaded:
                    self.repository.get(name, request.version)  # raises NOT_FOUND with the loaded versions
                loaded = {number: loaded[number]}
            for served in loaded.values():
                response.model_stats.append(_statistics(served))
        return response

    @status.unary
    async def RepositoryIndex(self, request, context):
        response = pb.RepositoryIndexResponse()
        registry = self.repository.registry
        for name in sorted(set(registry.models()) | set(self.repository.names())):
            slot = self.repository.find(name)
            loaded = slot.loaded if slot else {}
            for version in registry.versions(name) or sorted(loaded):
                ready = version in loaded
                if request.ready and not ready:
                    continue
                reason = "" if ready else (slot.reason if slot and slot.reason else "not loaded")
                response.models.add(
                    name=name, version=str(version), state="READY" if ready else "UNAVAILABLE", reason=reason
                )
        return response

    @status.unary
    async def RepositoryModelLoad(self, request, context):
        version = _version_parameter(request.parameters)
        loop = asyncio.get_running_loop()
        served = await loop.run_in_executor(None, self.repository.load_detached, request.model_name, version)
        self.repository.activate(served)
        return pb.RepositoryModelLoadResponse()

    @status.unary
    async def RepositoryModelUnload(self, request, context):
        self.repository.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()


class DriftlineService(driftline_pb2_grpc.DriftlineServicer):
    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository

    @status.unary
    async def VersionInfo(self, request, context):
        served = self.repository.get(request.name, request.version)
        return dpb.VersionInfoResponse(
            name=served.name,
            version=str(served.version),
            feature_names=served.metadata.feature_names,
            execution_providers=served.providers,
            metadata_json=served.metadata.to_json(),
            registry=served.source,
        )


def _tensor_metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=spec.name, datatype=spec.datatype, shape=spec.shape)


def _version_parameter(parameters) -> int | None:
    if "version" not in parameters:
        return None
    value = parameters["version"]
    choice = value.WhichOneof("parameter_choice")
    if choice == "int64_param":
        return parse_version(str(value.int64_param))
    if choice == "string_param":
        return parse_version(value.string_param)
    raise InvalidInput("parameter 'version' must be an int64 or a string holding a version number")


def _duration(source: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=source.count, ns=source.ns)


def _statistics(served: ServedVersion) -> pb.ModelStatistics:
    s = served.stats
    return pb.ModelStatistics(
        name=served.name,
        version=str(served.version),
        last_inference=s.last_inference_ms,
        inference_count=s.inference_count,
        execution_count=s.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(s.success),
            fail=_duration(s.fail),
            queue=_duration(s.queue),
            compute_infer=_duration(s.compute_infer),
        ),
        batch_stats=[
            pb.InferBatchStatistics(batch_size=size, compute_infer=_duration(d)) for size, d in sorted(s.batches.items())
        ],
    )
