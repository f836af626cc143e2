"""The local registry: numbering, immutability, checksums, and publishes that crash."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from driftline.errors import CorruptArtifact, InvalidInput, NotFound, PublishError
from driftline.registry import Registry, VersionMetadata
from driftline.registry.store import MANIFEST_FILE, METADATA_FILE, MODEL_FILE
from helpers import sample_metadata


metadata = sample_metadata


def files(model: bytes = b"onnx-bytes") -> dict[str, bytes]:
    return {MODEL_FILE: model, METADATA_FILE: metadata().to_json().encode()}


def test_versions_count_up_from_one(tmp_path: Path):
    registry = Registry(tmp_path)
    assert registry.versions("m") == [] and registry.models() == []
    assert [registry.publish("m", files(bytes([i]))) for i in range(3)] == [1, 2, 3]
    assert registry.versions("m") == [1, 2, 3] and registry.latest("m") == 3 and registry.models() == ["m"]
    stored = registry.open("m", 2)
    assert stored.read(MODEL_FILE) == bytes([1])
    assert stored.metadata == metadata()
    assert registry.open("m").version == 3


def test_metadata_round_trips_through_json():
    original = metadata(classes=(0, 1, 2), target="price_segment", extra={"seed": 3})
    assert VersionMetadata.from_json(original.to_json()) == original


def test_concurrent_publishers_get_distinct_versions(tmp_path: Path):
    registry = Registry(tmp_path)
    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(lambda i: registry.publish("m", files(str(i).encode())), range(16)))
    assert sorted(versions) == list(range(1, 17))
    contents = {registry.open("m", v).read(MODEL_FILE) for v in versions}
    assert contents == {str(i).encode() for i in range(16)}


def test_tampered_file_is_detected(tmp_path: Path):
    registry = Registry(tmp_path)
    version = registry.publish("m", files())
    (tmp_path / "m" / str(version) / MODEL_FILE).write_bytes(b"tampered")
    with pytest.raises(CorruptArtifact, match="does not match its sha256"):
        registry.open("m", version).read(MODEL_FILE)


def test_tampered_metadata_is_detected_on_open(tmp_path: Path):
    registry = Registry(tmp_path)
    version = registry.publish("m", files())
    path = tmp_path / "m" / str(version) / METADATA_FILE
    path.write_text(path.read_text().replace('"r2": 0.5', '"r2": 0.99'))
    with pytest.raises(CorruptArtifact):
        registry.open("m", version)


def test_unknown_model_and_version(tmp_path: Path):
    registry = Registry(tmp_path)
    registry.publish("m", files())
    with pytest.raises(NotFound, match="no version 4"):
        registry.open("m", 4)
    with pytest.raises(NotFound, match="models there: m"):
        registry.open("other")


def test_bad_model_names_are_refused(tmp_path: Path):
    for name in ("", "../escape", "a/b", ".hidden"):
        with pytest.raises(InvalidInput):
            Registry(tmp_path).publish(name, files())


def test_failed_rename_publishes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    registry = Registry(tmp_path)
    registry.publish("m", files(b"v1"))

    def disk_error(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("driftline.registry.local.os.rename", disk_error)
    with pytest.raises(PublishError, match="nothing was published"):
        registry.publish("m", files(b"v2"))
    monkeypatch.undo()
    assert registry.versions("m") == [1]
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["1"]  # the staging folder was removed
    assert registry.publish("m", files(b"v2")) == 2


@pytest.mark.parametrize("crash_point", ["write", "rename"])
def test_crash_during_publish_leaves_no_visible_version(tmp_path: Path, crash_point: str):
    """A publishing process dies (os._exit: no cleanup, no finally) in the middle of a publish."""
    Registry(tmp_path).publish("m", files(b"v1"))
    script = textwrap.dedent(f"""
        import os, sys
        import driftline.registry.local as store
        from driftline.registry import Registry
        sys.path[:0] = [{str(Path(__file__).parent)!r}, {str(Path(__file__).parent.parent)!r}]
        from test_store import files
        if {crash_point!r} == "rename":
            store.os.rename = lambda *a: os._exit(9)
        else:
            real_write = store._write
            def write(path, data):
                if path.name == "metadata.json":
                    path.write_bytes(data[: len(data) // 2])  # half a file, then the process dies
                    os._exit(9)
                return real_write(path, data)
            store._write = write
        Registry({str(tmp_path)!r}).publish("m", files(b"v2"))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 9, result.stderr
    registry = Registry(tmp_path)
    leftovers = [p.name for p in (tmp_path / "m").iterdir() if p.name.startswith(".publish-")]
    assert leftovers, "the crash should have left its staging folder behind"
    assert registry.versions("m") == [1] and registry.latest("m") == 1
    assert registry.open("m").read(MODEL_FILE) == b"v1"
    assert registry.publish("m", files(b"v3")) == 2
    assert registry.open("m", 2).read(MODEL_FILE) == b"v3"


def test_manifest_lists_every_file(tmp_path: Path):
    registry = Registry(tmp_path)
    version = registry.publish("m", files())
    manifest = json.loads((tmp_path / "m" / str(version) / MANIFEST_FILE).read_text())
    assert set(manifest["files"]) == {MODEL_FILE, METADATA_FILE}
