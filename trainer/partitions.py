"""A training table spread over Parquet files (``data/part-*.parquet``, ``s3://bucket/part-*.parquet``), read in
pieces with polars' streaming engine so that no step holds the whole table.

Local paths and the object stores polars reads itself (S3, GCS, Azure, HTTP) are scanned by polars' streaming
engine; any other fsspec URL (``memory://`` in tests) is read through fsspec file objects by pyarrow, a row group
at a time (polars would read such file objects whole). Credentials and endpoints come from the usual
environment, as for the registry.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from driftline.errors import InvalidInput, NotFound
from driftline.trainer.data import ColumnHasher

CHUNK_ROWS = 100_000  # rows per piece: ~1 MB per float64 column, small next to a model's working set
PARQUET_SUFFIXES = (".parquet", ".pq")
# Schemes polars' own object-store reader handles (streaming row groups); other URLs go through fsspec.
POLARS_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "azure", "abfs", "abfss", "adl", "http", "https", "hf")


def is_pattern(data: str) -> bool:
    """Whether ``--data`` names a set of partitions (a glob or a URL) rather than one local file."""
    return "://" in data or any(ch in data for ch in "*?[")


@dataclass(frozen=True)
class Partitions:
    """The files ``pattern`` matched (sorted: the table's row order), their row count and column types."""

    pattern: str
    files: tuple[str, ...]
    rows: int
    schema: pl.Schema
    chunk_rows: int = CHUNK_ROWS

    @property
    def by_polars(self) -> bool:
        """Whether polars reads the files itself (local paths and the object stores it knows)."""
        return _by_polars(self.files)

    def scan(self, columns: Sequence[str] | None = None) -> pl.LazyFrame:
        """A lazy frame of the table (only where :attr:`by_polars`)."""
        frame = pl.scan_parquet(list(self.files))
        return frame.select(list(columns)) if columns is not None else frame

    def chunks(self, columns: Sequence[str] | None = None) -> Iterator[pl.DataFrame]:
        """The table's rows in order, about ``chunk_rows`` at a time."""
        if self.by_polars:
            pieces = self.scan(columns).collect_batches(chunk_size=self.chunk_rows)
        else:
            pieces = _arrow_batches(self.files, columns, self.chunk_rows)
        for chunk in pieces:
            if chunk.height:
                yield chunk

    def null_counts(self, columns: Sequence[str]) -> dict[str, int]:
        if self.by_polars:
            return self.scan(columns).select(pl.all().null_count()).collect(engine="streaming").row(0, named=True)
        counts = dict.fromkeys(columns, 0)
        for chunk in self.chunks(columns):
            for name, n in chunk.null_count().row(0, named=True).items():
                counts[name] += n
        return counts


def open_partitions(pattern: str, chunk_rows: int = CHUNK_ROWS) -> Partitions:
    """The Parquet files matching ``pattern``; :class:`NotFound` when none does."""
    files = _expand(pattern)
    if not files:
        raise NotFound(f"no files match {pattern!r}")
    other = [f for f in files if not f.lower().endswith(PARQUET_SUFFIXES)]
    if other:
        raise InvalidInput(f"{pattern!r} matches files that are not Parquet ({other[0]}, ...): a --data pattern "
                           "reads .parquet partitions; convert the others or narrow the pattern")
    try:
        if _by_polars(files):
            scan = pl.scan_parquet(files)
            schema = scan.collect_schema()
            rows = int(scan.select(pl.len()).collect().item())
        else:
            schema, rows = _arrow_shape(pattern, files)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read the partitions of {pattern!r} as one table: {exc}") from exc
    return Partitions(pattern, tuple(files), rows, schema, chunk_rows)


def fit_sample(parts: Partitions, columns: Sequence[str], max_rows: int, seed: int) -> pl.DataFrame:
    """Every row when the table has at most ``max_rows``; else ``max_rows`` rows drawn without replacement
    with ``seed`` (the same seed and table give the same rows), in table order, gathered piece by piece."""
    if parts.rows <= max_rows:
        return pl.concat(list(parts.chunks(columns)))
    wanted = np.sort(np.random.default_rng(seed).choice(parts.rows, size=max_rows, replace=False))
    pieces = []
    offset = 0
    for chunk in parts.chunks(columns):
        lo, hi = np.searchsorted(wanted, [offset, offset + chunk.height])
        if hi > lo:
            pieces.append(chunk[wanted[lo:hi] - offset])
        offset += chunk.height
    return pl.concat(pieces)


def partitions_version(parts: Partitions, columns: Sequence[str]) -> str:
    """:func:`~driftline.trainer.data.data_version` of ``columns`` of the whole table (the same digest as for
    the table in memory), one column and one piece at a time."""
    nulls = parts.null_counts(columns)
    hasher = ColumnHasher(parts.rows)
    for name in columns:
        hasher.start(name, parts.schema[name], has_nulls=nulls[name] > 0)
        for chunk in parts.chunks([name]):
            hasher.add(chunk[name])
    return hasher.hexdigest()


def _expand(pattern: str) -> list[str]:
    if "://" not in pattern:
        return sorted(glob.glob(pattern, recursive=True))
    import fsspec

    fs, path = fsspec.core.url_to_fs(pattern)
    found = fs.glob(path) if any(ch in path for ch in "*?[") else ([path] if fs.exists(path) else [])
    return sorted(fs.unstrip_protocol(p) for p in found)


def _by_polars(files: Sequence[str]) -> bool:
    return "://" not in files[0] or files[0].split("://", 1)[0].lower() in POLARS_SCHEMES


def _arrow_shape(pattern: str, files: Sequence[str]) -> tuple[pl.Schema, int]:
    import fsspec
    import pyarrow.parquet as pq

    schema, rows = None, 0
    for name in files:
        with fsspec.open(name, "rb") as f:
            meta = pq.ParquetFile(f)
            these = pl.from_arrow(meta.schema_arrow.empty_table()).schema
            rows += meta.metadata.num_rows
        if schema is not None and these != schema:
            raise ValueError(f"{name} has columns {dict(these)}, the first file {dict(schema)}")
        schema = these
    assert schema is not None
    return schema, rows


def _arrow_batches(files: Sequence[str], columns: Sequence[str] | None, rows: int) -> Iterator[pl.DataFrame]:
    import fsspec
    import pyarrow.parquet as pq

    for name in files:
        with fsspec.open(name, "rb") as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=rows, columns=list(columns) if columns else None):
                yield pl.from_arrow(batch)
