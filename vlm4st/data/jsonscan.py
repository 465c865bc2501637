"""Structural index of a JSON document held as bytes, for reading large regular numeric arrays fast.

One chunked numpy pass finds every bracket, brace and quote; brackets inside strings are dropped by quote
parity and nesting depths come from a cumulative sum over the brackets alone. From that index a member's value
span is found without touching the bytes in between, so a value nobody asked for (UniST's period arrays) is
never parsed. A regular array of shape (n1..nk) has n1*...*n_{j-1} opening brackets at depth j: the shape comes
from bracket counts per depth and is then verified exactly (bracket sequence, leaves per innermost list, comma
count), so ragged lists raise instead of being reshaped.
"""

from __future__ import annotations

import numpy as np

from vlm4st.data.errors import DataFormatError
from vlm4st.data.numparse import parse_numbers

_OPEN_LIST, _CLOSE_LIST, _OPEN_OBJ, _CLOSE_OBJ, _QUOTE, _BACKSLASH = 1, 2, 3, 4, 5, 6
_STRUCT = np.zeros(256, dtype=np.uint8)
for _ch, _code in zip(b'[]{}"\\', range(1, 7)):
    _STRUCT[_ch] = _code
_WHITESPACE = b" \t\r\n"
_CHUNK = 1 << 22


