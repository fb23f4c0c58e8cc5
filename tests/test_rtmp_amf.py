"""AMF0 and AMF3 codecs: byte tables both ways and malformed input."""

from __future__ import annotations

import datetime
import random
import struct

import pytest

from realcast_box.rtmp import amf0, amf3
from realcast_box.rtmp.amf0 import EcmaArray, TypedObject
from realcast_box.rtmp.errors import AmfError, RtmpProtocolError

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def double(value: float) -> bytes:
    return struct.pack(">d", value)


AMF0_TABLE = [
    ("number", 1.5, b"\x00" + double(1.5)),
    ("true", True, b"\x01\x01"),
    ("false", False, b"\x01\x00"),
    ("string", "ab", b"\x02\x00\x02ab"),
    ("empty_string", "", b"\x02\x00\x00"),
    ("utf8_string", "é", b"\x02\x00\x02\xc3\xa9"),
    ("null", None, b"\x05"),
    ("object", {"a": 1.0}, b"\x03\x00\x01a\x00" + double(1.0) + b"\x00\x00\x09"),
    ("empty_object", {}, b"\x03\x00\x00\x09"),
    (
        "strict_array",
        [1.0, "x"],
        b"\x0a\x00\x00\x00\x02\x00" + double(1.0) + b"\x02\x00\x01x",
    ),
    (
        "ecma_array",
        EcmaArray(a=True),
        b"\x08\x00\x00\x00\x01\x00\x01a\x01\x01\x00\x00\x09",
    ),
    ("date", EPOCH, b"\x0b" + double(0.0) + b"\x00\x00"),
    (
        "typed_object",
        TypedObject("Foo", {"a": None}),
        b"\x10\x00\x03Foo\x00\x01a\x05\x00\x00\x09",
    ),
]


@pytest.mark.parametrize(
    ("value", "data"),
    [row[1:] for row in AMF0_TABLE],
    ids=[row[0] for row in AMF0_TABLE],
)
def test_amf0_encode_table(value, data):
    assert amf0.encode(value) == data


@pytest.mark.parametrize(
    ("value", "data"),
    [row[1:] for row in AMF0_TABLE],
    ids=[row[0] for row in AMF0_TABLE],
)
def test_amf0_decode_table(value, data):
    assert amf0.decode(data) == value


def test_amf0_ecma_array_decodes_to_plain_dict():
    value = amf0.decode(amf0.encode(EcmaArray(width=160.0)))
    assert type(value) is dict


def test_amf0_integer_encodes_as_number():
    assert amf0.encode(3) == b"\x00" + double(3.0)


def test_amf0_long_string_round_trip():
    text = "k" * 70_000
    data = amf0.encode(text)
    assert data[:5] == b"\x0c\x00\x01\x11\x70"
    assert amf0.decode(data) == text


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"\x06", None),
        (b"\x0d", None),
        (b"\x0f\x00\x00\x00\x04<a/>", "<a/>"),
        (b"\x11\x04\x05", 5),
        (b"\x08\x00\x00\x00\x01\x00\x01a\x01\x01", {"a": True}),
        (b"\x01\x07", True),
    ],
    ids=[
        "undefined",
        "unsupported",
        "xml_document",
        "avmplus_integer",
        "ecma_array_without_end_marker",
        "boolean_nonzero",
    ],
)
def test_amf0_decode_only_values(data, value):
    assert amf0.decode(data) == value


def test_amf0_reference_returns_same_object():
    data = b"\x03\x00\x01a\x01\x01\x00\x00\x09" + b"\x07\x00\x00"
    first, second = amf0.decode_all(data)
    assert second is first


def test_amf0_decode_all_command():
    values = ["connect", 1.0, {"app": "live"}]
    assert amf0.decode_all(amf0.encode_all(values)) == values


