"""The gRPC handlers: thin adapters from protocol messages to the repository and the request path."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator

import grpc

from driftline import __version__
from driftline.attribution import ATTRIBUTION, ATTRIBUTION_BASE
from driftline.errors import DriftlineError, InvalidInput, NotFound, Unavailable, Unsupported
from driftline.kernels.drift import DriftState
from driftline.proto import driftline_pb2 as dpb
from driftline.proto import driftline_pb2_grpc
from driftline.proto import grpc_service_pb2 as pb
from driftline.proto import grpc_service_pb2_grpc
from driftline.proto import model_config_pb2 as cpb
from driftline.registry import TensorSpec, VersionMetadata
from driftline.server import eager, fleet, metrics, status, telemetry
from driftline.server.auth import AdminGuard
from driftline.server.grpc_wire import infer_request, infer_response, parameters_of
from driftline.server.load_config import load_config_batching
from driftline.server.malformed import Malformed
from driftline.server.pipeline import RequestPath
from driftline.server.peers import Peers, is_peer_call
from driftline.registry.columns import ATTRIBUTION_SHARE
from driftline.server.monitor import AttributionFlags, VersionMonitor
from driftline.server.repository import Endpoint, ModelRepository, drain, parse_version
from driftline.server.stats import Duration
from driftline.server.validate import ValidationCounts

log = logging.getLogger("driftline.server")
EXTENSIONS = ("model_repository", "model_configuration", "statistics", "driftline")
PLATFORM = "onnxruntime_onnx"


class InferenceService(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, repository: ModelRepository, peers: Peers, path: RequestPath) -> None:
        self.repository = repository
        self.peers = peers
        self.path = path

    def _fan_out(self, context: grpc.aio.ServicerContext) -> bool:
        """Whether this call must also reach the other workers (it came from a client, not a peer)."""
        return bool(self.peers) and not is_peer_call(context)

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
        return server_metadata()

    @status.unary
    async def ModelMetadata(self, request, context):
        return model_metadata(self.repository, request.name, request.version)

    @status.unary
    async def ModelConfig(self, request, context):
        endpoint = self.repository.get(request.name, request.version)
        return pb.ModelConfigResponse(config=_model_config(endpoint))

    # -- inference ----------------------------------------------------------------------------
    @status.unary
    async def ModelInfer(self, request, context):
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        return infer_response(await self.path.infer(infer_request(request, deadline)))

    @status.stream
    async def ModelStreamInfer(self, request_iterator, context) -> AsyncIterator[pb.ModelStreamInferResponse]:
        # Messages are decoded and queued as they arrive (so one stream's requests share batches) and answered in
        # the order they came; errors travel in-band, so one bad message ends nothing. At most stream_window
        # messages are between read and answered: the next one is read only when an answer has been taken by the
        # transport, so a client that writes faster than it reads, or never reads, is held back by gRPC's flow
        # control, not queued in the server's memory. A stream that ends early (cancelled, broken) cancels what it
        # still has in flight, which leaves the batcher's queue without costing compute. Reading and writing stay
        # two tasks even when every answer is ready at once: one task alternating them was measured slower, the
        # transport then waiting on each write before the next read.
        room = asyncio.Semaphore(self.repository.settings.stream_window)
        in_flight: asyncio.Queue[asyncio.Future[pb.ModelStreamInferResponse] | None] = asyncio.Queue()

        async def read() -> None:
            try:
                while True:
                    await room.acquire()
                    try:
                        request = await anext(request_iterator)
                    except StopAsyncIteration:
                        return
                    # Started at once: a message that need not wait is answered without a task of its own.
                    in_flight.put_nowait(eager.start(self._message(request)))
            finally:
                in_flight.put_nowait(None)

        reader = asyncio.ensure_future(read())
        try:
            while (answer := await in_flight.get()) is not None:
                try:
                    await answer
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - _streamed answers it in-band
                    pass
                yield _streamed(answer)
                room.release()
            await reader  # surfaces a broken request stream
        finally:
            reader.cancel()
            while not in_flight.empty():
                if (answer := in_flight.get_nowait()) is not None:
                    answer.cancel()

    async def _message(self, request: pb.ModelInferRequest | Malformed) -> pb.ModelStreamInferResponse:
        if isinstance(request, Malformed):  # one unreadable message of a stream is answered in-band, like any error
            raise InvalidInput(f"stream message is not a valid ModelInferRequest ({request.reason})")
        decoded = infer_request(request, None)
        streamed = pb.ModelStreamInferResponse()  # filled in place: no copy of the response into it
        if telemetry.tracer is not None:
            with telemetry.stream_message():  # a unary call's request span is the RPC's own
                infer_response(await self.path.infer(decoded), streamed.infer_response)
                return streamed
        infer_response(await self.path.infer(decoded), streamed.infer_response)
        return streamed

    # -- statistics and repository extensions -------------------------------------------------
    @status.unary
    async def ModelStatistics(self, request, context):
        response = pb.ModelStatisticsResponse()
        names = [request.name] if request.name else self.repository.names()
        for name in names:
            loaded = self.repository.slot(name).loaded
            if request.version:
                loaded = {parse_version(request.version): self.repository.get(name, request.version)}
            for endpoint in loaded.values():
                response.model_stats.append(_statistics(endpoint))
        if self._fan_out(context):
            others = await self.peers.gather("ModelStatistics", request)
            for other in others.answers:
                _merge_statistics(response, other)
            _say_missing(context, "statistics", others.missing)
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
        """Triton's load: driftline swaps to ``version`` (default: the latest) exactly as ``driftline swap`` does.

        A ``config`` parameter may change the version's batching settings; anything else it says, and file
        overrides, are refused by name (the registry's versions are immutable).
        """
        try:
            current = await self._load(request, context)
        except DriftlineError as exc:  # Triton's wording first: its clients look for it
            raise type(exc)(f"failed to load {request.model_name!r}: {exc}") from exc
        if not is_peer_call(context):
            self.repository.remember(request.model_name)  # before the others: one restarting meanwhile reads it
        if self._fan_out(context):
            # Every worker must load the same version, even if a newer one lands meanwhile.
            request.parameters["version"].int64_param = current
            # A worker left out is dead or starting: it reads the record before it serves.
            await self.peers.gather("RepositoryModelLoad", request)
        return pb.RepositoryModelLoadResponse()

    async def _load(self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext) -> int:
        parameters = parameters_of(request.parameters)
        version = _version_parameter(parameters.pop("version", None))
        force = parameters.pop("force", False) is True
        batching, batches = self.repository.settings.batching_for(request.model_name), False
        if "config" in parameters:
            batching, batches = load_config_batching(str(parameters.pop("config")), request.model_name, batching)
        if parameters:
            raise InvalidInput(_refused_load_parameter(next(iter(parameters))))
        with _counted(request.model_name, "swap", not is_peer_call(context)):
            _, current = await self.repository.swap(request.model_name, version, force=force, batching=batching,
                                                    must_batch=batches)
        return current

    @status.unary
    async def RepositoryModelUnload(self, request, context):
        with _counted(request.model_name, "unload", not is_peer_call(context)):
            await drain(self.repository.unload(request.model_name))
        if not is_peer_call(context):
            self.repository.remember(request.model_name)
        if self._fan_out(context):
            await self.peers.gather("RepositoryModelUnload", request)
        return pb.RepositoryModelUnloadResponse()


def server_metadata() -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name="driftline", version=__version__, extensions=EXTENSIONS)


def model_metadata(repository: ModelRepository, name: str, version: str = "") -> pb.ModelMetadataResponse:
    """ModelMetadata's answer (the compiled door is handed it serialized, to answer byte for byte alike)."""
    served = repository.get(name, version).served
    slot = repository.slot(name)
    return pb.ModelMetadataResponse(
        name=served.name,
        versions=[str(v) for v in sorted(slot.loaded)],
        platform=PLATFORM,
        inputs=[_tensor_metadata(i) for i in served.inputs],
        outputs=[_tensor_metadata(_answered(o, served.batching)) for o in served.outputs]
        + _attribution_metadata(served),
    )


class DriftlineService(driftline_pb2_grpc.DriftlineServicer):
    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository
        settings = repository.settings
        # Who may read the training profile: whoever may make an admin call (the same token, the same loopback rule).
        self._guard = AdminGuard(settings.admin_token, settings.host)

    @status.unary
    async def VersionInfo(self, request, context):
        """Lineage for anyone; the training profile (its quantiles and histograms describe the training rows)
        and the training data's own bad values only for admin callers. No filesystem locations at all."""
        served = self.repository.get(request.name, request.version).served
        admin = self._guard.admits(dict(context.invocation_metadata() or ()).get("authorization", ""))
        return dpb.VersionInfoResponse(
            name=served.name,
            version=str(served.version),
            feature_names=served.metadata.feature_names,
            execution_providers=served.providers,
            device_path=served.device_path,
            metadata_json=_readable_metadata(served.metadata, admin),
            registry="",
            profile_json=served.profile.to_json() if admin and served.profile is not None else "",
        )


def _readable_metadata(metadata: VersionMetadata, admin: bool) -> str:
    """``metadata.json`` as a client may read it: data files by name only (a path tells a stranger where to look
    on the machine), and the training data quality report without its example values unless ``admin``."""
    body = json.loads(metadata.to_json())
    extra = body.get("extra", {})
    for key in ("data", "reference"):
        if isinstance(extra.get(key), str):
            extra[key] = re.split(r"[\\/]", extra[key].rstrip("/\\"))[-1]
    if not admin:
        for kinds in extra.get("data_quality", {}).get("violations", {}).values():
            for kind in kinds.values():
                kind.pop("examples", None)
    return json.dumps(body, indent=2, sort_keys=True, allow_nan=False) + "\n"


@contextlib.contextmanager
def _counted(model: str, event: str, here: bool) -> Iterator[None]:
    """Count a model event once per server: on the worker that was asked, not on the peers it forwards to."""
    try:
        yield
    except Exception:
        if here:
            metrics.model_event(model, event, ok=False)
        raise
    if here:
        metrics.model_event(model, event)


def _attribution_metadata(served) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    if served.explainer is None:
        return []
    return [_tensor_metadata(TensorSpec(ATTRIBUTION, "FP32", (-1, len(served.column_names)))),
            _tensor_metadata(TensorSpec(ATTRIBUTION_BASE, "FP32", (-1, 1)))]


def _answered(spec: TensorSpec, batching: bool) -> TensorSpec:
    """The shape responses have: an output that is only a batch dimension is answered [N, 1], as Triton does
    (its config says dims [1] reshaped to [], and Triton reshapes the answer back to dims)."""
    if batching and spec.shape == (-1,):
        return TensorSpec(spec.name, spec.datatype, (-1, 1))
    return spec


def _streamed(answer: asyncio.Future[pb.ModelStreamInferResponse]) -> pb.ModelStreamInferResponse:
    """A finished message's answer: its response, or its error in-band (mapped like the unary boundary's)."""
    exc = answer.exception()
    if exc is None:
        return answer.result()
    return pb.ModelStreamInferResponse(error_message=status.message_of(exc)[1])


def _tensor_metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=spec.name, datatype=spec.datatype, shape=spec.shape)


