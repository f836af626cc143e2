"""Feature attributions of a served version: exact where the model allows, and the cover they need.

- Tree ensembles (gradient boosting, hist gradient boosting, random forests): exact path-dependent
  TreeSHAP (``kernels/treeshap.py``) of the raw output, i.e. the margin for boosted classifiers.
  ONNX stores no node cover, so :func:`attach_cover` computes it from the training (or reference)
  rows at publish time and writes it into ``nodes_hitrates``, which onnxruntime ignores: the
  artifact is self-contained.
- Linear regression (an ONNX ``LinearRegressor``): exact, coefficient times the difference from
  the training mean.
- Anything else: no attributions (a model-agnostic estimate is not built yet).

The trainer (attribution shares in the training profile) and the server (the ``attribution``
output, sampled monitoring) use the same :class:`Explainer`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import onnx

from driftline.kernels.treeshap import TreeShapModel, compute_cover, prepare, shap_values
from driftline.onnx_trees import TREE_OPS, read_tree_ensemble, with_cover

ATTRIBUTION = "attribution"  # FP32 [rows, features]
ATTRIBUTION_BASE = "attribution_base"  # FP32 [rows, 1]: the expected value the attributions start from


class Explainer(Protocol):
    method: str

    def explain(self, X: np.ndarray, n_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(phi float64 [rows, features, outputs], base float64 [outputs]) of the raw model output.

        ``n_threads``: how many cores a large batch may use; None: all of the machine's (``os.cpu_count()``),
        for requested attributions. Sampled monitoring, which runs beside serving, passes 1.
        """


def default_threads() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True)
class TreeExplainer:
    """Exact TreeSHAP; ``model`` (with its per-leaf tables) is prepared once per served version."""

    model: TreeShapModel
    method: str = "treeshap (exact, raw output)"

    @property
    def table_bytes(self) -> int:
        """Memory held by the per-leaf tables (bounded by prepare's ``table_budget_bytes``)."""
        return self.model.table_bytes

    def explain(self, X: np.ndarray, n_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        # Small batches stay on the calling thread whatever n_threads says (see shap_values' min_rows_per_thread).
        return shap_values(self.model, X, n_threads=default_threads() if n_threads is None else n_threads)


@dataclass(frozen=True)
class LinearExplainer:
    weights: np.ndarray  # [features, outputs]
    intercepts: np.ndarray  # [outputs]
    means: np.ndarray  # [features], from the training profile
    method: str = "linear (exact)"

    def explain(self, X: np.ndarray, n_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:  # noqa: ARG002
        centred = np.asarray(X, dtype=np.float64) - self.means
        phi = centred[:, :, None] * self.weights[None, :, :]
        return phi, self.means @ self.weights + self.intercepts


@dataclass(frozen=True)
class GroupedExplainer:
    """Attributions of encoded features summed back to the column each came from.

    Exact when every encoded feature is a function of one column (one-hot, TF-IDF, a number passed through):
    a Shapley value is additive over such a grouping, so a column's attribution is the sum of its features'.
    """

    inner: Explainer
    membership: np.ndarray  # float64 [encoded features, columns]: 1 where feature j came from column c

    @property
    def method(self) -> str:  # type: ignore[override]
        return f"{self.inner.method}, summed per column"

    def explain(self, X: np.ndarray, n_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        phi, base = self.inner.explain(X, n_threads)
        return np.einsum("rfo,fc->rco", phi, self.membership), base


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


COVER_KEY = "driftline.cover"  # ONNX metadata_props: where the cover in nodes_hitrates came from
FITTED_COVER = "fitted trees (tree_.weighted_n_node_samples)"  # set by trainer/export.py for random forests
REFERENCE_COVER = "reference rows"


def cover_source(model: onnx.ModelProto) -> str | None:
    """Which cover a version's attributions use: :data:`FITTED_COVER` (driftline-trained random forests: the
    bootstrap-weighted counts scikit-learn and shap use), :data:`REFERENCE_COVER` (rows routed through the
    trees by :func:`attach_cover`), or None (no cover recorded)."""
    return next((p.value for p in model.metadata_props if p.key == COVER_KEY), None)


def attach_cover(model: onnx.ModelProto, X: np.ndarray) -> onnx.ModelProto:
    """The model with node cover from rows ``X`` written in, when it is a tree ensemble; else unchanged.

    A model whose export already wrote the fitted trees' cover (``cover_source(model) == FITTED_COVER``) keeps
    it: a random forest's trees were grown on bootstrap samples, and TreeSHAP only agrees with the fitted trees
    (and shap) with those weights. Otherwise (boosting, imported ONNX) the cover is that of ``X``, recorded as
    :data:`REFERENCE_COVER`.
    """
    if not any(op in TREE_OPS for op in _ops(model)):
        return model
    try:
        ensemble = read_tree_ensemble(model)
    except ValueError:
        return model  # a tree layout TreeSHAP cannot read: no attributions, but still servable
    if cover_source(model) == FITTED_COVER and ensemble.has_cover:
        return model
    out = with_cover(model, compute_cover(ensemble, np.ascontiguousarray(X, dtype=np.float32)))
    props = {p.key: p.value for p in out.metadata_props}
    onnx.helper.set_model_props(out, {**props, COVER_KEY: REFERENCE_COVER})
    return out


def explainer_for(model: onnx.ModelProto, feature_means: np.ndarray | None,
                  groups: tuple[int, ...] = (), columns: int = 0) -> Explainer | None:
    """The model's explainer; with ``groups`` (encoded feature -> column, of ``columns``), one that answers per
    column."""
    if groups:
        inner = explainer_for(model, feature_means)
        if inner is None:
            return None
        membership = np.zeros((len(groups), max(columns, max(groups) + 1)))
        membership[np.arange(len(groups)), np.asarray(groups)] = 1.0
        return GroupedExplainer(inner, membership)
    ops = _ops(model)
    if any(op in TREE_OPS for op in ops):
        try:
            ensemble = read_tree_ensemble(model)
        except ValueError:
            return None
        return TreeExplainer(prepare(ensemble)) if ensemble.has_cover else None
    if "LinearRegressor" in ops and feature_means is not None:
        return _linear(model, feature_means)
    return None


def _linear(model: onnx.ModelProto, means: np.ndarray) -> LinearExplainer | None:
    linear = [n for n in model.graph.node if n.op_type == "LinearRegressor"]
    others = {n.op_type for n in model.graph.node} - {"LinearRegressor", "Cast", "Identity"}
    if len(linear) != 1 or others:
        return None  # preprocessing in the graph: the coefficients are not on the served features
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in linear[0].attribute}
    targets = int(attrs.get("targets", 1))
    weights = np.asarray(attrs["coefficients"], dtype=np.float64).reshape(targets, -1).T
    intercepts = np.asarray(attrs.get("intercepts", [0.0] * targets), dtype=np.float64)
    if weights.shape[0] != len(means):
        return None
    return LinearExplainer(weights, intercepts, np.asarray(means, dtype=np.float64))


def per_row(phi: np.ndarray, base: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """[rows, features] and [rows, 1]: the only output, or each row's predicted class when there are several."""
    if phi.shape[2] == 1 or labels is None:
        return phi[:, :, 0], np.broadcast_to(base[0], (phi.shape[0], 1))
    index = np.clip(np.asarray(labels, dtype=np.int64).reshape(-1), 0, phi.shape[2] - 1)
    rows = np.arange(phi.shape[0])
    return phi[rows, :, index], base[index].reshape(-1, 1)