def test_amf0_avmplus_object_in_command():
    amf3_object = b"\x0a\x0b\x01\x07app\x06\x09live\x01"
    data = amf0.encode_all(["connect", 1.0]) + b"\x11" + amf3_object
    assert amf0.decode_all(data) == ["connect", 1.0, {"app": "live"}]


def test_amf0_avmplus_followed_by_amf0_value():
    data = b"\x11\x06\x05ab" + amf0.encode("cd")
    assert amf0.decode_all(data) == ["ab", "cd"]


def test_amf0_encode_rejects_unknown_type():
    with pytest.raises(TypeError):
        amf0.encode(object())


def test_amf_error_is_protocol_error():
    assert issubclass(AmfError, RtmpProtocolError)


# An ECMA array may end without its end marker, which the next test covers.
TRUNCATABLE_AMF0 = [row for row in AMF0_TABLE if row[2][1:] and row[0] != "ecma_array"]


@pytest.mark.parametrize(
    "value",
    [row[1] for row in TRUNCATABLE_AMF0],
    ids=[row[0] for row in TRUNCATABLE_AMF0],
)
def test_amf0_truncated_value_raises(value):
    data = amf0.encode(value)
    for end in range(len(data)):
        with pytest.raises(AmfError):
            amf0.decode(data[:end])


def test_amf0_truncated_ecma_array_raises():
    data = amf0.encode(EcmaArray(a=True, b=False))
    without_end_marker = len(data) - 3
    for end in range(len(data)):
        if end == without_end_marker:
            continue
        with pytest.raises(AmfError):
            amf0.decode(data[:end])


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"\x12", "invalid AMF0 type marker 0x12"),
        (b"\xff", "invalid AMF0 type marker 0xff"),
        (b"\x04", "reserved"),
        (b"\x0e", "reserved"),
        (b"\x09", "invalid AMF0 type marker 0x09"),
        (b"\x02\xff\xffab", "needs 65535 bytes"),
        (b"\x0c\xff\xff\xff\xffab", "needs 4294967295 bytes"),
        (b"\x0a\xff\xff\xff\xff\x05", "declares 4294967295 elements"),
        (b"\x07\x00\x00", "reference 0 points past"),
        (b"\x02\x00\x02\xff\xfe", "not valid UTF-8"),
        (b"\x0b" + double(float("nan")) + b"\x00\x00", "not a finite number"),
        (b"\x0b" + double(1e300) + b"\x00\x00", "out of range"),
        (b"\x05\x05", "unexpected bytes"),
        (b"\x03\x00\x01a", "needs 1 bytes"),
    ],
    ids=[
        "unknown_marker",
        "marker_ff",
        "movieclip",
        "recordset",
        "object_end_alone",
        "string_length",
        "long_string_length",
        "strict_array_count",
        "reference_index",
        "invalid_utf8",
        "nan_date",
        "huge_date",
        "trailing_bytes",
        "object_missing_value",
    ],
)
def test_amf0_malformed_raises(data, fragment):
    with pytest.raises(AmfError, match=fragment):
        amf0.decode(data)


def test_amf0_too_many_values_raises():
    data = b"\x0a" + (70_000).to_bytes(4, "big") + b"\x05" * 70_000
    with pytest.raises(AmfError, match="the limit is 65536 values"):
        amf0.decode(data)


def test_amf0_values_inside_avmplus_count():
    amf3_array = (
        b"\x09" + amf3._encode_u29(40_000 << 1 | 1) + b"\x01" + b"\x01" * 40_000
    )
    data = b"\x0a" + (2).to_bytes(4, "big") + (b"\x11" + amf3_array) * 2
    with pytest.raises(AmfError, match="the limit is 65536 values"):
        amf0.decode(data)


def test_amf0_deep_nesting_raises():
    data = b"\x0a\x00\x00\x00\x01" * 200 + b"\x05"
    with pytest.raises(AmfError, match="nests deeper"):
        amf0.decode(data)


