"""Holdout metrics, and a check that the exported ONNX model predicts what the estimator does."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from sklearn import metrics as skm


def holdout_metrics(estimator: Any, X: np.ndarray, y: np.ndarray, task: str) -> dict[str, float]:
    predicted = estimator.predict(X)
    if task == "regression":
        nonzero = np.abs(y) > 0
        return {
            "r2": float(skm.r2_score(y, predicted)),
            "mae": float(skm.mean_absolute_error(y, predicted)),
            "rmse": float(np.sqrt(skm.mean_squared_error(y, predicted))),
            "mape": float(np.mean(np.abs((y[nonzero] - predicted[nonzero]) / y[nonzero]))) if nonzero.any() else 0.0,
        }
    proba = estimator.predict_proba(X)
    return {
        "accuracy": float(skm.accuracy_score(y, predicted)),
        "f1_macro": float(skm.f1_score(y, predicted, average="macro")),
        "log_loss": float(skm.log_loss(y, proba, labels=np.arange(proba.shape[1]))),
    }


def onnx_agreement(model: onnx.ModelProto, estimator: Any, X: np.ndarray, task: str) -> float:
    """Largest relative deviation between onnxruntime and scikit-learn on ``X`` (probabilities for classifiers)."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: X.astype(np.float32)})
    if task == "regression":
        served, expected = outputs[0].reshape(-1), estimator.predict(X).reshape(-1)
    else:
        served, expected = outputs[1], estimator.predict_proba(X)
        if not np.array_equal(outputs[0].reshape(-1), estimator.predict(X).reshape(-1)):
            return float("inf")
    scale = np.maximum(np.abs(expected), 1e-6 if task == "regression" else 1.0)
    return float(np.max(np.abs(served - expected) / scale)) if len(expected) else 0.0