class JsonIndex:
    """Bracket/brace positions and depths of one JSON document (``buf``: its bytes as uint8).

    Token indices used by the methods refer to the structural tokens outside strings, in file order.
    """

    def __init__(self, buf: np.ndarray, source: str) -> None:
        self.buf, self.source = buf, source
        pos, code = _structural_tokens(buf)
        if (code == _BACKSLASH).any():
            raise DataFormatError(source, "escaped characters in JSON strings are not supported by this reader")
        is_quote = code == _QUOTE
        quotes = pos[is_quote]
        if len(quotes) % 2:
            raise DataFormatError(source, "malformed JSON: unterminated string")
        in_string = np.bitwise_xor.accumulate(is_quote.view(np.uint8))  # odd number of quotes so far
        outside = ~is_quote & (in_string == 0)
        self.pos, code = pos[outside], code[outside]  # (K,) byte offsets and codes of the brackets
        self.opens = (code == _OPEN_LIST) | (code == _OPEN_OBJ)
        self.is_list = (code == _OPEN_LIST) | (code == _CLOSE_LIST)
        step = self.opens.view(np.int8) * np.int8(2) - np.int8(1)  # +1 open, -1 close
        self.depth = np.cumsum(step, dtype=np.int32)  # depth after each token
        self.str_start, self.str_end = quotes[0::2], quotes[1::2]  # byte offsets of the two quotes
        if len(self.pos) == 0 or code[0] != _OPEN_OBJ or self.depth.min() < 0 or self.depth[-1] != 0:
            raise DataFormatError(source, "malformed JSON: expected one top-level object with balanced brackets")
        tail = bytes(buf[self.pos[-1] + 1 :]).strip()
        if code[-1] != _CLOSE_OBJ or tail or self._close(0) != len(self.pos) - 1:
            raise DataFormatError(source, "malformed JSON: content after the top-level object")

    # -- navigation ------------------------------------------------------------------------------------------
    def _close(self, k: int) -> int:
        """Index of the token that closes the list/object opened at token ``k``."""
        after = self.depth[k + 1 :] < self.depth[k]
        j = k + 1 + int(after.argmax())
        if not after[j - k - 1] or self.is_list[j] != self.is_list[k]:
            raise DataFormatError(self.source, f"malformed JSON: bracket at byte {self.pos[k]} is not closed")
        return j

    def members(self, k: int = 0) -> dict[str, int | None]:
        """Keys of the object opened at token ``k`` -> token index of their list/object value (None: scalar)."""
        if self.is_list[k] or not self.opens[k]:
            raise DataFormatError(self.source, f"expected a JSON object at byte {self.pos[k]}")
        close = self._close(k)
        lo, hi = np.searchsorted(self.str_start, [self.pos[k], self.pos[close]])
        starts, ends = self.str_start[lo:hi], self.str_end[lo:hi]
        tok_before = np.searchsorted(self.pos, starts) - 1
        at_level = self.depth[tok_before] == self.depth[k]  # strings directly inside this object
        out: dict[str, int | None] = {}
        for s, e in zip(starts[at_level], ends[at_level]):
            j = int(np.searchsorted(self.pos, e))  # first bracket after the string
            stop = self.pos[j] if j <= close else len(self.buf)
            gap = bytes(self.buf[e + 1 : min(stop, e + 64)]).lstrip(_WHITESPACE)
            if not gap.startswith(b":"):
                continue  # a string value, not a key
            key = bytes(self.buf[s + 1 : e]).decode("utf-8", "replace")
            is_container = j < close and self.opens[j] and gap[1:].strip(_WHITESPACE) == b""
            out[key] = j if is_container else None
        return out

    def children(self, k: int) -> list[int]:
        """Token indices of the lists/objects directly inside the list opened at token ``k``."""
        close = self._close(k)
        inside = np.flatnonzero(self.opens[k + 1 : close] & (self.depth[k + 1 : close] == self.depth[k] + 1))
        return [int(i) + k + 1 for i in inside]

    def nesting(self, k: int) -> int:
        """How many list levels the value at token ``k`` has (``[[1, 2]]`` -> 2)."""
        close = self._close(k)
        return int(self.depth[k : close + 1].max() - self.depth[k] + 1)

    # -- regular arrays ----------------------------------------------------------------------------------------
    def numbers(self, k: int, rank: int, what: str, dtype: type = np.float64) -> np.ndarray:
        """The regular numeric array of ``rank`` dimensions at token ``k`` (e.g. shape (N, T, H, W))."""
        lead, inner_open, inner_close, (lo, hi) = self._layout(k, rank, what)
        if np.searchsorted(self.str_start, lo) != np.searchsorted(self.str_start, hi):
            raise DataFormatError(self.source, f"{what}: expected numbers, found strings")
        n_lists = len(inner_open)
        leaf_commas = int(np.count_nonzero(self.buf[lo:hi] == ord(","))) - _separating_commas(lead)
        if leaf_commas < 0 or leaf_commas % n_lists:
            raise DataFormatError(self.source, f"{what}: ragged innermost lists (comma count)")
        last = leaf_commas // n_lists + 1
        out = np.empty(n_lists * last, dtype=dtype)
        marks = np.stack([inner_open, inner_close], axis=1).ravel() - lo  # (2 * n_lists,) sorted
        before = parse_numbers(self.buf[lo:hi], out, marks, self.source, what)
        if (before[1::2] - before[0::2] != last).any():
            raise DataFormatError(self.source, f"{what}: ragged innermost lists (expected {last} numbers each)")
        return out.reshape(*lead, last)

    def strings(self, k: int, rank: int, what: str) -> np.ndarray:
        """The regular array of equal-length strings at token ``k``: (*shape, length) uint8 characters."""
        lead, inner_open, inner_close, (lo, hi) = self._layout(k, rank, what)
        a, b = np.searchsorted(self.str_start, [lo, hi])
        starts, ends = self.str_start[a:b], self.str_end[a:b]
        per_list = np.searchsorted(starts, inner_close) - np.searchsorted(starts, inner_open)
        last = int(per_list[0]) if len(per_list) else 0
        if last == 0 or (per_list != last).any():
            raise DataFormatError(self.source, f"{what}: ragged or empty innermost lists")
        lengths = ends - starts - 1
        if len(lengths) == 0 or (lengths != lengths[0]).any():
            raise DataFormatError(self.source, f"{what}: expected strings of one length (e.g. YYYY-mm-dd HH:MM:SS)")
        chars = self.buf[starts[:, None] + 1 + np.arange(lengths[0])]  # (M, length)
        self._check_only_strings(lo, hi, starts, ends, what)
        commas = int(np.count_nonzero(self.buf[lo:hi] == ord(",")))
        if commas != _separating_commas((*lead, last)):
            raise DataFormatError(self.source, f"{what}: malformed list separators")
        return chars.reshape(*lead, last, int(lengths[0]))

    def _layout(self, k: int, rank: int, what: str) -> tuple[tuple[int, ...], np.ndarray, np.ndarray, tuple]:
        """Leading shape (n1..n_{rank-1}) of a regular list nest, its innermost lists and its byte span."""
        if not self.is_list[k] or not self.opens[k]:
            raise DataFormatError(self.source, f"{what}: expected a nested list, found an object")
        close = self._close(k)
        toks = slice(k, close + 1)
        if not self.is_list[toks].all():
            raise DataFormatError(self.source, f"{what}: expected nested lists, found an object inside")
        rel = self.depth[toks] - self.depth[k] + 1  # 1 after the outer '['
        opens = self.opens[toks]
        levels = int(rel[opens].max())
        if levels != rank:
            raise DataFormatError(self.source, f"{what}: expected a {rank}-D nested list, found {levels} levels")
        counts = np.bincount(rel[opens], minlength=levels + 1)[1:]  # opening brackets per depth
        shape = [int(counts[j + 1] // counts[j]) for j in range(levels - 1)]
        expected = np.array([1, -1], dtype=np.int8)  # an innermost list: '[' ... ']'
        for n in reversed(shape):
            expected = np.concatenate(([1], np.tile(expected, n), [-1])).astype(np.int8)
        actual = np.where(opens, 1, -1).astype(np.int8)
        if len(actual) != len(expected) or not np.array_equal(actual, expected):
            raise DataFormatError(self.source, f"{what}: ragged nested lists (sub-lists of different lengths)")
        inner = np.flatnonzero(opens & (rel == levels))
        pos = self.pos[toks]
        return tuple(shape), pos[inner], pos[inner + 1], (int(pos[0]), int(pos[-1]) + 1)

    def _check_only_strings(self, lo: int, hi: int, starts: np.ndarray, ends: np.ndarray, what: str) -> None:
        mark = np.zeros(hi - lo + 1, dtype=np.int32)
        np.add.at(mark, starts - lo, 1)
        np.add.at(mark, ends - lo + 1, -1)
        in_string = np.cumsum(mark[:-1]) > 0
        rest = self.buf[lo:hi][~in_string]
        allowed = np.zeros(256, dtype=bool)
        allowed[list(b" \t\r\n,[]")] = True
        if not allowed[rest].all():
            raise DataFormatError(self.source, f"{what}: expected only strings, found other values")


def _separating_commas(shape: tuple[int, ...] | list[int]) -> int:
    """Commas between the elements of every list of a regular nest of lists with this shape."""
    lists = np.cumprod((1, *shape[:-1]))  # number of lists at each depth
    return int((lists * (np.asarray(shape) - 1)).sum()) if len(shape) else 0


def _structural_tokens(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (int64) and codes (uint8) of every bracket, brace, quote and backslash in ``buf``.

    ``byte & 0xD9 == 0x59`` holds for ``[ ] { }`` and only four other characters (``Y _ y`` and DEL, which
    occur in strings at most), so one mask, two compares and a table lookup on the few hits replace a
    per-byte table lookup.
    """
    positions: list[np.ndarray] = []
    n = min(len(buf), _CHUNK)
    masked, hit, other = np.empty(n, dtype=np.uint8), np.empty(n, dtype=bool), np.empty(n, dtype=bool)
    for begin in range(0, len(buf), _CHUNK):
        c = buf[begin : begin + _CHUNK]
        m, h, o = masked[: len(c)], hit[: len(c)], other[: len(c)]
        np.bitwise_and(c, 0xD9, out=m)
        np.equal(m, 0x59, out=h)
        np.equal(c, ord('"'), out=o)
        h |= o
        np.equal(c, ord("\\"), out=o)
        h |= o
        positions.append(np.flatnonzero(h) + begin)
    pos = np.concatenate(positions) if positions else np.empty(0, dtype=np.int64)
    code = _STRUCT[buf[pos]]
    keep = code > 0
    return pos[keep], code[keep]
