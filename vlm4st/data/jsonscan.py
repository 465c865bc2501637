"""Structural index of a JSON document held as bytes, for reading large regular numeric arrays fast.

One chunked numpy pass finds every bracket, brace and quote; brackets inside strings are dropped by quote
parity and nesting depths come from a cumulative sum over the brackets alone. From that index a member's value
span is found without touching the bytes in between, so a value nobody asked for (UniST's period arrays) is
never parsed. A regular array of shape (n1..nk) has n1*...*n_{j-1} opening brackets at depth j: the shape comes
from bracket counts per depth and is then verified exactly (bracket sequence, leaves per innermost list, comma
count and placement), so ragged lists raise instead of being reshaped. The syntax of what is read is checked
strictly: the objects walked (keys, colons, commas, scalar members, UTF-8 keys) and every array parsed (JSON
numbers, one comma between values); a value nobody reads is only required to balance its brackets and quotes.

Why hand-written: ``python experiments/bench_data.py`` on a TaxiNYC-size UniST JSON (290 MiB; each split's windows
to float32 (N, 12, 10, 20) and its timestamps to int64, one run each in a fresh process, 2-core CPU) measured
this reader at 1.68 s and 0.61 GiB peak RSS; msgspec with a typed schema that skips the period arrays 2.64 s and
0.97 GiB; pysimdjson through ``as_buffer`` 1.61 s and 1.90 GiB without any check that the arrays are regular;
orjson 15.0 s and 3.74 GiB; ``json.load`` 21.5 s and 3.15 GiB. Only simdjson matches its time, at three times the
memory and without the exact shape checks; every library needs the whole document in memory at once, this reader
a byte index and one array at a time. A second load reads the binary cache (0.30 s).
"""

from __future__ import annotations

import re

import numpy as np

from vlm4st.data.errors import DataFormatError
from vlm4st.data.numparse import parse_numbers

_OPEN_LIST, _CLOSE_LIST, _OPEN_OBJ, _CLOSE_OBJ, _QUOTE, _BACKSLASH = 1, 2, 3, 4, 5, 6
_STRUCT = np.zeros(256, dtype=np.uint8)
for _ch, _code in zip(b'[]{}"\\', range(1, 7)):
    _STRUCT[_ch] = _code
_WHITESPACE = b" \t\r\n"
_CHUNK = 1 << 22
_SCALAR = re.compile(rb"(-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?|true|false|null)(?![^ \t\r\n,\]}])")
_MAX_SCALAR = 400


def _byte_set(chars: bytes) -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    table[list(chars)] = True
    return table