def _model_config(endpoint: Endpoint) -> cpb.ModelConfig:
    """Triton's view of the model: a batching model lists shapes without the batch dimension."""
    served, batching = endpoint.served, endpoint.batcher.settings
    config = cpb.ModelConfig(
        name=served.name,
        platform=PLATFORM,
        backend="onnxruntime",
        max_batch_size=batching.max_batch_size if served.batching else 0,
        default_model_filename="model.onnx",
        input=[cpb.ModelInput(name=i.name, data_type=_config_type(i.datatype), **_dims(i, served.batching))
               for i in served.inputs],
        output=[cpb.ModelOutput(name=o.name, data_type=_config_type(o.datatype), **_dims(o, served.batching))
                for o in served.outputs],
        instance_group=[cpb.ModelInstanceGroup(
            name=served.name, count=batching.max_concurrent_batches,
            kind=cpb.ModelInstanceGroup.KIND_GPU if "CUDAExecutionProvider" in served.providers
            else cpb.ModelInstanceGroup.KIND_CPU)],
    )
    if served.batching and batching.max_batch_size > 1:
        config.dynamic_batching.max_queue_delay_microseconds = batching.max_queue_delay_us
    return config


def _dims(spec: TensorSpec, batching: bool) -> dict:
    """``dims`` as Triton writes them; a tensor with no dimension left is ``dims: [1]`` reshaped to ``[]``."""
    dims = spec.shape[1:] if batching else spec.shape
    if dims:
        return {"dims": dims}
    return {"dims": (1,), "reshape": cpb.ModelTensorReshape(shape=())}


