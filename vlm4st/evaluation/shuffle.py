"""The input-order test: evaluate with each window's input frames permuted along T_in and report how much worse the
forecast gets (Tan et al., NeurIPS 2024). A model that uses the time order of its input must get worse.

Only the frames move: the input's time codes, the forecast steps' codes, the targets and the task ids stay as they
are, so the model still reads which slot each position claims to be and only the frames' order is wrong.

Each window's permutation is drawn from a generator seeded with ``(seed, window id)`` (the window's row in its
split), so it is the same whatever the batch size, the batch order, the DDP rank or the device; the same window id
gets the same permutation in every dataset of a run. A draw that is the identity is rolled by one position: a
window left in order would dilute the test.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vlm4st import checks
from vlm4st.data.batch import Batch
from vlm4st.errors import ConfigError
from vlm4st.evaluation.metrics import DatasetMetrics

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ShuffleTest:
    """The ``shuffle_test`` config node, checked: whether the test split is also evaluated with shuffled inputs,
    and the seed of the permutations."""

    enabled: bool
    seed: int

    @classmethod
    def from_config(cls, node: Any, key: str = "shuffle_test") -> ShuffleTest:
        """Check and convert the config node at ``key``; a missing, unknown or ill-typed key raises
        ``ConfigError`` naming it."""
        if not isinstance(node, Mapping):
            raise ConfigError(f"{key}: expected a mapping with keys enabled and seed, got {node!r}")
        expected = ("enabled", "seed")
        unknown = sorted(str(k) for k in node if k not in expected)
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]}: unknown key; expected only {list(expected)}")
        missing = [k for k in expected if k not in node]
        if missing:
            raise ConfigError(f"{key}.{missing[0]}: missing; expected keys {list(expected)}")
        return cls(enabled=checks.flag(node["enabled"], f"{key}.enabled"),
                   seed=checks.non_negative_int(node["seed"], f"{key}.seed"))

    def check_frames(self, t_in: int, key: str = "shuffle_test") -> None:
        """A shuffle needs at least two input frames to reorder."""
        if self.enabled and t_in < 2:
            raise ConfigError(f"{key}.enabled: the data's windows have t_in={t_in} input frame(s), nothing to "
                              f"reorder; expected dataset.t_in >= 2 or {key}.enabled=false")


def frame_orders(index: torch.Tensor, t: int, seed: int) -> torch.Tensor:
    """One permutation of ``0 .. t-1`` per window, never the identity: row ``b`` depends only on ``seed`` and the
    window id ``index[b]``. ``index``: (B,) int64 window ids on the host; returns (B, t) int64 on the host."""
    if t < 2:
        raise ValueError(f"a frame order needs t >= 2 frames to differ from the identity, got t={t}")
    ids = index.tolist()  # (B,) window ids, host
    identity = np.arange(t)  # (t,)
    orders = np.empty((len(ids), t), dtype=np.int64)  # (B, t)
    for row, window in enumerate(ids):
        order = np.random.default_rng([seed, int(window)]).permutation(t)  # (t,)
        if np.array_equal(order, identity):
            order = np.roll(order, 1)  # (t,) = (t-1, 0, 1, ..., t-2)
        orders[row] = order
    return torch.from_numpy(orders)


def permute_frames(x: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """``x`` (B, T, H, W[, C]) with each window's frames reordered: ``out[b, t] = x[b, orders[b, t]]``.
    ``orders``: (B, T) int64 on ``x``'s device, each row a permutation of ``0 .. T-1``."""
    if orders.shape != x.shape[:2]:
        raise ValueError(f"orders {tuple(orders.shape)} do not fit frames {tuple(x.shape)}; expected (B, T) = "
                         f"{tuple(x.shape[:2])}")
    rows = torch.arange(x.shape[0], device=x.device)[:, None]  # (B, 1)
    return x[rows, orders]  # (B, T, H, W[, C])


def shuffle_inputs(batch: Batch, seed: int) -> Batch:
    """A host batch whose input frames ``x`` (B, T_in, H, W) are permuted per window by
    ``frame_orders(batch.index, T_in, seed)``; every other field is the batch's own (not copied)."""
    orders = frame_orders(batch.index, batch.x.shape[1], seed)  # (B, T_in)
    return batch.replace(x=permute_frames(batch.x, orders.to(batch.x.device)))  # x: (B, T_in, H, W)


def _relative(shuffled: float, ordered: float) -> float | None:
    """``shuffled / ordered - 1``; None where the ordered error is zero (no finite ratio)."""
    return shuffled / ordered - 1.0 if ordered > 0 else None


@dataclass(frozen=True)
class Degradation:
    """``shuffled / ordered - 1`` of a dataset's real-scale errors; None where the ordered error is zero."""

    rmse: float | None
    mae: float | None


@dataclass(frozen=True)
class ShuffleResult:
    """The ``shuffle_test`` entry of ``metrics.json``: the permutations' seed, the shuffled pass's pooled normalised
    loss and per-dataset metrics, and per dataset the degradation against the ordered test."""

    seed: int
    loss: float
    shuffled: dict[str, DatasetMetrics]
    degradation: dict[str, Degradation]


def shuffle_result(test: ShuffleTest, ordered: Mapping[str, DatasetMetrics], shuffled: Mapping[str, DatasetMetrics],
                   shuffled_loss: float) -> ShuffleResult:
    """Compare the shuffled pass with the ordered one, dataset by dataset (the names of the ordered test)."""
    degradation = {name: Degradation(rmse=_relative(shuffled[name].rmse, m.rmse),
                                     mae=_relative(shuffled[name].mae, m.mae))
                   for name, m in ordered.items() if name in shuffled}
    return ShuffleResult(seed=test.seed, loss=shuffled_loss, shuffled=dict(shuffled), degradation=degradation)


def _percent(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:+.1f} %"


def log_degradation(result: ShuffleResult, ordered: Mapping[str, DatasetMetrics]) -> None:
    """One line per dataset: ordered and shuffled RMSE and MAE and their relative change."""
    for name, change in result.degradation.items():
        o, s = ordered[name], result.shuffled[name]
        log.info("input-order test %s (frames permuted, seed %d): RMSE %.4f -> %.4f (%s)  MAE %.4f -> %.4f (%s)",
                 name, result.seed, o.rmse, s.rmse, _percent(change.rmse), o.mae, s.mae, _percent(change.mae))
