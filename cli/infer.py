"""driftline infer NAME: send rows to a server and print its predictions."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import grpc
import numpy as np
import polars as pl

from driftline.cli.common import add_server, version_text
from driftline.client import Client, InferResult, ServerError
from driftline.client import feature_names as feature_names  # demo and explain read it from here
from driftline.datatypes import NUMPY_OF
from driftline.errors import InvalidInput
from driftline.proto import grpc_service_pb2 as pb
from driftline.proto import grpc_service_pb2_grpc
from driftline.server import telemetry
from driftline.trainer.data import read_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="send rows to a server, print predictions", description=__doc__)
    p.add_argument("name", help="model name")
    add_server(p)
    rows = p.add_mutually_exclusive_group(required=True)
    rows.add_argument("--json", metavar="JSON", help='one row {"living_area": 84, ...} or a list of rows')
    rows.add_argument("--csv", metavar="FILE", help="rows from a CSV or Parquet file (columns named as features)")
    p.add_argument("--version", default="", type=version_text, help="ask for a specific loaded version")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before giving up")
    p.add_argument("--trace", action="store_true",
                   help="send a W3C traceparent and print its trace id, so the server's spans can be found; with "
                        "OTEL_TRACES_EXPORTER=otlp a client span is exported too (and sent without this flag)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        telemetry.check_environment()
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    with telemetry.client_span("driftline infer", force=args.trace) as metadata:
        trace_id = next((telemetry.parse_traceparent(v) for k, v in metadata if k == "traceparent"), None)
        if trace_id:
            print(f"trace {trace_id[0]}", file=sys.stderr, flush=True)
        try:
            with Client(args.server, timeout=args.timeout, headers=dict(metadata)) as client:
                # A file may carry more columns (the target, ids) than the model takes; typed rows may not.
                result = client.infer_result(args.name, _rows(args), version=args.version, drop_extra=bool(args.csv))
        except ServerError as exc:
            print(f"driftline infer: {exc.status}: {exc.message}", file=sys.stderr)
            return 1
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
    print_predictions(result)
    return 0


# The raw-channel helpers below serve driftline demo and explain, which build their own requests on a
# channel they already hold; new code should use driftline.client.Client.
def rows_matrix(records: Sequence[dict[str, object]], features: Sequence[str]) -> np.ndarray:
    """Records as a float32 matrix in the model's feature order; missing or unknown keys are errors."""
    matrix = np.empty((len(records), len(features)), dtype=np.float32)
    for i, record in enumerate(records):
        missing = [f for f in features if f not in record]
        unknown = [k for k in record if k not in features]
        if missing or unknown:
            raise InvalidInput(
                f"row {i}: missing features {missing}, unknown keys {unknown}; the model takes {', '.join(features)}"
            )
        matrix[i] = [float(record[f]) for f in features]  # type: ignore[arg-type]
    return matrix


def infer(channel: grpc.Channel, name: str, version: str, rows: np.ndarray, timeout: float = 30.0,
          metadata: Sequence[tuple[str, str]] = ()) -> pb.ModelInferResponse:
    stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
    described = stub.ModelMetadata(pb.ModelMetadataRequest(name=name, version=version), timeout=timeout,
                                   metadata=tuple(metadata))
    request = pb.ModelInferRequest(model_name=name, model_version=version)
    request.inputs.add(name=described.inputs[0].name, datatype="FP32", shape=rows.shape)
    request.raw_input_contents.append(np.ascontiguousarray(rows, dtype="<f4").tobytes())
    return stub.ModelInfer(request, timeout=timeout, metadata=tuple(metadata))


def outputs_of(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    arrays = {}
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        arrays[tensor.name] = np.frombuffer(raw, dtype=NUMPY_OF[tensor.datatype]).reshape(tuple(tensor.shape))
    return arrays


def print_predictions(result: InferResult) -> None:
    print(f"{result.model} version {result.version}:")
    for i in range(len(result.flagged)):
        print(f"  row {i}: " + "  ".join(f"{name}={_format(array[i])}" for name, array in result.outputs.items()))


def _format(value: np.ndarray) -> str:
    flat = np.asarray(value).reshape(-1)
    if flat.size == 1:
        item = flat[0].item()
        return f"{item:,.2f}" if isinstance(item, float) else str(item)
    return "[" + ", ".join(f"{v:.3f}" for v in flat) + "]"


def _rows(args: argparse.Namespace) -> list[dict[str, object]] | pl.DataFrame:
    if args.json is not None:
        try:
            parsed = json.loads(args.json)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"--json is not valid JSON: {exc}") from exc
        records = parsed if isinstance(parsed, list) else [parsed]
        if not all(isinstance(r, dict) for r in records):
            raise InvalidInput("--json must be an object or a list of objects")
        return records
    return read_table(args.csv)
