"""A publish to an object store that dies part way leaves no visible version, wherever it dies.

The storage itself fails (the N-th object write raises, as a dropped connection or a killed process would leave
it), for every N up to and including the manifest: the publish code runs as it is, unreplaced. Objects are
written to fsspec's in-memory filesystem through the same ObjectStorage an ``s3://`` registry uses.
"""

from __future__ import annotations

import uuid

import pytest
from driftline.registry import open_registry
from driftline.registry.store import METADATA_FILE, MODEL_FILE
from helpers import sample_metadata

from driftline.errors import PublishError


class StorageDied(OSError):
    pass


def files(model: bytes) -> dict[str, bytes]:
    return {MODEL_FILE: model, METADATA_FILE: sample_metadata().to_json().encode()}


def writes_of_one_publish(monkeypatch: pytest.MonkeyPatch) -> int:
    registry = open_registry(f"memory://count-{uuid.uuid4().hex}")
    fs = registry.storage.fs
    count = 0
    real = fs.pipe_file

    def counting(path, data, **kwargs):
        nonlocal count
        count += 1
        return real(path, data, **kwargs)

    monkeypatch.setattr(fs, "pipe_file", counting)
    registry.publish("m", files(b"v1"))
    monkeypatch.undo()
    return count


def dies_at_write(real, dies_at: int, total: int):
    """``real`` (a filesystem's pipe_file) that raises at its ``dies_at``-th call instead of writing."""
    written = 0

    def dying(path, data, **kwargs):
        nonlocal written
        written += 1
        if written == dies_at:
            raise StorageDied(f"the storage died at write {dies_at} of {total}")
        return real(path, data, **kwargs)

    return dying


def test_a_publish_that_dies_at_any_write_leaves_no_visible_version(monkeypatch: pytest.MonkeyPatch):
    total = writes_of_one_publish(monkeypatch)
    assert total >= 3  # the claim, the files, the manifest
    for dies_at in range(1, total + 1):  # the last write is the one that would make the version visible
        registry = open_registry(f"memory://crash-{uuid.uuid4().hex}")
        registry.publish("m", files(b"v1"))
        fs = registry.storage.fs
        monkeypatch.setattr(fs, "pipe_file", dies_at_write(fs.pipe_file, dies_at, total))
        with pytest.raises(PublishError, match="nothing was published"):
            registry.publish("m", files(b"v2"))
        monkeypatch.undo()
        reader = open_registry(registry.storage.location)  # another process's view
        assert reader.versions("m") == [1], f"died at write {dies_at} of {total}: {reader.versions('m')}"
        assert reader.open("m").read(MODEL_FILE) == b"v1"
        assert reader.publish("m", files(b"v3")) >= 2  # and the registry still takes versions
        assert reader.open("m").read(MODEL_FILE) == b"v3"
