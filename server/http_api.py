"""The HTTP/REST front end: the Open Inference Protocol's JSON binding, as one raw ASGI application.

No framework: a request costs what uvicorn's httptools protocol costs plus this module's routing,
which matters because HTTP is the cheapest door into the server (benchmarks/RESULTS.md). Inference
goes through the request path gRPC uses (:mod:`driftline.server.pipeline`); every other endpoint
calls the gRPC servicer's own handler, so that both front ends answer alike. Errors are mapped here,
in :meth:`HttpApi.__call__`, and nowhere else: a domain error gets the HTTP code of its gRPC status
(``HTTP_STATUS``) and the body ``{"error": "..."}``.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import orjson

from driftline.errors import DriftlineError, InvalidInput, NotFound
from driftline.proto import driftline_pb2 as dpb
from driftline.proto import grpc_service_pb2 as pb
from driftline.server import status
from driftline.server.auth import AdminGuard
from driftline.server.http_codec import encode_result, json_object, parse_infer, refuse_unknown
from driftline.server.pipeline import RequestPath
from driftline.server.proto_json import to_json
from driftline.server.service import InferenceService

# gRPC status -> HTTP code, as gRPC's own HTTP mapping has it (google.rpc.Code); Triton agrees where
# both say something (400, 404, 500, 503).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
HTTP_EXTENSIONS = ("binary_tensor_data",)  # beside the servicer's: this one exists only over HTTP
COMPRESS_FROM_BYTES = 1024  # smaller answers cost more to compress than they save

JSON = [(b"content-type", b"application/json")]
Response = tuple[int, bytes, list[tuple[bytes, bytes]]]


class Refused(Exception):
    """An HTTP-level refusal (no such path, wrong method, body too large) with its own code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _ClientGone(Exception):
    pass


class _GrpcCall:
    """What the servicer's handlers read from their context, for a call that came over HTTP: no peer
    marker (so it is a client's call, which reaches every worker), the caller's authorization header
    when it sent one (admin reads), and no deadline."""

    def __init__(self, metadata: tuple = ()) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple:
        return self._metadata

    def time_remaining(self) -> None:
        return None


class _Request:
    __slots__ = ("scope", "receive", "headers", "model", "version")

    def __init__(self, scope: dict, receive: Callable[[], Awaitable[dict]]) -> None:
        self.scope = scope
        self.receive = receive
        self.headers: dict[bytes, bytes] = dict(scope["headers"])
        self.model = ""
        self.version = ""


