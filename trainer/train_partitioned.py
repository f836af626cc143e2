"""``driftline train --data 'PATTERN'``: a table in many Parquet files, larger than memory.

The model is fit on a reproducible sample of at most ``max_fit_rows`` rows (all rows when the table is
smaller), exactly as ``--data FILE`` fits a table in memory. Then the whole table is read again in pieces: the
training baseline counts every row (and the model's answers to it) into the fit sample's bins, and the data
version hashes every row. The lineage records the sample (``extra["fit_sample"]``) and the total rows.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from driftline.errors import InvalidInput
from driftline.trainer.partitions import fit_sample, open_partitions, partitions_version
from driftline.trainer.roles import is_mixed, roles
from driftline.trainer.stream_profile import streamed_baseline

if TYPE_CHECKING:
    from driftline.trainer.train import TrainConfig, TrainedModel


def train_partitioned(config: TrainConfig) -> TrainedModel:
    from driftline.trainer.train import train_frame  # train.py dispatches here, so import it late

    if config.target is None:
        raise InvalidInput("--target COLUMN is required with --data")
    if config.max_fit_rows < 10:
        raise InvalidInput(f"--max-fit-rows must be at least 10, got {config.max_fit_rows}")
    assert config.data is not None
    parts = open_partitions(config.data)
    names = parts.schema.names()
    features = list(config.features) if config.features else [c for c in names if c != config.target]
    missing = [c for c in [config.target, *features] if c not in names]
    if missing:
        raise InvalidInput(f"columns {missing} are not in {config.data} (columns: {', '.join(names)})")
    used = [*features, config.target]
    sample = fit_sample(parts, used, config.max_fit_rows, config.seed)
    if is_mixed(roles(sample, features, config.schema_overrides)):
        raise InvalidInput(
            f"{config.data}: a table with categorical or text feature columns is trained from one file, not a "
            "pattern of partitions; combine the partitions into one Parquet file (or encode those columns as "
            "numbers) and pass --data FILE")
    trained = train_frame(config, sample, config.target)
    baseline = streamed_baseline(trained.onnx_model, trained.profile, trained.metadata, parts, features,
                                 trained.schema, drop_invalid=config.drop_invalid)
    extra = {**trained.metadata.extra, "fit_sample": {
        "rows": sample.height, "of": parts.rows, "seed": config.seed, "max_rows": config.max_fit_rows,
        "partitions": len(parts.files),
        "baseline_rows": baseline.rows, "baseline_dropped_rows": baseline.dropped,
    }}
    metadata = replace(trained.metadata, data_version=partitions_version(parts, used), data_rows=parts.rows,
                       extra=extra)
    return replace(trained, metadata=metadata, profile=baseline.profile)
