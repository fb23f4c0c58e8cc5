"""AMF3 decoder and a small encoder (Adobe's AMF 3 specification).

RTMP carries AMF3 only inside AMF0: an avmplus marker (0x11) in an AMF0
sequence is followed by one AMF3 value. Each such value is decoded with fresh
string, object and traits reference tables.

Decoded values map to Python types:

- undefined and null → None, integer → int, double → float;
- string, XML and XMLDocument → str, date → datetime (UTC);
- array → list when it has only a dense part, otherwise dict with the dense
  items under int keys;
- object → dict, or TypedObject when it has a class name;
- ByteArray → bytes, vectors → list, Dictionary → dict.
"""

from __future__ import annotations

import datetime
import math
import struct
from dataclasses import dataclass, field
from typing import Any

from realcast_box.rtmp.errors import AmfError

UNDEFINED = 0x00
NULL = 0x01
FALSE = 0x02
TRUE = 0x03
INTEGER = 0x04
DOUBLE = 0x05
STRING = 0x06
XML_DOCUMENT = 0x07
DATE = 0x08
ARRAY = 0x09
OBJECT = 0x0A
XML = 0x0B
BYTE_ARRAY = 0x0C
VECTOR_INT = 0x0D
VECTOR_UINT = 0x0E
VECTOR_DOUBLE = 0x0F
VECTOR_OBJECT = 0x10
DICTIONARY = 0x11

MAX_DEPTH = 32
"""Maximum nesting of arrays, objects, vectors and dictionaries."""

MAX_VALUES = 65536
"""Maximum number of values in one decode call, vector items included.

A value of one or a few bytes becomes a Python object of tens of bytes, so
this bounds the memory a hostile message can make the decoder allocate."""

INTEGER_MIN = -(1 << 28)
INTEGER_MAX = (1 << 28) - 1

# Flex classes whose externalized form is a single AMF3 value.
_SINGLE_VALUE_EXTERNALIZABLE = {
    "flex.messaging.io.ArrayCollection",
    "flex.messaging.io.ObjectProxy",
}

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_DOUBLE = struct.Struct(">d")


@dataclass(frozen=True)
class TypedObject:
    """An object with a class name: the name and the object's properties."""

    class_name: str
    properties: dict = field(default_factory=dict)


class _Traits:
    __slots__ = ("class_name", "dynamic", "externalizable", "members")

    def __init__(
        self, class_name: str, dynamic: bool, externalizable: bool, members: list
    ) -> None:
        self.class_name = class_name
        self.dynamic = dynamic
        self.externalizable = externalizable
        self.members = members


class _Reader:
    def __init__(self, data: bytes | memoryview, max_values: int) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.values_left = max_values
        self.strings: list[str] = []
        self.objects: list[Any] = []
        self.traits: list[_Traits] = []

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, size: int, field: str) -> memoryview:
        if size > self.remaining():
            raise AmfError(
                f"AMF3 {field} needs {size} bytes at offset {self.pos}, "
                f"but only {self.remaining()} remain"
            )
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u29(self, field: str) -> int:
        """Read a variable-length unsigned 29-bit integer (1 to 4 bytes)."""
        value = 0
        for _ in range(3):
            byte = self.u8(field)
            value = (value << 7) | (byte & 0x7F)
            if not byte & 0x80:
                return value
        return (value << 8) | self.u8(field)

    def count_values(self, count: int) -> None:
        self.values_left -= count
        if self.values_left < 0:
            raise AmfError(
                f"AMF3 data contains too many values; the limit is {MAX_VALUES} "
                "values per message"
            )

    def check_count(self, count: int, item_size: int, field: str) -> None:
        if count * item_size > self.remaining():
            raise AmfError(
                f"AMF3 {field} declares {count} items, but only "
                f"{self.remaining()} bytes remain"
            )

    def object_reference(self, header: int, field: str) -> Any:
        index = header >> 1
        if index >= len(self.objects):
            raise AmfError(
                f"AMF3 {field} reference {index} points past the "
                f"{len(self.objects)} objects decoded so far"
            )
        return self.objects[index]


def decode_prefix(
    data: bytes | memoryview, depth: int = 0, max_values: int = MAX_VALUES
) -> tuple[Any, int, int]:
    """Decode one AMF3 value from the start of data.

    Returns the value, the number of bytes it used and the number of values
    it contained. max_values is what remains of the message's MAX_VALUES.
    Raises AmfError for truncated data, unknown markers, bad references,
    absurd counts and more than max_values values.
    """
    reader = _Reader(data, max_values)
    value = _read_value(reader, depth)
    return value, reader.pos, max_values - reader.values_left


def decode(data: bytes | memoryview) -> Any:
    """Decode exactly one AMF3 value, raising AmfError if bytes remain after it."""
    value, used, _ = decode_prefix(data)
    if used != len(data):
        raise AmfError(f"AMF3 data has {len(data) - used} unexpected bytes at the end")
    return value


