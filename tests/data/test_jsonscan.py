"""Vectorised JSON number parsing and the structural index: exact values, chunk seams, strict structure."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vlm4st.data import DataFormatError, DataValueError, numparse
from vlm4st.data.jsonscan import JsonIndex


def as_bytes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8)


def parse(values_text: str) -> np.ndarray:
    doc = JsonIndex(as_bytes('{"a": ' + values_text + "}"), "mem.json")
    k = doc.members()["a"]
    return doc.numbers(k, doc.nesting(k), "a")


@pytest.mark.parametrize("chunk", [1 << 22, 64])  # small chunks put token seams everywhere
def test_numbers_are_bit_identical_to_float(monkeypatch, chunk) -> None:
    monkeypatch.setattr(numparse, "_CHUNK", chunk)
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            rng.normal(size=300) * 10.0 ** rng.integers(-30, 30, 300),  # exponents both ways
            rng.integers(-5000, 5000, 300).astype(float),  # 12.0 style
            np.round(rng.random(300) * 100, 3),
            rng.random(300).astype(np.float32).astype(float),  # 17-digit reprs -> exact fallback
            [0.0, -0.0, 5e-324, 1.7976931348623157e308, 1e22, 1e23, 123456789012345678.0],
        ]
    )
    text = json.dumps(values.tolist()) + " "
    text = text.replace("1e+23", "1E+23")  # both exponent letters
    got = parse(text)
    ref = np.array(json.loads(text))
    assert got.shape == ref.shape
    assert np.array_equal(got.view(np.int64), ref.view(np.int64))


def test_integers_and_whitespace_layouts() -> None:
    got = parse("[\n [1,2 ,3],\r\n\t[ -4 , 5, 60 ]\n]")
    assert got.tolist() == [[1, 2, 3], [-4, 5, 60]]


@pytest.mark.parametrize(
    ("text", "error", "match"),
    [
        ("[1, NaN]", DataValueError, "non-finite"),
        ("[1, -Infinity]", DataValueError, "non-finite"),
        ("[1, 1e999]", DataValueError, "non-finite"),
        ("[1, 2-3]", DataFormatError, "'2-3'"),
        ("[1..2, 3]", DataFormatError, "'1..2'"),
        ("[1e, 3]", DataFormatError, "'1e'"),
        ("[+1, 3]", DataFormatError, "'\\+1'"),
        ("[1, true]", DataFormatError, "unexpected character"),
        ("[1 2, 3]", DataFormatError, "one comma between two numbers"),
        ("[[1, 2], [3]]", DataFormatError, "ragged"),
        ("[[1, 2], 3]", DataFormatError, "levels|ragged"),
        ("[[1, 2], {}]", DataFormatError, "object"),
        ("[]", DataFormatError, "numbers where|ragged"),
    ],
)
def test_malformed_arrays_raise(text, error, match) -> None:
    with pytest.raises(error, match=match) as info:
        parse(text)
    assert "mem.json" in str(info.value)


def test_brackets_inside_strings_and_scalar_members() -> None:
    text = '{"note": "[not] {a list}", "n": 3, "obj": {"inner": [[1, 2]]}, "x": [[5.5]]}'
    doc = JsonIndex(as_bytes(text), "mem.json")
    top = doc.members()
    assert top["note"] is None and top["n"] is None
    assert doc.numbers(top["x"], 2, "x").tolist() == [[5.5]]
    inner = doc.members(top["obj"])
    assert doc.numbers(inner["inner"], 2, "inner").tolist() == [[1.0, 2.0]]


@pytest.mark.parametrize(
    "text",
    ["[1, 2]", '{"a": [1, 2]', '{"a": [1, 2]]}', '{"a": "x\\"y"}', '{"a": [1]} trailing', '{"a": "open}'],
)
def test_malformed_documents_raise(text) -> None:
    with pytest.raises(DataFormatError):
        JsonIndex(as_bytes(text), "mem.json")
