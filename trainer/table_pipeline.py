"""Mixed tables (numbers, booleans, categories, free text): a scikit-learn pipeline and its ONNX export.

The pipeline is ``Pipeline([("encode", ColumnTransformer), *estimator steps])``. The estimator comes from
``trainer.estimators.build``; a Pipeline estimator (``logistic`` = scale + model) is flattened into the outer
pipeline, so ``pipeline[0]`` is always the encoder and ``pipeline[-1]`` the model. The encoder's transformers, in
this order (the encoded matrix's column order, see :func:`encoded_groups`):

- ``numbers``: every numeric and boolean column, in ``columns`` order, passed through as float32 (booleans 0/1,
  missing -> NaN; only HistGradientBoosting accepts NaN in scikit-learn, see trainer/export.py);
- ``category:<name>``: per categorical column, a OneHotEncoder over the column's *listed* categories
  (``TableColumn.categories``, most frequent first, at most ``max_categories``); anything else -- an unseen
  category, a rare one beyond the cap, a missing value -- encodes as all zeros, in scikit-learn and in ONNX.
  We list categories rather than use ``min_frequency``/``max_categories`` because skl2onnx 1.20 refuses
  infrequent-category encoders fed by a single column (NotImplementedError), which is exactly our layout;
- ``text:<name>``: per text column, a TfidfVectorizer (``max_features`` words) tokenising with
  :data:`WORD_PATTERN`.

Missing strings: scikit-learn's encoders and ONNX string tensors have no common "missing", so both sides see
``""``: :func:`to_pandas` and :func:`onnx_feeds` turn None into ``""``, and a client (or the server, for a null
BYTES cell) must send ``""``. ``""`` is never a listed category (unless the spec lists it), so a missing
category is all zeros, like an unseen one; empty text has no words, so its TF-IDF row is all zeros.

Tokenisation (checked by tests/trainer/test_table_pipeline.py): the ONNX graph lower-cases with
StringNormalizer and splits with the com.microsoft Tokenizer (RE2), while scikit-learn uses ``str.lower`` and
Python ``re``. Two traps, both fixed here:

- RE2's ``\\w`` is ASCII-only: skl2onnx's default (``[a-zA-Z0-9_]+`` for sklearn's default pattern) turns
  "Śródmieście" into "r", "dmie", "cie". :data:`WORD_PATTERN` is instead a literal character class that spells
  out every character Python's ``\\w`` matches, which both engines read the same way: the tokens are those of
  ``registry.words.tokens`` (``\\w+``), single letters ("i", "w", "a") included.
- StringNormalizer's default locale is en_US.UTF-8; where it is not installed (this Debian image, slim
  containers) onnxruntime refuses to load the model. We name :data:`TEXT_LOCALE` (C.UTF-8, built into glibc
  >= 2.35 and shipped by Debian/Ubuntu for years), whose towlower folds Polish (and Latin/Greek/Cyrillic)
  capitals as ``str.lower`` does. Known differences with ``str.lower`` are one-to-many or contextual
  mappings (Turkish "İ", Greek final sigma, German "ẞ"), irrelevant to Polish and English.
"""

from __future__ import annotations

import contextlib
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import polars as pl
from onnx import helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.base import is_classifier
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.utils.validation import check_is_fitted

from driftline.registry.table import BOOLEAN, CATEGORICAL, ENCODED_OUTPUT, NUMERIC, ROLES, TEXT, TableColumn
from driftline.trainer.estimators import fit as fit_estimator
from driftline.trainer.export import (
    SUPPORTED_ESTIMATORS,
    TARGET_OPSET,
    _copy_forest_missing_flags,
    _fix_hgb_missing_flags,
    _output_types,
    sort_opsets,
)

__all__ = [
    "ENCODER_STEP",
    "MAX_CATEGORIES",
    "MAX_WORDS",
    "TEXT_LOCALE",
    "WORD_PATTERN",
    "build_pipeline",
    "encode",
    "encoded_groups",
    "export_pipeline",
    "fit_pipeline",
    "onnx_feeds",
    "onnx_table_agreement",
    "table_columns",
    "to_pandas",
]

ENCODER_STEP = "encode"
NUMBERS = "numbers"
MAX_CATEGORIES = 50  # one-hot columns per categorical column
MAX_WORDS = 300  # TF-IDF columns per text column
TEXT_LOCALE = "C.UTF-8"


