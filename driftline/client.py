"""A Python client of a driftline server: tables in, tables out, on top of tritonclient.

::

    with Client("127.0.0.1:8001") as client:
        frame = client.infer("housing", {"living_area": [84.0], ...}, explain=True)
        report = client.drift("housing")

:meth:`Client.infer` takes columns (a dict, a list of row dicts, a polars or pandas DataFrame), sends them
the way the model takes them and answers a polars DataFrame: one column per output, ``version``,
``flagged`` and, with ``explain=True``, ``attribution[<column>]`` and ``attribution_base``.

- A model whose inputs are named after columns (``living_area`` FP32 [-1, 1], ``district`` BYTES [-1, 1])
  gets one tensor per column.
- A model with one 2-D numeric input (what ``driftline train`` publishes: ``input`` FP32 [-1, n]) gets the
  columns stacked in feature order; the order comes from ``driftline.v1.Driftline/VersionInfo``.

Retries, for UNAVAILABLE only: gRPC retries inside the channel (a service config), which covers a
connection dropped while the server swaps versions; it stops after 5 attempts (gRPC's own cap) and
about a second, too soon for a server that is still starting, so every call is also retried here,
with the same exponential backoff, for both protocols.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np
import polars as pl

# Not imported from driftline.attribution: that module pulls in onnx and the numba kernels.
ATTRIBUTION = "attribution"
ATTRIBUTION_BASE = "attribution_base"
FLAGGED_ROWS = "driftline_flagged_rows"  # response parameter: "0,3,7", the rows validation flagged

INITIAL_BACKOFF_S = 0.05
MAX_BACKOFF_S = 1.0
BACKOFF_MULTIPLIER = 2
RETRIED_SERVICES = ("inference.GRPCInferenceService", "driftline.v1.Driftline", "driftline.v1.Monitoring")
MAX_MESSAGE_BYTES = 2**31 - 1  # tritonclient's own limit, which passing channel_args would otherwise drop

# The server's HTTP codes, back to the gRPC status names its HTTP front end maps from (server/http_api.py).
_STATUS_OF_HTTP = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 409: "ABORTED",
    429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_NUMPY_OF = {
    "BOOL": np.dtype(bool), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}

T = TypeVar("T")


class ServerError(Exception):
    """The server refused a call: ``status`` is the gRPC status name (HTTP codes are mapped back to it)."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


# -- what a model takes and answers -------------------------------------------------------------------
@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelInfo:
    """What :meth:`Client.infer` needs to know about one model version; cached per (model, version)."""

    name: str
    version: str  # the version VersionInfo named; "" when it was not asked (HTTP)
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    feature_names: tuple[str, ...] = ()
    classes: tuple[Any, ...] = ()

    @property
    def stacked(self) -> bool:
        """Whether the columns go into one [rows, n] tensor in feature order (a trained tabular model)."""
        if len(self.inputs) != 1 or not self.feature_names:
            return False
        only = self.inputs[0]
        return (only.datatype in _NUMPY_OF and len(only.shape) == 2
                and only.shape[1] in (-1, len(self.feature_names)))

    @property
    def columns(self) -> tuple[str, ...]:
        """The data columns the model takes, in the order its attributions come."""
        return self.feature_names if self.stacked else tuple(t.name for t in self.inputs)

    @property
    def explainable(self) -> bool:
        return any(t.name == ATTRIBUTION for t in self.outputs)


@dataclass(frozen=True)
class InferResult:
    """One answer, before it becomes a table: every output as the server shaped it."""

    model: str
    version: str
    outputs: dict[str, np.ndarray]
    flagged: np.ndarray  # bool per row
    columns: tuple[str, ...]  # what an attribution column is named after
    classes: tuple[Any, ...] = ()

    def frame(self, as_pandas: bool = False) -> Any:
        table: dict[str, Any] = {}
        for name, array in self.outputs.items():
            labels: Sequence[Any] = {ATTRIBUTION: self.columns, "probabilities": self.classes}.get(name, ())
            table.update(_output_columns(name, array, labels if len(labels) == _width(array) else range(_width(array))))
        table["version"] = [self.version] * len(self.flagged)
        table["flagged"] = self.flagged
        frame = pl.DataFrame(table)
        return frame.to_pandas() if as_pandas else frame


