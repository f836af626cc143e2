"""``driftline schema accept NAME[:VERSION]``: vouch for the limits a version's schema inferred from its data.

Inferred limits only flag (see :mod:`driftline.registry.schema`). Accepting them declares them, so they refuse.
A published version never changes, so acceptance publishes a new version: the same model, profile and every
other file byte for byte, the schema with its inferred limits declared, and metadata recording what was
accepted from which version. The aliases stay where they are: promote the new version to serve it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from driftline.errors import InvalidInput, Unsupported
from driftline.registry.schema import SCHEMA_FILE, Schema
from driftline.registry.store import METADATA_FILE, Registry

ACCEPTED_KEY = "schema_accepted"  # metadata.extra: {"from_version": N, "limits": {feature: [limit, ...]}}


@dataclass(frozen=True)
class Accepted:
    model: str
    version: int  # the new version
    source_version: int  # the version whose inferred limits were accepted
    limits: dict[str, tuple[str, ...]]  # feature -> the limits that became declared


def accept_inferred(registry: Registry, model: str, ref: str | int | None = None) -> Accepted:
    """Publish ``model``'s version ``ref`` (a number or alias; the latest by default) again with every inferred
    limit of its schema declared. Raises when it has no schema, or nothing left to accept."""
    version = registry.resolve(model, ref)
    stored = registry.open(model, version)
    if SCHEMA_FILE not in stored.checksums:
        raise Unsupported(f"{model} version {version} has no schema to accept; publish it again to get one")
    schema = Schema.from_json(stored.read(SCHEMA_FILE))
    limits = schema.inferred
    if not limits:
        raise InvalidInput(f"{model} version {version} has no inferred limits: every limit of its schema is "
                           "already declared")
    files = {name: stored.read(name) for name in stored.checksums if name not in (METADATA_FILE, SCHEMA_FILE)}
    accepted = {"from_version": version, "limits": {f: list(x) for f, x in limits.items()}}
    # source stays what made the model (retrain repeats a "driftline train" recipe); extra says what changed.
    metadata = replace(stored.metadata, created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                       extra={**stored.metadata.extra, ACCEPTED_KEY: accepted})
    files[METADATA_FILE] = metadata.to_json().encode()
    files[SCHEMA_FILE] = schema.accepted().to_json().encode()
    return Accepted(model, registry.publish(model, files), version, limits)