def _word_class() -> str:
    """Python's ``\\w`` (str patterns) as an explicit class of literal characters and ranges."""
    code_points = np.arange(sys.maxunicode + 1, dtype="<u4")
    code_points[0xD800:0xE000] = ord(" ")  # surrogates cannot be decoded; a space keeps index == code point
    everything = code_points.tobytes().decode("utf-32-le")
    parts = []
    for run in re.finditer(r"\w+", everything):
        first, last = run.start(), run.end() - 1
        parts.append(chr(first) if first == last else f"{chr(first)}-{chr(last)}")
    # "\w" never holds "]", "\\", "^" or "-", so no character needs escaping inside the class.
    return "[" + "".join(parts) + "]+"


# ~730 ranges; RE2 and Python compile it in milliseconds. Fitted vectorizers keep the pattern they were built
# with, so a newer Python's Unicode tables only affect newly built pipelines, never a model and its export.
WORD_PATTERN = _word_class()


# --- the pipeline -----------------------------------------------------------------------------------------


def _check_columns(columns: Sequence[TableColumn]) -> None:
    if not columns:
        raise ValueError("a table needs at least one column")
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise ValueError(f"column names repeat: {names}")
    for c in columns:
        if c.role not in ROLES:
            raise ValueError(f"column {c.name!r}: unknown role {c.role!r}")


def build_pipeline(
    columns: Sequence[TableColumn], estimator: Any, *, max_categories: int = MAX_CATEGORIES,
    max_words: int = MAX_WORDS,
) -> Pipeline:  # fmt: skip
    """An unfitted ``Pipeline([("encode", ColumnTransformer), ...estimator steps])`` for ``columns``.

    A categorical column must list its categories (``TableColumn.categories``): they fix the one-hot width
    before fitting, and its first ``max_categories`` are encoded.
    """
    _check_columns(columns)
    transformers: list[tuple[str, Any, Any]] = []
    numbers = [c.name for c in columns if c.role in (NUMERIC, BOOLEAN)]
    if numbers:
        transformers.append((NUMBERS, "passthrough", numbers))
    for c in columns:
        if c.role == CATEGORICAL:
            if not c.categories:
                raise ValueError(f"categorical column {c.name!r} lists no categories")
            listed = list(dict.fromkeys(str(v) for v in c.categories))[:max_categories]
            encoder = OneHotEncoder(categories=[listed], handle_unknown="ignore", sparse_output=False,
                                    dtype=np.float32)  # fmt: skip
            transformers.append((f"category:{c.name}", encoder, [c.name]))
    for c in columns:
        if c.role == TEXT:
            # A scalar column name hands the vectorizer a 1-D column of documents, as it expects.
            vectorizer = TfidfVectorizer(token_pattern=WORD_PATTERN, lowercase=True, max_features=max_words)
            transformers.append((f"text:{c.name}", vectorizer, c.name))
    # Dense: HistGradientBoosting refuses sparse input and the ONNX side is dense anyway.
    encoder = ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)
    steps = list(estimator.steps) if isinstance(estimator, Pipeline) else [("model", estimator)]
    if any(name == ENCODER_STEP for name, _ in steps):
        raise ValueError(f"the estimator already has a step named {ENCODER_STEP!r}")
    return Pipeline([(ENCODER_STEP, encoder), *steps])


def to_pandas(frame: pl.DataFrame | pd.DataFrame, columns: Sequence[TableColumn]) -> pd.DataFrame:
    """``columns`` of ``frame`` as scikit-learn should see them: numbers and booleans float32 (missing -> NaN),
    strings as Python str (missing -> ``""``)."""
    data: dict[str, np.ndarray] = {}
    for c in columns:
        values = _column_values(frame, c)
        data[c.name] = values.reshape(-1)
    return pd.DataFrame(data)


def _column_values(frame: pl.DataFrame | pd.DataFrame, column: TableColumn) -> np.ndarray:
    if isinstance(frame, pl.DataFrame):
        series = frame.get_column(column.name)
        if column.role in (NUMERIC, BOOLEAN):
            return series.cast(pl.Float32).to_numpy().astype(np.float32, copy=False)
        return np.array(["" if v is None else str(v) for v in series.to_list()], dtype=object)
    series = frame[column.name]
    if column.role in (NUMERIC, BOOLEAN):
        # Nullable pandas dtypes hold pd.NA, which astype(float) rejects: go through to_numpy with NaN.
        return series.to_numpy(dtype=np.float32, na_value=np.nan)
    return np.array(["" if _missing(v) else str(v) for v in series.tolist()], dtype=object)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def table_columns(pipeline: Pipeline) -> list[TableColumn]:
    """The columns a :func:`build_pipeline` pipeline reads, by how it encodes them (fitted or not): enough for
    :func:`to_pandas` / :func:`onnx_feeds`. Booleans come back as numeric (both are float32 inputs)."""
    encoder: ColumnTransformer = pipeline[0]
    out: list[TableColumn] = []
    for name, _, selected in encoder.transformers:
        if name == NUMBERS:
            out.extend(TableColumn(s, NUMERIC, "FP32") for s in selected)
        elif name.startswith("category:"):
            out.append(TableColumn(selected[0], CATEGORICAL, "BYTES"))
        elif name.startswith("text:"):
            out.append(TableColumn(selected, TEXT, "BYTES"))
    return out


