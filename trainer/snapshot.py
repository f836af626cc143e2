"""A version's training data, kept with it: ``driftline train --snapshot-data``.

A version records its data's hash; if the file it came from is overwritten, the version cannot be rebuilt.
The snapshot is the table the model was actually fitted and held out on (after validation dropped rows,
before the split), written as Parquet into the version (``data.parquet``). The registry stores it once by
content (registry/blobs.py), so a retrain on the same data adds no bytes for it. The bytes are deterministic
(fixed compression, no timestamps in the file), so the same table always gives the same blob.

Default: on for a local registry, off for an object store (where each snapshot is billed monthly) unless
``--snapshot-data`` or ``DRIFTLINE_SNAPSHOT_DATA=1``. The server never reads it: it loads ONNX and JSON only.
"""

from __future__ import annotations

import io
from dataclasses import replace
from typing import Any

import polars as pl

from driftline.errors import CorruptArtifact, InvalidInput
from driftline.registry import StoredVersion, VersionMetadata
from driftline.registry.store import sha256_hex
from driftline.trainer.data import data_version

SNAPSHOT_FILE = "data.parquet"
LINEAGE_KEY = "data_snapshot"  # metadata.extra[...]: file, sha256, bytes, rows, columns, data_version
ENV = "DRIFTLINE_SNAPSHOT_DATA"
_YES, _NO = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def wanted(choice: bool | None, registry_location: str, env_value: str | None = None) -> bool:
    """Whether to snapshot: the flag if given, else ``$DRIFTLINE_SNAPSHOT_DATA`` (passed in), else local only."""
    if choice is not None:
        return choice
    if env_value:
        value = env_value.strip().lower()
        if value not in _YES | _NO:
            raise InvalidInput(f"{ENV}={env_value!r}: use 1 or 0 (true/false, yes/no, on/off)")
        return value in _YES
    return "://" not in registry_location or registry_location.startswith("file://")


def parquet_bytes(table: pl.DataFrame) -> bytes:
    """The table as Parquet, the same bytes for the same table (one row group, zstd, statistics)."""
    sink = io.BytesIO()
    table.write_parquet(sink, compression="zstd", compression_level=3, statistics=True,
                        row_group_size=max(1, table.height))
    return sink.getvalue()


def take(trained: Any) -> tuple[VersionMetadata, dict[str, bytes]]:
    """The trained model's metadata with the snapshot in its lineage, and the file to publish with it."""
    if trained.table is None:
        raise InvalidInput("this training kept no table to snapshot; train without --snapshot-data")
    body = parquet_bytes(trained.table)
    lineage = {"file": SNAPSHOT_FILE, "sha256": sha256_hex(body), "bytes": len(body), "rows": trained.table.height,
               "columns": list(trained.table.columns), "data_version": data_version(trained.table)}
    metadata = replace(trained.metadata, extra={**trained.metadata.extra, LINEAGE_KEY: lineage})
    return metadata, {SNAPSHOT_FILE: body}


def read(stored: StoredVersion) -> pl.DataFrame:
    """The version's snapshot (checksum verified); InvalidInput naming the fix when it has none."""
    if SNAPSHOT_FILE not in stored.checksums:
        raise NoSnapshot(f"{stored.model} version {stored.version} has no data snapshot: it was trained without "
                         "--snapshot-data (or before snapshots existed); train it again with --snapshot-data to "
                         "make it reproducible")
    body = stored.read(SNAPSHOT_FILE)
    try:
        return pl.read_parquet(io.BytesIO(body))
    except pl.exceptions.PolarsError as exc:
        raise CorruptArtifact(f"{stored.model} version {stored.version}: {SNAPSHOT_FILE} cannot be read: {exc}") from exc


class NoSnapshot(InvalidInput):
    """The version was published without its training data."""
