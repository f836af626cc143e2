"""`driftline models du` and `driftline models gc`: what a registry costs, and trimming it safely."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from driftline.registry import Registry, open_registry
from driftline.registry.gc import GC_MARK, collect, hide_version
from driftline.registry.names import is_version_folder
from driftline.registry.store import MANIFEST_FILE, METADATA_FILE, MODEL_FILE
from driftline.registry.usage import registry_usage
from driftline.server.record import ServingRecord, record_path
from helpers import driftline, running_server, sample_metadata, wait_until


def train(root: Path, count: int, name: str = "m") -> None:
    for _ in range(count):
        driftline("train", name, "--registry", str(root), "--rows", "300", "--estimator", "linear")


def on_disk(root: Path) -> dict[str, int]:
    """Bytes under every numbered folder of every model, read straight from the disk."""
    found = {}
    for model in root.iterdir():
        if not model.is_dir() or model.name.startswith("."):
            continue
        for version in model.iterdir():
            if version.is_dir() and is_version_folder(version.name):
                found[f"{model.name}/{version.name}"] = sum(f.stat().st_size for f in version.rglob("*") if f.is_file())
    return found


def stored_on_disk(root: Path) -> int:
    """Bytes the registry's versions take on disk: every file under a numbered folder or the blob store, each
    distinct file (inode) once, as `du` counts hard links."""
    seen: dict[tuple[int, int], int] = {}
    for path in root.rglob("*"):
        inside = path.relative_to(root).parts
        if path.is_file() and (inside[0] == ".blobs" or (len(inside) > 2 and is_version_folder(inside[1]))):
            info = path.stat()
            seen[(info.st_dev, info.st_ino)] = info.st_size
    return sum(seen.values())


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


@pytest.fixture
def three(tmp_path: Path) -> Path:
    root = tmp_path / "registry"
    train(root, 3)
    return root


def test_du_totals_are_the_bytes_on_disk(tmp_path: Path):
    root = tmp_path / "registry"
    train(root, 2, "a")
    train(root, 1, "b")
    disk = on_disk(root)
    report = json.loads(driftline("models", "du", "--registry", str(root), "--json").stdout)
    assert report["total_bytes"] == sum(disk.values()) > 0
    assert report["price_per_gb_month"] == 0.023
    for model in report["models"]:
        assert model["bytes"] == sum(v for k, v in disk.items() if k.startswith(model["model"] + "/"))
        for version in model["versions"]:
            assert version["bytes"] == disk[f"{model['model']}/{version['version']}"] and version["published"]
    assert report["total_stored_bytes"] == stored_on_disk(root) < report["total_bytes"]  # a and a share a data snapshot
    assert report["total_monthly_usd"] == pytest.approx(stored_on_disk(root) / 2**30 * 0.023)

    one = json.loads(driftline("models", "du", "a", "--registry", str(root), "--json",
                               "--price-per-gb-month", "0.1").stdout)
    assert [m["model"] for m in one["models"]] == ["a"]
    assert one["total_bytes"] == disk["a/1"] + disk["a/2"]
    assert one["total_monthly_usd"] == pytest.approx(one["total_stored_bytes"] / 2**30 * 0.1)

    table = driftline("models", "du", "--registry", str(root)).stdout
    assert "0.023 USD per GB-month" in table and "S3 Standard" in table
    assert table.splitlines()[-1].split()[:3] == ["TOTAL", str(sum(1 for p in root.glob("*/[0-9]*/*"))),
                                                  str(sum(disk.values()))]
    missing = driftline("models", "du", "nope", "--registry", str(root), check=False)
    assert missing.returncode == 2 and "nope" in missing.stderr


def test_gc_keeps_the_newest_and_aliased_versions(three: Path):
    driftline("promote", "m", "1", "--registry", str(three))
    out = driftline("models", "gc", "m", "--keep", "1", "--registry", str(three)).stdout
    assert Registry(three).versions("m") == [1, 3]
    assert not (three / "m" / "2").exists()
    assert "alias production" in out and "removed" in out
    assert driftline("models", "show", "m", "--registry", str(three)).returncode == 0
    # nothing more to do: a second run removes nothing
    driftline("models", "gc", "m", "--keep", "1", "--registry", str(three))
    assert Registry(three).versions("m") == [1, 3]


def test_gc_keeps_a_version_a_served_version_record_names(three: Path):
    # written by the server's own code, as a worker does after a swap
    record = ServingRecord(record_path(None, str(three), "127.0.0.1", 8001), str(three), (), "127.0.0.1:8001")
    record.set("m", 1, [3, 1])
    out = driftline("models", "gc", "m", "--keep", "1", "--registry", str(three)).stdout
    assert Registry(three).versions("m") == [1, 3]
    assert "served by 127.0.0.1:8001" in out


def test_gc_keeps_what_a_running_server_was_swapped_to(three: Path):
    with running_server(three) as server:
        driftline("swap", "m", "1", "--server", server.address)
        wait_until(lambda: any((three / ".serving").glob("*.json")), "the served-version record")
        dry = driftline("models", "gc", "m", "--keep", "1", "--dry-run", "--registry", str(three)).stdout
        assert f"served by 127.0.0.1:{server.port}" in dry
        driftline("models", "gc", "m", "--keep", "1", "--registry", str(three))
    assert Registry(three).versions("m") == [1, 3]


def test_gc_reads_records_in_a_named_state_dir(three: Path, tmp_path: Path):
    elsewhere = tmp_path / "state"
    record = ServingRecord(record_path(str(elsewhere), str(three), "127.0.0.1", 9000), str(three), (), "s:9000")
    record.set("m", 2, [2])
    plan = driftline("models", "gc", "m", "--keep", "1", "--dry-run", "--registry", str(three)).stdout
    assert "would remove m version 2" in plan  # unseen without --state-dir
    driftline("models", "gc", "m", "--keep", "1", "--registry", str(three), "--state-dir", str(elsewhere))
    assert Registry(three).versions("m") == [2, 3]


def test_a_crash_after_the_manifest_went_leaves_no_visible_version_and_the_next_gc_finishes(three: Path):
    registry = Registry(three)
    hide_version(registry, "m", 1)  # step 1 of removing version 1, then "crash": its files stay
    assert (three / "m" / "1" / MODEL_FILE).exists() and not (three / "m" / "1" / MANIFEST_FILE).exists()
    assert Registry(three).versions("m") == [2, 3]
    assert Registry(three).models() == ["m"]
    du = json.loads(driftline("models", "du", "--registry", str(three), "--json").stdout)
    assert [v["published"] for v in du["models"][0]["versions"]] == [False, True, True]  # still stored, and paid
    driftline("promote", "m", "2", "--registry", str(three))  # readers and aliases carry on around it
    out = driftline("models", "gc", "m", "--keep", "1", "--registry", str(three)).stdout
    assert "interrupted gc" in out
    assert not (three / "m" / "1").exists()
    assert Registry(three).versions("m") == [2, 3]
    # a later publish still gets a new number, never the removed one
    train(three, 1)
    assert Registry(three).versions("m") == [2, 3, 4]


def test_a_folder_without_manifest_or_gc_mark_is_left_alone(three: Path):
    (three / "m" / "7").mkdir()
    (three / "m" / "7" / MODEL_FILE).write_bytes(b"half a publish")
    out = driftline("models", "gc", "m", "--keep", "1", "--registry", str(three)).stdout
    assert (three / "m" / "7" / MODEL_FILE).exists() and "leave" in out


def test_dry_run_removes_nothing(three: Path):
    hide_version(Registry(three), "m", 2)
    before = snapshot(three)
    out = driftline("models", "gc", "m", "--keep", "1", "--dry-run", "--registry", str(three)).stdout
    assert snapshot(three) == before
    assert "would remove m version 1" in out and "would remove m version 2: left hidden by an interrupted gc" in out
    assert "keep         m version 3: one of the newest 1" in out
    assert "nothing was removed" in out


@pytest.mark.parametrize("keep", ["0", "-1", "x"])
def test_gc_refuses_a_bad_keep_with_exit_code_2(three: Path, keep: str):
    before = snapshot(three)
    result = driftline("models", "gc", "m", "--keep", keep, "--registry", str(three), check=False)
    assert result.returncode == 2 and "keep" in result.stderr
    assert snapshot(three) == before


def test_gc_of_an_unknown_model_is_exit_code_2(three: Path):
    result = driftline("models", "gc", "nope", "--keep", "1", "--registry", str(three), check=False)
    assert result.returncode == 2 and "nope" in result.stderr and not (three / "nope").exists()


def test_du_and_gc_on_an_object_store():
    """The same storage interface an s3:// registry uses, on fsspec's in-memory filesystem."""
    registry = open_registry(f"memory://gc-{uuid.uuid4().hex}")
    files = {MODEL_FILE: b"x" * 100, METADATA_FILE: sample_metadata().to_json().encode()}
    for _ in range(4):
        registry.publish("m", files)
    registry.promote("m", 1)
    [model] = registry_usage(registry).models
    stored = {v: sum(registry.storage.sizes(f"m/{v}").values()) for v in (1, 2, 3, 4)}
    assert model.bytes == sum(stored.values()) + 4 * 100 and all(stored.values())  # each version's model, whole
    assert model.stored == sum(stored.values()) + 100  # the model stored once
    hide_version(registry, "m", 2)  # a crashed gc
    assert registry.versions("m") == [1, 3, 4] and registry.storage.exists(f"m/2/{GC_MARK}")
    plan = collect(registry, "m", keep=1)
    assert plan.removed == [3] and plan.leftovers == [2]
    assert registry.versions("m") == [1, 4]
    assert registry.storage.children("m") and not registry.storage.sizes("m/2") and not registry.storage.sizes("m/3")
    assert registry.open("m", 1).read(MODEL_FILE) == b"x" * 100
