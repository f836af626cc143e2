"""Content-addressed files: each distinct file of any version is stored once, under its sha256.

Layout: ``<root>/.blobs/sha256/<first 2 hex>/<hex>`` (hidden: the registry's listing skips dot-entries).
A version's manifest (format 2) lists in ``"blobs"`` which of its files live there; every file but
``metadata.json`` does (the model, its profile and schema, a training-data snapshot: what can repeat
between versions). ``metadata.json`` (created_at, lineage) differs in every version and stays in the
version's folder with the manifest, so a folder still says what it is. On a local registry each blob is
also hard-linked into the version's folder: the folder stays complete and readable on its own, and the
shared bytes are on disk once. On an object store the folder holds metadata and manifest only.

Rules that keep a registry consistent whatever crashes where:

- a blob is written whole or not at all (local: a temporary file hard-linked into place, which fails if
  another writer got there first; object store: a create-if-absent PUT); an existing blob is re-read and
  its sha256 checked before it is reused, and replaced when it does not match;
- a publish stores its blobs first and its manifest last, so a version never references a blob that was
  not written; a crash in between leaves only unreferenced blobs;
- ``models gc`` sweeps a blob only when no manifest references it *and* it was last written or reused
  (its modification time) more than ``GRACE_S`` ago. A publish refreshes the time of every blob it
  reuses before it writes its manifest, so a blob a publish is about to reference is never swept, as
  long as that publish writes its manifest within ``GRACE_S`` of storing its blobs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

BLOB_ROOT = ".blobs"
KIND = "sha256"
GRACE_S = 3600.0  # unreferenced blobs younger than this stay: a publish may be about to reference them
TEMP_PREFIX = ".tmp-"  # a local blob being written; a crashed writer's leftovers are swept after GRACE_S too
IN_FOLDER = frozenset({"metadata.json", "manifest.json"})  # per-version files, never shared


def blob_key(sha: str) -> str:
    return f"{BLOB_ROOT}/{KIND}/{sha[:2]}/{sha}"


def shared(names: Iterable[str]) -> list[str]:
    """Which of a version's files go to the blob store."""
    return sorted(n for n in names if n not in IN_FOLDER)


def blobs_of(manifest: bytes | Mapping) -> dict[str, str]:
    """File name -> blob key for the files a manifest says live in the blob store (none in format 1)."""
    document = json.loads(manifest) if isinstance(manifest, (bytes, str)) else manifest
    files = document.get("files", {})
    return {name: blob_key(files[name]) for name in document.get("blobs", ()) if name in files}
