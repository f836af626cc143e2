"""Model names and versions: one rule, and a registry that skips (and reports) whatever breaks it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from driftline.errors import InvalidInput
from driftline.registry import Registry
from driftline.registry.names import check_model_name, is_version_folder, parse_version
from driftline.registry.store import METADATA_FILE, MODEL_FILE
from driftline.server.repository import parse_model_ref
from driftline.server.repository import parse_version as server_parse_version
from helpers import sample_metadata

VALID_NAMES = ["housing", "m", "7", "price_v2", "fraud-detector", "model.v1.2", "A" * 128, "a..b"]
INVALID_NAMES = ["", ".", "..", "../x", "a/b", ".hidden", "-dash", "_under", "²", "café", "m\n", "m ", "A" * 129]
INVALID_VERSIONS = ["", "0", "²", "١", "٣", "-1", "+1", "1.0", " 1", "1\n", "latest", "9" * 19]


def files(model: bytes = b"onnx-bytes") -> dict[str, bytes]:
    return {MODEL_FILE: model, METADATA_FILE: sample_metadata().to_json().encode()}


@pytest.mark.parametrize("name", VALID_NAMES)
def test_names_the_registry_has_always_taken_still_work(name: str, tmp_path: Path):
    assert check_model_name(name) == name
    assert Registry(tmp_path).publish(name, files()) == 1 and Registry(tmp_path).models() == [name]


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_other_names_are_refused_saying_what_is_allowed(name: str, tmp_path: Path):
    with pytest.raises(InvalidInput, match="ASCII letters, digits"):
        check_model_name(name)
    with pytest.raises(InvalidInput):
        Registry(tmp_path).publish(name, files())
    with pytest.raises(InvalidInput):
        parse_model_ref(f"{name}:1")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # refused before anything was written


@pytest.mark.parametrize("text", INVALID_VERSIONS)
def test_versions_are_ascii_digits_only(text: str):
    for parse in (parse_version, server_parse_version):
        with pytest.raises(InvalidInput, match=r"positive integer in ASCII digits"):
            parse(text)


def test_version_text_and_folders():
    assert parse_version("3") == 3 and server_parse_version("12") == 12 and parse_model_ref("m:4") == ("m", 4)
    assert parse_version("007") == 7  # a request may pad; a folder may not, or two would claim one version
    assert is_version_folder("7") and not is_version_folder("007") and not is_version_folder("0")
    assert not is_version_folder("²") and not is_version_folder("٣")


def test_a_registry_skips_what_is_not_a_model_or_version_and_says_so_once(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture):
    registry = Registry(tmp_path)
    registry.publish("m", files(b"v1"))
    for folder in ("²", "m/²", "m/03", "m/.publish-crashed", ".trash"):
        (tmp_path / folder).mkdir()
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "m" / "README").write_text("not a version")

    with caplog.at_level(logging.WARNING, logger="driftline.registry"):
        reopened = Registry(tmp_path)
        for _ in range(3):  # a server lists the registry again and again
            assert reopened.models() == ["m"] and reopened.versions("m") == [1]
        assert reopened.publish("m", files(b"v2")) == 2  # numbered past '²' and '03', not crashed on them
        assert reopened.open("m").read(MODEL_FILE) == b"v2"

    warned = sorted(r.getMessage().split("skipping ")[1].split(":")[0] for r in caplog.records)
    assert warned == ["'m/03'", "'m/README'", "'m/²'", "'notes.txt'", "'²'"]  # once each; hidden ones never
    assert all("ASCII" in r.getMessage() for r in caplog.records if "folder name" in r.getMessage())


def test_resolving_a_unicode_digit_is_refused_not_crashed(tmp_path: Path):
    registry = Registry(tmp_path)
    registry.publish("m", files())
    assert registry.resolve("m", "1") == 1
    with pytest.raises(InvalidInput, match="ASCII digits"):
        registry.resolve("m", "²")
    with pytest.raises(InvalidInput):
        registry.versions("../m")  # a listing is a door too: no climbing out of the root
