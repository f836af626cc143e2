"""Mixed-table pipelines: scikit-learn and the exported ONNX graph must encode, tokenise and predict alike."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import polars as pl
import pytest
from sklearn.linear_model import LinearRegression

from driftline.attribution import TreeExplainer, attach_cover, explainer_for
from driftline.registry.table import ENCODED_OUTPUT, TableColumn
from driftline.registry.words import tokens
from driftline.trainer import table_pipeline as tp
from driftline.trainer.estimators import build, parameters
from driftline.trainer.export import CLASSIFIER_OUTPUTS, REGRESSION_OUTPUT

ROWS = 400
FIT = 300
DISTRICTS = ("Mokotów", "Śródmieście", "Wola", "Żoliborz", "Praga-Południe", "Białołęka")
LISTED = DISTRICTS[:5]  # Białołęka is left out on purpose: a training category beyond the cap encodes as zeros
WORDS = ("mieszkanie", "w", "i", "a", "z", "balkon", "ogród", "piękne", "słoneczne", "cicha", "okolica", "blisko",
         "metra", "łazienka", "kuchnia", "Śródmieściu", "ŻÓŁTA", "źródło", "ćma", "się", "żółć", "gęś")  # fmt: skip
COLUMNS = (
    TableColumn("area", "numeric", "FP32"),
    TableColumn("rooms", "numeric", "FP32"),
    TableColumn("balcony", "boolean", "FP32"),
    TableColumn("district", "categorical", "BYTES", categories=LISTED),
    TableColumn("description", "text", "BYTES"),
)
ENGLISH = ("a bright flat in the city centre", "i like it", "near the metro, with a garden", "A B C")
# Case, diacritics, single letters, digits and superscripts, underscores, punctuation, whitespace of all kinds,
# symbols and scripts other than Latin: the tokens must be registry.words' on both sides.
STRESS = (
    "Mieszkanie W Śródmieściu, I piętro; a balkon!",
    "ŻÓŁW ŹRÓDŁO ĆMA ŃA ĄĘ Óó ść",
    "A flat in Wola — 2 rooms, i.e. 48m² (Mokotów's best)",
    "under_score snake_case x1 3.14 1,5 10-20",
    "tab\tand\nnewline\u00a0nbsp",
    "emoji 🙂 ok ÜNÏCÖDÉ naïve café Привет Мир",
    "",
    "!!!",
    "   ",
    "w",
)

SIGNAL = {"balkon": 300.0, "ogród": 500.0, "w": 150.0, "i": -100.0, "żółć": 250.0, "cicha": 120.0}


def _table(seed: int, rows: int) -> tuple[pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    area = rng.uniform(20, 120, rows).round(1)
    rooms = rng.integers(1, 6, rows).astype(float)
    balcony = rng.random(rows) < 0.4
    district = [DISTRICTS[i] for i in rng.choice(len(DISTRICTS), rows, p=[0.3, 0.25, 0.2, 0.12, 0.1, 0.03])]
    description = [" ".join(rng.choice(WORDS, size=rng.integers(0, 10))) for _ in range(rows)]
    premium = {"Mokotów": 800.0, "Śródmieście": 1500.0, "Wola": 300.0, "Żoliborz": 900.0}
    words = np.array([sum(SIGNAL.get(w, 0.0) for w in tokens(t)) for t in description])
    places = np.array([premium.get(d, 0.0) for d in district])
    y = area * 100 + rooms * 200 + balcony * 400 + places + words + rng.normal(0, 50, rows)
    frame = pl.DataFrame({"area": area, "rooms": rooms, "balcony": balcony, "district": district,
                          "description": description})  # fmt: skip
    return frame, y


FRAME, Y = _table(0, ROWS)
TRAIN, HOLDOUT = FRAME[:FIT], FRAME[FIT:]
Y_TRAIN = Y[:FIT]
Y_BINARY = (Y_TRAIN > np.median(Y_TRAIN)).astype(np.int64)
Y_3CLASS = np.digitize(Y_TRAIN, np.quantile(Y_TRAIN, [1 / 3, 2 / 3])).astype(np.int64)
# Unseen and missing categories, English and empty text, missing numbers are only for models that take NaN.
ODD = pl.DataFrame({
    "area": [55.0, 33.3, 80.0, 41.0],
    "rooms": [2.0, 1.0, 4.0, 2.0],
    "balcony": [True, False, True, False],
    "district": ["Wawer", None, "Białołęka", "Wola"],
    "description": [ENGLISH[0], None, ENGLISH[2], "Mieszkanie W Śródmieściu I Balkon, A Ogród"],
})  # fmt: skip
WITH_NAN = pl.DataFrame({
    "area": [None, 60.0, None], "rooms": [3.0, None, 2.0], "balcony": [None, True, False],
    "district": ["Mokotów", "Wola", ""], "description": ["balkon", "", "i w a"],
})  # fmt: skip

REGRESSORS = ("gradient_boosting", "hist_gradient_boosting", "random_forest", "linear")
TREES = ("gradient_boosting", "hist_gradient_boosting", "random_forest")
TOLERANCE = 1e-5  # relative, float32 arithmetic in onnxruntime against float64 in scikit-learn


def _fitted(name: str, task: str, y: np.ndarray):
    pipeline = tp.build_pipeline(COLUMNS, build(name, task, parameters(name, {}, seed=0)))
    return tp.fit_pipeline(pipeline, TRAIN, y, label=name)


@pytest.fixture(scope="module")
def regressors() -> dict[str, tuple]:
    out = {}
    for name in REGRESSORS:
        pipeline = _fitted(name, "regression", Y_TRAIN)
        out[name] = pipeline, tp.export_pipeline(pipeline, COLUMNS, model_name=name)
    return out


@pytest.fixture(scope="module")
def classifiers() -> dict[str, tuple]:
    out = {}
    for name, y in (("gradient_boosting", Y_BINARY), ("logistic", Y_BINARY), ("gradient_boosting-3", Y_3CLASS),
                    ("logistic-3", Y_3CLASS)):  # fmt: skip
        pipeline = _fitted(name.split("-")[0], "classification", y)
        out[name] = pipeline, tp.export_pipeline(pipeline, COLUMNS, model_name=name.split("-")[0])
    return out


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _run(model: onnx.ModelProto, frame: pl.DataFrame, output: str) -> np.ndarray:
    return _session(model).run([output], tp.onnx_feeds(frame, COLUMNS))[0]


def _dims(value: onnx.ValueInfoProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]


# --- tokenisation ---------------------------------------------------------------------------------------------


def test_word_pattern_gives_registry_words_tokens() -> None:
    analyse = tp.build_pipeline([COLUMNS[4]], LinearRegression())[0].transformers[0][1].build_analyzer()
    for text in (*STRESS, *ENGLISH, *WORDS):
        assert analyse(text) == tokens(text), text


def test_word_pattern_is_python_word_class() -> None:
    everything = "".join(chr(c) if not 0xD800 <= c < 0xE000 else " " for c in range(0x30000))
    assert re.findall(tp.WORD_PATTERN, everything) == re.findall(r"\w+", everything)


def test_onnx_tokenises_like_scikit_learn() -> None:
    """Every token of the stress texts is a feature, so any token ONNX splits or merges differently shows."""
    text = [COLUMNS[4]]
    frame = pl.DataFrame({"description": [*STRESS, *ENGLISH]})
    pipeline = tp.build_pipeline(text, LinearRegression(), max_words=10_000)
    tp.fit_pipeline(pipeline, frame, np.arange(frame.height, dtype=float))
    vocabulary = pipeline[0].named_transformers_["text:description"].vocabulary_
    assert set(vocabulary) == {w for t in (*STRESS, *ENGLISH) for w in tokens(t)}
    assert {"w", "i", "a", "żółw", "źródło", "śródmieściu", "48m²", "snake_case", "привет"} <= set(vocabulary)

    model = tp.export_pipeline(pipeline, text)
    session = _session(model)
    for rows in (frame, frame[:1], frame[6:9]):  # all rows, one row, only rows without words
        (encoded,) = session.run([ENCODED_OUTPUT], tp.onnx_feeds(rows, text))
        np.testing.assert_allclose(encoded, tp.encode(pipeline, rows), rtol=1e-6, atol=1e-7)


def test_words_beyond_max_words_agree() -> None:
    """A document made only of words cut by max_features: skl2onnx would turn a fitted ``stop_words_`` (older
    scikit-learn kept the cut words there) into StringNormalizer stopwords, which drop whole rows."""
    text = [COLUMNS[4]]
    frame = pl.DataFrame({"description": ["w domu", "w ogrodzie", "w", "kot", "pies", "Kot"]})
    pipeline = tp.build_pipeline(text, LinearRegression(), max_words=2)
    tp.fit_pipeline(pipeline, frame, np.arange(frame.height, dtype=float))
    assert set(pipeline[0].named_transformers_["text:description"].vocabulary_) == {"w", "kot"}
    model = tp.export_pipeline(pipeline, text)
    probe = pl.DataFrame({"description": ["pies", "domu", "W", "kot"]})
    (encoded,) = _session(model).run([ENCODED_OUTPUT], tp.onnx_feeds(probe, text))
    np.testing.assert_allclose(encoded, tp.encode(pipeline, probe), rtol=1e-6, atol=1e-7)
    assert tp.onnx_table_agreement(model, pipeline, probe, "regression") < TOLERANCE


def test_text_none_is_empty_string() -> None:
    frame = pl.DataFrame({"description": ["a b", None]})
    feeds = tp.onnx_feeds(frame, [COLUMNS[4]])
    assert feeds["description"].dtype == object and feeds["description"].shape == (2, 1)
    assert feeds["description"][:, 0].tolist() == ["a b", ""]


# --- contract ---------------------------------------------------------------------------------------------


def test_inputs_one_per_column(regressors) -> None:
    _, model = regressors["gradient_boosting"]
    got = [(i.name, i.type.tensor_type.elem_type, _dims(i)) for i in model.graph.input]
    f, s = onnx.TensorProto.FLOAT, onnx.TensorProto.STRING
    assert got == [("area", f, [None, 1]), ("rooms", f, [None, 1]), ("balcony", f, [None, 1]),
                   ("district", s, [None, 1]), ("description", s, [None, 1])]  # fmt: skip


@pytest.mark.parametrize("name", REGRESSORS)
def test_regression_outputs(regressors, name: str) -> None:
    pipeline, model = regressors[name]
    width = len(tp.encoded_groups(pipeline, COLUMNS))
    got = [(o.name, o.type.tensor_type.elem_type, _dims(o)) for o in model.graph.output]
    assert got == [(REGRESSION_OUTPUT, onnx.TensorProto.FLOAT, [None, 1]),
                   (ENCODED_OUTPUT, onnx.TensorProto.FLOAT, [None, width])]  # fmt: skip


@pytest.mark.parametrize("name", ["gradient_boosting", "logistic", "gradient_boosting-3"])
def test_classifier_outputs(classifiers, name: str) -> None:
    pipeline, model = classifiers[name]
    width = len(tp.encoded_groups(pipeline, COLUMNS))
    classes = len(pipeline[-1].classes_)
    got = [(o.name, o.type.tensor_type.elem_type, _dims(o)) for o in model.graph.output]
    label, proba = CLASSIFIER_OUTPUTS
    assert got == [(label, onnx.TensorProto.INT64, [None]), (proba, onnx.TensorProto.FLOAT, [None, classes]),
                   (ENCODED_OUTPUT, onnx.TensorProto.FLOAT, [None, width])]  # fmt: skip
    assert "ZipMap" not in {n.op_type for n in model.graph.node}


def test_logistic_is_flattened(classifiers) -> None:
    pipeline, _ = classifiers["logistic"]
    assert [name for name, _ in pipeline.steps] == [tp.ENCODER_STEP, "scale", "model"]


def test_encoded_groups(regressors) -> None:
    pipeline, _ = regressors["gradient_boosting"]
    groups = tp.encoded_groups(pipeline, COLUMNS)
    words = len(pipeline[0].named_transformers_["text:description"].vocabulary_)
    assert len(groups) == tp.encode(pipeline, HOLDOUT).shape[1] == 3 + len(LISTED) + words
    assert groups == (0, 1, 2, *[3] * len(LISTED), *[4] * words)
    names = pipeline[0].get_feature_names_out()
    for name, g in zip(names, groups, strict=True):
        assert name.split("__", 1)[0] in (tp.NUMBERS, f"category:{COLUMNS[g].name}", f"text:{COLUMNS[g].name}")


def test_categorical_needs_listed_categories() -> None:
    with pytest.raises(ValueError, match="lists no categories"):
        tp.build_pipeline([TableColumn("district", "categorical", "BYTES")], LinearRegression())


def test_categories_are_capped() -> None:
    pipeline = tp.build_pipeline(COLUMNS, LinearRegression(), max_categories=2)
    tp.fit_pipeline(pipeline, TRAIN, Y_TRAIN)
    assert pipeline[0].named_transformers_["category:district"].categories_[0].tolist() == list(LISTED[:2])
    assert tp.encoded_groups(pipeline, COLUMNS).count(3) == 2


# --- agreement ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REGRESSORS)
@pytest.mark.parametrize("rows", ["holdout", "odd"])
def test_regression_agrees(regressors, name: str, rows: str) -> None:
    pipeline, model = regressors[name]
    frame = HOLDOUT if rows == "holdout" else ODD
    assert tp.onnx_table_agreement(model, pipeline, frame, "regression") < TOLERANCE


@pytest.mark.parametrize("name", ["gradient_boosting", "logistic", "gradient_boosting-3", "logistic-3"])
@pytest.mark.parametrize("rows", ["holdout", "odd"])
def test_classification_agrees(classifiers, name: str, rows: str) -> None:
    pipeline, model = classifiers[name]
    frame = HOLDOUT if rows == "holdout" else ODD
    assert tp.onnx_table_agreement(model, pipeline, frame, "classification") < TOLERANCE


def test_missing_numbers_agree_where_the_model_takes_nan(regressors) -> None:
    pipeline, model = regressors["hist_gradient_boosting"]
    assert np.isnan(tp.encode(pipeline, WITH_NAN)[:, :3]).any()
    assert tp.onnx_table_agreement(model, pipeline, WITH_NAN, "regression") < TOLERANCE


@pytest.mark.parametrize("name", REGRESSORS)
def test_encoded_output_is_encode(regressors, name: str) -> None:
    pipeline, model = regressors[name]
    frame = pl.concat([HOLDOUT, ODD])
    np.testing.assert_allclose(_run(model, frame, ENCODED_OUTPUT), tp.encode(pipeline, frame), rtol=1e-6, atol=1e-7)


def test_unseen_and_missing_categories_encode_as_zeros(regressors) -> None:
    pipeline, _ = regressors["linear"]
    one_hot = np.asarray(tp.encoded_groups(pipeline, COLUMNS)) == 3
    encoded = tp.encode(pipeline, ODD)[:, one_hot]
    assert encoded[:3].sum() == 0  # Wawer (never seen), None, Białołęka (seen, beyond the listed ones)
    assert encoded[3].tolist() == [float(c == "Wola") for c in LISTED]


def test_polars_and_pandas_feed_alike(regressors) -> None:
    pipeline, _ = regressors["gradient_boosting"]
    for frame in (HOLDOUT, ODD):
        np.testing.assert_array_equal(tp.encode(pipeline, frame), tp.encode(pipeline, frame.to_pandas()))
        for name, values in tp.onnx_feeds(frame.to_pandas(), COLUMNS).items():
            np.testing.assert_array_equal(values, tp.onnx_feeds(frame, COLUMNS)[name])


def test_fit_pipeline_is_plain_fit() -> None:
    a = tp.build_pipeline(COLUMNS, build("gradient_boosting", "regression", parameters("gradient_boosting", {}, 0)))
    b = tp.build_pipeline(COLUMNS, build("gradient_boosting", "regression", parameters("gradient_boosting", {}, 0)))
    tp.fit_pipeline(a, TRAIN, Y_TRAIN)
    b.fit(tp.to_pandas(TRAIN, COLUMNS), Y_TRAIN)
    table = tp.to_pandas(HOLDOUT, COLUMNS)
    np.testing.assert_array_equal(a.predict(table), b.predict(table))
    assert isinstance(table, pd.DataFrame)


# --- attributions -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TREES)
def test_treeshap_on_encoded_features(regressors, name: str) -> None:
    pipeline, model = regressors[name]
    model = attach_cover(model, tp.encode(pipeline, TRAIN))
    explainer = explainer_for(model, None)
    assert isinstance(explainer, TreeExplainer)
    frame = pl.concat([HOLDOUT[:20], ODD])
    phi, base = explainer.explain(tp.encode(pipeline, frame))
    assert phi.shape == (frame.height, len(tp.encoded_groups(pipeline, COLUMNS)), 1)
    served = _run(model, frame, REGRESSION_OUTPUT)[:, 0]
    np.testing.assert_allclose(phi.sum(axis=1)[:, 0] + base[0], served, rtol=1e-5)
    # the description's words carry signal: TreeSHAP must see them
    words = np.asarray(tp.encoded_groups(pipeline, COLUMNS)) == 4
    assert np.abs(phi[:, words, 0]).sum() > 0


def test_treeshap_of_a_boosted_classifier_is_its_log_odds(classifiers) -> None:
    pipeline, model = classifiers["gradient_boosting"]
    model = attach_cover(model, tp.encode(pipeline, TRAIN))
    explainer = explainer_for(model, None)
    assert isinstance(explainer, TreeExplainer)
    phi, base = explainer.explain(tp.encode(pipeline, HOLDOUT))
    proba = _run(model, HOLDOUT, CLASSIFIER_OUTPUTS[1])[:, 1]
    np.testing.assert_allclose(1 / (1 + np.exp(-(phi.sum(axis=1)[:, 0] + base[0]))), proba, rtol=1e-4, atol=1e-6)