@contextlib.contextmanager
def _quiet_unknown_categories() -> Iterator[None]:
    # Capped category lists make unlisted categories routine (all zeros, by design): don't warn on every batch.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Found unknown categories", category=UserWarning)
        yield


def fit_pipeline(
    pipeline: Pipeline, frame: pl.DataFrame | pd.DataFrame, y: np.ndarray, *, label: str = "model"
) -> Pipeline:
    """Fit ``pipeline`` on ``frame`` (polars or pandas, converted once by :func:`to_pandas`).

    Same result as ``pipeline.fit(to_pandas(frame, columns), y)``; the model step goes through
    ``trainer.estimators.fit`` so it gets the usual progress bar.
    """
    table = to_pandas(frame, table_columns(pipeline))
    with _quiet_unknown_categories():
        encoded = pipeline[0].fit_transform(table, y)
    rest = pipeline[1:]
    if len(rest) == 1:
        fit_estimator(rest[-1], encoded, y, label=label)
    else:
        rest.fit(encoded, y)  # a slice shares its steps: this fits the pipeline's own scaler and model
    return pipeline


def encoded_groups(pipeline: Pipeline, columns: Sequence[TableColumn]) -> tuple[int, ...]:
    """For each encoded feature j (a column of :func:`encode`), the index into ``columns`` of its source."""
    encoder: ColumnTransformer = pipeline[0]
    check_is_fitted(encoder)
    index = {c.name: i for i, c in enumerate(columns)}
    width = sum(s.stop - s.start for s in encoder.output_indices_.values())
    groups = np.full(width, -1, dtype=np.int64)
    for name, transformer, selected in encoder.transformers_:
        span = encoder.output_indices_[name]
        if transformer == "drop" or span.stop == span.start:
            continue
        if name == NUMBERS:
            if span.stop - span.start != len(selected):
                raise ValueError(f"passthrough of {len(selected)} columns produced {span.stop - span.start}")
            groups[span] = [index[s] for s in selected]
        else:
            source = selected if isinstance(selected, str) else selected[0]
            groups[span] = index[source]
    if (groups < 0).any():
        raise ValueError("some encoded features come from no listed column")
    return tuple(int(g) for g in groups)


def encode(pipeline: Pipeline, frame: pl.DataFrame | pd.DataFrame) -> np.ndarray:
    """The encoded matrix the estimator sees, float32 ``[N, W]`` (the ONNX ``driftline_encoded`` output)."""
    with _quiet_unknown_categories():
        encoded = pipeline[0].transform(to_pandas(frame, table_columns(pipeline)))
    return np.ascontiguousarray(encoded, dtype=np.float32)


# --- ONNX -------------------------------------------------------------------------------------------------


def _input_types(columns: Sequence[TableColumn]) -> list[tuple[str, Any]]:
    return [(c.name, StringTensorType([None, 1]) if c.role in (CATEGORICAL, TEXT) else FloatTensorType([None, 1]))
            for c in columns]  # fmt: skip


