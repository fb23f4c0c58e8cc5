"""AMF0 encoder and decoder (Adobe's AMF 0 specification).

Decoded values map to Python types:

- number → float, boolean → bool;
- string, long string and XML document → str;
- null, undefined and unsupported → None;
- object and ECMA array → dict, strict array → list;
- date → datetime (UTC), typed object → TypedObject.

The avmplus marker (0x11) switches one value to AMF3, which amf3.py decodes
with fresh reference tables.

Every length and count is checked against the bytes that remain, and nesting
is capped, so hostile input raises AmfError instead of exhausting memory or
the Python stack.
"""

from __future__ import annotations

import datetime
import math
import struct
from typing import Any

from realcast_box.rtmp import amf3
from realcast_box.rtmp.amf3 import TypedObject
from realcast_box.rtmp.errors import AmfError

NUMBER = 0x00
BOOLEAN = 0x01
STRING = 0x02
OBJECT = 0x03
MOVIECLIP = 0x04
NULL = 0x05
UNDEFINED = 0x06
REFERENCE = 0x07
ECMA_ARRAY = 0x08
OBJECT_END = 0x09
STRICT_ARRAY = 0x0A
DATE = 0x0B
LONG_STRING = 0x0C
UNSUPPORTED = 0x0D
RECORDSET = 0x0E
XML_DOCUMENT = 0x0F
TYPED_OBJECT = 0x10
AVMPLUS = 0x11

MAX_DEPTH = 32
"""Maximum nesting of objects and arrays; RTMP commands use two or three levels."""

MAX_VALUES = amf3.MAX_VALUES
"""Maximum number of values in one decode call, AMF3 values included."""

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_DOUBLE = struct.Struct(">d")


class EcmaArray(dict):
    """A dict that encodes as an AMF0 ECMA array, as FFmpeg writes onMetaData."""


class _Reader:
    def __init__(self, data: bytes | memoryview) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.references: list[Any] = []
        self.values_left = MAX_VALUES

    def count_values(self, count: int) -> None:
        self.values_left -= count
        if self.values_left < 0:
            raise AmfError(
                f"AMF0 data contains too many values; the limit is {MAX_VALUES} "
                "values per message"
            )

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, size: int, field: str) -> memoryview:
        if size > self.remaining():
            raise AmfError(
                f"AMF0 {field} needs {size} bytes at offset {self.pos}, "
                f"but only {self.remaining()} remain"
            )
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        return int.from_bytes(self.take(2, field), "big")

    def u32(self, field: str) -> int:
        return int.from_bytes(self.take(4, field), "big")

    def double(self, field: str) -> float:
        return _DOUBLE.unpack(self.take(8, field))[0]

    def utf8(self, size: int, field: str) -> str:
        raw = self.take(size, field)
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AmfError(f"AMF0 {field} is not valid UTF-8: {exc}") from None


def decode(data: bytes | memoryview) -> Any:
    """Decode exactly one AMF0 value, raising AmfError if bytes remain after it."""
    reader = _Reader(data)
    value = _read_value(reader, 0)
    if reader.remaining():
        raise AmfError(
            f"AMF0 data has {reader.remaining()} unexpected bytes after the value"
        )
    return value


def decode_all(data: bytes | memoryview) -> list[Any]:
    """Decode the sequence of AMF0 values that makes up a command or data message.

    AMF0 references in later values may point at objects of earlier values,
    so one reference table spans the whole message.
    """
    reader = _Reader(data)
    values = []
    while reader.remaining():
        values.append(_read_value(reader, 0))
    return values