def _config_type(datatype: str) -> int:
    return cpb.DataType.Value("TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}")


def _refused_load_parameter(name: str) -> str:
    if name.startswith("file:"):
        return (f"parameter {name!r}: driftline does not take model files in a load request; publish them as a "
                "new version (driftline publish) and load that")
    return f"parameter {name!r} is not supported by RepositoryModelLoad; honoured: version, force, config"


def _version_parameter(value: object) -> int | None:
    """A load request's ``version`` parameter (int64 or string); None: not given."""
    if value is None:
        return None
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        return parse_version(str(value))
    raise InvalidInput("parameter 'version' must be an int64 or a string holding a version number")


def _duration(source: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=source.count, ns=source.ns)


def _merge_statistics(into: pb.ModelStatisticsResponse, other: pb.ModelStatisticsResponse) -> None:
    """Add another worker's counters to ``into``, model version by model version."""
    mine = {(m.name, m.version): m for m in into.model_stats}
    for theirs in other.model_stats:
        target = mine.get((theirs.name, theirs.version))
        if target is None:
            into.model_stats.append(theirs)
            continue
        target.last_inference = max(target.last_inference, theirs.last_inference)
        target.inference_count += theirs.inference_count
        target.execution_count += theirs.execution_count
        for field in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
            _add_duration(getattr(target.inference_stats, field), getattr(theirs.inference_stats, field))
        by_size = {b.batch_size: b for b in target.batch_stats}
        for batch in theirs.batch_stats:
            if batch.batch_size in by_size:
                _add_duration(by_size[batch.batch_size].compute_infer, batch.compute_infer)
            else:
                target.batch_stats.append(batch)


