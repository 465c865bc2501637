"""Vectorised parser for the number tokens of a JSON array held as bytes.

``json.load`` builds a Python float per value, which costs ~200 ns and ~32 bytes each. Here the tokens of a
byte span are found with numpy (character masks + edge detection) and parsed column by column: lane k of every
token is processed at once with Horner's rule, so the Python loop runs over the token *width*, not the token
count. A value whose mantissa has at most 15 significant digits and whose decimal exponent is at most 22 in
magnitude is computed as one correctly rounded operation on exact operands (``m / 10**k`` or ``m * 10**k``),
which is bit-identical to ``float(token)``; any other token (more digits, a larger exponent, an exponent
written with more than four digits such as ``1e00001``) goes through ``float`` itself. Tokens must follow the
JSON number grammar (no ``01``, ``.5``, ``5.``, ``+1``) and be separated by exactly one comma each.
"""

from __future__ import annotations

import numpy as np

from vlm4st.data.errors import DataFormatError, DataValueError

_SEPARATORS = frozenset(b" ,[]\n\r\t")
_POW10 = 10.0 ** np.arange(23)  # exact doubles 1e0 .. 1e22
_MAX_EXACT_DIGITS = 15
_CHUNK = 1 << 22
_MAX_TOKEN = 1000


def parse_numbers(span: np.ndarray, out: np.ndarray, marks: np.ndarray, source: str, what: str) -> np.ndarray:
    """Parse the numbers in ``span`` (uint8 bytes of a JSON array) into ``out`` (preallocated, exact size).

    ``marks`` are sorted byte offsets into ``span``; the result holds, for each mark, how many numbers start
    before it (callers count the leaves of every innermost list this way without keeping token offsets).
    Consecutive numbers must be separated by exactly one comma (brackets aside: ``1], [2``). Raises
    ``DataValueError`` for NaN/Infinity and for values beyond the range of ``out``'s dtype, ``DataFormatError``
    for anything that is not a JSON number, a missing or doubled comma, or a count that differs from ``len(out)``.
    """
    size = len(span)
    limit = _overflow_limit(out.dtype)
    scratch = _Scratch(min(size, _CHUNK) + _MAX_TOKEN)  # reused by every chunk: no page faults after the first
    before = np.empty(len(marks), dtype=np.int64)
    done = 0  # numbers parsed so far
    begin = 0
    commas_after = None  # commas since the last number so far (None before the first)
    while begin < size:
        end = min(begin + _CHUNK, size)
        while end < size and span[end] not in _SEPARATORS:  # never cut a token
            end += 1
            if end - begin > _CHUNK + _MAX_TOKEN:
                raise DataFormatError(source, f"{what}: a token longer than {_MAX_TOKEN} characters")
        values, starts, ends = _parse_chunk(span[begin:end], begin, source, what, scratch)
        lead, tail, wrong = _commas_between(span[begin:end], starts, ends, scratch)
        if wrong >= 0 or (len(starts) and commas_after not in (None, 1 - lead)):
            at = begin + (ends[wrong] if wrong >= 0 else starts[0])
            raise DataFormatError(source, f"{what}: expected one comma between two numbers near byte {at}")
        if len(starts):
            commas_after = tail
        elif commas_after is not None:
            commas_after += lead
        if limit is not None and len(values) and np.abs(values).max() >= limit:
            i = int(np.argmax(np.abs(values) >= limit))
            raise DataValueError(
                source, f"{what}: {values[i]:g} near byte {begin + starts[i]} is out of the {out.dtype} range"
            )
        if done + len(values) > len(out):
            raise DataFormatError(source, f"{what}: more numbers than the nested lists can hold (ragged)")
        out[done : done + len(values)] = values
        m0, m1 = np.searchsorted(marks, [begin, end])
        before[m0:m1] = done + np.searchsorted(starts, marks[m0:m1] - begin)
        done += len(values)
        begin = end
    before[np.searchsorted(marks, size) :] = done
    if done != len(out):
        raise DataFormatError(source, f"{what}: {done} numbers where the nested lists imply {len(out)} (ragged)")
    return before


def _overflow_limit(dtype: np.dtype) -> float | None:
    """The smallest magnitude that rounds to infinity in a float dtype narrower than float64 (max + half an ulp)."""
    if dtype == np.float64:
        return None
    info = np.finfo(dtype)
    return float(info.max) + 2.0 ** (info.maxexp - info.nmant - 2)


