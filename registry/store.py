"""The registry: list, publish, open and verify versions, and move aliases.

One :class:`Registry` works over a storage: a local folder (:mod:`registry.local`) or any fsspec
object store such as ``s3://bucket/prefix`` (:mod:`registry.objectstore`). Both keep the same
rule: a version is visible only once its manifest exists, and the manifest is written last.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from driftline.errors import CorruptArtifact, DiskFull, InvalidInput, NotFound, PublishError
from driftline.registry.blobs import blobs_of, shared
from driftline.registry.metadata import VersionMetadata
from driftline.registry.names import (
    MODEL_NAME_RULE,
    VERSION_RULE,
    check_model_name,
    is_model_name,
    is_version_folder,
    parse_version,
)

log = logging.getLogger("driftline.registry")

MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
PROFILE_FILE = "profile.json"  # the training baseline (registry/profile.py); optional for old versions
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 2  # 2 adds "blobs": files kept once in the content-addressed store (registry/blobs.py)
ALIASES_FILE = "aliases.json"  # <root>/<model>/aliases.json: {"production": 3, "previous": 2, ...}
PRODUCTION, PREVIOUS, STAGING = "production", "previous", "staging"
DEFAULT_ROOT = "driftline-registry"

_ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,63}")
# ENOSPC and EDQUOT in words: an errno on its own does not tell a user what to free.
_FULL = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up"}


def default_root() -> str:
    """The registry used when none is named: ``$DRIFTLINE_REGISTRY``, else ./driftline-registry."""
    return os.environ.get("DRIFTLINE_REGISTRY") or DEFAULT_ROOT


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Storage(Protocol):
    """What a registry needs from where it lives. Keys are '/'-separated, relative to the root."""

    location: str

    def children(self, key: str) -> list[str]: ...  # folders directly under key ("" is the root)

    def files(self, key: str) -> list[str]: ...  # files directly under key

    def exists(self, key: str) -> bool: ...

    def read(self, key: str) -> bytes: ...

    def replace(self, key: str, data: bytes) -> None: ...  # readers see the old or the new bytes, never half

    def publish(self, model: str, files: Mapping[str, bytes], manifest: bytes) -> int: ...

    def alias_lock(self, model: str): ...  # a context manager serialising alias changes where it can

    # Used by `driftline models du` and `gc` (registry/usage.py, registry/gc.py), never by readers or publishers:
    def sizes(self, key: str) -> dict[str, int]: ...  # every file under key, at any depth: relative path -> bytes

    def delete(self, key: str) -> None: ...  # one file; a file already gone is no error

    def remove_folder(self, key: str) -> None: ...  # a folder and whatever is still in it; gone already: no error

    def modified(self, key: str) -> float: ...  # a file's last write (or blob reuse), seconds since the epoch

    def same_file(self, key: str, other: str) -> bool: ...  # one stored copy under two keys (a hard link)

    # True where a version's folder holds its blob-stored files too (local hard links): read them there
    folder_holds_blobs: bool


@dataclass(frozen=True)
class StoredVersion:
    """One published version. Its files are checked against the manifest when read."""

    model: str
    version: int
    location: str
    metadata: VersionMetadata
    checksums: Mapping[str, str]
    fetch: Callable[[str], bytes]

    def read(self, name: str) -> bytes:
        expected = self.checksums.get(name)
        if expected is None:
            raise CorruptArtifact(f"{self.model} version {self.version}: {name} is not listed in its manifest")
        try:
            data = self.fetch(name)
        except OSError as exc:
            raise CorruptArtifact(f"{self.model} version {self.version}: cannot read {name}: {exc}") from exc
        if sha256_hex(data) != expected:
            raise CorruptArtifact(
                f"{self.model} version {self.version}: {name} does not match its sha256 in the manifest "
                f"(the file was changed or damaged after publishing; publish a new version instead)"
            )
        return data


class Registry:
    """Versions of models in one storage (see the package docstring for the layout)."""

    def __init__(self, root: str | os.PathLike[str] | Storage) -> None:
        if isinstance(root, (str, os.PathLike)):
            from driftline.registry.local import LocalStorage

            root = LocalStorage(root)
        self.storage: Storage = root
        self.location = root.location
        self._skipped: set[str] = set()  # entries already warned about: a server lists the registry often

    def __repr__(self) -> str:
        return f"Registry({self.location!r})"

    # -- reading ----------------------------------------------------------------------------------
    def models(self) -> list[str]:
        """Models with at least one published version. Whatever else is in the root is skipped, with a
        warning the first time: a folder that cannot be a model name, a stray file."""
        named = [m for m in self.storage.children("")
                 if self._expected(m, is_model_name(m), f"a model name ({MODEL_NAME_RULE})")]
        self._warn_about_files("", (), "only model folders belong in a registry's root")
        return sorted(m for m in named if self.versions(m))

    def versions(self, model: str) -> list[int]:
        """Published versions of ``model``, oldest first; folders without a manifest do not count."""
        return sorted(v for v in self._numbered(model) if self.storage.exists(f"{model}/{v}/{MANIFEST_FILE}"))

    def _numbered(self, model: str) -> list[int]:
        """Folders named as versions, finished or not; anything else in the model's folder is warned about."""
        check_model_name(model)
        numbered = [int(n) for n in self.storage.children(model)
                    if self._expected(f"{model}/{n}", is_version_folder(n), f"a version ({VERSION_RULE})")]
        self._warn_about_files(model, (ALIASES_FILE,), f"a model folder holds version folders and {ALIASES_FILE}")
        return numbered

    def _expected(self, key: str, valid: bool, what: str) -> bool:
        name = key.rsplit("/", 1)[-1]
        if not valid and not name.startswith("."):  # hidden entries are ours: staging folders, lock files
            self._skip(key, f"the folder name is not {what}")
        return valid

    def _warn_about_files(self, key: str, known: tuple[str, ...], why: str) -> None:
        for name in self.storage.files(key):
            if name not in known and not name.startswith("."):
                self._skip(f"{key}/{name}" if key else name, f"a stray file ({why})")

    def _skip(self, key: str, why: str) -> None:
        if key not in self._skipped:
            self._skipped.add(key)
            log.warning("registry %s: skipping %r: %s", self.location, key, why)

    def latest(self, model: str) -> int:
        versions = self.versions(check_model_name(model))
        if not versions:
            known = ", ".join(self.models()) or "none"
            raise NotFound(f"model {model!r} has no versions in registry {self.location} (models there: {known})")
        return versions[-1]

    def open(self, model: str, version: int | None = None) -> StoredVersion:
        """The stored version (latest when ``version`` is None), with its metadata verified and parsed."""
        version = self.latest(model) if version is None else version
        prefix = f"{check_model_name(model)}/{version}"
        if not self.storage.exists(f"{prefix}/{MANIFEST_FILE}"):
            have = ", ".join(map(str, self.versions(model))) or "none"
            raise NotFound(f"model {model!r} has no version {version} in registry {self.location} (versions: {have})")
        try:
            manifest = json.loads(self.storage.read(f"{prefix}/{MANIFEST_FILE}"))
            checksums = dict(manifest["files"])
            blobs = {} if self.storage.folder_holds_blobs else blobs_of(manifest)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptArtifact(f"{model} version {version}: manifest.json cannot be read: {exc}") from exc

        def fetch(name: str) -> bytes:
            return self.storage.read(blobs.get(name) or f"{prefix}/{name}")

        location = f"{self.location.rstrip('/')}/{prefix}"
        partial = StoredVersion(model, version, location, None, checksums, fetch)  # type: ignore[arg-type]
        metadata = VersionMetadata.from_json(partial.read(METADATA_FILE).decode())
        return StoredVersion(model, version, location, metadata, checksums, fetch)

    # -- aliases ----------------------------------------------------------------------------------
    def aliases(self, model: str) -> dict[str, int]:
        key = f"{check_model_name(model)}/{ALIASES_FILE}"
        if not self.storage.exists(key):
            return {}
        try:
            raw = json.loads(self.storage.read(key))
            return {str(k): int(v) for k, v in raw.items()}
        except (OSError, ValueError, AttributeError) as exc:
            raise CorruptArtifact(f"{model}: {ALIASES_FILE} cannot be read: {exc}") from exc

    def resolve(self, model: str, ref: str | int | None) -> int:
        """A version number from ``3``, ``"3"``, an alias such as ``"production"``, or None/"latest"."""
        if ref is None or ref == "latest":
            return self.latest(model)
        if isinstance(ref, int):
            return ref
        if ref.isdigit():
            return parse_version(ref)  # isdigit() is also true of '²': refused in words, not a crash in int()
        aliases = self.aliases(model)
        if ref not in aliases:
            known = ", ".join(sorted(aliases)) or "none"
            raise NotFound(f"model {model!r} has no alias {ref!r} (aliases: {known})")
        return aliases[ref]

    def set_alias(self, model: str, alias: str, version: int) -> dict[str, int]:
        """Point ``alias`` at ``version``; ``production`` keeps the version it replaces as ``previous``."""
        if not _ALIAS.fullmatch(alias) or alias == "latest":
            raise InvalidInput(f"alias {alias!r} is not allowed: lowercase letters, digits, '_' or '-'")
        if version not in self.versions(model):
            raise NotFound(f"model {model!r} has no version {version} in registry {self.location}")
        try:
            with self.storage.alias_lock(model):
                # Again under the lock: `models gc` hides versions under it, so a version seen above may be gone.
                if version not in self.versions(model):
                    raise NotFound(f"model {model!r} has no version {version} in registry {self.location}")
                aliases = self.aliases(model)
                if alias == PRODUCTION and aliases.get(PRODUCTION) not in (None, version):
                    aliases[PREVIOUS] = aliases[PRODUCTION]
                aliases[alias] = version
                body = (json.dumps(aliases, indent=2, sort_keys=True) + "\n").encode()
                self.storage.replace(f"{model}/{ALIASES_FILE}", body)
        except OSError as exc:
            raise self._write_failed(exc, f"moving {model}'s alias {alias!r} to version {version}",
                                     "no alias was changed") from exc
        return aliases

    def promote(self, model: str, version: int) -> dict[str, int]:
        return self.set_alias(model, PRODUCTION, version)

    # -- publishing -------------------------------------------------------------------------------
    def publish(self, model: str, files: Mapping[str, bytes]) -> int:
        """Write ``files`` as the next version of ``model`` and return its number.

        The storage writes the files first and the manifest last, out of readers' sight until then:
        a crashed publish never shows a half-written version, and a number is never reused. Every file
        but metadata.json is stored once by content (registry/blobs.py) and listed under "blobs".
        """
        self._numbered(model)  # the storage numbers past stray folders; say which ones it passed over
        missing = {MODEL_FILE, METADATA_FILE} - set(files)
        if missing:
            raise PublishError(f"a version needs {', '.join(sorted(missing))}")
        manifest = {"format": MANIFEST_FORMAT, "files": {name: sha256_hex(data) for name, data in files.items()},
                    "blobs": shared(files)}  # stored once by content; the storage writes them before the manifest
        body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        try:
            return self.storage.publish(model, files, body)
        except OSError as exc:
            raise self._write_failed(exc, f"publishing {model}", "nothing was published") from exc

    def _write_failed(self, exc: OSError, doing: str, undone: str) -> PublishError:
        """The error for a write the storage gave up on (and cleaned up after): what, where, and that the
        registry reads as before."""
        if exc.errno in _FULL:
            return DiskFull(f"{doing} in {self.location} failed: {_FULL[exc.errno]}; {undone} and the registry "
                            "reads as it did before. Free some space and try again")
        return PublishError(f"{doing} in {self.location} failed, {undone}: {exc}")