def _add_duration(into: pb.StatisticDuration, other: pb.StatisticDuration) -> None:
    into.count += other.count
    into.ns += other.ns


def _statistics(endpoint: Endpoint) -> pb.ModelStatistics:
    served, s = endpoint.served, endpoint.served.stats
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
            # perf_analyzer insists the three compute counts agree; input and output time is inside infer's.
            compute_input=pb.StatisticDuration(count=s.compute_infer.count),
            compute_infer=_duration(s.compute_infer),
            compute_output=pb.StatisticDuration(count=s.compute_infer.count),
        ),
        batch_stats=[
            pb.InferBatchStatistics(batch_size=size, compute_input=pb.StatisticDuration(count=d.count),
                                    compute_infer=_duration(d), compute_output=pb.StatisticDuration(count=d.count))
            for size, d in sorted(s.batches.items())
        ],
    )


class MonitoringService(driftline_pb2_grpc.MonitoringServicer):
    """Drift reports; with several workers, the worker asked merges its peers' states into its own."""

    def __init__(self, repository: ModelRepository, peers: Peers) -> None:
        self.repository = repository
        self.peers = peers

    @status.unary
    async def DriftReport(self, request, context):
        endpoint = self.repository.endpoint_for_report(request.name, request.version)
        version = endpoint.served.version
        monitor = _require_monitor(request.name, version, endpoint.monitor)
        if request.fleet:  # every live replica's state as written to the registry, this one's live
            return await fleet.answer(self.repository, request.name, endpoint)
        extra, validation, flags = [], [_validation(endpoint)], [monitor.attribution.to_dict()]
        if self.peers and not is_peer_call(context):
            pinned = dpb.DriftRequest(name=request.name, version=str(version))
            others = await self.peers.gather("DriftStates", pinned, service="monitoring")
            _say_missing(context, "drift", others.missing)
            for other in others.answers:
                extra.append((DriftState.from_dict(json.loads(other.window_state_json)),
                              DriftState.from_dict(json.loads(other.total_state_json))))
                validation.append(json.loads(other.validation_json or "{}"))
                flags.append(json.loads(other.attribution_flags_json or "{}"))
        drift = monitor.report(extra)
        return dpb.DriftReportResponse(
            name=request.name,
            version=str(version),
            window=drift.window,
            current=_section(drift.current_rows, drift.current, monitor),
            since_live=_section(drift.since_live_rows, drift.since_live, monitor),
            thresholds_json=json.dumps(dataclasses.asdict(monitor.settings.thresholds)),
            validation_json=json.dumps(ValidationCounts.merged(validation)),
            attribution_flags_json=json.dumps(AttributionFlags.merged(flags)),
        )

    @status.unary
    async def DriftStates(self, request, context):
        endpoint = self.repository.endpoint_for_report(request.name, request.version)
        monitor = _require_monitor(request.name, endpoint.served.version, endpoint.monitor)
        window, total = monitor.states()
        return dpb.DriftStatesResponse(window_state_json=json.dumps(window.to_dict()),
                                       total_state_json=json.dumps(total.to_dict()),
                                       validation_json=json.dumps(_validation(endpoint)),
                                       attribution_flags_json=json.dumps(monitor.attribution.to_dict()))


