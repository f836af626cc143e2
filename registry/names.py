"""What a model name and a version may be: the one rule every door checks.

The doors are the CLI's arguments, the gRPC and HTTP requests, and the registry's own folders. A name
becomes a folder, so it must never climb out of the registry (``..``), hide (``.publish-*`` is ours) or
differ from what ``ls`` shows; a version becomes ``int`` and a folder name, so only ASCII digits will do:
``str.isdigit()`` also accepts ``²`` and ``٣``, which ``int()`` refuses or reads as another number.
"""

from __future__ import annotations

import re

from driftline.errors import InvalidInput

MODEL_NAME_RULE = ("ASCII letters, digits, '_', '-' or '.', starting with a letter or digit, "
                   "at most 128 characters")
VERSION_RULE = "a positive integer in ASCII digits (0-9), such as '3'"

# Explicit ranges, not \w or \d, which match any script's letters and digits; fullmatch, not $, which
# also matches before a trailing newline.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_VERSION = re.compile(r"[0-9]{1,18}")  # 18 digits stay inside int64, what the protocol's version fields carry


def is_model_name(text: str) -> bool:
    return isinstance(text, str) and _MODEL_NAME.fullmatch(text) is not None


def check_model_name(text: str) -> str:
    """``text`` if it may name a model, else InvalidInput saying what is allowed."""
    if not is_model_name(text):
        raise InvalidInput(f"model name {text!r} is not allowed: use {MODEL_NAME_RULE}")
    return text


def parse_version(text: str) -> int:
    """A version number from request or argument text; InvalidInput saying what is allowed otherwise."""
    if not isinstance(text, str) or not _VERSION.fullmatch(text) or int(text) < 1:
        raise InvalidInput(f"model version must be {VERSION_RULE} (or empty for the default); got {text!r}")
    return int(text)


def is_version_folder(name: str) -> bool:
    """A folder that holds a version: its number written the one way (``3``, not ``03``), so two
    folders never claim the same version."""
    return _VERSION.fullmatch(name) is not None and name == str(int(name)) and int(name) > 0
