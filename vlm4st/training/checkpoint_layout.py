"""What a checkpoint file must hold, checked key by key when it is read, before any part of it is used.

A checkpoint travels between people, so its content is input like a data file: a missing key, an extra key or a
value of the wrong type ends in one ``CheckpointError`` that names the file and the key, instead of a ``KeyError``
or ``TypeError`` somewhere in the task that uses it. Parts whose inside belongs to a library (the optimiser and
schedule states) or to the data layer (a dataset's fingerprint and window layout, compared with the rebuilt data
by ``DataModule.verify_state_dict``) are checked here for their outer shape only; the stored config is checked
for the keys the tasks read, and every ``_target_`` in it against the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vlm4st.errors import CheckpointError

__all__ = ["CHECKPOINT", "check_layout"]


@dataclass(frozen=True)
class Record:
    """A dict with exactly the keys of ``fields``; with a field ``"*"``, other keys too, each matching its spec."""

    fields: dict[str, Any]


@dataclass(frozen=True)
class ListOf:
    item: Any


@dataclass(frozen=True)
class DictOf:
    """A dict whose keys are ``key`` instances and whose values all match ``value``."""

    key: type
    value: Any


@dataclass(frozen=True)
class Nullable:
    inner: Any


#: A number that is not a bool (``True`` is an int in Python).
NUMBER = (int, float)
#: Anything (checked by the library that loads it).
ANY = object
#: A JSON-like tree: dicts with string keys, lists, and str / int / float / bool / None leaves; no string holds an
#: OmegaConf interpolation (a checkpoint stores its config resolved, so ``${...}`` can only be foreign).
PLAIN = "plain"
_LEAVES = (str, int, float, bool, type(None))

_METRICS = DictOf(str, Record({"mae": NUMBER, "rmse": NUMBER}))
_HISTORY_RECORD = Record({"epoch": int, "step": int, "train_seconds": NUMBER, "train_loss": NUMBER,
                          "val_loss": NUMBER, "val": _METRICS})
_DATASET = Record({
    "name": str,
    "task_id": int,
    "role": str,
    "fingerprint": DictOf(str, str),
    "scaler": Record({"minimum": ListOf(NUMBER), "maximum": ListOf(NUMBER), "per_channel": bool}),
    "scaler_fit": str,
    "native_hw": ListOf(int),
    "model_hw": ListOf(int),
    "channels": int,
    "interval_minutes": int,
    "layout": DictOf(str, PLAIN),
})

CHECKPOINT = Record({
    "config": Record({"model": DictOf(str, PLAIN), "dataset": DictOf(str, PLAIN),
                      "shot_ratio": DictOf(str, PLAIN), "trainer": DictOf(str, PLAIN), "seed": int,
                      "*": PLAIN}),
    "data": Record({"mode": str, "target": Nullable(str), "t_in": int, "t_out": int, "datasets": ListOf(_DATASET)}),
    "adapter": Record({"type": str, "*": PLAIN}),
    "stage": str,
    "stage_train": ListOf(str),
    "model": Record({"weights": DictOf(str, torch.Tensor), "trainable_only": bool,
                     "frozen_fingerprint": Nullable(NUMBER)}),
    "optimizer": Record({"state": DictOf(int, DictOf(str, ANY)), "param_groups": ListOf(DictOf(str, ANY))}),
    "scheduler": DictOf(str, ANY),
    "trainer_state": Record({
        "epoch": int, "epoch_step": int, "step": int, "best_val": NUMBER, "best_epoch": int,
        "history": ListOf(_HISTORY_RECORD), "train_seconds": NUMBER, "epoch_loss_sum": NUMBER,
        "epoch_loss_steps": int, "out_of_time": bool, "finished": bool,
    }),
    "rng": Record({"python": ListOf(ANY), "torch": torch.Tensor, "cuda": ListOf(torch.Tensor)}),
    "format_version": int,
    "code_version": str,
})

#: Keys a record may lack: the CUDA random state exists only where CUDA was available.
_OPTIONAL_KEYS = frozenset({"rng.cuda"})


def check_layout(payload: Any, source: str, spec: Any = CHECKPOINT, path: str = "") -> None:
    """Raise ``CheckpointError`` naming ``source`` and the key unless ``payload`` matches ``spec``."""
    where = path or "the top level"
    if spec is ANY:
        return
    if spec is PLAIN:
        _check_plain(payload, source, where)
        return
    if isinstance(spec, Nullable):
        if payload is not None:
            check_layout(payload, source, spec.inner, path)
        return
    if isinstance(spec, Record):
        _expect(isinstance(payload, dict), payload, "a dict", source, where)
        keys = set(payload)
        named = set(spec.fields) - {"*"}
        required = {k for k in named if f"{path}.{k}".lstrip(".") not in _OPTIONAL_KEYS}
        missing = sorted(required - keys)
        extra = [] if "*" in spec.fields else sorted(map(str, keys - named))
        if missing or extra:
            wrong = [f"lacks {missing}"] * bool(missing) + [f"has unexpected {extra}"] * bool(extra)
            raise CheckpointError(f"checkpoint '{source}': {where} {' and '.join(wrong)} (expected the keys "
                                  f"{sorted(named)})")
        for key, value in payload.items():
            sub = spec.fields[key] if key in named else spec.fields["*"]
            check_layout(value, source, sub, f"{path}.{key}".lstrip("."))
        return
    if isinstance(spec, ListOf):
        _expect(isinstance(payload, list | tuple), payload, "a list", source, where)
        for i, item in enumerate(payload):
            check_layout(item, source, spec.item, f"{path}[{i}]")
        return
    if isinstance(spec, DictOf):
        _expect(isinstance(payload, dict), payload, "a dict", source, where)
        for key, value in payload.items():
            _expect(isinstance(key, spec.key), key, f"{spec.key.__name__} keys", source, where)
            check_layout(value, source, spec.value, f"{path}.{key}".lstrip("."))
        return
    kinds = spec if isinstance(spec, tuple) else (spec,)
    ok = isinstance(payload, kinds) and not (isinstance(payload, bool) and bool not in kinds)
    _expect(ok, payload, " or ".join(k.__name__ for k in kinds), source, where)


def _check_plain(value: Any, source: str, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _expect(isinstance(key, str), key, "str keys", source, where)
            _check_plain(item, source, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_plain(item, source, f"{where}[{i}]")
    else:
        _expect(isinstance(value, _LEAVES), value, "a string, number, bool or null", source, where)
        _expect(not (isinstance(value, str) and "${" in value), value, "a resolved value (no ${...})", source,
                where)


def _expect(ok: bool, value: Any, expected: str, source: str, where: str) -> None:
    if not ok:
        shown = type(value).__name__ if isinstance(value, dict | list | tuple | torch.Tensor) else repr(value)[:60]
        raise CheckpointError(f"checkpoint '{source}': {where} is {shown}; expected {expected}")