def _read_value(reader: _Reader, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise AmfError(f"AMF3 value nests deeper than {MAX_DEPTH} levels")
    reader.count_values(1)
    marker = reader.u8("type marker")
    if marker in _CONSTANTS:
        return _CONSTANTS[marker]
    reader_function = _READERS.get(marker)
    if reader_function is None:
        raise AmfError(
            f"invalid AMF3 type marker 0x{marker:02x} at offset {reader.pos - 1}"
        )
    return reader_function(reader, depth)


def _read_integer(reader: _Reader, depth: int) -> int:
    value = reader.u29("integer")
    if value & 0x10000000:
        value -= 1 << 29
    return value


def _read_double(reader: _Reader, depth: int) -> float:
    return _DOUBLE.unpack(reader.take(8, "double"))[0]


def _read_utf8(reader: _Reader, size: int, field: str) -> str:
    try:
        return bytes(reader.take(size, field)).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AmfError(f"AMF3 {field} is not valid UTF-8: {exc}") from None


def _read_string_body(reader: _Reader) -> str:
    """Read a string without marker, as keys, class names and strings use."""
    header = reader.u29("string header")
    if not header & 1:
        index = header >> 1
        if index >= len(reader.strings):
            raise AmfError(
                f"AMF3 string reference {index} points past the "
                f"{len(reader.strings)} strings decoded so far"
            )
        return reader.strings[index]
    text = _read_utf8(reader, header >> 1, "string")
    if text:
        reader.strings.append(text)
    return text


def _read_string(reader: _Reader, depth: int) -> str:
    return _read_string_body(reader)


def _read_xml(reader: _Reader, depth: int) -> str:
    header = reader.u29("XML header")
    if not header & 1:
        return reader.object_reference(header, "XML")
    text = _read_utf8(reader, header >> 1, "XML")
    reader.objects.append(text)
    return text


def _read_date(reader: _Reader, depth: int) -> datetime.datetime:
    header = reader.u29("date header")
    if not header & 1:
        return reader.object_reference(header, "date")
    milliseconds = _DOUBLE.unpack(reader.take(8, "date"))[0]
    if not math.isfinite(milliseconds):
        raise AmfError(f"AMF3 date {milliseconds} is not a finite number")
    try:
        value = _EPOCH + datetime.timedelta(milliseconds=milliseconds)
    except OverflowError:
        raise AmfError(f"AMF3 date {milliseconds} ms is out of range") from None
    reader.objects.append(value)
    return value


def _read_array(reader: _Reader, depth: int) -> list | dict:
    header = reader.u29("array header")
    if not header & 1:
        return reader.object_reference(header, "array")
    dense_count = header >> 1
    reader.check_count(dense_count, 1, "array")

    # The associative part comes first and ends with an empty key.
    associative: dict = {}
    index = len(reader.objects)
    reader.objects.append(associative)
    while True:
        key = _read_string_body(reader)
        if not key:
            break
        associative[key] = _read_value(reader, depth + 1)

    dense = [_read_value(reader, depth + 1) for _ in range(dense_count)]
    if not associative:
        reader.objects[index] = dense
        return dense
    associative.update(enumerate(dense))
    return associative


def _read_traits(reader: _Reader, header: int) -> _Traits:
    if not header & 0b10:
        index = header >> 2
        if index >= len(reader.traits):
            raise AmfError(
                f"AMF3 traits reference {index} points past the "
                f"{len(reader.traits)} traits decoded so far"
            )
        return reader.traits[index]
    externalizable = bool(header & 0b100)
    dynamic = bool(header & 0b1000)
    member_count = header >> 4
    reader.check_count(member_count, 1, "object traits")
    class_name = _read_string_body(reader)
    members = [_read_string_body(reader) for _ in range(member_count)]
    traits = _Traits(class_name, dynamic, externalizable, members)
    reader.traits.append(traits)
    return traits


def _read_object(reader: _Reader, depth: int) -> Any:
    header = reader.u29("object header")
    if not header & 1:
        return reader.object_reference(header, "object")
    traits = _read_traits(reader, header)

    if traits.externalizable:
        if traits.class_name not in _SINGLE_VALUE_EXTERNALIZABLE:
            raise AmfError(
                f"AMF3 externalizable class {traits.class_name!r} is not supported"
            )
        index = len(reader.objects)
        reader.objects.append(None)
        value = _read_value(reader, depth + 1)
        reader.objects[index] = value
        return value

    properties: dict = {}
    result = TypedObject(traits.class_name, properties) if traits.class_name else None
    reader.objects.append(result if result is not None else properties)
    for name in traits.members:
        properties[name] = _read_value(reader, depth + 1)
    if traits.dynamic:
        while True:
            name = _read_string_body(reader)
            if not name:
                break
            properties[name] = _read_value(reader, depth + 1)
    return result if result is not None else properties


def _read_byte_array(reader: _Reader, depth: int) -> bytes:
    header = reader.u29("ByteArray header")
    if not header & 1:
        return reader.object_reference(header, "ByteArray")
    value = bytes(reader.take(header >> 1, "ByteArray"))
    reader.objects.append(value)
    return value


def _read_number_vector(reader: _Reader, marker: int) -> list:
    header = reader.u29("vector header")
    if not header & 1:
        return reader.object_reference(header, "vector")
    count = header >> 1
    reader.u8("vector fixed flag")
    code = {VECTOR_INT: ">i", VECTOR_UINT: ">I", VECTOR_DOUBLE: ">d"}[marker]
    item_size = struct.calcsize(code)
    reader.check_count(count, item_size, "vector")
    reader.count_values(count)
    raw = reader.take(count * item_size, "vector")
    items = [value for (value,) in struct.iter_unpack(code, raw)]
    reader.objects.append(items)
    return items


def _read_vector_int(reader: _Reader, depth: int) -> list:
    return _read_number_vector(reader, VECTOR_INT)


def _read_vector_uint(reader: _Reader, depth: int) -> list:
    return _read_number_vector(reader, VECTOR_UINT)


def _read_vector_double(reader: _Reader, depth: int) -> list:
    return _read_number_vector(reader, VECTOR_DOUBLE)


def _read_vector_object(reader: _Reader, depth: int) -> list:
    header = reader.u29("vector header")
    if not header & 1:
        return reader.object_reference(header, "vector")
    count = header >> 1
    reader.u8("vector fixed flag")
    _read_string_body(reader)  # element class name, not needed in Python
    reader.check_count(count, 1, "vector")
    items: list = []
    reader.objects.append(items)
    for _ in range(count):
        items.append(_read_value(reader, depth + 1))
    return items


def _read_dictionary(reader: _Reader, depth: int) -> dict:
    header = reader.u29("Dictionary header")
    if not header & 1:
        return reader.object_reference(header, "Dictionary")
    count = header >> 1
    reader.u8("Dictionary weak keys flag")
    reader.check_count(count, 2, "Dictionary")
    result: dict = {}
    reader.objects.append(result)
    for _ in range(count):
        key = _read_value(reader, depth + 1)
        try:
            hash(key)
        except TypeError:
            raise AmfError(
                f"AMF3 Dictionary key of type {type(key).__name__} is not supported"
            ) from None
        result[key] = _read_value(reader, depth + 1)
    return result


_CONSTANTS = {UNDEFINED: None, NULL: None, FALSE: False, TRUE: True}

_READERS = {
    INTEGER: _read_integer,
    DOUBLE: _read_double,
    STRING: _read_string,
    XML_DOCUMENT: _read_xml,
    DATE: _read_date,
    ARRAY: _read_array,
    OBJECT: _read_object,
    XML: _read_xml,
    BYTE_ARRAY: _read_byte_array,
    VECTOR_INT: _read_vector_int,
    VECTOR_UINT: _read_vector_uint,
    VECTOR_DOUBLE: _read_vector_double,
    VECTOR_OBJECT: _read_vector_object,
    DICTIONARY: _read_dictionary,
}


def _encode_u29(value: int) -> bytes:
    if not 0 <= value < 1 << 29:
        raise ValueError(f"AMF3 U29 value {value} is outside 0..{(1 << 29) - 1}")
    if value < 0x80:
        return bytes([value])
    if value < 0x4000:
        return bytes([0x80 | value >> 7, value & 0x7F])
    if value < 0x200000:
        return bytes([0x80 | value >> 14, 0x80 | (value >> 7) & 0x7F, value & 0x7F])
    return bytes(
        [0x80 | value >> 22, 0x80 | (value >> 15) & 0x7F, 0x80 | (value >> 8) & 0x7F]
    ) + bytes([value & 0xFF])


def _encode_string_body(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _encode_u29(len(raw) << 1 | 1) + raw


def encode(value: Any) -> bytes:
    """Encode one value as AMF3, without the AMF0 avmplus marker.

    Supported: None, bool, int (integer within 29 bits, double otherwise),
    float, str, bytes, list or tuple (dense array) and dict with str keys
    (anonymous dynamic object). No references are written, which decoders
    accept. Raises TypeError for anything else.
    """
    if value is None:
        return bytes([NULL])
    if isinstance(value, bool):
        return bytes([TRUE if value else FALSE])
    if isinstance(value, int) and INTEGER_MIN <= value <= INTEGER_MAX:
        return bytes([INTEGER]) + _encode_u29(value & 0x1FFFFFFF)
    if isinstance(value, int | float):
        return bytes([DOUBLE]) + _DOUBLE.pack(float(value))
    if isinstance(value, str):
        return bytes([STRING]) + _encode_string_body(value)
    if isinstance(value, bytes | bytearray):
        return bytes([BYTE_ARRAY]) + _encode_u29(len(value) << 1 | 1) + bytes(value)
    if isinstance(value, list | tuple):
        parts = [bytes([ARRAY]), _encode_u29(len(value) << 1 | 1), b"\x01"]
        parts += [encode(item) for item in value]
        return b"".join(parts)
    if isinstance(value, dict):
        # Inline traits (0b1011): dynamic, no sealed members, empty class name.
        parts = [bytes([OBJECT]), b"\x0b", b"\x01"]
        for name, item in value.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"AMF3 property names must be non-empty str: {name!r}")
            parts += [_encode_string_body(name), encode(item)]
        parts.append(b"\x01")
        return b"".join(parts)
    raise TypeError(f"cannot encode {type(value).__name__} as AMF3")
