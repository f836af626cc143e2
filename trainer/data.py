"""Reading training data with polars, and the data half of a version's lineage."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from driftline.errors import InvalidInput, NotFound


def read_table(path: str | Path) -> pl.DataFrame:
    """A CSV or Parquet file as a DataFrame (the suffix decides the format)."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pl.read_parquet(path)
        if suffix in (".csv", ".tsv", ".txt"):
            return pl.read_csv(path, separator="\t" if suffix == ".tsv" else ",", infer_schema_length=10_000)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from exc
    raise InvalidInput(f"{path}: unknown data format {suffix!r}; use .csv or .parquet")


@dataclass(frozen=True)
class Dataset:
    """Feature matrix (float32, as served) and target, with the names they came from."""

    features: tuple[str, ...]
    dtypes: tuple[str, ...]
    X: np.ndarray
    y: np.ndarray | None
    target: str | None
    version: str


def split_columns(frame: pl.DataFrame, target: str | None, features: list[str] | None = None) -> Dataset:
    """Pick the feature columns (all but the target unless named) and the target from ``frame``."""
    if target is not None and target not in frame.columns:
        raise InvalidInput(f"target column {target!r} is not in the data (columns: {', '.join(frame.columns)})")
    names = features or [c for c in frame.columns if c != target]
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise InvalidInput(f"feature columns {missing} are not in the data (columns: {', '.join(frame.columns)})")
    if not names:
        raise InvalidInput("the data has no feature columns besides the target")
    not_numeric = [n for n in names if not (frame[n].dtype.is_numeric() or frame[n].dtype == pl.Boolean)]
    if not_numeric:
        raise InvalidInput(
            f"feature columns {not_numeric} are not numeric; driftline serves one float32 input, so encode them first"
        )
    used = frame.select([*names, *([target] if target else [])])
    # Training sees float32 features, exactly what the served ONNX model will see.
    X = used.select(names).cast(pl.Float64).to_numpy().astype(np.float32)
    y = used[target].to_numpy() if target else None
    return Dataset(
        features=tuple(names),
        dtypes=tuple(str(frame[n].dtype) for n in names),
        X=X,
        y=y,
        target=target,
        version=data_version(used),
    )


def data_version(frame: pl.DataFrame) -> str:
    """``sha256:<hex>`` over the column names, dtypes and values, in order.

    It hashes content, not a file: the same table gives the same data version whether it came
    from CSV, Parquet or the synthetic generator.
    """
    digest = hashlib.sha256()
    digest.update(f"rows={frame.height}\n".encode())
    for name in frame.columns:
        column = frame[name]
        digest.update(f"{name}:{column.dtype}\n".encode())
        values = column.to_numpy()
        if values.dtype == object:
            digest.update("\x1f".join("" if v is None else str(v) for v in values).encode())
        else:
            digest.update(np.ascontiguousarray(values).tobytes())
    return "sha256:" + digest.hexdigest()
