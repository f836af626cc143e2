"""A real table end to end: numbers, a categorical district and a Polish description, trained, served one input
per column, validated, monitored (the language check) and explained per column."""

from __future__ import annotations

import time
from dataclasses import replace

import grpc
import numpy as np
import polars as pl
import pytest
import shap
import tritonclient.grpc as triton
import tritonclient.http as triton_http

from driftline.proto import driftline_pb2 as dpb
from driftline.proto import driftline_pb2_grpc
from driftline.registry import open_registry
from driftline.registry.table import table_of
from driftline.trainer import synthetic, table_pipeline
from driftline.trainer.train import TrainConfig, publish, train
from helpers import running_server

CONFIG = TrainConfig(model="listings", synthetic="listings", rows=1500, seed=0, params={"n_estimators": 50})
STRICT = {"district": {"categories": list(synthetic.DISTRICTS)},
          "description": {"max_chars": 400, "min_language_share": 0.2}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("mixed") / "registry"
    registry = open_registry(str(root))
    listings = train(CONFIG)
    # The same artifact under three names: each gets a drift window of its own.
    for name in ("listings", "polish", "english"):
        publish(registry, name, listings.onnx_model, listings.metadata, listings.profile, listings.schema)
    strict = train(replace(CONFIG, model="strict", schema_overrides=STRICT))
    publish(registry, "strict", strict.onnx_model, strict.metadata, strict.profile, strict.schema)
    houses = train(TrainConfig(model="houses", rows=1500, params={"n_estimators": 30}))
    publish(registry, "houses", houses.onnx_model, houses.metadata, houses.profile, houses.schema)
    return root, listings


@pytest.fixture(scope="module")
def server(trained):
    root, _ = trained
    with running_server(root, "--attribution-sample", "1.0", "--attribution-max-rows-per-s", "0", "--drift-window-rows", "100000", "--http-port", "0",
                        "--metrics-port", "0") as running:
        yield running


def column_inputs(frame: pl.DataFrame, module=triton) -> list:
    """One [rows, 1] input per column: numbers FP32, strings BYTES (a missing string is sent as "")."""
    inputs = []
    for name in synthetic.LISTING_FEATURES:
        series = frame[name]
        if series.dtype == pl.String:
            values = np.array([("" if v is None else v).encode() for v in series.to_list()], dtype=object)
            tensor = module.InferInput(name, [len(values), 1], "BYTES")
        else:
            values = series.cast(pl.Float32).to_numpy()
            tensor = module.InferInput(name, [len(values), 1], "FP32")
        tensor.set_data_from_numpy(values.reshape(-1, 1))
        inputs.append(tensor)
    return inputs


def asked(*names: str, module=triton) -> list:
    return [module.InferRequestedOutput(n) for n in names]


def expected(trained, frame: pl.DataFrame) -> np.ndarray:
    pipeline = trained[1].estimator
    return pipeline.predict(table_pipeline.to_pandas(frame, table_pipeline.table_columns(pipeline)))


def test_metadata_lists_one_input_per_column(client):
    meta = client.get_model_metadata("listings")
    assert [(i.name, i.datatype, list(i.shape)) for i in meta.inputs][-2:] == [
        ("district", "BYTES", [-1, 1]), ("description", "BYTES", [-1, 1])]
    assert [i.name for i in meta.inputs] == list(synthetic.LISTING_FEATURES)
    # the encoded matrix the trees read is the server's own business
    assert [o.name for o in meta.outputs] == ["prediction", "attribution", "attribution_base"]
    assert [o.shape for o in meta.outputs][1] == [-1, len(synthetic.LISTING_FEATURES)]


def test_predictions_equal_the_pipeline_over_grpc_and_http(server, client, trained):
    frame = synthetic.listings(64, seed=5)
    answer = client.infer("listings", column_inputs(frame)).as_numpy("prediction")[:, 0]
    np.testing.assert_allclose(answer, expected(trained, frame), rtol=1e-5)
    with triton_http.InferenceServerClient(url=f"127.0.0.1:{http_port(server)}") as http:
        over_http = http.infer("listings", column_inputs(frame, triton_http)).as_numpy("prediction")[:, 0]
    np.testing.assert_array_equal(over_http, answer)


def http_port(server) -> int:
    line = next(line for line in server.log if "driftline serving" in line)
    return int(line.split("http http://127.0.0.1:")[1].split(";")[0].split()[0])


def test_attributions_are_per_column_and_equal_shap_summed_per_column(client, trained):
    frame = synthetic.listings(40, seed=6)
    result = client.infer("listings", column_inputs(frame), outputs=asked("prediction", "attribution",
                                                                          "attribution_base"))
    phi = result.as_numpy("attribution").astype(np.float64)
    base = result.as_numpy("attribution_base")[:, 0].astype(np.float64)
    prediction = result.as_numpy("prediction")[:, 0]
    assert phi.shape == (40, len(synthetic.LISTING_FEATURES))
    np.testing.assert_allclose(phi.sum(axis=1) + base, prediction, rtol=1e-5)

    pipeline = trained[1].estimator
    encoded = table_pipeline.encode(pipeline, frame)
    explainer = shap.TreeExplainer(pipeline[-1])
    reference = np.asarray(explainer.shap_values(encoded.astype(np.float64)))
    groups = np.asarray(table_of(trained[1].metadata.extra).groups)
    per_column = np.zeros_like(phi)
    for column in range(phi.shape[1]):
        per_column[:, column] = reference[:, groups == column].sum(axis=1)
    scale = np.abs(prediction).max()
    np.testing.assert_allclose(phi, per_column, atol=1e-5 * scale)
    district = list(synthetic.LISTING_FEATURES).index("district")
    assert np.abs(phi[:, district]).mean() > 0.02 * np.abs(phi).sum(axis=1).mean()  # the premium is seen


def test_unseen_category_is_flagged_with_an_inferred_set(client):
    frame = synthetic.listings(8, seed=8).with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("Garwolin")).otherwise(pl.col("district")).alias("district"))
    result = client.infer("listings", column_inputs(frame))
    assert result.get_response().parameters["driftline_flagged_rows"].string_param == "3"


