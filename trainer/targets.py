"""What a training run learns: the task its target asks for, the target as the estimator takes it, and
parameters as JSON. Shared by the numeric path (train.py) and the mixed-table path (train_table.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from driftline.errors import InvalidInput
from driftline.trainer import estimators


def task_of(config: Any, y: np.ndarray | None) -> str:
    """The task: ``config.task``, else the only one the estimator does, else what the target looks like."""
    offered = estimators.tasks_of(config.estimator)
    if config.task != "auto":
        if config.task not in ("regression", "classification"):
            raise InvalidInput(f"--task must be regression, classification or auto, not {config.task!r}")
        task = config.task
    elif len(offered) == 1:
        task = offered[0]
    else:
        task = "classification" if looks_categorical(y) else "regression"
    if task not in offered:
        raise InvalidInput(f"estimator {config.estimator!r} does not do {task}; it does: {', '.join(offered)}")
    return task


def looks_categorical(y: np.ndarray | None) -> bool:
    if y is None:
        return False
    if y.dtype.kind in "OUSb":
        return True
    return y.dtype.kind in "iu" and len(np.unique(y)) <= 20


def encode_target(y: np.ndarray | None, task: str) -> tuple[np.ndarray, tuple[Any, ...] | None]:
    if y is None:
        raise InvalidInput("training needs a target column")
    if task == "regression":
        if y.dtype.kind not in "iuf":
            raise InvalidInput(f"a regression target must be numeric, got {y.dtype}")
        return y.astype(np.float64), None
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise InvalidInput("a classification target needs at least two classes")
    return codes.astype(np.int64), tuple(jsonable(c) for c in classes.tolist())


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