MISSING_WORKERS = "x-driftline-missing-workers"  # trailing metadata: workers left out of a combined answer


def _say_missing(context: grpc.aio.ServicerContext, what: str, missing: list[int]) -> None:
    """A combined answer without some workers (dead or restarting) is still an answer; it says so."""
    if not missing:
        return
    workers = ",".join(map(str, missing))
    log.warning("%s: worker(s) %s not running; answering with the live workers' figures", what, workers)
    if hasattr(context, "set_trailing_metadata"):  # the HTTP front end's stand-in context has none
        context.set_trailing_metadata(((MISSING_WORKERS, workers),))


def _validation(endpoint: Endpoint) -> dict:
    return endpoint.validator.counts.to_dict() if endpoint.validator is not None else {}


def _require_monitor(name: str, version: int, monitor: VersionMonitor | None) -> VersionMonitor:
    if monitor is None:
        raise Unsupported(
            f"{name} version {version} has no drift monitor: it has no baseline (it was published without "
            "reference data: publish it again with driftline train, or driftline publish --reference) or the "
            "server runs with --no-drift"
        )
    return monitor


def _section(rows: int, columns, monitor: VersionMonitor) -> dpb.DriftSection:
    sources = monitor.sources
    section = dpb.DriftSection(rows=rows, alarm=any(c.alarm for c in columns))
    for column in columns:
        source = sources.get(column.name, "feature")
        target = {"feature": section.features, ATTRIBUTION_SHARE: section.attribution}.get(source, section.outputs)
        target.add(name=column.name, kind=column.kind, rows=column.rows, psi=column.psi, js=column.js, ks=column.ks,
                   wasserstein=column.wasserstein, mean_shift=column.mean_shift, chi2=column.chi2,
                   alarm=column.alarm, alarms=column.alarms, source=source, p_value=column.p_value,
                   p_adjusted=column.p_adjusted, note=column.note, discrete=column.discrete)
    return section


class AdminService(driftline_pb2_grpc.AdminServicer):
    """Swap and rollback; the CLI's own admin calls (Triton's load/unload live on the inference service)."""

    def __init__(self, repository: ModelRepository, peers: Peers, workers: int) -> None:
        self.repository = repository
        self.peers = peers
        self.workers = workers

    @status.unary
    async def Swap(self, request, context):
        return await self.swap(request.name, request.version or None, request.force,
                               everywhere=not is_peer_call(context))

    @status.unary
    async def Rollback(self, request, context):
        return await self.swap(request.name, self.repository.rollback_target(request.name), True, everywhere=True)

    async def swap(self, name: str, version: int | str | None, force: bool, everywhere: bool = True
                   ) -> dpb.SwapResponse:
        """Swap here, then (``everywhere``) on every other worker; returns when all serve the new version."""
        started = time.perf_counter()
        with _counted(name, "swap", everywhere):
            previous, current = await self.repository.swap(name, version, force=force)
        serving = 1
        if everywhere:
            # Recorded before the others swap: a worker that restarts meanwhile reads it before it serves.
            self.repository.remember(name)
        if self.peers and everywhere:
            # The others load exactly the version this worker chose, so all agree.
            others = await self.peers.gather("Swap", dpb.SwapRequest(name=name, version=str(current), force=True),
                                             service="admin")
            serving += len(others.answers)
            if others.missing:
                log.warning("swap of %s: worker(s) %s not running; each serves version %d once it has started",
                            name, ", ".join(map(str, others.missing)), current)
        return dpb.SwapResponse(name=name, previous_version="" if previous is None else str(previous),
                                version=str(current), workers=serving,
                                seconds=time.perf_counter() - started)
