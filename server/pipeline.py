"""The request path both front ends share: find the version, decode, validate, batch, run, answer.

gRPC (:mod:`driftline.server.service`) and HTTP each parse their wire format into an
:class:`~driftline.server.tensors.InferRequest` and encode the :class:`~driftline.server.tensors.InferResult`
this returns. Monitoring happens behind the batcher, once per batch, off the response path.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from driftline.attribution import ATTRIBUTION, ATTRIBUTION_BASE, per_row
from driftline.errors import InvalidInput, NotANumber
from driftline.server import metrics, telemetry
from driftline.server.batcher import QueuedBytes, input_bytes
from driftline.server.classify import top_classes
from driftline.server.decode import decode_inputs, echoed, requested_outputs
from driftline.server.model import ServedVersion
from driftline.server.repository import ModelRepository
from driftline.server.telemetry import NOSPAN
from driftline.server.tensors import InferRequest, InferResult, OutputRequest, OutputTensor
from driftline.server.validate import FLAGGED_PARAMETER

# Request parameters Triton's clients send, and the values driftline can honour.
TIMEOUT = "timeout"  # microseconds, as Triton: the request's deadline when sooner than the transport's
# Triton's clients ask for each request's last response to be marked. A model that is not decoupled answers a
# request with one response, so that one carries the mark (perf_analyzer sends this on unary calls too).
FINAL_ASKED = "triton_enable_empty_final_response"
FINAL = "triton_final_response"
HONOURED_ONLY_AS_DEFAULT = {
    "priority": (0,),  # one queue per version: no priority levels
    "sequence_id": (0, ""),  # no sequence batching: every request stands alone
    "sequence_start": (False,),
    "sequence_end": (False,),
}


class RequestPath:
    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository
        self.queued = QueuedBytes(repository.settings.max_queued_bytes)  # every model's batcher draws on it

    async def infer(self, request: InferRequest) -> InferResult:
        started = time.perf_counter_ns()
        try:
            endpoint = self.repository.get(request.model, request.version)
        except Exception as exc:
            metrics.refused(request.model, self.repository.find(request.model) is not None, exc)
            raise
        served = endpoint.served
        if telemetry.tracer is not None:
            telemetry.describe_request(served.name, served.version)
        endpoint.in_flight.count += 1  # a swap waits for this to drop back before it returns
        rows = 0
        try:
            deadline, final = _honour(request)
            _refuse_tensor_parameters(request)
            inputs, rows = decode_inputs(request.inputs, served)
            wanted = requested_outputs(request.outputs, served)
            flagged = view = None
            if endpoint.validator is not None:
                with telemetry.span("driftline.validate") if telemetry.tracer is not None else NOSPAN:
                    if served.table is not None:
                        flagged, view = endpoint.validator.check_table(inputs)
                    else:
                        flagged = endpoint.validator.check(inputs[served.input.name])
            outputs = endpoint.batcher.run_now(inputs, deadline, rows, view)
            if outputs is None:
                size = input_bytes(inputs)
                self.queued.admit(size)
                try:
                    outputs = await endpoint.batcher.submit(inputs, deadline, rows, view)
                finally:
                    self.queued.release(size)  # answered, failed or cancelled: a cancelled one leaves the queue unrun
            by_name = dict(zip(served.run_names, outputs, strict=True))
            # The default outputs never hold the attributions: only a request that names its outputs may ask.
            if wanted is not served.every_output and any(o.name in (ATTRIBUTION, ATTRIBUTION_BASE) for o in wanted):
                # A mixed table is explained on the encoded matrix its model computed (a hidden output).
                explained = by_name[served.hidden_outputs[0]] if served.table is not None else inputs[served.input.name]
                with telemetry.span("driftline.attribution", {"driftline.rows": rows}):
                    by_name.update(await self._attributions(served, explained, by_name))
            result = InferResult(served.name, str(served.version), request.id,
                                 [_answer(served, o, by_name[o.name]) for o in wanted])
            if flagged is not None and len(flagged):
                result.parameters[FLAGGED_PARAMETER] = ",".join(map(str, flagged.tolist()))
            if final:
                result.parameters[FINAL] = True
        except BaseException as exc:
            if isinstance(exc, NotANumber) and endpoint.validator is not None:
                endpoint.validator.refused_text(exc)
            elapsed = time.perf_counter_ns() - started
            served.stats.failed(elapsed)
            endpoint.batcher.metrics.failed(exc, elapsed)
            raise
        finally:
            endpoint.in_flight.count -= 1
        elapsed = time.perf_counter_ns() - started
        served.stats.succeeded(rows, elapsed)
        endpoint.batcher.metrics.succeeded(rows, elapsed)
        return result

    async def _attributions(self, served: ServedVersion, rows: np.ndarray, outputs: dict) -> dict:
        """Exact feature attributions of these rows, computed only because the request asked for them."""
        loop = asyncio.get_running_loop()
        phi, base = await loop.run_in_executor(self.repository.executor, served.explainer.explain, rows)
        per_feature, start = per_row(phi, base, outputs.get("label"))
        return {ATTRIBUTION: per_feature.astype(np.float32), ATTRIBUTION_BASE: start.astype(np.float32)}


def _answer(served: ServedVersion, wanted: OutputRequest, array: np.ndarray) -> OutputTensor:
    if wanted.class_count:
        classes = served.metadata.classes
        width = int(np.prod(array.shape[1:])) if array.ndim > 1 else 1
        labels = tuple(classes) if classes and len(classes) == width else None
        return OutputTensor(wanted.name, "BYTES", top_classes(wanted.name, array, wanted.class_count, labels,
                                                              served.batching), wanted.binary)
    datatype = served.output_datatypes.get(wanted.name, "FP32")  # attributions are FP32
    if served.batching and array.ndim == 1:
        array = array.reshape(-1, 1)  # as Triton answers an output that is only a batch dimension (service._answered)
    return OutputTensor(wanted.name, datatype, array, wanted.binary)


def _honour(request: InferRequest) -> tuple[float | None, bool]:
    """The request's deadline and whether its answer is marked final, after checking its parameters: each is
    honoured or refused by name."""
    deadline, final = request.deadline, False
    if not request.parameters:
        return deadline, final
    # sequence_id first: Triton's clients send it with sequence_start/_end, and it is the one to name.
    for name, value in sorted(request.parameters.items(), key=lambda item: item[0] != "sequence_id"):
        if name == TIMEOUT:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidInput("parameter 'timeout' must be a non-negative int64 of microseconds, got "
                                   f"{echoed(value)}")
            if value:
                mine = time.monotonic() + value / 1e6
                deadline = mine if deadline is None else min(deadline, mine)
        elif name == FINAL_ASKED:
            if not isinstance(value, bool):
                raise InvalidInput(f"parameter {FINAL_ASKED!r} must be a bool, got {echoed(value)}")
            final = value
        elif name in HONOURED_ONLY_AS_DEFAULT:
            if value not in HONOURED_ONLY_AS_DEFAULT[name]:
                raise InvalidInput(f"parameter {echoed(name)} = {echoed(value)} is not supported by driftline (it has "
                                   "no priority levels and no sequence batching); leave it unset")
        else:
            raise InvalidInput(f"parameter {echoed(name)} is not supported by driftline; remove it (request parameters "
                               f"honoured: timeout, {FINAL_ASKED}, and priority / sequence_id at their defaults)")
    return deadline, final


def _refuse_tensor_parameters(request: InferRequest) -> None:
    for tensor in request.inputs:
        if tensor.parameters:
            refuse_input_parameter(tensor.name, next(iter(tensor.parameters)))
    for output in request.outputs:
        if output.parameters:
            name = next(iter(output.parameters))
            raise InvalidInput(f"parameter {name!r} of output {output.name!r} is not supported by driftline; "
                               "output parameters honoured: classification")


def refuse_input_parameter(tensor: str, name: str) -> None:
    raise InvalidInput(f"parameter {name!r} of input {tensor!r} is not supported by driftline (no shared-memory "
                       "extension); send the tensor's data in the request")
