"""The registry: the one contract between the trainer and the server.

Layout of a local registry::

    <root>/<model>/<version>/model.onnx       the model, ONNX (with profile.json, schema.json, ... beside it)
    <root>/<model>/<version>/metadata.json    features, outputs, lineage, metrics (metadata.py)
    <root>/<model>/<version>/manifest.json    sha256 of every other file, which of them are blobs; written last
    <root>/.blobs/sha256/<2 hex>/<hex>        every file but metadata.json, stored once by content (blobs.py);
                                              hard-linked into the version folders above
    <root>/<model>/.fleet/<version>/<replica>.json   each serving replica's drift state (fleet.py)

Versions are integers from 1 and immutable. A version is visible only once its folder has its
final name and holds a manifest, so a crashed publish never shows a half-written version. In an object
store a version's folder holds its metadata and manifest only; its other files are read from the blobs.
"""

from driftline.registry.metadata import Feature, TensorSpec, VersionMetadata
from driftline.registry.store import Registry, StoredVersion, default_root


def open_registry(location: str) -> Registry:
    """The registry at a folder path, or in an object store given as an fsspec URL (``s3://bucket/prefix``)."""
    if "://" in location and not location.startswith("file://"):
        from driftline.registry.objectstore import ObjectStorage

        return Registry(ObjectStorage(location))
    return Registry(location.removeprefix("file://"))


__all__ = ["Feature", "Registry", "StoredVersion", "TensorSpec", "VersionMetadata", "default_root", "open_registry"]