def test_amf0_random_bytes_raise_only_amf_error():
    rng = random.Random(7)
    seeds = [amf0.encode_all(["connect", 1.0, {"app": "live", "n": [1, "x"]}])]
    for _ in range(3000):
        if rng.random() < 0.5:
            data = rng.randbytes(rng.randrange(1, 40))
        else:
            data = bytearray(seeds[0])
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            amf0.decode_all(bytes(data))
        except AmfError:
            pass


AMF3_INTEGERS = [
    (0, b"\x04\x00"),
    (127, b"\x04\x7f"),
    (128, b"\x04\x81\x00"),
    (16_384, b"\x04\x81\x80\x00"),
    (2_097_152, b"\x04\x80\xc0\x80\x00"),
    (-1, b"\x04\xff\xff\xff\xff"),
    (0x0FFFFFFF, b"\x04\xbf\xff\xff\xff"),
    (-(1 << 28), b"\x04\xc0\x80\x80\x00"),
]


@pytest.mark.parametrize(("value", "data"), AMF3_INTEGERS)
def test_amf3_integer_encode(value, data):
    assert amf3.encode(value) == data


@pytest.mark.parametrize(("value", "data"), AMF3_INTEGERS)
def test_amf3_integer_decode(value, data):
    assert amf3.decode(data) == value


def test_amf3_large_integer_encodes_as_double():
    assert amf3.encode(1 << 30) == b"\x05" + double(float(1 << 30))


AMF3_TABLE = [
    ("undefined", b"\x00", None),
    ("null", b"\x01", None),
    ("false", b"\x02", False),
    ("true", b"\x03", True),
    ("double", b"\x05" + double(2.5), 2.5),
    ("string", b"\x06\x05ab", "ab"),
    ("empty_string", b"\x06\x01", ""),
    ("string_reference", b"\x09\x05\x01\x06\x05ab\x06\x00", ["ab", "ab"]),
    ("dynamic_object", b"\x0a\x0b\x01\x03a\x04\x01\x01", {"a": 1}),
    ("sealed_object", b"\x0a\x13\x07Foo\x03a\x04\x05", TypedObject("Foo", {"a": 5})),
    (
        "traits_reference",
        b"\x09\x05\x01\x0a\x13\x07Foo\x03a\x04\x01\x0a\x01\x04\x02",
        [TypedObject("Foo", {"a": 1}), TypedObject("Foo", {"a": 2})],
    ),
    ("associative_array", b"\x09\x03\x03a\x04\x01\x01\x04\x02", {"a": 1, 0: 2}),
    ("dense_array", b"\x09\x05\x01\x04\x01\x04\x02", [1, 2]),
    ("date", b"\x08\x01" + double(1000.0), EPOCH + datetime.timedelta(seconds=1)),
    ("byte_array", b"\x0c\x07\x01\x02\x03", b"\x01\x02\x03"),
    ("xml", b"\x0b\x09<a/>", "<a/>"),
    ("xml_document", b"\x07\x09<a/>", "<a/>"),
    ("vector_int", b"\x0d\x05\x00\xff\xff\xff\xff\x00\x00\x00\x02", [-1, 2]),
    ("vector_uint", b"\x0e\x03\x00\xff\xff\xff\xff", [0xFFFFFFFF]),
    ("vector_double", b"\x0f\x03\x00" + double(1.5), [1.5]),
    ("vector_object", b"\x10\x05\x00\x01\x04\x01\x06\x03x", [1, "x"]),
    ("dictionary", b"\x11\x03\x00\x06\x03k\x04\x05", {"k": 5}),
    (
        "array_collection",
        b"\x0a\x07\x43flex.messaging.io.ArrayCollection\x09\x03\x01\x04\x01",
        [1],
    ),
]


@pytest.mark.parametrize(
    ("data", "value"),
    [row[1:] for row in AMF3_TABLE],
    ids=[row[0] for row in AMF3_TABLE],
)
def test_amf3_decode_table(data, value):
    assert amf3.decode(data) == value