class _Scratch:
    """Work arrays shared by all chunks of one parse (fresh large allocations are slow: page faults)."""

    def __init__(self, n_bytes: int) -> None:
        n_tok = n_bytes // 2 + 1
        self.u8b = np.empty(n_bytes, dtype=np.uint8)
        self.m1, self.m2, self.m3 = (np.empty(n_bytes, dtype=bool) for _ in range(3))
        self.edges = np.empty(n_bytes + 1, dtype=np.int8)
        self.commas = np.empty(n_bytes + 1, dtype=np.int32)
        self.padded = np.empty(n_bytes + _MAX_TOKEN + 1, dtype=np.uint8)
        self.i64 = [np.empty(n_tok, dtype=np.int64) for _ in range(3)]
        self.u8 = [np.empty(n_tok, dtype=np.uint8) for _ in range(2)]
        self.i16 = [np.empty(n_tok, dtype=np.int16) for _ in range(3)]
        self.b = [np.empty(n_tok, dtype=bool) for _ in range(6)]


def _classify(chunk: np.ndarray, scratch: _Scratch) -> tuple[np.ndarray, bool, int]:
    """Number-character mask of ``chunk`` (bool), whether it holds exponent/plus characters, and the offset of
    the first character that is neither part of a number nor a separator (-1 if none).

    Compare chains on uint8 vectorise well; a 256-entry table lookup would first widen every byte to intp.
    """
    n = len(chunk)
    isnum, sep, tmp = scratch.m1[:n], scratch.m2[:n], scratch.m3[:n]
    low = np.subtract(chunk, 48, out=scratch.u8b[:n])
    np.less(low, 10, out=isnum)  # digits
    for ch in b".-":
        isnum |= np.equal(chunk, ch, out=tmp)
    folded = np.bitwise_or(chunk, 0x20, out=scratch.u8b[:n])  # 'E' -> 'e'
    exp = np.equal(folded, ord("e"), out=sep)
    exp |= np.equal(chunk, ord("+"), out=tmp)
    has_exp = bool(exp.any())
    if has_exp:
        isnum |= exp
    np.copyto(sep, isnum)
    for ch in b" ,[]\n\r\t":
        sep |= np.equal(chunk, ch, out=tmp)
    bad = -1 if sep.all() else int(np.flatnonzero(~sep)[0])
    return isnum, has_exp, bad


def _commas_between(chunk: np.ndarray, starts: np.ndarray, ends: np.ndarray, scratch: _Scratch) -> tuple[int, int, int]:
    """Commas in ``chunk`` before its first number and after its last (all of them, twice, when it holds no
    number), and the first pair of consecutive numbers not separated by exactly one comma (-1 if none)."""
    n = len(chunk)
    counts = scratch.commas[: n + 1]  # counts[p]: commas in chunk[:p]
    counts[0] = 0
    np.cumsum(np.equal(chunk, ord(","), out=scratch.m3[:n]), dtype=np.int32, out=counts[1:])
    if len(starts) == 0:
        return int(counts[n]), int(counts[n]), -1
    wrong = np.flatnonzero(counts[starts[1:]] - counts[ends[:-1]] != 1)
    return int(counts[starts[0]]), int(counts[n] - counts[ends[-1]]), int(wrong[0]) if len(wrong) else -1


