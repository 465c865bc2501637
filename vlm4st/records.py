"""Typed records to and from JSON: one encoder and one checked decoder for every report record of the project.

``to_json`` turns a dataclass tree into plain lists, dicts, numbers and strings. ``from_json`` rebuilds a record
from such data, checking every field against its type hint, so a report file with a missing key, an unknown key
or a value of the wrong kind fails with a ``ReportError`` that names the file and the key path, instead of
surfacing later as a ``KeyError`` deep in an experiment script. Supported field types: ``int``, ``float``,
``str``, ``bool``, ``None``, unions of them, ``list[T]``, ``dict[str, T]`` and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from vlm4st.errors import ReportError

_SCALARS = (int, float, str, bool, type(None))


def to_json(record: Any) -> Any:
    """A dataclass tree (lists, dicts, scalars inside) as plain JSON data; field order is kept."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {f.name: to_json(getattr(record, f.name)) for f in dataclasses.fields(record)}
    if isinstance(record, dict):
        return {str(k): to_json(v) for k, v in record.items()}
    if isinstance(record, list | tuple):
        return [to_json(v) for v in record]
    if isinstance(record, _SCALARS):
        return record
    raise TypeError(f"to_json: {type(record).__name__} is not a record, list, dict or scalar")


def from_json(hint: Any, data: Any, source: str, where: str = "", error: type[ValueError] = ReportError) -> Any:
    """Rebuild a value of type ``hint`` (a dataclass, or a list / dict of them) from JSON data; ``source`` and
    ``where`` name the file and key in errors, which are raised as ``error`` (a ``ReportError`` unless the data
    came from, say, a checkpoint)."""
    try:
        return _decode(hint, data, source, where or (str(hint) if typing.get_origin(hint) else hint.__name__))
    except ReportError as err:
        if error is ReportError:
            raise
        raise error(str(err)) from None


def _decode(hint: Any, value: Any, source: str, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _union(typing.get_args(hint), value, source, where)
    if origin is list:
        if not isinstance(value, list):
            raise _wrong(source, where, "a list", value)
        (item,) = typing.get_args(hint)
        return [_decode(item, v, source, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _wrong(source, where, "an object", value)
        _, item = typing.get_args(hint)
        return {str(k): _decode(item, v, source, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return _record(hint, value, source, where)
    return _scalar(hint, value, source, where)


def _record(cls: Any, value: Any, source: str, where: str) -> Any:
    if not isinstance(value, dict):
        raise _wrong(source, where, f"an object ({cls.__name__})", value)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ReportError(f"{source}: {where} has unknown key(s) {unknown}; expected the keys of {cls.__name__}: "
                          f"{sorted(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name in value:
            kwargs[name] = _decode(hints[name], value[name], source, f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ReportError(f"{source}: {where}.{name} is missing; expected a value for {cls.__name__}.{name}")
    return cls(**kwargs)


def _union(options: tuple[Any, ...], value: Any, source: str, where: str) -> Any:
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is type(None):
            continue
        try:
            return _decode(option, value, source, where)
        except ReportError:
            continue
    names = " | ".join(getattr(o, "__name__", str(o)) for o in options)
    raise _wrong(source, where, names, value)


def _scalar(hint: Any, value: Any, source: str, where: str) -> Any:
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and type(value) is hint:
        return value
    if hint is type(None) and value is None:
        return None
    raise _wrong(source, where, getattr(hint, "__name__", str(hint)), value)


def _wrong(source: str, where: str, expected: str, value: Any) -> ReportError:
    shown = repr(value) if isinstance(value, _SCALARS) else type(value).__name__
    return ReportError(f"{source}: {where} is {shown[:60]}; expected {expected}")