_IS_WHITESPACE = _byte_set(_WHITESPACE)
_STRING_END, _STRING_START = _byte_set(b'"]'), _byte_set(b'"[')  # what may stand before / after a comma


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
        if bytes(buf[: self.pos[0]]).strip(_WHITESPACE):
            raise DataFormatError(source, "malformed JSON: content before the top-level object")
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
        """Keys of the object opened at token ``k`` -> token index of their list/object value (None: scalar).

        The object's own syntax is checked (keys, colons, commas, scalar values); list and object values are
        located but not parsed."""
        if self.is_list[k] or not self.opens[k]:
            raise DataFormatError(self.source, f"expected a JSON object at byte {self.pos[k]}")
        end = int(self.pos[self._close(k)])
        i = self._skip_whitespace(int(self.pos[k]) + 1)
        out: dict[str, int | None] = {}
        if i == end:
            return out
        while True:
            key, i = self._string(i, "an object key")
            i = self._skip_whitespace(i)
            self._expect(i, b":", "after an object key")
            out[key], i = self._value(self._skip_whitespace(i + 1))
            i = self._skip_whitespace(i)
            if i == end:
                return out
            self._expect(i, b",", "between object members")
            i = self._skip_whitespace(i + 1)

    def children(self, k: int, what: str) -> list[int]:
        """Token indices of the values of the list opened at token ``k``, which must all be lists or objects."""
        close = self._close(k)
        inside = np.flatnonzero(self.opens[k + 1 : close] & (self.depth[k + 1 : close] == self.depth[k] + 1))
        out = [int(i) + k + 1 for i in inside]
        ends = [int(self.pos[k])] + [int(self.pos[self._close(j)]) for j in out]
        starts = [int(self.pos[j]) for j in out] + [int(self.pos[close])]
        for n, (a, b) in enumerate(zip(ends, starts)):
            gap = bytes(self.buf[a + 1 : b]).strip(_WHITESPACE)
            if gap != (b"," if 0 < n < len(out) else b""):
                raise DataFormatError(
                    self.source, f"{what}: expected a list of lists, found {gap[:20]!r} near byte {a + 1}"
                )
        return out

    # -- the syntax of objects ----------------------------------------------------------------------------------
    def _skip_whitespace(self, i: int) -> int:
        while i < len(self.buf):
            block = bytes(self.buf[i : i + 256])
            rest = block.lstrip(_WHITESPACE)
            if rest:
                return i + len(block) - len(rest)
            i += len(block)
        return i

    def _expect(self, i: int, char: bytes, where: str) -> None:
        found = bytes(self.buf[i : i + 20])
        if not found.startswith(char):
            raise DataFormatError(
                self.source, f"malformed JSON: expected {char.decode()!r} {where} at byte {i}, found {found!r}"
            )

    def _string(self, i: int, what: str) -> tuple[str, int]:
        """The string whose opening quote is at byte ``i`` (strict UTF-8, no control characters) and the byte
        after its closing quote."""
        q = int(np.searchsorted(self.str_start, i))
        if q == len(self.str_start) or self.str_start[q] != i:
            raise DataFormatError(
                self.source, f"malformed JSON: expected {what} at byte {i}, found {bytes(self.buf[i : i + 20])!r}"
            )
        chars = self.buf[i + 1 : self.str_end[q]]
        try:
            text = bytes(chars).decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataFormatError(self.source, f"malformed JSON: {what} at byte {i} is not UTF-8 ({err})") from err
        if (chars < 0x20).any():
            raise DataFormatError(self.source, f"malformed JSON: a control character in {what} at byte {i}")
        return text, int(self.str_end[q]) + 1

    def _value(self, i: int) -> tuple[int | None, int]:
        """A member value at byte ``i``: (token index of a list/object or None for a scalar, byte after it)."""
        first = int(self.buf[i]) if i < len(self.buf) else -1
        if first in b"[{":
            j = int(np.searchsorted(self.pos, i))
            return j, int(self.pos[self._close(j)]) + 1
        if first == ord('"'):
            return None, self._string(i, "a string value")[1]
        token = _SCALAR.match(bytes(self.buf[i : i + _MAX_SCALAR]))
        if token is None:
            found = bytes(self.buf[i : i + 20])
            raise DataFormatError(self.source, f"malformed JSON: expected a value at byte {i}, found {found!r}")
        return None, i + token.end()

    def nesting(self, k: int) -> int:
        """How many list levels the value at token ``k`` has (``[[1, 2]]`` -> 2)."""
        close = self._close(k)
        return int(self.depth[k : close + 1].max() - self.depth[k] + 1)

    # -- regular arrays ----------------------------------------------------------------------------------------
    def numbers(self, k: int, rank: int, what: str, dtype: type = np.float64) -> np.ndarray:
        """The regular numeric array of ``rank`` dimensions at token ``k`` (e.g. shape (N, T, H, W))."""
        lead, inner_open, inner_close, (lo, hi), brackets, opens = self._layout(k, rank, what)
        if np.searchsorted(self.str_start, lo) != np.searchsorted(self.str_start, hi):
            raise DataFormatError(self.source, f"{what}: expected numbers, found strings")
        self._check_bracket_commas(brackets, opens, what)
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
        lead, inner_open, inner_close, (lo, hi), _, _ = self._layout(k, rank, what)
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
        in_string = self._check_only_strings(lo, hi, starts, ends, what)
        commas = self._string_commas(lo, hi, in_string, what)
        if commas != _separating_commas((*lead, last)):
            raise DataFormatError(self.source, f"{what}: malformed list separators")
        return chars.reshape(*lead, last, int(lengths[0]))

    def _layout(
        self, k: int, rank: int, what: str
    ) -> tuple[tuple[int, ...], np.ndarray, np.ndarray, tuple[int, int], np.ndarray, np.ndarray]:
        """Leading shape (n1..n_{rank-1}) of a regular list nest, its innermost lists, its byte span, and the
        positions of all its brackets with whether each opens a list."""
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
        return tuple(shape), pos[inner], pos[inner + 1], (int(pos[0]), int(pos[-1]) + 1), pos, opens

    def _nearest(self, at: np.ndarray, step: int) -> np.ndarray:
        """The positions of the first byte that is not whitespace from each of ``at`` on, walking by ``step``."""
        at = at.copy()
        pending = np.arange(len(at))
        while len(pending := pending[_IS_WHITESPACE[self.buf[at[pending]]]]):
            at[pending] += step
        return at

    def _check_bracket_commas(self, brackets: np.ndarray, opens: np.ndarray, what: str) -> None:
        """A comma before every '[' but the first and none after a '[' or before a ']' (whitespace aside). With
        one comma between consecutive numbers (``parse_numbers``) and the comma count of a regular nest, every
        comma then stands between two values."""
        before = self.buf[self._nearest(brackets[1:] - 1, -1)]
        after_open = self.buf[self._nearest(brackets[opens] + 1, 1)]
        bad = np.zeros(len(brackets), dtype=bool)
        bad[1:] = np.where(opens[1:], (before != ord(",")) & (before != ord("[")), before == ord(","))
        bad[np.flatnonzero(opens)[after_open == ord(",")]] = True
        if bad.any():
            at = int(brackets[np.argmax(bad)])
            found = bytes(self.buf[max(at - 10, 0) : at + 10])
            raise DataFormatError(self.source, f"{what}: misplaced or missing comma near byte {at} ({found!r})")

    def _string_commas(self, lo: int, hi: int, in_string: np.ndarray, what: str) -> int:
        """How many commas bytes [lo, hi) hold outside strings; each must stand between a string or ']' and a
        string or '[' (whitespace aside)."""
        commas = np.flatnonzero((self.buf[lo:hi] == ord(",")) & ~in_string) + lo
        before = self.buf[self._nearest(commas - 1, -1)]
        after = self.buf[self._nearest(commas + 1, 1)]
        ok = _STRING_END[before] & _STRING_START[after]
        if not ok.all():
            c = int(commas[np.argmin(ok)])
            found = bytes(self.buf[max(c - 10, lo) : c + 10])
            raise DataFormatError(self.source, f"{what}: misplaced comma at byte {c} ({found!r})")
        return len(commas)

    def _check_only_strings(
        self, lo: int, hi: int, starts: np.ndarray, ends: np.ndarray, what: str
    ) -> np.ndarray:
        """Raise unless bytes [lo, hi) hold only strings, brackets, commas and whitespace; returns the mask of the
        bytes inside strings (quotes included)."""
        mark = np.zeros(hi - lo + 1, dtype=np.int32)
        np.add.at(mark, starts - lo, 1)
        np.add.at(mark, ends - lo + 1, -1)
        in_string = np.cumsum(mark[:-1]) > 0
        rest = self.buf[lo:hi][~in_string]
        allowed = np.zeros(256, dtype=bool)
        allowed[list(b" \t\r\n,[]")] = True
        if not allowed[rest].all():
            raise DataFormatError(self.source, f"{what}: expected only strings, found other values")
        return in_string


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