def export_pipeline(
    pipeline: Pipeline, columns: Sequence[TableColumn], *, model_name: str = "driftline"
) -> onnx.ModelProto:
    """Convert a fitted :func:`build_pipeline` pipeline to a checked ONNX model, one input per column.

    Inputs: each column by its name, ``[N, 1]``: float32 for numbers and booleans, string for categories and
    text (``""`` when missing). Outputs: those of ``trainer.export.export_onnx`` (``prediction`` float32
    ``[N, 1]``, or ``label`` int64 ``[N]`` + ``probabilities`` float32 ``[N, n_classes]``), then
    ``driftline_encoded`` float32 ``[N, W]``: the encoder's output, which the model node (tree ensemble,
    linear regressor; the scaler for ``logistic``) reads directly.
    """
    _check_columns(columns)
    final = pipeline[-1]
    if not isinstance(final, SUPPORTED_ESTIMATORS):
        supported = ", ".join(t.__name__ for t in SUPPORTED_ESTIMATORS)
        raise TypeError(f"cannot export {type(final).__name__}; supported estimators: {supported}")
    if not isinstance(pipeline[0], ColumnTransformer) or len(pipeline) < 2:
        raise TypeError("expected a pipeline from build_pipeline: a ColumnTransformer, then the estimator")
    check_is_fitted(pipeline)
    width = len(encoded_groups(pipeline, columns))
    _fix_hgb_missing_flags()  # cached no-op after the first call

    options: dict[int, dict[str, Any]] = {}
    if is_classifier(final):
        options[id(final)] = {"zipmap": False}
    for _, transformer, _ in pipeline[0].transformers_:
        if isinstance(transformer, TfidfVectorizer):
            # tokenexp "": use the vectorizer's own token_pattern (WORD_PATTERN), never skl2onnx's ASCII default.
            options[id(transformer)] = {"tokenexp": "", "locale": TEXT_LOCALE}
    model, topology = convert_sklearn(
        pipeline, name=model_name, initial_types=_input_types(columns), final_types=_output_types(final),
        options=options, target_opset=dict(TARGET_OPSET), intermediate=True,
    )  # fmt: skip
    first = pipeline[1]
    consumers = [op for op in topology.unordered_operator_iterator() if op.raw_operator is first]
    if len(consumers) != 1:
        raise RuntimeError(f"cannot find the converted {type(first).__name__} in the ONNX graph")
    encoded = consumers[0].inputs[0]
    # Shape inference cannot type the com.microsoft Tokenizer's descendants; skl2onnx's topology knows the type.
    _publish_encoded(model, encoded.onnx_name, isinstance(encoded.type, FloatTensorType), width)
    if isinstance(final, (RandomForestRegressor, RandomForestClassifier)):
        _copy_forest_missing_flags(model, final)
    model.graph.name = model_name
    sort_opsets(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def _publish_encoded(model: onnx.ModelProto, tensor: str, is_float: bool, width: int) -> None:
    """Expose ``tensor`` as the graph output ENCODED_OUTPUT and make its readers read that output.

    The model node then reads a graph output directly, which is how driftline.onnx_trees recognises the
    features its TreeSHAP values are about.
    """
    graph = model.graph
    if is_float:  # a Cast's readers would get float for the type they were built for: leave them on the tensor
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name == tensor:
                    node.input[i] = ENCODED_OUTPUT
        bridge = helper.make_node("Identity", [tensor], [ENCODED_OUTPUT], name="driftline_encoded_identity")
    else:
        bridge = helper.make_node("Cast", [tensor], [ENCODED_OUTPUT], to=onnx.TensorProto.FLOAT,
                                  name="driftline_encoded_cast")  # fmt: skip
    # Nodes must stay topologically sorted: put the bridge right after the tensor's producer.
    producer = next((k for k, n in enumerate(graph.node) if tensor in n.output), -1)
    graph.node.insert(producer + 1, bridge)
    graph.output.append(helper.make_tensor_value_info(ENCODED_OUTPUT, onnx.TensorProto.FLOAT, [None, width]))


def onnx_feeds(frame: pl.DataFrame | pd.DataFrame, columns: Sequence[TableColumn]) -> dict[str, np.ndarray]:
    """The exported model's inputs for ``frame``: float32 ``[N, 1]`` per number/boolean column (NaN when
    missing), object (str) ``[N, 1]`` per categorical/text column (``""`` when missing)."""
    return {c.name: _column_values(frame, c).reshape(-1, 1) for c in columns}


def onnx_table_agreement(
    model: onnx.ModelProto, pipeline: Pipeline, frame: pl.DataFrame | pd.DataFrame, task: str
) -> float:
    """Largest relative deviation between onnxruntime and scikit-learn on ``frame`` (probabilities for
    classifiers; ``inf`` when a predicted label differs), as ``trainer.evaluate.onnx_agreement`` measures it."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    wanted = [o.name for o in session.get_outputs() if o.name != ENCODED_OUTPUT]
    columns = table_columns(pipeline)
    outputs = dict(zip(wanted, session.run(wanted, onnx_feeds(frame, columns)), strict=True))
    table = to_pandas(frame, columns)
    with _quiet_unknown_categories():
        if task == "regression":
            served, expected = outputs[wanted[0]].reshape(-1), pipeline.predict(table).reshape(-1)
        else:
            label, proba = wanted
            served, expected = outputs[proba], pipeline.predict_proba(table)
            if not np.array_equal(outputs[label].reshape(-1), pipeline.predict(table).reshape(-1)):
                return float("inf")
    scale = np.maximum(np.abs(expected), 1e-6 if task == "regression" else 1.0)
    return float(np.max(np.abs(served - expected) / scale)) if len(expected) else 0.0