def _read_value(reader: _Reader, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise AmfError(f"AMF0 value nests deeper than {MAX_DEPTH} levels")
    reader.count_values(1)
    marker = reader.u8("type marker")
    reader_function = _READERS.get(marker)
    if reader_function is None:
        raise AmfError(
            f"invalid AMF0 type marker 0x{marker:02x} at offset {reader.pos - 1}"
        )
    return reader_function(reader, depth)


def _read_number(reader: _Reader, depth: int) -> float:
    return reader.double("number")


def _read_boolean(reader: _Reader, depth: int) -> bool:
    return reader.u8("boolean") != 0


def _read_string(reader: _Reader, depth: int) -> str:
    return reader.utf8(reader.u16("string length"), "string")


def _read_long_string(reader: _Reader, depth: int) -> str:
    return reader.utf8(reader.u32("long string length"), "long string")


def _read_none(reader: _Reader, depth: int) -> None:
    return None


def _read_properties(
    reader: _Reader, target: dict, depth: int, expected_count: int | None = None
) -> dict:
    """Read name/value pairs up to the object-end marker (empty name, 0x09)."""
    while True:
        if expected_count is not None and reader.remaining() == 0:
            # An ECMA array that ends with the data after its declared number
            # of entries is accepted without the object-end marker.
            if len(target) >= expected_count:
                return target
        name = reader.utf8(reader.u16("property name length"), "property name")
        if not name and reader.remaining() and reader.data[reader.pos] == OBJECT_END:
            reader.pos += 1
            return target
        target[name] = _read_value(reader, depth + 1)


def _read_object(reader: _Reader, depth: int) -> dict:
    target: dict = {}
    reader.references.append(target)
    return _read_properties(reader, target, depth)


def _read_ecma_array(reader: _Reader, depth: int) -> dict:
    # The count is only a hint, so it is not used to size anything.
    count = reader.u32("ECMA array count")
    target: dict = {}
    reader.references.append(target)
    return _read_properties(reader, target, depth, expected_count=count)


def _read_strict_array(reader: _Reader, depth: int) -> list:
    count = reader.u32("strict array count")
    if count > reader.remaining():
        raise AmfError(
            f"AMF0 strict array declares {count} elements, but only "
            f"{reader.remaining()} bytes remain"
        )
    items: list = []
    reader.references.append(items)
    for _ in range(count):
        items.append(_read_value(reader, depth + 1))
    return items


def _read_typed_object(reader: _Reader, depth: int) -> TypedObject:
    class_name = reader.utf8(reader.u16("class name length"), "class name")
    properties: dict = {}
    typed = TypedObject(class_name, properties)
    reader.references.append(typed)
    _read_properties(reader, properties, depth)
    return typed


def _read_reference(reader: _Reader, depth: int) -> Any:
    index = reader.u16("reference index")
    if index >= len(reader.references):
        raise AmfError(
            f"AMF0 reference {index} points past the {len(reader.references)} "
            "objects decoded so far"
        )
    return reader.references[index]


def _read_date(reader: _Reader, depth: int) -> datetime.datetime:
    milliseconds = reader.double("date")
    reader.take(2, "date time zone")  # reserved, senders write 0
    if not math.isfinite(milliseconds):
        raise AmfError(f"AMF0 date {milliseconds} is not a finite number")
    try:
        return _EPOCH + datetime.timedelta(milliseconds=milliseconds)
    except OverflowError:
        raise AmfError(f"AMF0 date {milliseconds} ms is out of range") from None


def _read_avmplus(reader: _Reader, depth: int) -> Any:
    value, used, count = amf3.decode_prefix(
        reader.data[reader.pos :], depth, reader.values_left
    )
    reader.pos += used
    reader.count_values(count)
    return value


def _read_reserved(reader: _Reader, depth: int) -> Any:
    marker = reader.data[reader.pos - 1]
    raise AmfError(f"AMF0 type marker 0x{marker:02x} is reserved and not supported")


_READERS = {
    NUMBER: _read_number,
    BOOLEAN: _read_boolean,
    STRING: _read_string,
    OBJECT: _read_object,
    MOVIECLIP: _read_reserved,
    NULL: _read_none,
    UNDEFINED: _read_none,
    REFERENCE: _read_reference,
    ECMA_ARRAY: _read_ecma_array,
    STRICT_ARRAY: _read_strict_array,
    DATE: _read_date,
    LONG_STRING: _read_long_string,
    UNSUPPORTED: _read_none,
    RECORDSET: _read_reserved,
    XML_DOCUMENT: _read_long_string,
    TYPED_OBJECT: _read_typed_object,
    AVMPLUS: _read_avmplus,
}


def encode(value: Any) -> bytes:
    """Encode one Python value as AMF0.

    Supported: None (null), bool, int and float (number), str (string, or long
    string past 65535 bytes), EcmaArray, dict with str keys (object),
    list or tuple (strict array), datetime (date) and TypedObject.
    Raises TypeError for anything else.
    """
    out = bytearray()
    _write_value(out, value, 0)
    return bytes(out)


def encode_all(values: list | tuple) -> bytes:
    """Encode a sequence of values back to back, as a command message carries them."""
    return b"".join(encode(value) for value in values)


def _write_utf8(out: bytearray, text: str) -> None:
    raw = text.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError(f"AMF0 property name is {len(raw)} bytes, limit is 65535")
    out += len(raw).to_bytes(2, "big") + raw


def _write_properties(out: bytearray, properties: dict, depth: int) -> None:
    for name, item in properties.items():
        if not isinstance(name, str):
            raise TypeError(f"AMF0 property names must be str, got {name!r}")
        _write_utf8(out, name)
        _write_value(out, item, depth + 1)
    out += b"\x00\x00" + bytes([OBJECT_END])


def _write_value(out: bytearray, value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"AMF0 value nests deeper than {MAX_DEPTH} levels")
    if value is None:
        out.append(NULL)
    elif isinstance(value, bool):
        out += bytes([BOOLEAN, 1 if value else 0])
    elif isinstance(value, int | float):
        out.append(NUMBER)
        out += _DOUBLE.pack(float(value))
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) > 0xFFFF:
            out.append(LONG_STRING)
            out += len(raw).to_bytes(4, "big") + raw
        else:
            out.append(STRING)
            out += len(raw).to_bytes(2, "big") + raw
    elif isinstance(value, EcmaArray):
        out.append(ECMA_ARRAY)
        out += len(value).to_bytes(4, "big")
        _write_properties(out, value, depth)
    elif isinstance(value, dict):
        out.append(OBJECT)
        _write_properties(out, value, depth)
    elif isinstance(value, list | tuple):
        out.append(STRICT_ARRAY)
        out += len(value).to_bytes(4, "big")
        for item in value:
            _write_value(out, item, depth + 1)
    elif isinstance(value, datetime.datetime):
        out.append(DATE)
        milliseconds = (value - _EPOCH).total_seconds() * 1000
        out += _DOUBLE.pack(milliseconds) + b"\x00\x00"
    elif isinstance(value, TypedObject):
        out.append(TYPED_OBJECT)
        _write_utf8(out, value.class_name)
        _write_properties(out, value.properties, depth)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as AMF0")