# -- drift ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ColumnDrift:
    name: str
    kind: str  # "numeric" or "categorical"
    rows: int
    psi: float
    js: float
    ks: float
    wasserstein: float
    mean_shift: float
    chi2: float
    alarm: bool
    alarms: tuple[str, ...]
    source: str  # "feature", or the model output the column comes from
    p_value: float | None = None
    p_adjusted: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # fields this client does not know yet


@dataclass(frozen=True)
class DriftSection:
    rows: int
    alarm: bool
    features: tuple[ColumnDrift, ...]
    outputs: tuple[ColumnDrift, ...]
    attribution: tuple[ColumnDrift, ...]


@dataclass(frozen=True)
class DriftReport:
    model: str
    version: str
    window: str  # what the window covers, e.g. "last 10000 rows"
    current: DriftSection  # the sliding window
    since_live: DriftSection
    thresholds: dict[str, Any]
    validation: dict[str, Any]
    attribution_flags: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def current_rows(self) -> int:
        return self.current.rows

    @property
    def alarm(self) -> bool:
        return self.current.alarm

    @property
    def columns(self) -> tuple[ColumnDrift, ...]:
        """The window's feature columns."""
        return self.current.features


_COLUMN_FIELDS = frozenset(ColumnDrift.__dataclass_fields__) - {"extra"}
_REPORT_FIELDS = frozenset({"name", "version", "window", "current", "since_live", "thresholds_json",
                            "validation_json", "attribution_flags_json"})


def drift_report(message: Any) -> DriftReport:
    """A ``driftline.v1.DriftReportResponse`` as dataclasses; fields added to the proto later land in ``extra``."""
    return DriftReport(
        model=message.name, version=message.version, window=message.window,
        current=_section(message.current), since_live=_section(message.since_live),
        thresholds=_json_field(message, "thresholds_json"), validation=_json_field(message, "validation_json"),
        attribution_flags=_json_field(message, "attribution_flags_json"),
        extra=_unknown_fields(message, _REPORT_FIELDS),
    )


def _section(message: Any) -> DriftSection:
    return DriftSection(rows=message.rows, alarm=message.alarm,
                        features=tuple(_column(c) for c in message.features),
                        outputs=tuple(_column(c) for c in message.outputs),
                        attribution=tuple(_column(c) for c in getattr(message, "attribution", ())))


def _column(message: Any) -> ColumnDrift:
    nan = float("nan")
    return ColumnDrift(
        name=message.name, kind=message.kind, rows=message.rows,
        psi=message.psi, js=message.js, ks=message.ks, wasserstein=getattr(message, "wasserstein", nan),
        mean_shift=message.mean_shift, chi2=getattr(message, "chi2", nan),
        alarm=message.alarm, alarms=tuple(message.alarms), source=getattr(message, "source", ""),
        p_value=getattr(message, "p_value", None), p_adjusted=getattr(message, "p_adjusted", None),
        note=getattr(message, "note", ""),
        extra=_unknown_fields(message, _COLUMN_FIELDS),
    )


def _json_field(message: Any, name: str) -> dict[str, Any]:
    return json.loads(getattr(message, name, "") or "{}")


def _unknown_fields(message: Any, known: frozenset[str]) -> dict[str, Any]:
    return {f.name: value for f, value in message.ListFields() if f.name not in known}


