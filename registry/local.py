"""A registry in a local folder: versions appear by renaming a finished folder into place.

Files shared between versions are stored once in ``<root>/.blobs`` (registry/blobs.py) and hard-linked into
each version's folder, so a folder stays complete (tools and people can read it as before) while the bytes are
on disk once. Where the filesystem refuses a hard link, the folder gets its own copy instead.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

from driftline.registry.blobs import TEMP_PREFIX, blobs_of
from driftline.registry.names import is_version_folder

MANIFEST_FILE = "manifest.json"


_NO_LINK = {errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


class LocalStorage:
    folder_holds_blobs = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.location = str(self.root)

    def children(self, key: str) -> list[str]:
        folder = self.root / key if key else self.root
        if not folder.is_dir():
            return []
        return [p.name for p in folder.iterdir() if p.is_dir()]

    def files(self, key: str) -> list[str]:
        folder = self.root / key if key else self.root
        if not folder.is_dir():
            return []
        return [p.name for p in folder.iterdir() if not p.is_dir()]

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def replace(self, key: str, data: bytes) -> None:
        target = self.root / key
        staging = target.with_name(f".{target.name}.{os.getpid()}")
        target.parent.mkdir(parents=True, exist_ok=True)  # a first fleet state's folder (registry/fleet.py)
        try:
            _write(staging, data)
            os.replace(staging, target)  # readers see the old or the new file
        except BaseException:
            staging.unlink(missing_ok=True)  # a full disk must not also fill up with our leftovers
            raise
        _fsync_dir(target.parent)

    @contextlib.contextmanager
    def alias_lock(self, model: str) -> Iterator[None]:
        """An exclusive lock between processes changing the same model's aliases."""
        with open(self.root / model / ".aliases.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def sizes(self, key: str) -> dict[str, int]:
        folder = self.root / key if key else self.root
        found = {}
        for parent, _, names in os.walk(folder):
            for name in names:
                path = Path(parent) / name
                with contextlib.suppress(FileNotFoundError):  # removed while we walked: it costs nothing now
                    found[path.relative_to(folder).as_posix()] = path.lstat().st_size
        return found

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

    def modified(self, key: str) -> float:
        return (self.root / key).stat().st_mtime

    def same_file(self, key: str, other: str) -> bool:
        try:
            return os.path.samefile(self.root / key, self.root / other)
        except OSError:
            return False

    def put_blob(self, key: str, data: bytes, sha: str) -> None:
        """Store ``data`` at ``key`` once: a finished temporary file is linked into place (the link fails if
        the blob exists, so two writers never interleave); an existing blob is checked and its time refreshed."""
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_file() and self._reuse(target, sha):
            return
        staging = target.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}")
        try:
            _write(staging, data)
            try:
                os.link(staging, target)
            except FileExistsError:
                if not self._reuse(target, sha):  # damaged: replace it whole, readers see old or new bytes
                    os.replace(staging, target)
        finally:
            staging.unlink(missing_ok=True)
        _fsync_dir(target.parent)

    @staticmethod
    def _reuse(target: Path, sha: str) -> bool:
        if hashlib.sha256(target.read_bytes()).hexdigest() != sha:
            return False
        now = time.time()
        os.utime(target, (now, now))  # gc sweeps unreferenced blobs by age: this one is about to be referenced
        return True

    def remove_folder(self, key: str) -> None:
        folder = self.root / key
        if folder.is_dir():
            shutil.rmtree(folder)
            _fsync_dir(folder.parent)

    def publish(self, model: str, files: Mapping[str, bytes], manifest: bytes) -> int:
        """Files go to a hidden folder, the manifest last, and the folder is renamed into place.

        Two publishers racing for one number both succeed: the second rename fails and it takes
        the next number.
        """
        model_dir = self.root / model
        model_dir.mkdir(parents=True, exist_ok=True)
        blobs = blobs_of(manifest)
        for name, key in blobs.items():  # first: the manifest below must never name a blob that is not there
            self.put_blob(key, files[name], key.rsplit("/", 1)[-1])
        staging = Path(tempfile.mkdtemp(prefix=".publish-", dir=model_dir))
        try:
            for name, data in files.items():
                if name not in blobs or not _linked(self.root / blobs[name], staging / name):
                    _write(staging / name, data)
            _write(staging / MANIFEST_FILE, manifest)
            _fsync_dir(staging)
            version = _rename_to_next_version(staging, model_dir)
            _fsync_dir(model_dir)
            return version
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _numbered(model_dir: Path) -> list[int]:
    return [int(p.name) for p in model_dir.iterdir() if is_version_folder(p.name)]


def _linked(blob: Path, path: Path) -> bool:
    try:
        os.link(blob, path)
        return True
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        return False  # a filesystem without hard links: the version gets its own copy


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


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
