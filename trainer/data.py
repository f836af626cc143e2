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
    from CSV, Parquet or the synthetic generator (or from partitions read a column at a time: see
    :class:`ColumnHasher`).
    """
    hasher = ColumnHasher(frame.height)
    for name in frame.columns:
        hasher.start(name, frame[name].dtype, has_nulls=False)
        hasher.add(frame[name])
    return hasher.hexdigest()


class ColumnHasher:
    """:func:`data_version` fed one column at a time, each in as many pieces as the caller likes, in row order.

    A column read in pieces hashes as the whole column does: polars turns a whole column with nulls into a
    float64 (integers) or object (booleans) array, so a piece of a column that has nulls anywhere is converted
    as if it had one too (``has_nulls``), and text pieces are joined with the separator the whole column uses.
    """

    def __init__(self, rows: int) -> None:
        self._digest = hashlib.sha256(f"rows={rows}\n".encode())
        self._first = True
        self._has_nulls = False

    def start(self, name: str, dtype: pl.DataType, *, has_nulls: bool) -> None:
        self._digest.update(f"{name}:{dtype}\n".encode())
        self._first, self._has_nulls = True, has_nulls

    def add(self, column: pl.Series) -> None:
        if column.len() == 0:
            return
        if self._has_nulls and not column.has_nulls():
            values = column.extend_constant(None, 1).to_numpy()[:-1]
        else:
            values = column.to_numpy()
        if values.dtype == object:
            text = "\x1f".join("" if v is None else str(v) for v in values)
            self._digest.update((text if self._first else "\x1f" + text).encode())
        else:
            self._digest.update(np.ascontiguousarray(values).tobytes())
        self._first = False

    def hexdigest(self) -> str:
        return "sha256:" + self._digest.hexdigest()