def test_amf3_object_reference_returns_same_object():
    first, second = amf3.decode(b"\x09\x05\x01\x0a\x0b\x01\x01\x0a\x02")
    assert second is first


@pytest.mark.parametrize(
    "value",
    [None, True, False, 7, -7, 2.5, "text", b"\x00\x01", [1, "a", None], {"k": [1]}],
)
def test_amf3_round_trip(value):
    assert amf3.decode(amf3.encode(value)) == value


def test_amf3_decode_prefix_reports_length():
    value, used, count = amf3.decode_prefix(b"\x06\x05abTAIL")
    assert (value, used, count) == ("ab", 4, 1)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"\x12", "invalid AMF3 type marker 0x12"),
        (b"\x06\x02", "string reference 1 points past"),
        (b"\x0a\x00", "object reference 0 points past"),
        (b"\x0a\x05", "traits reference 1 points past"),
        (b"\x09\xff\xff\xff\xff", "declares"),
        (b"\x0c\xff\xff\xff\xff", "needs"),
        (b"\x0d\xff\xff\xff\x7f\x00", "declares"),
        (b"\x11\xff\xff\xff\xff\x00", "declares"),
        (b"\x0a\x07\x07Foo", "externalizable class 'Foo' is not supported"),
        (b"\x11\x03\x00\x0a\x0b\x01\x01\x04\x01", "Dictionary key of type dict"),
        (b"\x06\x05\xff\xfe", "not valid UTF-8"),
        (b"\x08\x01" + double(float("inf")), "not a finite number"),
        (b"\x06\x05abX", "unexpected bytes"),
        (b"\x04\xff\xff\xff", "needs 1 bytes"),
    ],
    ids=[
        "unknown_marker",
        "string_reference",
        "object_reference",
        "traits_reference",
        "array_count",
        "byte_array_length",
        "vector_count",
        "dictionary_count",
        "externalizable",
        "unhashable_key",
        "invalid_utf8",
        "infinite_date",
        "trailing_bytes",
        "truncated_integer",
    ],
)
def test_amf3_malformed_raises(data, fragment):
    with pytest.raises(AmfError, match=fragment):
        amf3.decode(data)


@pytest.mark.parametrize(
    "data",
    [row[1] for row in AMF3_TABLE if len(row[1]) > 1],
    ids=[row[0] for row in AMF3_TABLE if len(row[1]) > 1],
)
def test_amf3_truncated_value_raises(data):
    for end in range(len(data)):
        with pytest.raises(AmfError):
            amf3.decode(data[:end])


def test_amf3_too_many_values_raises():
    data = b"\x09" + amf3._encode_u29(70_000 << 1 | 1) + b"\x01" + b"\x01" * 70_000
    with pytest.raises(AmfError, match="the limit is 65536 values"):
        amf3.decode(data)


def test_amf3_vector_items_count_as_values():
    data = b"\x0d" + amf3._encode_u29(70_000 << 1 | 1) + b"\x00" + bytes(280_000)
    with pytest.raises(AmfError, match="the limit is 65536 values"):
        amf3.decode(data)


def test_amf3_deep_nesting_raises():
    data = b"\x09\x03\x01" * 200 + b"\x01"
    with pytest.raises(AmfError, match="nests deeper"):
        amf3.decode(data)


def test_amf3_random_bytes_raise_only_amf_error():
    rng = random.Random(11)
    valid = amf3.encode({"a": [1, "x", {"b": b"\x00"}], "c": 2.5})
    for _ in range(3000):
        if rng.random() < 0.5:
            data = bytes([rng.randrange(0x12)]) + rng.randbytes(rng.randrange(30))
        else:
            mutated = bytearray(valid)
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            data = bytes(mutated)
        try:
            amf3.decode_prefix(data)
        except AmfError:
            pass
