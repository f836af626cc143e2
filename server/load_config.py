"""The ``config`` of a Triton load request (``RepositoryModelLoad``), read for what driftline can honour.

Triton's clients send a model configuration as JSON. A registry version is immutable, so only the
serving settings can change: batching (``max_batch_size``, ``dynamic_batching``) and the number of
concurrent onnxruntime calls (``instance_group[].count``). Every other field is refused by name rather
than silently ignored; fields that merely restate what the version is (its name, platform, backend)
are accepted when they agree.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from driftline.errors import InvalidInput
from driftline.server.batcher import BatchSettings

PLATFORMS = {"platform": ("onnxruntime_onnx", ""), "backend": ("onnxruntime", "onnx", "")}
BATCHING_KEYS = {"max_queue_delay_microseconds", "default_queue_policy"}
QUEUE_POLICY_KEYS = {"max_queue_size"}
INSTANCE_KEYS = {"count", "kind", "name"}


def load_config_batching(text: str, model: str, current: BatchSettings) -> tuple[BatchSettings, bool]:
    """``current`` with what the config changes, and whether it asks for batching (max_batch_size > 0);
    raises InvalidInput naming the first field it cannot honour."""
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"parameter 'config' is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise InvalidInput("parameter 'config' must be a JSON object (a Triton model configuration)")
    changes: dict[str, int] = {}
    batches = False
    for key, value in config.items():
        if key == "name":
            if value != model:
                raise InvalidInput(f"config field 'name' is {value!r} but the request loads {model!r}")
        elif key in PLATFORMS:
            if value not in PLATFORMS[key]:
                raise InvalidInput(f"config field {key!r} = {value!r}: driftline serves ONNX models on onnxruntime "
                                   f"({PLATFORMS[key][0]})")
        elif key == "max_batch_size":
            size = _count(key, value, minimum=0)
            changes["max_batch_size"] = max(size, 1)  # 0: Triton's "no batching"
            batches = size > 0
        elif key == "dynamic_batching":
            changes.update(_dynamic_batching(value))
        elif key == "instance_group":
            changes.update(_instances(value))
        else:
            raise InvalidInput(_refused(key))
    try:
        return dataclasses.replace(current, **changes), batches
    except ValueError as exc:
        raise InvalidInput(f"parameter 'config': {exc}") from None


def _dynamic_batching(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise InvalidInput("config field 'dynamic_batching' must be an object")
    changes = {}
    for key, setting in value.items():
        if key not in BATCHING_KEYS:
            raise InvalidInput(_refused(f"dynamic_batching.{key}"))
        if key == "max_queue_delay_microseconds":
            changes["max_queue_delay_us"] = _count(f"dynamic_batching.{key}", setting, minimum=0)
        else:
            if not isinstance(setting, dict) or set(setting) - QUEUE_POLICY_KEYS:
                extra = sorted(set(setting) - QUEUE_POLICY_KEYS) if isinstance(setting, dict) else ["(not an object)"]
                raise InvalidInput(_refused(f"dynamic_batching.default_queue_policy.{extra[0]}"))
            if "max_queue_size" in setting:
                changes["max_queue_size"] = _count("dynamic_batching.default_queue_policy.max_queue_size",
                                                   setting["max_queue_size"], minimum=1)
    return changes


def _instances(value: Any) -> dict[str, int]:
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict):
        raise InvalidInput("config field 'instance_group' must hold exactly one group (driftline runs one "
                           "session per version)")
    group = value[0]
    for key in group:
        if key not in INSTANCE_KEYS:
            raise InvalidInput(_refused(f"instance_group[0].{key}"))
    if group.get("kind", "KIND_CPU") not in ("KIND_CPU", "KIND_AUTO"):
        raise InvalidInput(f"config field 'instance_group[0].kind' = {group['kind']!r}: the device is chosen when "
                           "the server starts (driftline serve --device)")
    return {"max_concurrent_batches": _count("instance_group[0].count", group.get("count", 1), minimum=1)}


def _count(field: str, value: Any, minimum: int) -> int:
    try:
        number = int(value)  # Triton's JSON writes int64 fields as strings
    except (TypeError, ValueError):
        raise InvalidInput(f"config field {field!r} must be an integer, got {value!r}") from None
    if number < minimum:
        raise InvalidInput(f"config field {field!r} must be >= {minimum}, got {number}")
    return number


def _refused(field: str) -> str:
    return (f"config field {field!r} is not supported by driftline's load; it honours max_batch_size, "
            "dynamic_batching.max_queue_delay_microseconds, dynamic_batching.default_queue_policy.max_queue_size "
            "and instance_group[0].count (a version's model, inputs and outputs are fixed when it is published)")
