"""Protocol messages as the JSON of Triton's HTTP API: field names as in the .proto, int64 as numbers.

protobuf's JSON mapping writes 64-bit integers as strings (JavaScript cannot hold them exactly);
Triton's HTTP API writes them as numbers (shapes, dims, statistics counters), and its clients read
them as numbers. Every field is written, defaults included, as Triton writes them.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

_INT64 = frozenset({FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64})


def to_json(message: Message) -> dict[str, Any]:
    data = json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)
    return _numbers(data, message.DESCRIPTOR)


def _numbers(data: dict[str, Any], descriptor: Descriptor) -> dict[str, Any]:
    """Turn the int64 fields of ``data`` (written as strings) back into numbers, in place."""
    for field in descriptor.fields:
        value = data.get(field.name)
        if value is None:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            entry = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                value[key] = _number(item, entry)
        elif field.is_repeated:
            data[field.name] = [_number(item, field) for item in value]
        else:
            data[field.name] = _number(value, field)
    return data


def _number(value: Any, field: FieldDescriptor) -> Any:
    if field.message_type is not None:
        return _numbers(value, field.message_type) if isinstance(value, dict) else value
    return int(value) if field.cpp_type in _INT64 else value