def _parse_chunk(
    chunk: np.ndarray, offset: int, source: str, what: str, scratch: _Scratch
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values, start and end offsets of the number tokens of one chunk."""
    n_bytes = len(chunk)
    isnum, has_exp, pos = _classify(chunk, scratch)
    if pos >= 0:
        word = bytes(chunk[pos : pos + 12]).decode("ascii", "replace")
        if word[:1] in "NIn":
            raise DataValueError(source, f"{what}: non-finite value near byte {offset + pos} ({word!r}...)")
        raise DataFormatError(source, f"{what}: unexpected character near byte {offset + pos}: {word!r}")
    edges = scratch.edges[: n_bytes + 1]  # +1 where a token starts, -1 one past where it ends
    num8 = isnum.view(np.int8)
    edges[0] = num8[0]
    np.subtract(num8[1:], num8[:-1], out=edges[1:n_bytes])
    edges[n_bytes] = -num8[-1]
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    lens = ends - starts
    if len(starts) == 0:
        return np.empty(0), starts, ends
    width = int(lens.max())
    if width > _MAX_TOKEN:
        raise DataFormatError(source, f"{what}: a token of {width} characters near byte {offset + starts[0]}")
    padded = scratch.padded[: n_bytes + width + 1]  # lanes past a token (and one more byte) read zeros
    padded[:n_bytes] = chunk
    padded[n_bytes:] = 0
    values, bad, exact = _horner(padded, starts, lens.astype(np.int16), width, has_exp, scratch)
    bad |= _bad_digits(padded, starts)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        token = bytes(chunk[starts[i] : starts[i] + lens[i]]).decode("ascii", "replace")
        raise DataFormatError(source, f"{what}: {token!r} near byte {offset + starts[i]} is not a JSON number")
    for i in np.flatnonzero(~exact):  # rare: > 15 significant digits or a large exponent
        values[i] = float(bytes(chunk[starts[i] : starts[i] + lens[i]]))
    if not np.isfinite(values).all():
        raise DataValueError(source, f"{what}: non-finite value (a number overflows float64)")
    return values, starts, ends


def _bad_digits(padded: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Tokens whose mantissa breaks the JSON grammar where ``_horner`` does not look: one that does not start
    with a digit (after an optional '-': ``.5``, ``-.5``), or a leading zero followed by a digit (``01``)."""
    first = starts + (padded[starts] == ord("-"))  # first character of the integer part
    c0 = padded[first]
    bad = (c0 - np.uint8(48)) >= 10  # not a digit (uint8 arithmetic wraps below '0')
    bad |= (c0 == ord("0")) & ((padded[first + 1] - np.uint8(48)) < 10)
    return bad


def _horner(
    padded: np.ndarray, starts: np.ndarray, lens: np.ndarray, width: int, has_exp: bool, scratch: _Scratch
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lane-by-lane Horner evaluation of all tokens; returns (values, malformed mask, exactly-parsed mask).

    Lane k holds byte k of every token; each step is a handful of in-place vector operations on the
    preallocated scratch arrays.
    """
    n = len(starts)
    idx, mant, mul = (a[:n] for a in scratch.i64)  # (n,) int64 each
    ck, dk = (a[:n] for a in scratch.u8)
    n_dig, frac, exp_val = (a[:n] for a in scratch.i16)
    valid, isd, isdot, tmp, seen_dot, bad = (a[:n] for a in scratch.b)
    for a in (mant, n_dig, frac, exp_val, seen_dot, bad):
        a.fill(0)
    neg = padded[starts] == ord("-")
    if has_exp:
        seen_e, prev_e, exp_neg = (np.zeros(n, dtype=bool) for _ in range(3))
        exp_dig = np.zeros(n, dtype=np.int16)
    for k in range(width):
        np.add(starts, k, out=idx)
        np.take(padded, idx, out=ck)  # byte k of every token
        np.greater(lens, k, out=valid)
        np.subtract(ck, 48, out=dk)
        np.less(dk, 10, out=isd)
        isd &= valid
        np.equal(ck, ord("."), out=isdot)
        isdot &= valid
        if has_exp:
            sign = ((ck == ord("-")) | (ck == ord("+"))) & valid
            ise = ((ck == ord("e")) | (ck == ord("E"))) & valid
            bad |= ise & (seen_e | (n_dig == 0))
            bad |= isdot & seen_e
            bad |= sign & ~prev_e & ((k > 0) | (ck == ord("+")))
            exp_neg |= prev_e & (ck == ord("-"))
            e_digit = isd & seen_e
            isd &= ~seen_e
            exp_val[:] = np.where(e_digit & (exp_dig < 4), exp_val * 10 + dk, exp_val)
            exp_dig += e_digit
            seen_e |= ise
            prev_e = ise
        elif k > 0:
            np.equal(ck, ord("-"), out=tmp)
            tmp &= valid
            bad |= tmp
        else:
            bad |= ck == ord("+")
        np.multiply(isd, 9, out=mul)  # 10 on a digit, 1 elsewhere
        mul += 1
        mant *= mul
        np.multiply(dk, isd, out=dk)
        mant += dk
        n_dig += isd
        np.logical_and(isd, seen_dot, out=tmp)
        frac += tmp
        np.logical_and(isdot, seen_dot, out=tmp)
        bad |= tmp
        seen_dot |= isdot
    bad |= n_dig == 0
    bad |= seen_dot & (frac == 0)  # no digit after the decimal point: ``5.``, ``1.e5``
    power = -frac.astype(np.int64)
    if has_exp:
        bad |= seen_e & (exp_dig == 0)
        power += np.where(exp_neg, -exp_val, exp_val)
    exact = (n_dig <= _MAX_EXACT_DIGITS) & (np.abs(power) <= 22)
    if has_exp:
        exact &= exp_dig <= 4  # a longer exponent (``1e00001``) was not accumulated: ``float`` reads it
    p = np.where(exact, power, 0)
    m = mant.astype(np.float64)  # exact: < 10**15 < 2**53 wherever ``exact``
    values = np.where(p >= 0, m * _POW10[np.maximum(p, 0)], m / _POW10[np.maximum(-p, 0)])
    np.negative(values, out=values, where=neg)
    return values, bad.copy(), exact
