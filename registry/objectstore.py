"""A registry in an object store, through fsspec (``s3://bucket/prefix``, ``gs://``, ``memory://``...).

Objects cannot be renamed atomically, so a publish first claims its version number with an
exclusive create of ``<model>/<N>/.claim`` (S3's If-None-Match: a second publisher gets the next
number), writes the files, and writes the manifest last: readers ignore versions without one, so a
crashed publish stays invisible and its number is not reused. Alias changes are single PUTs of
the whole aliases file (atomic per object); two writers racing on aliases may lose one update.
Files shared between versions go to ``<prefix>/.blobs`` before the claim's files and manifest (registry/
blobs.py), with a create-if-absent PUT; the version's folder keeps only metadata.json and the manifest.
Credentials and endpoints come from the usual environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID...).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import time
import uuid
from collections.abc import Iterator, Mapping

from driftline.registry.blobs import GRACE_S, blobs_of
from driftline.registry.names import is_version_folder

MANIFEST_FILE = "manifest.json"
CLAIM_FILE = ".claim"


FRESHEN_AFTER_S = GRACE_S / 4  # a reused blob older than this is rewritten, so gc's age rule sees it as new


class ObjectStorage:
    folder_holds_blobs = False

    def __init__(self, url: str) -> None:
        import fsspec

        self.location = url.rstrip("/")
        self.fs, self._root = fsspec.core.url_to_fs(self.location)
        self._root = self._root.rstrip("/")

    def _path(self, key: str) -> str:
        return f"{self._root}/{key}" if key else self._root

    def children(self, key: str) -> list[str]:
        return self._names(key, directories=True)

    def files(self, key: str) -> list[str]:
        return self._names(key, directories=False)

    def _names(self, key: str, directories: bool) -> list[str]:
        try:
            entries = self.fs.ls(self._path(key), detail=True, refresh=True)
        except FileNotFoundError:
            return []
        return [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if (e["type"] == "directory") == directories]

    def exists(self, key: str) -> bool:
        return self.fs.exists(self._path(key))

    def read(self, key: str) -> bytes:
        return self.fs.cat_file(self._path(key))

    def replace(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(self._path(key), data)

    @contextlib.contextmanager
    def alias_lock(self, model: str) -> Iterator[None]:
        yield

    def sizes(self, key: str) -> dict[str, int]:
        base = self._path(key).rstrip("/")
        self.fs.invalidate_cache(base)
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        return {name.rstrip("/").removeprefix(f"{base}/"): int(info.get("size") or 0)
                for name, info in found.items() if info.get("type") != "directory"}

    def delete(self, key: str) -> None:
        try:
            self.fs.rm_file(self._path(key))
        except FileNotFoundError:
            pass

    def remove_folder(self, key: str) -> None:
        path = self._path(key)
        try:
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass
        self.fs.invalidate_cache(path)

    def modified(self, key: str) -> float:
        info = self.fs.info(self._path(key))
        for field in ("LastModified", "mtime", "updated", "created"):  # s3fs, local, gcsfs, memory
            value = info.get(field)
            if isinstance(value, dt.datetime):
                return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
            if isinstance(value, (int, float)):
                return float(value)
            if isinstance(value, str):
                return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        raise OSError(f"{self._path(key)}: the object store reports no modification time")

    def same_file(self, key: str, other: str) -> bool:
        return False  # objects have no links: a file under two keys is stored twice

    def put_blob(self, key: str, data: bytes, sha: str) -> None:
        """Store ``data`` at ``key`` once (create-if-absent); an existing blob is checked, and rewritten when
        damaged or old enough that gc could sweep it before this publish's manifest references it."""
        path = self._path(key)
        try:
            self.fs.pipe_file(path, data, mode="create")
            return
        except (FileExistsError, OSError) as exc:
            if not _already_exists(exc):
                raise
        self.fs.invalidate_cache(path)
        intact = hashlib.sha256(self.fs.cat_file(path)).hexdigest() == sha
        if not intact or time.time() - self.modified(key) > FRESHEN_AFTER_S:
            self.fs.pipe_file(path, data)  # one PUT: readers see the old or the new object, never half

    def publish(self, model: str, files: Mapping[str, bytes], manifest: bytes) -> int:
        version = self._claim(model)
        prefix = f"{model}/{version}"
        blobs = blobs_of(manifest)
        for name, key in blobs.items():  # before the manifest, which must never name a blob that is not there
            self.put_blob(key, files[name], key.rsplit("/", 1)[-1])
        for name, data in files.items():
            if name not in blobs:
                self.fs.pipe_file(self._path(f"{prefix}/{name}"), data)
        self.fs.pipe_file(self._path(f"{prefix}/{MANIFEST_FILE}"), manifest)  # last: now it is visible
        for name, key in blobs.items():  # a gc that judged a blob unreferenced just before we reused it
            if not self.fs.exists(self._path(key)):
                self.fs.pipe_file(self._path(key), files[name])
        return version

    def _claim(self, model: str) -> int:
        taken = [int(n) for n in self.children(model) if is_version_folder(n)]
        version = max(taken, default=0) + 1
        token = uuid.uuid4().hex.encode()
        while True:
            try:
                self.fs.pipe_file(self._path(f"{model}/{version}/{CLAIM_FILE}"), token, mode="create")
                return version
            except (FileExistsError, OSError) as exc:
                if not _already_exists(exc):
                    raise
                version += 1


def _already_exists(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, FileExistsError) or "PreconditionFailed" in text or "412" in text