class HttpApi:
    def __init__(self, service: InferenceService, path: RequestPath, guard: AdminGuard, max_body_bytes: int,
                 driftline: Any = None, monitoring: Any = None) -> None:
        self._service = service
        self._path = path
        self._guard = guard
        self._max_body = max_body_bytes
        self._call = _GrpcCall()
        # The servicer's handlers without their gRPC error boundary: errors come back to ours.
        self._handlers = {name: _unwrapped(getattr(service, name)) for name in (
            "ServerReady", "ServerMetadata", "ModelReady", "ModelMetadata", "ModelConfig", "ModelStatistics",
            "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload")}
        # driftline's own reads: the version's lineage and features, and its drift report (paths of our own under
        # the model's, as Triton puts its extensions there)
        if driftline is not None:
            self._handlers["VersionInfo"] = _unwrapped(driftline.VersionInfo)
        if monitoring is not None:
            self._handlers["DriftReport"] = _unwrapped(monitoring.DriftReport)
        self._server_routes: dict[tuple[str, ...], Callable[[_Request], Awaitable[Response]]] = {
            (): self._server_metadata, ("health", "live"): self._live, ("health", "ready"): self._ready,
            ("models", "stats"): self._statistics,
        }
        # /v2/models/{m}[/versions/{v}] + "/" + action -> (method, handler); "" is the model itself
        self._model_actions: dict[str, tuple[str, Callable[[_Request], Awaitable[Response]]]] = {
            "infer": ("POST", self._infer), "": ("GET", self._model_metadata), "ready": ("GET", self._model_ready),
            "config": ("GET", self._model_config), "stats": ("GET", self._statistics),
            "driftline": ("GET", self._version_info), "drift": ("GET", self._drift),
        }

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return  # uvicorn runs with lifespan and websockets off: nothing else arrives
        request = _Request(scope, receive)
        try:
            code, body, headers = await self._route(request)
        except _ClientGone:
            return
        except Refused as exc:
            code, body, headers = _error(exc.code, str(exc))
        except Exception as exc:  # noqa: BLE001 - this is the boundary
            grpc_code, message = status.message_of(exc)
            code, body, headers = _error(HTTP_STATUS.get(grpc_code, 500), message)
        if len(body) >= COMPRESS_FROM_BYTES and b"gzip" in request.headers.get(b"accept-encoding", b""):
            body = zlib.compress(body, 1, wbits=31)
            headers = [*headers, (b"content-encoding", b"gzip")]
        await send({"type": "http.response.start", "status": code,
                    "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _route(self, request: _Request) -> Response:
        parts = request.scope["path"].split("/")
        if len(parts) < 2 or parts[0] or parts[1] != "v2":
            raise Refused(404, f"no such path: {request.scope['path']} (the protocol's paths start with /v2)")
        parts = parts[2:]
        head = parts[0] if parts else ""
        if head == "models" and len(parts) >= 2 and parts != ["models", "stats"]:
            return await self._model_route(request, parts[1], parts[2:])
        if head == "repository":
            return await self._repository_route(request, parts[1:])
        handler = self._server_routes.get(tuple(parts))
        if handler is None:
            raise Refused(404, f"no such path: {request.scope['path']}")
        _allow(request, "GET")
        return await handler(request)

    async def _model_route(self, request: _Request, model: str, tail: list[str]) -> Response:
        request.model = model
        if len(tail) >= 2 and tail[0] == "versions":
            request.version, tail = tail[1], tail[2:]
        action = self._model_actions.get(tail[0] if tail else "") if len(tail) <= 1 else None
        if action is None:
            raise Refused(404, f"no such path: {request.scope['path']}")
        _allow(request, action[0])
        return await action[1](request)

    async def _repository_route(self, request: _Request, parts: list[str]) -> Response:
        if parts == ["index"]:
            _allow(request, "POST")
            return await self._repository_index(request)
        if len(parts) == 3 and parts[0] == "models" and parts[2] in ("load", "unload"):
            _allow(request, "POST")
            request.model = parts[1]
            return await self._load_or_unload(request, parts[2])
        raise Refused(404, f"no such path: {request.scope['path']}")

    # -- inference --------------------------------------------------------------------------------
    async def _infer(self, request: _Request) -> Response:
        body = await self._body(request)
        length = request.headers.get(b"inference-header-content-length")
        parsed = parse_infer(body, _header_int(length) if length is not None else None, request.model, request.version)
        result = await self._path.infer(parsed.request)
        payload, json_length = encode_result(result, parsed)
        if json_length is None:
            return 200, payload, JSON
        return 200, payload, [(b"content-type", b"application/octet-stream"),
                              (b"inference-header-content-length", str(json_length).encode())]

    async def _body(self, request: _Request) -> bytes:
        declared = request.headers.get(b"content-length")
        if declared is not None and _header_int(declared) > self._max_body:
            raise Refused(413, f"the body has {int(declared)} bytes; this server takes at most {self._max_body}")
        chunks, size = [], 0
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:  # a chunked body says no length up front
                raise Refused(413, f"the body is larger than {self._max_body} bytes, the most this server takes")
            if not message.get("more_body", False):
                break
            chunks.append(chunk)
        body = b"".join([*chunks, chunk]) if chunks else chunk  # most bodies arrive in one message: no copy
        encoding = request.headers.get(b"content-encoding")
        return body if encoding is None else self._decoded(body, encoding)

    def _decoded(self, body: bytes, encoding: bytes) -> bytes:
        encoding = encoding.lower()
        return body if encoding == b"identity" else _decompress(body, encoding, self._max_body)

    # -- health and metadata, through the servicer's own handlers ---------------------------------
    async def _grpc(self, method: str, message: Any) -> Any:
        return await self._handlers[method](message, self._call)

    async def _live(self, request: _Request) -> Response:
        return _json(200, {"live": True})

    async def _ready(self, request: _Request) -> Response:
        ready = (await self._grpc("ServerReady", pb.ServerReadyRequest())).ready
        return _json(200 if ready else 400, {"ready": ready})  # the protocol: 200 is yes, a 4xx is no

    async def _server_metadata(self, request: _Request) -> Response:
        metadata = to_json(await self._grpc("ServerMetadata", pb.ServerMetadataRequest()))
        metadata["extensions"] = [*metadata["extensions"], *HTTP_EXTENSIONS]
        return _json(200, metadata)

    async def _model_metadata(self, request: _Request) -> Response:
        response = await self._grpc("ModelMetadata", pb.ModelMetadataRequest(name=request.model,
                                                                            version=request.version))
        return _json(200, to_json(response))

    async def _version_info(self, request: _Request) -> Response:
        if "VersionInfo" not in self._handlers:
            raise Refused(404, "this server does not expose version info over HTTP")
        authorization = request.headers.get(b"authorization", b"").decode("latin-1")
        call = _GrpcCall((("authorization", authorization),)) if authorization else self._call
        message = dpb.VersionInfoRequest(name=request.model, version=request.version)
        return _json(200, to_json(await self._handlers["VersionInfo"](message, call)))

    async def _drift(self, request: _Request) -> Response:
        if "DriftReport" not in self._handlers:
            raise Refused(404, "this server does not expose drift reports over HTTP")
        return _json(200, to_json(await self._grpc("DriftReport", dpb.DriftRequest(name=request.model,
                                                                                   version=request.version))))

    async def _model_ready(self, request: _Request) -> Response:
        answer = await self._grpc("ModelReady", pb.ModelReadyRequest(name=request.model, version=request.version))
        if answer.ready:
            return _json(200, {"name": request.model, "ready": True})
        try:  # why not: an unknown model is 404 (with the reason), a known one that cannot serve 400
            self._service.repository.get(request.model, request.version)
        except NotFound:
            raise
        except DriftlineError as exc:
            raise Refused(400, str(exc)) from None
        raise Refused(400, f"model {request.model!r} is not ready")

    async def _model_config(self, request: _Request) -> Response:
        response = await self._grpc("ModelConfig", pb.ModelConfigRequest(name=request.model, version=request.version))
        return _json(200, to_json(response.config))

    async def _statistics(self, request: _Request) -> Response:
        response = await self._grpc("ModelStatistics",
                                    pb.ModelStatisticsRequest(name=request.model, version=request.version))
        return _json(200, to_json(response))

    # -- repository extension ---------------------------------------------------------------------
    async def _repository_index(self, request: _Request) -> Response:
        document = _json_body(await self._body(request), frozenset({"ready"}))
        ready = document.get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidInput(f"'ready' must be true or false, got {ready!r}")
        response = await self._grpc("RepositoryIndex", pb.RepositoryIndexRequest(ready=ready))
        return _json(200, to_json(response)["models"])

    async def _load_or_unload(self, request: _Request, action: str) -> Response:
        refusal = self._guard.refusal(request.headers.get(b"authorization", b"").decode("latin-1"))
        if refusal is not None:
            raise Refused(HTTP_STATUS[refusal[0]], refusal[1])
        document = _json_body(await self._body(request), frozenset({"parameters"}))
        parameters = _repository_parameters(document.get("parameters", {}))
        if action == "load":
            await self._grpc("RepositoryModelLoad",
                             pb.RepositoryModelLoadRequest(model_name=request.model, parameters=parameters))
        else:
            await self._grpc("RepositoryModelUnload",
                             pb.RepositoryModelUnloadRequest(model_name=request.model, parameters=parameters))
        return 200, b"", []


def _unwrapped(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    return getattr(handler, "__wrapped__", handler).__get__(handler.__self__)


def _allow(request: _Request, method: str) -> None:
    if request.scope["method"] != method:
        raise Refused(405, f"{request.scope['path']} takes {method}, not {request.scope['method']}")


def _json(code: int, document: Any) -> Response:
    return code, orjson.dumps(document), JSON


def _error(code: int, message: str) -> Response:
    return code, orjson.dumps({"error": status.bounded(message)}), JSON  # an echoed 3 MiB path stays out


def _header_int(value: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        raise Refused(400, f"header value {value.decode('latin-1')!r} is not a whole number") from None


def _decompress(body: bytes, encoding: bytes, limit: int) -> bytes:
    """A gzip or deflate (zlib) request body, refused once it grows past ``limit``."""
    wbits = {b"gzip": 31, b"x-gzip": 31, b"deflate": 15}.get(encoding)
    if wbits is None:
        raise Refused(415, f"Content-Encoding {encoding.decode('latin-1')!r} is not supported; send gzip, deflate "
                           "or identity")
    inflater = zlib.decompressobj(wbits)
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"the body is not valid {encoding.decode()} data: {exc}") from None
    if len(plain) > limit:
        raise Refused(413, f"the body inflates past {limit} bytes, the most this server takes")
    return plain


def _json_body(body: bytes, known: frozenset[str]) -> dict[str, Any]:
    """An optional JSON object body of the repository extension, with only ``known`` fields."""
    if not body.strip():
        return {}
    document = json_object(body)
    refuse_unknown(document, known, "this request")
    return document


def _repository_parameters(parameters: Any) -> dict[str, pb.ModelRepositoryParameter]:
    """JSON values as the gRPC message's: "file:..." parameters carry base64, as Triton's HTTP API sends them."""
    if not isinstance(parameters, dict):
        raise InvalidInput("'parameters' must be a JSON object")
    converted = {}
    for name, value in parameters.items():
        if isinstance(value, bool):
            converted[name] = pb.ModelRepositoryParameter(bool_param=value)
        elif isinstance(value, int):
            converted[name] = pb.ModelRepositoryParameter(int64_param=value)
        elif isinstance(value, str) and name.startswith("file:"):
            try:
                converted[name] = pb.ModelRepositoryParameter(bytes_param=base64.b64decode(value, validate=True))
            except ValueError:
                raise InvalidInput(f"parameter {name!r} must be base64") from None
        elif isinstance(value, str):
            converted[name] = pb.ModelRepositoryParameter(string_param=value)
        else:
            raise InvalidInput(f"parameter {name!r} must be a boolean, an integer or a string, got {value!r}")
    return converted
