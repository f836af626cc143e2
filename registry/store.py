"""A registry on the local file system: list, publish, open and verify versions."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from driftline.errors import CorruptArtifact, InvalidInput, NotFound, PublishError
from driftline.registry.metadata import VersionMetadata

MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
PROFILE_FILE = "profile.json"  # the training baseline (registry/profile.py); optional for old versions
MANIFEST_FILE = "manifest.json"
ALIASES_FILE = "aliases.json"  # <root>/<model>/aliases.json: {"production": 3, "previous": 2, ...}
PRODUCTION, PREVIOUS, STAGING = "production", "previous", "staging"
MANIFEST_FORMAT = 1
DEFAULT_ROOT = "driftline-registry"

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


def default_root() -> str:
    """The registry used when none is named: ``$DRIFTLINE_REGISTRY``, else ./driftline-registry."""
    return os.environ.get("DRIFTLINE_REGISTRY") or DEFAULT_ROOT


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_model_name(name: str) -> str:
    if not _MODEL_NAME.match(name):
        raise InvalidInput(
            f"model name {name!r} is not allowed: use letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class StoredVersion:
    """One published version. Its files are checked against the manifest when read."""

    model: str
    version: int
    path: Path
    metadata: VersionMetadata
    checksums: Mapping[str, str]

    def read(self, name: str) -> bytes:
        expected = self.checksums.get(name)
        if expected is None:
            raise CorruptArtifact(f"{self.model} version {self.version}: {name} is not listed in its manifest")
        try:
            data = (self.path / name).read_bytes()
        except OSError as exc:
            raise CorruptArtifact(f"{self.model} version {self.version}: cannot read {name}: {exc}") from exc
        if sha256_hex(data) != expected:
            raise CorruptArtifact(
                f"{self.model} version {self.version}: {name} does not match its sha256 in the manifest "
                f"(the file was changed or damaged after publishing; publish a new version instead)"
            )
        return data

    def verify(self) -> None:
        for name in self.checksums:
            self.read(name)


class Registry:
    """Versions of models under one root folder (see the package docstring for the layout)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _MODEL_NAME.match(p.name) and self.versions(p.name))

    def versions(self, model: str) -> list[int]:
        """Published versions of ``model``, oldest first; folders without a manifest do not count."""
        model_dir = self.root / model
        if not model_dir.is_dir():
            return []
        return sorted(v for v in _numbered(model_dir) if (model_dir / str(v) / MANIFEST_FILE).is_file())

    def latest(self, model: str) -> int:
        versions = self.versions(check_model_name(model))
        if not versions:
            known = ", ".join(self.models()) or "none"
            raise NotFound(f"model {model!r} has no versions in registry {self.root} (models there: {known})")
        return versions[-1]

    def open(self, model: str, version: int | None = None) -> StoredVersion:
        """The stored version (latest when ``version`` is None), with its metadata verified and parsed."""
        version = self.latest(model) if version is None else version
        path = self.root / check_model_name(model) / str(version)
        if not (path / MANIFEST_FILE).is_file():
            have = ", ".join(map(str, self.versions(model))) or "none"
            raise NotFound(f"model {model!r} has no version {version} in registry {self.root} (versions: {have})")
        try:
            manifest = json.loads((path / MANIFEST_FILE).read_text())
            checksums = dict(manifest["files"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptArtifact(f"{model} version {version}: manifest.json cannot be read: {exc}") from exc
        partial = StoredVersion(model, version, path, metadata=None, checksums=checksums)  # type: ignore[arg-type]
        metadata = VersionMetadata.from_json(partial.read(METADATA_FILE).decode())
        return StoredVersion(model, version, path, metadata, checksums)

    # -- aliases --------------------------------------------------------------------------------
    def aliases(self, model: str) -> dict[str, int]:
        path = self.root / check_model_name(model) / ALIASES_FILE
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise CorruptArtifact(f"{model}: {ALIASES_FILE} cannot be read: {exc}") from exc
        return {str(k): int(v) for k, v in raw.items()}

    def resolve(self, model: str, ref: str | int | None) -> int:
        """A version number from ``3``, ``"3"``, an alias such as ``"production"``, or None/"latest"."""
        if ref is None or ref == "latest":
            return self.latest(model)
        if isinstance(ref, int) or str(ref).isdigit():
            return int(ref)
        aliases = self.aliases(model)
        if ref not in aliases:
            known = ", ".join(sorted(aliases)) or "none"
            raise NotFound(f"model {model!r} has no alias {ref!r} (aliases: {known})")
        return aliases[ref]

    def set_alias(self, model: str, alias: str, version: int) -> dict[str, int]:
        """Point ``alias`` at ``version``; ``production`` keeps the version it replaces as ``previous``."""
        if not _ALIAS.match(alias) or alias.isdigit() or alias == "latest":
            raise InvalidInput(f"alias {alias!r} is not allowed: lowercase letters, digits, '_' or '-'")
        if version not in self.versions(model):
            raise NotFound(f"model {model!r} has no version {version} in registry {self.root}")
        with _locked(self.root / model / ".aliases.lock"):
            aliases = self.aliases(model)
            if alias == PRODUCTION and aliases.get(PRODUCTION) not in (None, version):
                aliases[PREVIOUS] = aliases[PRODUCTION]
            aliases[alias] = version
            text = json.dumps(aliases, indent=2, sort_keys=True) + "\n"
            staging = self.root / model / f".{ALIASES_FILE}.{os.getpid()}"
            _write(staging, text.encode())
            os.replace(staging, self.root / model / ALIASES_FILE)  # readers see the old or the new file
            _fsync_dir(self.root / model)
        return aliases

    def promote(self, model: str, version: int) -> dict[str, int]:
        return self.set_alias(model, PRODUCTION, version)

    # -- publishing -------------------------------------------------------------------------------
    def publish(self, model: str, files: Mapping[str, bytes]) -> int:
        """Write ``files`` as the next version of ``model`` and return its number.

        Files go to a hidden temporary folder first, the manifest last, and the folder is renamed
        into place: readers see the whole version or nothing. Two publishers racing for the same
        number both succeed; the rename of the second fails and it takes the next number.
        """
        check_model_name(model)
        missing = {MODEL_FILE, METADATA_FILE} - set(files)
        if missing:
            raise PublishError(f"a version needs {', '.join(sorted(missing))}")
        model_dir = self.root / model
        try:
            model_dir.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".publish-", dir=model_dir))
        except OSError as exc:
            raise PublishError(f"cannot write to registry {self.root}: {exc}") from exc
        try:
            checksums = {name: _write(staging / name, data) for name, data in files.items()}
            manifest = {"format": MANIFEST_FORMAT, "files": checksums}
            _write(staging / MANIFEST_FILE, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
            _fsync_dir(staging)
            version = _rename_to_next_version(staging, model_dir)
            _fsync_dir(model_dir)
            return version
        except OSError as exc:
            raise PublishError(f"publishing {model} to {self.root} failed, nothing was published: {exc}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock between processes changing the same model's aliases."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _numbered(model_dir: Path) -> list[int]:
    return [int(p.name) for p in model_dir.iterdir() if p.name.isdigit() and p.name == str(int(p.name))]


def _write(path: Path, data: bytes) -> str:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return sha256_hex(data)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rename_to_next_version(staging: Path, model_dir: Path) -> int:
    # Numbers of incomplete folders count too: a number is never reused, even after a crash.
    version = max(_numbered(model_dir), default=0) + 1
    while True:
        try:
            os.rename(staging, model_dir / str(version))
            return version
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            version += 1
