"""A registry in an object store, through fsspec (``s3://bucket/prefix``, ``gs://``, ``memory://``...).

Objects cannot be renamed atomically, so a publish first claims its version number with an
exclusive create of ``<model>/<N>/.claim`` (S3's If-None-Match: a second publisher gets the next
number), writes the files, and writes the manifest last: readers ignore versions without one, so a
crashed publish stays invisible and its number is not reused. Alias changes are single PUTs of
the whole aliases file (atomic per object); two writers racing on aliases may lose one update.
Credentials and endpoints come from the usual environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID...).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping

from driftline.registry.names import is_version_folder

MANIFEST_FILE = "manifest.json"
CLAIM_FILE = ".claim"


class ObjectStorage:
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

    def publish(self, model: str, files: Mapping[str, bytes], manifest: bytes) -> int:
        version = self._claim(model)
        prefix = f"{model}/{version}"
        for name, data in files.items():
            self.fs.pipe_file(self._path(f"{prefix}/{name}"), data)
        self.fs.pipe_file(self._path(f"{prefix}/{MANIFEST_FILE}"), manifest)  # last: now it is visible
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
