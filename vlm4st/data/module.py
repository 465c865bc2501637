"""The multi-dataset ``DataModule``: datasets at native grids, task ids, shot protocols, batch iterators.

A batch is a dict with ``x`` (B, T_in, H, W) float32 normalised, ``y`` (B, T_out, H, W), ``timestamps``
(B, T_in, 2) int64, ``target_timestamps`` (B, T_out, 2), ``task_id`` (B,), ``channel`` (B,), ``index`` (B,)
window ids within the split, and ``dataset`` (str). Evaluation batches add ``y_real`` (B, T_out, H0, W0): the
raw-scale targets on the native grid. Every batch holds one dataset's windows (one grid size).

Shot protocols (``shot_ratio.ratio``): ``1.0`` every dataset fully; in (0, 1) the target contributes its first
(or a seeded random) ``max(1, floor(n_train * ratio))`` training windows; ``0.0`` the target is read test-only,
absent from training and validation, and its scaler is fitted on the T_in input frames of its test windows
(``zero_shot_scaler: inputs``). ``accessed`` records every (dataset, split) whose windows were materialised.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from vlm4st.config import ConfigError
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
    ) -> Iterator[dict[str, Any]]:
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
    ) -> Iterator[dict[str, Any]]:
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
    def to_real(self, pred: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Normalised predictions of ``batch`` -> raw scale on the dataset's native grid (float64)."""
        return self.by_name[batch["dataset"]].to_real(pred, batch["channel"])

    # -- checkpoints and reporting ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain data for checkpoints: dataset list (task ids), scalers, grids, protocol."""
        return {
            "mode": self.mode,
            "target": self.target,
            "t_in": self.t_in,
            "t_out": self.t_out,
            "datasets": [
                {
                    "name": d.name,
                    "task_id": d.task_id,
                    "scaler": d.scaler.state_dict(),
                    "native_hw": list(d.native_hw),
                    "model_hw": list(d.model_hw),
                    "channels": d.n_channels,
                    "steps_per_day": d.steps_per_day,
                }
                for d in self.datasets
            ],
        }

    def verify_state_dict(self, state: dict[str, Any]) -> None:
        """Raise ``ConfigError`` unless ``state`` (from a checkpoint) describes these datasets: same names in the
        same task-id order, the same windows and grids, the same scalers (so normalised outputs mean the same)."""
        mine, theirs = self.state_dict(), state
        for key in ("t_in", "t_out"):
            if mine[key] != theirs.get(key):
                raise ConfigError(f"checkpoint has dataset.{key}={theirs.get(key)}, this run {mine[key]}")
        names = [d["name"] for d in theirs.get("datasets", [])]
        if names != self.names:
            raise ConfigError(f"checkpoint datasets (task-id order) {names} differ from dataset.sources {self.names}")
        for a, b in zip(mine["datasets"], theirs["datasets"]):
            for key in ("task_id", "model_hw", "channels", "scaler"):
                if a[key] != b[key]:
                    raise ConfigError(f"dataset '{a['name']}': checkpoint {key}={b[key]}, this run {a[key]}")

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
            "steps/day",
            "source",
        ]
        rows = []
        for d in self.datasets:
            n = {s: (str(len(d.windows[s])) if s in d.windows else "-") for s in ("train", "val", "test")}
            if "train" in d.windows and len(d.windows["train"]) != d.available["train"]:
                n["train"] += f"/{d.available['train']}"
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
                    str(d.steps_per_day),
                    d.source,
                ]
            )
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)]
        proto = f"mode={self.mode} target={self.target} t_in={self.t_in} t_out={self.t_out}"
        evals = f"train={self.train_names()} val={self.eval_names('val')} test={self.eval_names('test')}"
        return "\n".join([proto, evals, *lines])