# -- the client -----------------------------------------------------------------------------------------
class Client:
    """A driftline server at ``url`` ("host:port"), over gRPC (port 8001) or HTTP (port 8000).

    ``retries``: how many times a call that met UNAVAILABLE (the server down, starting or shedding load)
    is sent again, after 0.05 s, 0.1 s, ... up to 1 s apart. ``timeout``: seconds per attempt.
    ``headers``: sent with every call (gRPC metadata or HTTP headers), e.g. a ``traceparent``.
    """

    def __init__(self, url: str = "127.0.0.1:8001", *, protocol: Literal["grpc", "http"] = "grpc",
                 retries: int = 4, timeout: float = 30.0, headers: Mapping[str, str] | None = None) -> None:
        if protocol not in ("grpc", "http"):
            raise ValueError(f"protocol must be 'grpc' or 'http', not {protocol!r}")
        if retries < 0 or timeout <= 0:
            raise ValueError(f"retries must be >= 0 and timeout > 0, got retries={retries}, timeout={timeout}")
        self.url, self.protocol, self.retries, self.timeout = url, protocol, retries, timeout
        self.headers = dict(headers or {})
        self._models: dict[tuple[str, str], ModelInfo] = {}
        self._channel: Any = None  # driftline's own services; tritonclient keeps its channel to itself
        if protocol == "grpc":
            import tritonclient.grpc as triton

            self._triton = triton.InferenceServerClient(url, channel_args=channel_args(retries))
        else:
            try:
                import tritonclient.http as triton
            except ImportError as exc:
                raise ImportError("protocol='http' needs tritonclient's HTTP client: "
                                  "pip install 'tritonclient[http]'") from exc
            self._triton = triton.InferenceServerClient(url, connection_timeout=timeout, network_timeout=timeout)
        self._module = triton

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._triton.close()
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    # -- inference --------------------------------------------------------------------------------
    def infer(self, model: str, data: Any, *, version: str = "", explain: bool = False, drop_extra: bool = False,
              as_pandas: bool = False, headers: Mapping[str, str] | None = None) -> Any:
        """Predictions for the rows of ``data`` as a polars DataFrame (pandas with ``as_pandas=True``).

        Columns the model does not take are an error unless ``drop_extra``; missing ones always are.
        Missing values (None) go as NaN to float inputs and as "" to BYTES ones.
        """
        return self.infer_result(model, data, version=version, explain=explain, drop_extra=drop_extra,
                                 headers=headers).frame(as_pandas)

    def infer_pandas(self, model: str, data: Any, **options: Any) -> Any:
        return self.infer(model, data, as_pandas=True, **options)

    def infer_result(self, model: str, data: Any, *, version: str = "", explain: bool = False,
                     drop_extra: bool = False, headers: Mapping[str, str] | None = None) -> InferResult:
        """What :meth:`infer` tabulates: the outputs as arrays, the version that answered, the flagged rows."""
        sent = {**self.headers, **(headers or {})}
        info = self.model_info(model, version, headers=sent)
        why = ("the HTTP front end has no route to driftline.v1.Driftline/VersionInfo, which knows them; use "
               "protocol='grpc'" if self.protocol == "http" else "VersionInfo names no features for it")
        frame = _columns_of(info, as_frame(data), drop_extra, why)
        inputs = [self._tensor(t.name, t.datatype, array) for t, array in _arrays(info, frame)]
        outputs = None
        if explain:
            if not info.explainable:
                offered = ", ".join(t.name for t in info.outputs)
                raise ValueError(f"{model} offers no attributions (its outputs: {offered}); only models trained as "
                                 "tree ensembles or linear regressions are explainable")
            outputs = [self._module.InferRequestedOutput(t.name) for t in info.outputs]
        result = self._retrying(lambda: self._infer(model, inputs, version, outputs, sent))
        answered, parameters = _response_of(result)
        if not version and info.version and answered != info.version:
            self._models.pop((model, version), None)  # a swap happened: describe the new version next time
        names = [t.name for t in info.outputs if explain or t.name not in (ATTRIBUTION, ATTRIBUTION_BASE)]
        arrays = {name: array for name in names if (array := result.as_numpy(name)) is not None}
        flagged = np.zeros(len(frame), dtype=bool)
        if parameters.get(FLAGGED_ROWS):
            flagged[[int(i) for i in str(parameters[FLAGGED_ROWS]).split(",")]] = True
        return InferResult(model, answered, arrays, flagged, info.columns, info.classes)

    def model_info(self, model: str, version: str = "", *, headers: Mapping[str, str] | None = None) -> ModelInfo:
        """The model's inputs, outputs, feature names and class labels (cached per model and version)."""
        key = (model, version)
        if key not in self._models:
            self._models[key] = self._describe(model, version, {**self.headers, **(headers or {})})
        return self._models[key]

    def feature_names(self, model: str, version: str = "") -> list[str]:
        return list(self.model_info(model, version).feature_names)

    # -- drift ------------------------------------------------------------------------------------
    def drift(self, model: str, *, version: str = "", headers: Mapping[str, str] | None = None) -> DriftReport:
        """The drift report of ``model`` (the version serving by default)."""
        from driftline.proto import driftline_pb2 as dpb

        sent = {**self.headers, **(headers or {})}
        if self.protocol == "grpc":
            from driftline.proto import driftline_pb2_grpc

            stub = driftline_pb2_grpc.MonitoringStub(self._driftline_channel())
            request = dpb.DriftRequest(name=model, version=version)
            return drift_report(self._retrying(lambda: _grpc_call(stub.DriftReport, request, self.timeout, sent)))
        from google.protobuf import json_format

        document = self._retrying(lambda: self._http_get(_model_path(model, version) + "/drift", sent))
        return drift_report(json_format.ParseDict(document, dpb.DriftReportResponse(), ignore_unknown_fields=True))

    # -- transport --------------------------------------------------------------------------------
    def _describe(self, model: str, version: str, headers: dict[str, str]) -> ModelInfo:
        metadata = self._retrying(lambda: self._metadata(model, version, headers))
        if isinstance(metadata, dict):  # tritonclient.http answers JSON
            inputs, outputs = metadata["inputs"], metadata["outputs"]
            tensors = [tuple(Tensor(t["name"], t["datatype"], tuple(t["shape"])) for t in group)
                       for group in (inputs, outputs)]
        else:
            tensors = [tuple(Tensor(t.name, t.datatype, tuple(t.shape)) for t in group)
                       for group in (metadata.inputs, metadata.outputs)]
        if self.protocol == "http":
            from google.protobuf import json_format

            from driftline.proto import driftline_pb2 as dpb

            document = self._retrying(lambda: self._http_get(_model_path(model, version) + "/driftline", headers))
            info = json_format.ParseDict(document, dpb.VersionInfoResponse(), ignore_unknown_fields=True)
        else:
            channel = self._driftline_channel()
            info = self._retrying(lambda: version_info(channel, model, version, self.timeout, headers.items()))
        classes = json.loads(info.metadata_json).get("classes") if info.metadata_json else None
        return ModelInfo(model, info.version, *tensors, feature_names=tuple(info.feature_names),
                         classes=tuple(classes or ()))

    def _metadata(self, model: str, version: str, headers: dict[str, str]) -> Any:
        if self.protocol == "grpc":
            return self._triton.get_model_metadata(model, version, headers=headers, client_timeout=self.timeout)
        return self._triton.get_model_metadata(model, version, headers=headers)

    def _infer(self, model: str, inputs: list, version: str, outputs: list | None, headers: dict[str, str]) -> Any:
        if self.protocol == "grpc":
            return self._triton.infer(model, inputs, model_version=version, outputs=outputs, headers=headers,
                                      client_timeout=self.timeout)
        return self._triton.infer(model, inputs, model_version=version, outputs=outputs, headers=headers)

    def _tensor(self, name: str, datatype: str, array: np.ndarray) -> Any:
        tensor = self._module.InferInput(name, list(array.shape), datatype)
        if self.protocol == "http":
            tensor.set_data_from_numpy(array, binary_data=True)
        else:
            tensor.set_data_from_numpy(array)
        return tensor

    def _driftline_channel(self) -> Any:
        import grpc

        if self._channel is None:
            self._channel = grpc.insecure_channel(self.url, options=channel_args(self.retries))
        return self._channel

    def _http_get(self, path: str, headers: dict[str, str]) -> Any:
        request = urllib.request.Request(f"http://{self.url}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            message = _http_error_message(exc)
            if message.startswith("no such path"):
                raise ServerError("UNIMPLEMENTED", f"this server has no HTTP route {path} ({message}); "
                                                   "use protocol='grpc'") from None
            raise ServerError(_STATUS_OF_HTTP.get(exc.code, "UNKNOWN"), message) from None
        except OSError as exc:  # refused or reset: the server is not (yet) there
            raise ServerError("UNAVAILABLE", f"{self.url}: {exc}") from None

    def _retrying(self, call: Callable[[], T]) -> T:
        """``call()``, sent again after a backoff while the server answers UNAVAILABLE; errors as ServerError."""
        delay = INITIAL_BACKOFF_S
        for attempt in range(self.retries + 1):
            try:
                return _translated(call)
            except ServerError as exc:
                if exc.status != "UNAVAILABLE" or attempt == self.retries:
                    raise
            time.sleep(delay)
            delay = min(delay * BACKOFF_MULTIPLIER, MAX_BACKOFF_S)
        raise AssertionError("unreachable: the last attempt returns or raises")


def version_info(channel: Any, model: str, version: str = "", timeout: float = 30.0,
                 metadata: Iterable[tuple[str, str]] = ()) -> Any:
    """``driftline.v1.Driftline/VersionInfo`` on a gRPC channel: the feature names (in model input order),
    the version's metadata.json and its training profile."""
    from driftline.proto import driftline_pb2 as dpb
    from driftline.proto import driftline_pb2_grpc

    stub = driftline_pb2_grpc.DriftlineStub(channel)
    return stub.VersionInfo(dpb.VersionInfoRequest(name=model, version=version), timeout=timeout,
                            metadata=tuple(metadata))


def feature_names(channel: Any, model: str, version: str = "", timeout: float = 30.0,
                  metadata: Iterable[tuple[str, str]] = ()) -> list[str]:
    """The columns a trained model's one input stacks, in order (raises grpc.RpcError, not ServerError)."""
    return list(version_info(channel, model, version, timeout, metadata).feature_names)


def channel_args(retries: int) -> list[tuple[str, Any]]:
    """gRPC channel options: retries of UNAVAILABLE with exponential backoff, through a service config."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        # gRPC waits 1 s before reconnecting after a refused connection, longer than all the retries below
        # take: without this they would all fail on the same refusal.
        ("grpc.initial_reconnect_backoff_ms", int(INITIAL_BACKOFF_S * 1000)),
        ("grpc.min_reconnect_backoff_ms", int(INITIAL_BACKOFF_S * 1000)),
        ("grpc.max_reconnect_backoff_ms", int(MAX_BACKOFF_S * 1000)),
    ]
    if retries == 0:  # a retryPolicy needs maxAttempts >= 2; gRPC refuses the whole config otherwise
        return [*options, ("grpc.enable_retries", 0)]
    policy = {
        "maxAttempts": retries + 1,  # gRPC caps it at 5
        "initialBackoff": f"{INITIAL_BACKOFF_S}s",
        "maxBackoff": f"{MAX_BACKOFF_S}s",
        "backoffMultiplier": BACKOFF_MULTIPLIER,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    config = {"methodConfig": [{"name": [{"service": s} for s in RETRIED_SERVICES], "retryPolicy": policy}]}
    return [*options, ("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(config))]


# -- errors ---------------------------------------------------------------------------------------------
def _translated(call: Callable[[], T]) -> T:
    import grpc
    from tritonclient.utils import InferenceServerException

    try:
        return call()
    except InferenceServerException as exc:
        raise ServerError(_status_name(exc.status()), exc.message() or str(exc)) from None
    except grpc.RpcError as exc:  # driftline's own services, called without tritonclient
        raise ServerError(exc.code().name, exc.details() or "") from None
    except (ConnectionError, TimeoutError) as exc:  # tritonclient.http lets socket errors through
        raise ServerError("UNAVAILABLE" if isinstance(exc, ConnectionError) else "DEADLINE_EXCEEDED",
                          str(exc)) from None


def _status_name(status: str | None) -> str:
    """tritonclient's status ("StatusCode.NOT_FOUND" over gRPC, "404" over HTTP) as a gRPC status name."""
    if not status:
        return "UNKNOWN"
    if status.isdigit():
        return _STATUS_OF_HTTP.get(int(status), "UNKNOWN")
    return status.removeprefix("StatusCode.")


def _grpc_call(method: Callable[..., T], request: Any, timeout: float, headers: Mapping[str, str]) -> T:
    return method(request, timeout=timeout, metadata=tuple(headers.items()))


def _http_error_message(exc: urllib.error.HTTPError) -> str:
    body = exc.read()
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace") or exc.reason


def _model_path(model: str, version: str) -> str:
    path = f"/v2/models/{urllib.parse.quote(model, safe='')}"
    return f"{path}/versions/{urllib.parse.quote(version, safe='')}" if version else path


def _response_of(result: Any) -> tuple[str, dict[str, Any]]:
    """(model_version, parameters as plain values) of a tritonclient result, gRPC or HTTP."""
    response = result.get_response()
    if isinstance(response, dict):
        return str(response.get("model_version", "")), dict(response.get("parameters") or {})
    parameters = {}
    for key, value in response.parameters.items():
        kind = value.WhichOneof("parameter_choice")
        parameters[key] = getattr(value, kind) if kind else None
    return response.model_version, parameters


# -- tables to tensors ----------------------------------------------------------------------------------
def as_frame(data: Any) -> pl.DataFrame:
    """Any of the accepted row forms as a polars DataFrame."""
    if isinstance(data, pl.DataFrame):
        return data
    if type(data).__module__.startswith("pandas"):
        return pl.from_pandas(data)
    if isinstance(data, Mapping):
        return pl.DataFrame({name: _column_values(values) for name, values in data.items()})
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        if not all(isinstance(row, Mapping) for row in data):
            raise ValueError("rows must be dicts of column -> value")
        return pl.DataFrame(list(data), infer_schema_length=None)  # a key only late rows have is still a column
    raise ValueError(f"cannot read rows from {type(data).__name__}: pass a dict of columns, a list of row dicts, "
                     "or a polars or pandas DataFrame")


def _column_values(values: Any) -> Any:
    # A 2-D array is a column of rows (a tensor input wider than 1); polars takes it as a list of arrays.
    if isinstance(values, np.ndarray) and values.ndim > 1:
        return list(values)
    return values


def _columns_of(info: ModelInfo, frame: pl.DataFrame, drop_extra: bool, why_no_features: str) -> pl.DataFrame:
    """``frame``'s columns the model takes, in its order; missing or (without ``drop_extra``) extra ones raise."""
    wanted = info.columns
    if _needs_feature_names(info) and info.inputs[0].name not in frame.columns:
        raise ValueError(f"{info.name} takes one input, {_signature(info.inputs)}, built from columns in an order "
                         f"this client does not know: {why_no_features}")
    missing = [c for c in wanted if c not in frame.columns]
    extra = [c for c in frame.columns if c not in wanted]
    if missing or (extra and not drop_extra):
        problems = ([f"missing columns {missing}"] if missing else []) + ([f"unknown keys {extra}"] if extra and
                                                                           not drop_extra else [])
        raise ValueError(f"{info.name}: {', '.join(problems)}; the model takes {', '.join(wanted)}"
                         + ("" if missing or not extra else " (drop_extra=True drops the others)"))
    return frame.select(wanted)


def _needs_feature_names(info: ModelInfo) -> bool:
    """A single numeric [rows, n] input, n > 1, with no feature names to build it from."""
    if len(info.inputs) != 1 or info.stacked:
        return False
    only = info.inputs[0]
    return only.datatype in _NUMPY_OF and len(only.shape) == 2 and only.shape[1] != 1


def _signature(tensors: Sequence[Tensor]) -> str:
    return ", ".join(f"{t.name} {t.datatype} {list(t.shape)}" for t in tensors)


def _arrays(info: ModelInfo, frame: pl.DataFrame) -> list[tuple[Tensor, np.ndarray]]:
    if info.stacked:
        tensor = info.inputs[0]
        columns = [_numeric(frame[c], tensor.datatype) for c in info.feature_names]
        return [(tensor, np.stack(columns, axis=1) if columns else np.empty((len(frame), 0)))]
    return [(t, _shaped(t, _encoded(frame[t.name], t.datatype), len(frame))) for t in info.inputs]


def _encoded(series: pl.Series, datatype: str) -> np.ndarray:
    if datatype == "BYTES":
        if series.dtype == pl.Binary:
            return np.array([b"" if v is None else v for v in series.to_list()], dtype=np.object_)
        text = series.cast(pl.String).fill_null("")
        return np.array([v.encode("utf-8") for v in text.to_list()], dtype=np.object_)
    if isinstance(series.dtype, (pl.List, pl.Array)):
        return np.stack([np.asarray(row, dtype=_NUMPY_OF[datatype]) for row in series.to_list()])
    return _numeric(series, datatype)


def _numeric(series: pl.Series, datatype: str) -> np.ndarray:
    dtype = _NUMPY_OF.get(datatype)
    if dtype is None:
        raise ValueError(f"column {series.name!r}: datatype {datatype} is not supported by this client")
    if not series.dtype.is_numeric() and series.dtype != pl.Boolean and series.dtype != pl.Null:
        raise ValueError(f"column {series.name!r} holds {series.dtype}, but the model takes {datatype} numbers")
    if series.null_count():
        if dtype.kind != "f":
            raise ValueError(f"column {series.name!r} has missing values, which a {datatype} input cannot carry")
        series = series.cast(pl.Float64)  # nulls become NaN below, which the server counts as missing
    return series.to_numpy().astype(dtype, copy=False)


def _shaped(tensor: Tensor, array: np.ndarray, rows: int) -> np.ndarray:
    """A column as the input's shape: [rows] or [rows, 1] for one value per row, as is for wider rows."""
    if array.ndim == 1 and len(tensor.shape) >= 2:
        return array.reshape(rows, *(1 for _ in tensor.shape[1:]))
    return array


# -- tensors to tables ----------------------------------------------------------------------------------
def _width(array: np.ndarray) -> int:
    return int(np.prod(array.shape[1:], dtype=np.int64)) if array.ndim > 1 else 1


def _output_columns(name: str, array: np.ndarray, labels: Sequence[Any]) -> dict[str, Any]:
    flat = array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(-1, 1)
    if array.dtype == np.object_:
        flat = np.vectorize(_text, otypes=[np.object_])(flat)
    # polars keeps a numpy object array as Object; as a list, text becomes String.
    column: Callable[[int], Any] = (lambda i: flat[:, i].tolist()) if flat.dtype == np.object_ else (
        lambda i: flat[:, i])
    if flat.shape[1] == 1 and name != ATTRIBUTION:
        return {name: column(0)}
    return {f"{name}[{label}]": column(i) for i, label in enumerate(labels)}


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value
