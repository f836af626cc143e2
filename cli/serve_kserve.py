"""``driftline serve --model-dir DIR``: serve the folder KServe hands a runtime (``--model_dir=/mnt/models``).

KServe starts a runtime with ``--model_name={{.Name}} --model_dir=/mnt/models``; /mnt/models holds what the
InferenceService's ``storageUri`` points at (downloaded by the storage initializer, or a PVC mounted read-only).
Any of three places in a registry may be pointed at:

- a **version folder** (``s3://bucket/registry/housing/3``: model.onnx, metadata.json, manifest.json, ...).
  Once downloaded the folder no longer knows its number: ``--model-version 3`` says it (default 1);
- a **model folder** (``.../housing``: numbered versions and aliases.json), served at ``production`` (else the
  latest); on a PVC the folder is live, so ``--poll`` follows ``production`` as it moves;
- a **registry root** that holds a model named ``--model-name``.

The server reads registries, so the first two are served from a registry of symlinks in a temporary folder
(removed at exit), under the model name KServe passes (the InferenceService's name, the one its clients
call: ``/v2/models/NAME/infer``). Every checksum is verified as for any version. The served-version record
goes to a temporary folder unless ``--state-dir`` says otherwise, because /mnt/models may be read-only.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path

from driftline.errors import InvalidInput
from driftline.registry.local import MANIFEST_FILE
from driftline.registry.names import check_model_name, is_version_folder, parse_version

DEFAULT_VERSION = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", "--model_dir", metavar="DIR",
                        help="serve the one model in DIR instead of a --registry: a registry version folder, a model "
                             "folder or a registry root (what KServe mounts at /mnt/models); named by --model-name")
    parser.add_argument("--model-version", type=parse_version_arg, metavar="N",
                        help="with --model-dir on a version folder: the registry version it holds (default 1)")


def parse_version_arg(text: str) -> int:
    try:
        return parse_version(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@dataclasses.dataclass(frozen=True)
class ModelDir:
    registry: str  # the registry the server reads: DIR itself (a registry root) or a view of symlinks
    model: str  # the --model entry: NAME or NAME:VERSION
    scratch: Path  # the temporary folder (view, served-version record), removed at exit


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with --model-dir turned into --registry and --model; unchanged without --model-dir."""
    if args.model_dir is None:
        if args.model_version is not None:
            raise InvalidInput("--model-version says which version a --model-dir folder holds; pass --model-dir too")
        return args
    names = args.model
    if len(names) != 1:
        raise InvalidInput(f"--model-dir serves one model: name it once with --model-name (got {names or 'none'})")
    name, _, pinned = names[0].partition(":")
    version = args.model_version or (parse_version(pinned) if pinned else None)
    served = view(Path(args.model_dir), check_model_name(name), version)
    atexit.register(shutil.rmtree, served.scratch, ignore_errors=True)
    return argparse.Namespace(**{**vars(args), "registry": served.registry, "model": [served.model],
                                 "state_dir": args.state_dir or str(served.scratch / "serving")})


def view(folder: Path, name: str, version: int | None) -> ModelDir:
    """Where the server finds ``folder``'s model as ``name``; InvalidInput when the folder holds no model."""
    if not folder.is_dir():
        raise InvalidInput(f"--model-dir {folder} is not a folder (KServe mounts the storageUri's contents there)")
    scratch = Path(tempfile.mkdtemp(prefix="driftline-model-dir-"))
    if (folder / MANIFEST_FILE).is_file():  # one version, as the storage initializer downloads it
        if version is None:
            print(f"driftline serve: {folder} is one registry version and does not know its number; serving it "
                  f"as {name} version {DEFAULT_VERSION} (pass --model-version N to say which)", file=sys.stderr)
        version = version or DEFAULT_VERSION
        (scratch / name).mkdir()
        (scratch / name / str(version)).symlink_to(folder.resolve(), target_is_directory=True)
        return ModelDir(str(scratch), f"{name}:{version}", scratch)
    pin = f":{version}" if version else ""
    if _is_model_folder(folder):
        (scratch / name).symlink_to(folder.resolve(), target_is_directory=True)
        return ModelDir(str(scratch), name + pin, scratch)
    if _is_model_folder(folder / name):
        return ModelDir(str(folder), name + pin, scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    found = ", ".join(sorted(p.name for p in folder.iterdir())[:8]) or "nothing"
    raise InvalidInput(f"--model-dir {folder} holds no model {name!r}: expected a registry version folder (with "
                       f"{MANIFEST_FILE}), a model folder (numbered versions) or a registry root with a folder "
                       f"{name}/ (found: {found}); point the storageUri at one of them")


def _is_model_folder(folder: Path) -> bool:
    return folder.is_dir() and any(is_version_folder(child.name) and (child / MANIFEST_FILE).is_file()
                                   for child in folder.iterdir())