def test_unseen_category_is_refused_with_a_declared_set(client):
    frame = synthetic.listings(8, seed=8).with_columns(pl.lit("Garwolin").alias("district"))
    with pytest.raises(triton.InferenceServerException) as caught:
        client.infer("strict", column_inputs(frame))
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "column 'district': 'Garwolin' is not a known category (known: " in caught.value.message()
    ok = client.infer("strict", column_inputs(synthetic.listings(8, seed=8)))
    assert ok.as_numpy("prediction").shape == (8, 1)


def test_declared_text_length_refuses(client):
    frame = synthetic.listings(2, seed=9).with_columns(pl.lit("Piękny dom " * 60).alias("description"))
    with pytest.raises(triton.InferenceServerException) as caught:
        client.infer("strict", column_inputs(frame))
    assert "row 0, column 'description': 660 characters, above the maximum 400" in caught.value.message()


def test_declared_language_refuses_a_listing_in_another_language(client):
    frame = synthetic.listings(2, seed=9, shift="english_listings")
    with pytest.raises(triton.InferenceServerException) as caught:
        client.infer("strict", column_inputs(frame))
    message = caught.value.message()
    assert "column 'description'" in message and "is it in the expected language?" in message
    assert "below the minimum 20%" in message


@pytest.mark.parametrize("case", ["number for text", "text for number", "missing column", "extra column",
                                  "megabyte of text"])
def test_bad_columns_are_refused_by_name_and_the_server_keeps_serving(client, case):
    frame = synthetic.listings(2, seed=10)
    inputs = column_inputs(frame)
    names = [i.name() for i in inputs]
    if case == "number for text":
        inputs[names.index("district")] = tensor("district", np.ones((2, 1), np.float32), "FP32")
        named = "column 'district' takes text (BYTES)"
    elif case == "text for number":
        inputs[0] = tensor("living_area", np.array([[b"84"], [b"ninety"]], dtype=object), "BYTES")
        named = "column 'living_area' takes numbers (FP32)"
    elif case == "missing column":
        inputs = inputs[1:]
        named = "column 'living_area' is missing"
    elif case == "extra column":
        inputs.append(tensor("colour", np.array([[b"red"], [b"blue"]], dtype=object), "BYTES"))
        named = "unknown column 'colour'"
    else:
        inputs[names.index("description")] = tensor(
            "description", np.array([[b"a" * (1 << 20)], [b"dom"]], dtype=object), "BYTES")
        named = "column 'description', row 0: 1,048,576 bytes of text"
    with pytest.raises(triton.InferenceServerException) as caught:
        client.infer("listings", inputs)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert named in caught.value.message()
    assert client.infer("listings", column_inputs(frame)).as_numpy("prediction").shape == (2, 1)


def tensor(name: str, values: np.ndarray, datatype: str) -> triton.InferInput:
    t = triton.InferInput(name, list(values.shape), datatype)
    t.set_data_from_numpy(values)
    return t


def test_a_numeric_model_also_takes_one_input_per_feature(client):
    frame = synthetic.housing(16, seed=11)
    matrix = frame.select(list(synthetic.FEATURES)).to_numpy().astype(np.float32)
    whole = client.infer("houses", [tensor("input", matrix, "FP32")]).as_numpy("prediction")
    split = [tensor(f, matrix[:, [i]], "FP32") for i, f in enumerate(synthetic.FEATURES)]
    np.testing.assert_array_equal(client.infer("houses", split).as_numpy("prediction"), whole)


def drift(server, model: str, rows: int) -> dict[str, dpb.DriftColumn]:
    """The model's current drift columns by name, once ``rows`` rows have reached the monitor."""
    with grpc.insecure_channel(server.address) as channel:
        stub = driftline_pb2_grpc.MonitoringStub(channel)
        deadline = time.monotonic() + 60
        while True:
            report = stub.DriftReport(dpb.DriftRequest(name=model))
            if report.current.rows >= rows or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    section = report.current
    return {c.name: c for c in [*section.features, *section.outputs, *section.attribution]}


def send(client, model: str, frame: pl.DataFrame) -> None:
    for start in range(0, frame.height, 50):
        client.infer(model, column_inputs(frame[start:start + 50]))


def test_language_check_alarms_on_english_and_not_on_fresh_polish(server, client):
    send(client, "polish", synthetic.listings(300, seed=21))
    send(client, "english", synthetic.listings(300, seed=21, shift="english_listings"))
    polish, english = drift(server, "polish", 300), drift(server, "english", 300)
    assert not polish["description.words"].alarm, polish["description.words"].note
    assert list(english["description.words"].alarms) == ["language"]
    assert "top-20 words" in english["description.words"].note
    # what the English listings did not change stays quiet
    assert not english["district"].alarm and not english["living_area"].alarm


def test_a_new_district_is_named_and_its_drift_and_attributions_seen(server, client):
    send(client, "listings", synthetic.listings(600, seed=22, shift="new_district"))
    columns = drift(server, "listings", 600)
    assert columns["district"].alarm
    assert "new categories: Garwolin" in columns["district"].note
    with grpc.insecure_channel(server.address) as channel:
        report = driftline_pb2_grpc.MonitoringStub(channel).DriftReport(dpb.DriftRequest(name="listings"))
    assert "(a category no training row had)" in report.attribution_flags_json or \
        "distance_to_center" in report.attribution_flags_json
