"""Content-addressed files: each distinct file stored once, checked on every read, swept only when unreferenced."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest

from driftline.errors import CorruptArtifact, PublishError
from driftline.registry import Registry, open_registry
from driftline.registry.blobs import BLOB_ROOT, GRACE_S, blob_key
from driftline.registry.gc import collect, hide_version, remove_files, sweep_blobs
from driftline.registry.store import MANIFEST_FILE, METADATA_FILE, MODEL_FILE, PROFILE_FILE, sha256_hex
from driftline.registry.usage import registry_usage
from helpers import sample_metadata
from moto_s3 import moto_s3

PROFILE = b'{"reference": "the same baseline in every version"}' * 50
DATA = b"PAR1 the same training table" * 200


def files(model: bytes, profile: bytes = PROFILE) -> dict[str, bytes]:
    return {MODEL_FILE: model, METADATA_FILE: sample_metadata().to_json().encode(), PROFILE_FILE: profile,
            "data.parquet": DATA}


def blobs(registry: Registry) -> dict[str, int]:
    return registry.storage.sizes(BLOB_ROOT)


def stored_on_disk(root: Path) -> int:
    """Every file of the registry but served-version records and lock files, each inode once (as `du` counts)."""
    seen = {}
    for path in root.rglob("*"):
        if path.is_file() and ".serving" not in path.parts and not path.name.endswith(".lock"):
            info = path.stat()
            seen[(info.st_dev, info.st_ino)] = info.st_size
    return sum(seen.values())


@pytest.fixture(params=["local", "memory"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Registry:
    if request.param == "local":
        return Registry(tmp_path / "registry")
    return open_registry(f"memory://blobs-{uuid.uuid4().hex}")


def age(registry: Registry, key: str, seconds: float) -> None:
    """Make a stored file look ``seconds`` old (local: its mtime; memory://: its creation time)."""
    then = time.time() - seconds
    if registry.storage.folder_holds_blobs:
        os.utime(registry.storage.root / key, (then, then))
    else:
        import datetime as dt

        fs = registry.storage.fs
        fs.store[registry.storage._path(key)].created = dt.datetime.fromtimestamp(then, tz=dt.UTC)


def test_the_same_profile_and_data_are_stored_once(registry: Registry):
    one = registry.publish("m", files(b"model one"))
    two = registry.publish("m", files(b"model two"))
    registry.publish("other", files(b"model one"))  # shared across models too
    # model one, model two, the profile, the data: four distinct files, however many versions hold them
    assert sorted(blobs(registry).values()) == sorted([len(b"model one"), len(b"model two"), len(PROFILE), len(DATA)])
    for version, model in ((one, b"model one"), (two, b"model two")):
        stored = registry.open("m", version)
        assert stored.read(MODEL_FILE) == model and stored.read("data.parquet") == DATA
    manifest = json.loads(registry.storage.read(f"m/{two}/{MANIFEST_FILE}"))
    assert manifest["format"] == 2 and manifest["blobs"] == ["data.parquet", MODEL_FILE, PROFILE_FILE]
    found = registry_usage(registry)
    assert found.bytes - found.stored == 2 * (len(PROFILE) + len(DATA)) + len(b"model one")  # what sharing saves
    m = found.models[0]
    own = {n: size for n, size in registry.storage.sizes(f"m/{two}").items() if n not in manifest["blobs"]}
    assert m.versions[1].stored == sum(own.values()) + len(b"model two")  # its own files and its new model only


def test_a_local_version_folder_stays_complete_through_hard_links(tmp_path: Path):
    registry = Registry(tmp_path)
    one, two = registry.publish("m", files(b"a")), registry.publish("m", files(b"b"))
    for version in (one, two):
        folder = tmp_path / "m" / str(version)
        assert {p.name for p in folder.iterdir()} == {MODEL_FILE, METADATA_FILE, PROFILE_FILE, "data.parquet",
                                                        MANIFEST_FILE}
        assert (folder / PROFILE_FILE).samefile(tmp_path / blob_key(sha256_hex(PROFILE)))
    assert (tmp_path / "m/1/data.parquet").samefile(tmp_path / "m/2/data.parquet")
    assert registry_usage(registry).stored == stored_on_disk(tmp_path) < registry_usage(registry).bytes


def test_an_object_store_version_folder_holds_metadata_manifest_and_claim_only():
    registry = open_registry(f"memory://blobs-{uuid.uuid4().hex}")
    version = registry.publish("m", files(b"a"))
    assert set(registry.storage.sizes(f"m/{version}")) == {METADATA_FILE, MANIFEST_FILE, ".claim"}
    found = registry_usage(registry)
    every_object = sum(registry.storage.sizes("").values())
    assert found.stored == every_object  # each object counted once: nothing else is in the bucket


def test_format_1_versions_still_read(registry: Registry):
    """A version published before content addressing: every file in its folder, no "blobs" in its manifest."""
    body = {MODEL_FILE: b"old model", METADATA_FILE: sample_metadata().to_json().encode()}
    if registry.storage.folder_holds_blobs:
        (registry.storage.root / "m" / "1").mkdir(parents=True)
    for name, data in body.items():
        registry.storage.replace(f"m/1/{name}", data)
    manifest = {"format": 1, "files": {n: sha256_hex(d) for n, d in body.items()}}
    registry.storage.replace(f"m/1/{MANIFEST_FILE}", json.dumps(manifest).encode())
    assert registry.open("m", 1).read(MODEL_FILE) == b"old model"
    assert registry.publish("m", files(b"new")) == 2 and registry.open("m", 2).read(MODEL_FILE) == b"new"
    found = registry_usage(registry).models[0]
    assert found.versions[0].bytes == found.versions[0].stored == sum(registry.storage.sizes("m/1").values())
    collect(registry, "m", keep=2, grace_s=0)
    assert registry.open("m", 1).read(MODEL_FILE) == b"old model"


def test_a_damaged_blob_is_refused_by_checksum_and_repaired_by_the_next_publish(registry: Registry):
    version = registry.publish("m", files(b"a"))
    key = blob_key(sha256_hex(PROFILE))
    if registry.storage.folder_holds_blobs:  # in place, as a disk error would: the hard link sees it too
        with open(registry.storage.root / key, "r+b") as handle:
            handle.seek(3)
            handle.write(b"!")
    else:
        registry.storage.replace(key, PROFILE[:-1] + b"!")
    with pytest.raises(CorruptArtifact, match="does not match its sha256"):
        registry.open("m", version).read(PROFILE_FILE)
    again = registry.publish("m", files(b"b"))  # finds the damaged blob, checks it, writes it whole again
    assert registry.open("m", again).read(PROFILE_FILE) == PROFILE
    assert registry.storage.read(key) == PROFILE


def test_gc_sweeps_only_unreferenced_blobs_past_the_grace_period(registry: Registry):
    for model in (b"v1", b"v2", b"v3"):
        registry.publish("m", files(model, profile=PROFILE + model))
    in_flight = blob_key(sha256_hex(b"a publish has stored me and not yet written its manifest"))
    registry.storage.put_blob(in_flight, b"a publish has stored me and not yet written its manifest",
                              in_flight.rsplit("/", 1)[-1])
    plan = collect(registry, "m", keep=1)  # default grace: an hour
    assert plan.removed == [1, 2] and registry.versions("m") == [3]
    old = {blob_key(sha256_hex(b)) for b in (b"v1", b"v2", PROFILE + b"v1", PROFILE + b"v2")}
    assert set(plan.sweep.young) == old | {in_flight} and not plan.sweep.removed  # all just written
    for key in old:
        age(registry, key, GRACE_S + 60)
    sweep = sweep_blobs(registry)
    assert set(sweep.removed) == old and set(sweep.young) == {in_flight}
    assert registry.storage.exists(in_flight)  # the in-flight publish can still write its manifest
    assert registry.open("m", 3).read("data.parquet") == DATA  # shared with the removed versions: kept
    assert registry.open("m", 3).read(PROFILE_FILE) == PROFILE + b"v3"


def test_a_reused_blob_is_refreshed_so_gc_does_not_sweep_it_under_a_publish(registry: Registry):
    registry.publish("m", files(b"v1"))
    registry.publish("m", files(b"v2"))
    collect(registry, "m", keep=1, grace_s=0)  # v1's model blob is gone; the data blob is v2's too
    key = blob_key(sha256_hex(b"v1"))
    assert not registry.storage.exists(key)
    registry.publish("m", files(b"v3"))
    data = blob_key(sha256_hex(DATA))
    age(registry, data, GRACE_S + 60)
    hide_version(registry, "m", 2)  # v2 and v3 both gone from the manifests' view...
    hide_version(registry, "m", 3)
    registry.storage.put_blob(data, DATA, sha256_hex(DATA))  # ...as a publish reuses the data blob
    assert data in sweep_blobs(registry).young  # refreshed: not swept before that publish's manifest lands


@pytest.mark.parametrize("where", ["local", "memory"])
def test_a_publish_that_fails_after_its_blobs_leaves_them_for_gc_only(where: str, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch):
    registry = Registry(tmp_path) if where == "local" else open_registry(f"memory://crash-{uuid.uuid4().hex}")
    registry.publish("m", files(b"v1"))
    storage = type(registry.storage)
    real = storage.publish

    def dies_after_the_blobs(self, model, body, manifest):
        from driftline.registry.blobs import blobs_of

        for name, key in blobs_of(manifest).items():
            self.put_blob(key, body[name], key.rsplit("/", 1)[-1])
        raise OSError("the process died before its manifest")

    monkeypatch.setattr(storage, "publish", dies_after_the_blobs)
    with pytest.raises(PublishError, match="nothing was published"):
        registry.publish("m", files(b"never visible", profile=b"nor this"))
    monkeypatch.setattr(storage, "publish", real)
    assert registry.versions("m") == [1] and registry.open("m").read(MODEL_FILE) == b"v1"
    orphans = {blob_key(sha256_hex(b)) for b in (b"never visible", b"nor this")}
    assert orphans <= set(f"{BLOB_ROOT}/{k}" for k in blobs(registry))
    assert set(registry_usage(registry).unreferenced) == orphans
    assert set(sweep_blobs(registry, grace_s=0).removed) == orphans
    assert registry.open("m").read(PROFILE_FILE) == PROFILE and registry.publish("m", files(b"v2")) == 2


@pytest.mark.parametrize("where", ["local", "memory"])
def test_a_gc_that_dies_at_any_delete_leaves_every_visible_version_whole(where: str, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    def fresh(i: int) -> Registry:
        registry = (Registry(tmp_path / str(i)) if where == "local"
                    else open_registry(f"memory://gcdies-{uuid.uuid4().hex}"))
        for model in (b"v1", b"v2", b"v3"):
            registry.publish("m", files(model, profile=PROFILE + model))
        return registry

    counting = fresh(0)
    deletes = []
    real = type(counting.storage).delete
    monkeypatch.setattr(type(counting.storage), "delete", lambda self, key: (deletes.append(key), real(self, key)))
    collect(counting, "m", keep=1, grace_s=0)
    monkeypatch.undo()
    assert any(k.startswith(BLOB_ROOT) for k in deletes) and any(k.endswith(MANIFEST_FILE) for k in deletes)
    for dies_at in range(1, len(deletes) + 1):
        registry = fresh(dies_at)
        done = 0

        def dying(self, key, dies_at=dies_at):
            nonlocal done
            done += 1
            if done == dies_at:
                raise OSError(f"gc died at delete {dies_at} of {len(deletes)}")
            return real(self, key)

        monkeypatch.setattr(type(registry.storage), "delete", dying)
        with pytest.raises(OSError, match="gc died"):
            collect(registry, "m", keep=1, grace_s=0)
        monkeypatch.undo()
        reader = open_registry(registry.location) if where == "memory" else Registry(registry.location)
        for version in reader.versions("m"):  # whatever is visible reads whole, checksums and all
            stored = reader.open("m", version)
            assert {stored.read(name) for name in stored.checksums} and stored.read("data.parquet") == DATA
        assert 3 in reader.versions("m")
        collect(reader, "m", keep=1, grace_s=0)  # the next gc finishes the job
        assert reader.versions("m") == [3] and not registry_usage(reader).unreferenced
        assert len(blobs(reader)) == 3  # v3's model and profile, and the shared data
        if where == "local":
            assert registry_usage(reader).stored == stored_on_disk(Path(registry.location))


def test_du_counts_a_version_gc_hid_and_did_not_finish_at_its_real_cost(tmp_path: Path):
    registry = Registry(tmp_path)
    for model in (b"v1", b"v2"):
        registry.publish("m", files(model))
    hide_version(registry, "m", 1)  # a gc that died after step 1: v1's folder still links its blobs
    found = registry_usage(registry)
    assert [v.published for v in found.models[0].versions] == [False, True]
    assert found.stored == stored_on_disk(tmp_path)
    remove_files(registry, "m", 1)
    assert registry_usage(registry).stored == stored_on_disk(tmp_path)


def test_blobs_on_s3_are_stored_once_and_swept_by_age():
    """The same through a real S3 API (moto's server on 127.0.0.1): create-if-absent PUTs, LastModified ages."""
    with moto_s3("blobs"):
        registry = open_registry("s3://blobs/reg")
        for model in (b"v1", b"v2", b"v2"):
            registry.publish("m", files(model))
        assert sorted(blobs(registry).values()) == sorted([2, 2, len(PROFILE), len(DATA)])
        data = blob_key(sha256_hex(DATA))
        import boto3

        stamp = boto3.client("s3").head_object(Bucket="blobs", Key=f"reg/{data}")["LastModified"]
        assert registry.storage.modified(data) == stamp.timestamp()  # S3's LastModified, read as epoch seconds
        assert [registry.open("m", v).read(MODEL_FILE) for v in (1, 2, 3)] == [b"v1", b"v2", b"v2"]
        plan = collect(registry, "m", keep=1, grace_s=0)
        assert plan.removed == [1, 2] and set(plan.sweep.removed) == {blob_key(sha256_hex(b"v1"))}
        assert registry.open("m", 3).read("data.parquet") == DATA
        assert registry_usage(registry).stored == sum(registry.storage.sizes("").values())
