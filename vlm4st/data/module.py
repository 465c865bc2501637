"""The multi-dataset ``DataModule``: datasets at native grids, task ids, shot protocols, batch iterators.

Batches are ``vlm4st.data.batch.Batch`` records: one dataset's windows (one grid size), normalised inputs and targets
with their time codes and task ids; evaluation batches add the raw-scale targets on the native grid.

Shot protocols (``shot_ratio.ratio``): ``1.0`` every dataset fully; in (0, 1) the target contributes its first
(or a seeded random) ``max(1, floor(n_train * ratio))`` training windows; ``0.0`` the target is read test-only,
absent from training and validation. With ``zero_shot_scaler: inputs`` its scaler is fitted on a calibration
prefix, the first ``zero_shot_calibration_steps`` frames of its test period, and only the test windows whose
targets all lie after the prefix are scored: fitting on the inputs of every test window would fit on scored
values, since with stride-1 windows one window's inputs are an earlier window's targets. ``zero_shot_scaler:
train`` (opt-in) fits on the target's training split and scores every test window. ``accessed`` records every
(dataset, split) whose windows were materialised.

``state_dict`` stores what a rebuilt run must reproduce: per dataset its name, task id, content fingerprint
(sha256 of the data file, or of the generating parameters), scaler, grids and window layout (t_in, t_out,
split ratios, stride, shot ratio, selection, calibration, window counts and a hash of the window starts).
``verify_state_dict`` raises ``DataMismatchError`` naming the first key that differs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch

from vlm4st.data.batch import Batch
from vlm4st.data.errors import DataMismatchError
from vlm4st.data.prepared import PreparedDataset
from vlm4st.data.sampling import epoch_plan, eval_chunks


class DataModule:
    """Datasets in task-id order plus the protocol that says which of their windows train, validate, test."""

    def __init__(
        self,
        datasets: list[PreparedDataset],
        mode: str,
        target: str | None,
        seed: int,
        accessed: set[tuple[str, str]],
        settings: dict[str, Any],
    ) -> None:
        self.datasets = datasets
        self.by_name = {d.name: d for d in datasets}
        self.mode, self.target, self.seed = mode, target, seed
        self.accessed = accessed
        self.settings = settings
        self.t_in, self.t_out = datasets[0].t_in, datasets[0].t_out

    # -- which datasets take part where --------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [d.name for d in self.datasets]

    def train_names(self) -> list[str]:
        return [d.name for d in self.datasets if "train" in d.windows and len(d.windows["train"])]

    def eval_names(self, split: str) -> list[str]:
        """Datasets evaluated on ``split``: all in ``full`` mode; the target in few-shot; zero-shot validates on
        the sources (the target is unseen) and tests on the target."""
        if self.mode == "full":
            return list(self.names)
        if self.mode == "zero" and split == "val":
            return [d.name for d in self.datasets if d.name != self.target]
        return [self.target]

    # -- iterators ------------------------------------------------------------------------------------------------
    def num_train_batches(
        self, batch_size: int, drop_last: bool = False, world_size: int = 1, names: list[str] | None = None
    ) -> int:
        """Batches per epoch and rank for ``names`` (default: every training dataset)."""
        return len(epoch_plan(self._train_sizes(names), batch_size, self.seed, 0, 0, world_size, drop_last))

    def train_batches(
        self,
        epoch: int,
        batch_size: int,
        *,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        names: list[str] | None = None,
        start: int = 0,
    ) -> Iterator[Batch]:
        """One epoch of single-dataset batches, datasets interleaved in a seeded order (seed + epoch).

        ``names`` restricts the epoch to some training datasets (a transfer stage); ``start`` skips the first
        batches of the epoch without gathering them (resuming mid-epoch replays the same order).
        """
        names = self._check_train_names(names)
        plan = epoch_plan(self._train_sizes(names), batch_size, self.seed, epoch, rank, world_size, drop_last)
        for d, positions in plan[start:]:
            yield self.by_name[names[d]].batch("train", positions)

    def eval_batches(
        self, name: str, split: str, batch_size: int, *, rank: int = 0, world_size: int = 1
    ) -> Iterator[Batch]:
        """``split`` windows of dataset ``name`` in order (with ``y_real``); ranks take contiguous shares."""
        ds = self.by_name[name]
        if split not in ds.windows:
            raise KeyError(f"dataset '{name}' has no '{split}' windows in {self.mode} mode")
        self.accessed.add((name, split))
        for positions in eval_chunks(len(ds.windows[split]), batch_size, rank, world_size):
            yield ds.batch(split, positions, with_real=True)

    def _check_train_names(self, names: list[str] | None) -> list[str]:
        available = self.train_names()
        if names is None:
            return available
        unknown = [n for n in names if n not in available]
        if unknown:
            raise KeyError(f"datasets {unknown} have no training windows in {self.mode} mode; training: {available}")
        return list(names)

    def _train_sizes(self, names: list[str] | None = None) -> list[int]:
        names = self._check_train_names(names)
        for n in names:
            self.accessed.add((n, "train"))
        return [len(self.by_name[n].windows["train"]) for n in names]

    # -- real scale -----------------------------------------------------------------------------------------------
    def to_real(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Normalised predictions of ``batch`` -> raw scale on the dataset's native grid (float64)."""
        return self.by_name[batch.dataset].to_real(pred, batch.channel)

    # -- checkpoints and reporting ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain data for checkpoints: protocol, and per dataset (task-id order) everything that shapes its
        batches: content fingerprint, scaler, grids, window layout."""
        return {
            "mode": self.mode,
            "target": self.target,
            "t_in": self.t_in,
            "t_out": self.t_out,
            "datasets": [
                {
                    "name": d.name,
                    "task_id": d.task_id,
                    "role": d.role,
                    "fingerprint": dict(d.fingerprint),
                    "scaler": d.scaler.state_dict(),
                    "scaler_fit": d.scaler_fit,
                    "native_hw": list(d.native_hw),
                    "model_hw": list(d.model_hw),
                    "channels": d.n_channels,
                    "interval_minutes": d.interval_minutes,
                    "layout": _plain(d.layout),
                }
                for d in self.datasets
            ],
        }

    def content_hashes(self) -> dict[str, str]:
        """``{dataset name: sha256}`` of every data file of the run (generated data: of its parameters), in
        task-id order; a cache key built from them changes when any file's bytes change."""
        return {d.name: d.fingerprint["sha256"] for d in self.datasets}

    def verify_state_dict(self, stored: Mapping[str, Any], source: str, scope: str = "all") -> None:
        """Raise ``DataMismatchError`` unless ``stored`` (a checkpoint's ``state_dict``) describes this data.

        ``source`` names where ``stored`` comes from (the checkpoint path) in the error. ``scope``: ``all`` (a
        ``task=test`` rebuild: every key must match) or ``sources`` (a reused source-stage checkpoint: the task-id
        order, t_in/t_out and every dataset except this run's target must match; the target and the shot
        protocol may differ). The message names the first differing key with its stored and current values.
        """
        if scope not in ("all", "sources"):
            raise ValueError(f"scope={scope!r}; expected 'all' or 'sources'")
        current = self.state_dict()
        keys = ["t_in", "t_out"] + (["mode", "target"] if scope == "all" else [])
        for key in keys:
            _compare(stored.get(key), current[key], key, source)
        names = [d.get("name") for d in stored.get("datasets", [])]
        _compare(names, self.names, "datasets (names in task-id order)", source)
        for old, new in zip(stored["datasets"], current["datasets"]):
            if scope == "sources" and new["name"] == self.target:
                continue
            for key in sorted(set(old) | set(new)):
                _compare(old.get(key), new.get(key), f"datasets.{new['name']}.{key}", source)

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "target": self.target,
            "t_in": self.t_in,
            "t_out": self.t_out,
            "settings": dict(self.settings),
            "train": self.train_names(),
            "val": self.eval_names("val"),
            "test": self.eval_names("test"),
            "datasets": [d.describe() for d in self.datasets],
        }

    def summary(self) -> str:
        """A readable table of the datasets (the entry point prints it)."""
        head = [
            "task",
            "dataset",
            "role",
            "grid HxW",
            "model",
            "ch",
            "train",
            "val",
            "test",
            "scaler min..max",
            "interval",
            "source",
        ]
        rows = []
        for d in self.datasets:
            n = {s: (str(len(d.windows[s])) if s in d.windows else "-") for s in ("train", "val", "test")}
            for split in ("train", "test"):  # few-shot share / zero-shot calibration: served of available
                if split in d.windows and len(d.windows[split]) != d.available[split]:
                    n[split] += f"/{d.available[split]}"
            scale = "; ".join(f"{lo:g}..{hi:g}" for lo, hi in zip(d.scaler.minimum, d.scaler.maximum))
            rows.append(
                [
                    str(d.task_id),
                    d.name,
                    d.role,
                    "x".join(map(str, d.native_hw)),
                    "x".join(map(str, d.model_hw)),
                    str(d.n_channels),
                    n["train"],
                    n["val"],
                    n["test"],
                    scale,
                    f"{d.interval_minutes} min",
                    d.source,
                ]
            )
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)]
        proto = f"mode={self.mode} target={self.target} t_in={self.t_in} t_out={self.t_out}"
        evals = f"train={self.train_names()} val={self.eval_names('val')} test={self.eval_names('test')}"
        return "\n".join([proto, evals, *lines])


def _plain(value: Any) -> Any:
    """Nested dicts/lists of numpy scalars -> plain Python values (checkpoints load with ``weights_only``)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def _compare(stored: Any, current: Any, key: str, source: str) -> None:
    """Raise naming ``key`` (a dotted path) when ``stored`` differs from ``current``; dicts are compared per key
    so the message names the innermost differing entry."""
    if isinstance(stored, Mapping) and isinstance(current, Mapping):
        for k in sorted(set(stored) | set(current), key=str):
            _compare(stored.get(k), current.get(k), f"{key}.{k}", source)
        return
    if stored != current:
        raise DataMismatchError(source, f"{key} differs: stored {stored!r}, current {current!r}")
