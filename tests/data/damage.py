"""Hypothesis strategies that damage small valid data files, for the malformed-input properties.

Every strategy starts from a valid file of the readers' layouts and breaks it one way: bytes truncated, flipped,
inserted or deleted; a JSON node deleted, replaced, wrapped, emptied or nested thousands of levels deep; an array
of the wrong rank, length or dtype, or holding NaN/Inf or huge values; a key removed or added. Arrays are kept a
few cells wide and a few dozen frames long so a property runs its examples in a second or two.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from .builders import encode_stamps, stamps_for

SPLITS = ("train", "val", "test")
N_SMALL = {"train": 3, "val": 2, "test": 2}  # windows per split of the small windowed files
T_SMALL, H_SMALL, W_SMALL = 4, 2, 3


def small_windows() -> dict[str, dict[str, np.ndarray]]:
    """Per split: stride-1 windows x (N, 4, 2, 3) with fractional values, consecutive pair stamps (N, 4, 2)."""
    total = sum(N_SMALL.values())
    frames = np.arange((total + T_SMALL) * H_SMALL * W_SMALL, dtype=np.float64).reshape(-1, H_SMALL, W_SMALL) / 4
    stamps = stamps_for(len(frames), start_weekday=6, start_slot=46)  # crosses the day and the week
    out, first = {}, 0
    for split in SPLITS:
        idx = (first + np.arange(N_SMALL[split]))[:, None] + np.arange(T_SMALL)
        out[split] = {"x": frames[idx], "ts": stamps[idx]}
        first += N_SMALL[split]
    return out


# -- byte damage -------------------------------------------------------------------------------------------------
JSON_BYTES = [*b'[]{},:"\\ \n0123456789.-+eENaIfinty', 0x00, 0x80, 0xC3, 0xED, 0xFF]


@dataclass(frozen=True)
class Damaged:
    """Damaged file bytes; ``edits`` are the byte ranges [lo, hi) of the valid file that were replaced, deleted
    or (lo == hi) inserted before, or None when the file was truncated or replaced by random bytes."""

    raw: bytes
    edits: tuple[tuple[int, int], ...] | None


@st.composite
def damaged_bytes(draw: st.DrawFn, raw: bytes, alphabet: list[int] | None = None) -> Damaged:
    """``raw`` truncated at a random offset, or with 1-3 bytes flipped, inserted or deleted, or random bytes
    behind the magic of one of the formats."""
    kind = draw(st.sampled_from(["truncate", "edit", "random"]))
    if kind == "truncate":
        return Damaged(raw[: draw(st.integers(0, len(raw) - 1))], None)
    if kind == "random":
        prefix = draw(st.sampled_from([b"", b"PK\x03\x04", b"\x93NUMPY\x01\x00", b"{", b'{"X_train": [']))
        return Damaged(prefix + draw(st.binary(max_size=64)), None)
    byte = st.sampled_from(alphabet) if alphabet else st.integers(0, 255)
    ops = draw(st.dictionaries(st.integers(0, len(raw) - 1), st.tuples(st.sampled_from("fid"), byte),
                               min_size=1, max_size=3))
    out, edits = bytearray(raw), []
    for pos in sorted(ops, reverse=True):  # from the end: positions stay those of the valid file
        op, value = ops[pos]
        if op == "f":
            out[pos] = value
        elif op == "i":
            out.insert(pos, value)
        else:
            del out[pos]
        edits.append((pos, pos if op == "i" else pos + 1))
    return Damaged(bytes(out), tuple(edits))


# -- JSON documents ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Raw:
    """JSON text placed verbatim into a document (tokens ``json.dumps`` never writes: ``01``, ``1e999``...)."""

    text: str


RAW_TOKENS = [
    "NaN", "Infinity", "-Infinity", "1e999", "-1e400", "1e-400", "1e39", "3.4028236e38", "1e19", "9007199254740993",
    "16777217", "1e00001", "-25E-0002", "-0", "01", "1.", ".5", "+1", "-", "1e", "1e+", "0x1F", "1_0", "true",
    "null", '""', "{}", "[]", '"2015-01-05 00:00:00"', '"2015-02-30 00:00:00"', '"2015-01-05 24:00:00"',
    '"2015-01-05 00:00:99"', '"0000-01-05 00:00:00"', '"2015-01-05T00:00:00"', '"2015-01-05 00:00:00 "',
    '"x\\"y"', '"\\u0041"',
]
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**25), 10**25),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(RAW_TOKENS).map(Raw),
)
JSON_VALUES = st.recursive(
    LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def dumps(doc: Any) -> bytes:
    """``json.dumps`` of ``doc`` with every ``Raw`` value written verbatim."""
    raws: list[str] = []

    def encode(value: Any) -> Any:
        if isinstance(value, Raw):
            raws.append(value.text)
            return f"@@RAW{len(raws) - 1}@@"
        if isinstance(value, list):
            return [encode(v) for v in value]
        if isinstance(value, dict):
            return {k: encode(v) for k, v in value.items()}
        return value

    text = json.dumps(encode(doc))
    for i, raw in enumerate(raws):
        text = text.replace(f'"@@RAW{i}@@"', raw, 1)
    return text.encode()


def base_document(fmt: str, period: bool) -> dict[str, Any]:
    """A small valid UniST document: ``X_<split>`` (or the pair [windows, period]) and ``timestamps``."""
    doc: dict[str, Any] = {}
    parts = small_windows()
    for split, p in parts.items():
        x = p["x"].tolist()
        doc[f"X_{split}"] = [x, np.stack([p["x"]] * 2, axis=1).tolist()] if period else x
    doc["timestamps"] = {s: encode_stamps(p["ts"], fmt, dt.datetime(2015, 1, 5)) for s, p in parts.items()}
    return doc


def member_spans(doc: dict[str, Any]) -> dict[tuple, tuple[int, int]]:
    """Byte span [start, end) in ``dumps(doc)`` of every member value of the top-level and ``timestamps``
    objects and of every period array (``("X_<split>", 1)``)."""
    spans, pos = {}, 1  # after the top-level '{'
    for key, value in doc.items():
        pos += len(json.dumps(key)) + 2  # the key and ': '
        text = json.dumps(value)
        spans[(key,)] = (pos, pos + len(text))
        if key.startswith("X_") and len(value) == 2:
            start = pos + 1 + len(json.dumps(value[0])) + 2
            spans[(key, 1)] = (start, start + len(json.dumps(value[1])))
        if key == "timestamps":
            inner = pos + 1
            for split, stamps in value.items():
                inner += len(json.dumps(split)) + 2
                spans[(key, split)] = (inner, inner + len(json.dumps(stamps)))
                inner += len(json.dumps(stamps)) + 2
        pos += len(text) + 2  # the value and ', '
    return spans


@dataclass(frozen=True)
class JsonCase:
    """A damaged UniST document: its bytes, the valid document it came from and where it was damaged (the byte
    ranges of the valid file, or the node path of a structural edit, with whether a list, an object or nothing
    is left there)."""

    raw: bytes
    fmt: str
    period: bool
    edits: tuple[tuple[int, int], ...] | None = None
    path: tuple | None = None
    container: bool = False


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in children:
        out += _paths(child, (*prefix, key))
    return out


def _is_container(value: Any) -> bool:
    return isinstance(value, list | dict) or (isinstance(value, Raw) and value.text[:1] in "[{")


def _edit(doc: Any, path: tuple, op: str, value: Any) -> tuple[Any, tuple, bool]:
    """``doc`` with the node at ``path`` deleted, replaced, wrapped, unwrapped, emptied, extended (a generated
    value or a copy of its first element) or replaced by ``value`` levels of nested lists; returns the document,
    the path of the changed node and whether a list, an object or nothing is left there."""
    if not path:
        return (value if op != "wrap" else [doc]), path, False
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    key, node = path[-1], parent[path[-1]]
    if op == "delete":
        del parent[key]
        return doc, path, True
    if op == "extend" and isinstance(node, dict):
        node[f"extra_{len(node)}"] = value
        return doc, (*path, f"extra_{len(node) - 1}"), _is_container(value)
    if op == "wrap":
        parent[key] = [node]
    elif op == "unwrap" and isinstance(node, list) and node:
        parent[key] = node[0]
    elif op == "empty":
        parent[key] = {} if isinstance(node, dict) else []
    elif op == "repeat" and isinstance(node, list) and node:
        node.append(copy.deepcopy(node[0]))
    elif op == "extend" and isinstance(node, list):
        node.append(value)
    elif op == "deep":
        parent[key] = Raw("[" * value + "1.0" + "]" * value)
    else:
        parent[key] = value
    return doc, path, _is_container(parent[key])


@st.composite
def damaged_json(draw: st.DrawFn) -> JsonCase:
    """A small UniST document with one kind of damage: its bytes edited or truncated, or one node edited."""
    fmt, period = draw(st.sampled_from(["pairs", "datetime", "halfhour_index"])), draw(st.booleans())
    doc = base_document(fmt, period)
    if draw(st.integers(0, 2)) == 0:  # a third of the cases: byte damage of the valid file
        damaged = draw(damaged_bytes(dumps(doc), JSON_BYTES))
        return JsonCase(damaged.raw, fmt, period, edits=damaged.edits)
    paths = _paths(doc)
    if draw(st.booleans()):  # half of the edits near the top: keys, members, whole arrays
        paths = [p for p in paths if len(p) <= 2]
    path = paths[draw(st.integers(0, len(paths) - 1))]
    op = draw(st.sampled_from(["delete", "replace", "wrap", "unwrap", "empty", "extend", "repeat", "deep"]))
    value = draw(st.sampled_from([3, 200, 20000])) if op == "deep" else draw(JSON_VALUES)
    doc, path, container = _edit(doc, path, op, value)
    return JsonCase(dumps(doc), fmt, period, path=path, container=container)


# -- numpy arrays and files ----------------------------------------------------------------------------------------
ARRAY_DAMAGE = [
    "rank_up", "rank_down", "flatten", "scalar", "shorter", "longer", "empty", "swap",
    "fraction", "whole_float", "complex", "bool", "str", "bytes", "object", "datetime", "timedelta", "float16",
    "nan", "inf", "-inf", "huge", "negative", "big_int", "f32_edge",
]


@st.composite
def damaged_array(draw: st.DrawFn, a: np.ndarray) -> np.ndarray:
    """``a`` with one kind of damage: rank, length, dtype, or one bad value at a random position."""
    kind = draw(st.sampled_from(ARRAY_DAMAGE))
    at = draw(st.integers(0, max(a.size - 1, 0)))
    casts = {"whole_float": np.float64, "complex": np.complex128, "bool": bool, "str": str, "bytes": "S8",
             "object": object, "datetime": "M8[s]", "timedelta": "m8[s]", "float16": np.float16}
    values = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "huge": 1e300, "negative": -1.0, "f32_edge": 3.5e38}
    flat = a.reshape(-1) if a.ndim == 0 else a
    shaped = {
        "rank_up": lambda: a[None],
        "rank_down": lambda: flat[0] if len(flat) else flat,
        "flatten": lambda: a.reshape(-1),
        "scalar": lambda: np.asarray(a.flat[at] if a.size else 1),
        "shorter": lambda: flat[:-1],
        "longer": lambda: np.concatenate([flat, flat[-1:]]),
        "empty": lambda: flat[:0],
        "swap": lambda: a.swapaxes(0, -1) if a.ndim else a,
    }
    if kind in shaped:
        return shaped[kind]()
    if a.dtype.kind not in "iuf":  # damaged before: only its shape changes
        return a
    with np.errstate(invalid="ignore", over="ignore"):  # casts of NaN/Inf or huge values damaged before
        if kind == "fraction":
            return a.astype(np.float64) + 0.5
        if kind in casts:
            as_int = kind in ("datetime", "timedelta")
            return a.astype(np.int64).astype(casts[kind]) if as_int else a.astype(casts[kind])
        out = a.astype(np.int64 if kind == "big_int" else np.float64).copy()
    if out.size:
        out.flat[at] = 2**62 if kind == "big_int" else values[kind]
    return out


STEPS_PER_DAY_VALUES = [
    np.int64(48), np.float64(48.0), np.float64(48.5), np.array("48"), np.array([48, 48]), np.array([[48]]),
    np.bool_(True), np.complex128(48), np.int32(24), np.int64(-1), np.array(48, dtype=object), np.float64(np.nan),
    np.uint64(2**64 - 1), np.array([], dtype=np.int64), np.datetime64(48, "s"),
]


def npz_bytes(arrays: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@st.composite
def damaged_arrays(draw: st.DrawFn, arrays: dict[str, np.ndarray], extra_keys: list[str]) -> dict[str, Any]:
    """``arrays`` with 1-2 edits: a key deleted or added, an array damaged, ``steps_per_day`` of any type."""
    arrays = dict(arrays)
    for _ in range(draw(st.integers(1, 2))):
        op = draw(st.sampled_from(["delete", "add", "damage", "damage", "damage", "steps_per_day"]))
        keys = sorted(arrays)
        if op == "delete" and keys:
            del arrays[draw(st.sampled_from(keys))]
        elif op == "add":
            arrays[draw(st.sampled_from(extra_keys))] = draw(damaged_array(np.arange(6).reshape(2, 3)))
        elif op == "steps_per_day":
            arrays["steps_per_day"] = draw(st.sampled_from(STEPS_PER_DAY_VALUES))
        elif keys:
            key = draw(st.sampled_from(keys))
            arrays[key] = draw(damaged_array(np.asarray(arrays[key])))
    return arrays
