"""A full disk during a registry write: the write is undone, no temporary file stays, and the error says so.

The disk is faked in-process: the OS calls the local registry makes (os.fsync, os.replace) raise ENOSPC, as
a real full disk makes them do (fsync is where many filesystems report it).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from driftline.cli import main as cli
from driftline.errors import DiskFull
from driftline.registry import Registry
from driftline.registry.store import METADATA_FILE, MODEL_FILE
from helpers import sample_metadata


def files(model: bytes) -> dict[str, bytes]:
    return {MODEL_FILE: model, METADATA_FILE: sample_metadata().to_json().encode()}


def disk_full(*_args: object, **_kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    registry = Registry(tmp_path)
    registry.publish("m", files(b"v1"))
    registry.publish("m", files(b"v2"))
    registry.promote("m", 1)
    return registry


def everything_in(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_promote_on_a_full_disk_changes_nothing_and_leaves_nothing(registry: Registry, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch, failing: str):
    before = everything_in(tmp_path)
    monkeypatch.setattr(os, failing, disk_full)
    with pytest.raises(DiskFull, match="the disk is full") as caught:
        registry.promote("m", 2)
    monkeypatch.undo()
    assert str(tmp_path) in str(caught.value) and "no alias was changed" in str(caught.value)
    assert everything_in(tmp_path) == before  # no .aliases.json.<pid> left, aliases.json untouched
    assert Registry(tmp_path).aliases("m") == {"production": 1}


def test_publish_on_a_full_disk_changes_nothing_and_leaves_nothing(registry: Registry, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch):
    before = everything_in(tmp_path)
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(DiskFull, match="the disk is full") as caught:
        registry.publish("m", files(b"v3"))
    monkeypatch.undo()
    assert str(tmp_path) in str(caught.value) and "nothing was published" in str(caught.value)
    assert everything_in(tmp_path) == before and not list((tmp_path / "m").glob(".publish-*"))
    assert Registry(tmp_path).versions("m") == [1, 2] and Registry(tmp_path).open("m").read(MODEL_FILE) == b"v2"


def test_the_cli_says_the_disk_is_full_in_one_line(registry: Registry, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]):
    before = everything_in(tmp_path)
    monkeypatch.setattr(os, "fsync", disk_full)
    promote = cli.main(["promote", "m", "2", "--registry", str(tmp_path)])
    train = cli.main(["train", "m", "--registry", str(tmp_path), "--rows", "200", "--estimator", "linear"])
    monkeypatch.undo()
    err = capsys.readouterr().err.splitlines()
    assert (promote, train) == (2, 2), err
    assert [line.split(":")[0] for line in err] == ["driftline promote", "driftline train"]
    assert all("the disk is full" in line and "Traceback" not in line for line in err)
    assert everything_in(tmp_path) == before
