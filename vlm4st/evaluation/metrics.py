"""Streaming forecast metrics: MAE and RMSE over all test points of a dataset, per dataset and horizon step.

Sums of |e| and e^2 and point counts are accumulated in float64, so the result is the metric over every point
(not a mean of per-batch values) and DDP ranks can add their sums. Real-scale figures compare raw-scale
predictions and targets on the dataset's native grid; normalised figures compare the model's [-1, 1] output
with the normalised targets on the model grid (the training-loss space; the same grid unless ``resize_to``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from vlm4st.data.batch import Batch

_ABS_REAL, _SQ_REAL, _N_REAL, _ABS_NORM, _SQ_NORM, _N_NORM, _WINDOWS = range(7)
_FIELDS = 7


def _per_step(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(B, T_out, ...) pair -> sums of |e| and e^2 per step (T_out,) and points per step, in float64 on CPU."""
    e = pred.detach().to("cpu", torch.float64) - target.detach().to("cpu", torch.float64)
    e = e.flatten(2)  # (B, T_out, P)
    return e.abs().sum(dim=(0, 2)), e.square().sum(dim=(0, 2)), float(e.shape[0] * e.shape[2])


def _squeeze_channel(pred: torch.Tensor) -> torch.Tensor:
    """(B, T_out, H, W, 1) -> (B, T_out, H, W); 4-D input unchanged."""
    if pred.ndim == 5:
        if pred.shape[-1] != 1:
            raise ValueError(f"expected one output channel, got prediction shape {tuple(pred.shape)}")
        return pred[..., 0]
    return pred


@dataclass(frozen=True)
class StepErrors:
    """Real-scale errors per forecast step (1 .. T_out)."""

    mae: list[float]
    rmse: list[float]


@dataclass(frozen=True)
class DatasetMetrics:
    """One dataset's errors over a whole split: real scale on the native grid, normalised on the model grid."""

    mae: float
    rmse: float
    mae_norm: float
    rmse_norm: float
    per_step: StepErrors
    n: int  # windows
    points: int  # real-scale points (windows x steps x cells)


#: The summary figures of ``DatasetMetrics`` the loggers take as scalars.
SCALAR_METRICS = ("mae", "rmse", "mae_norm", "rmse_norm")


class ForecastMetrics:
    """Accumulates errors per dataset; ``result()`` gives one ``DatasetMetrics`` per dataset.

    Pass the dataset names up front when ranks must ``pack()`` identical layouts for an all-reduce.
    """

    def __init__(self, t_out: int, datasets: Sequence[str] = ()) -> None:
        self.t_out = int(t_out)
        self._sums: dict[str, torch.Tensor] = {}  # name -> (T_out, 7) float64
        for name in datasets:
            self._entry(name)

    def _entry(self, name: str) -> torch.Tensor:
        if name not in self._sums:
            self._sums[name] = torch.zeros(self.t_out, _FIELDS, dtype=torch.float64)
        return self._sums[name]

    def add(
        self,
        dataset: str,
        pred_real: torch.Tensor,
        y_real: torch.Tensor,
        pred_norm: torch.Tensor,
        y_norm: torch.Tensor,
    ) -> None:
        """Add one batch: real-scale pair (B, T_out, H0, W0) and normalised pair (B, T_out, H, W)."""
        for a, b, kind in ((pred_real, y_real, "real"), (pred_norm, y_norm, "normalised")):
            if a.shape != b.shape or a.ndim < 2 or a.shape[1] != self.t_out:
                raise ValueError(
                    f"{kind} prediction {tuple(a.shape)} vs target {tuple(b.shape)}; "
                    f"expected equal shapes (B, {self.t_out}, H, W)"
                )
        s = self._entry(dataset)
        abs_r, sq_r, n_r = _per_step(pred_real, y_real)
        abs_n, sq_n, n_n = _per_step(pred_norm, y_norm)
        s[:, _ABS_REAL] += abs_r
        s[:, _SQ_REAL] += sq_r
        s[:, _N_REAL] += n_r
        s[:, _ABS_NORM] += abs_n
        s[:, _SQ_NORM] += sq_n
        s[:, _N_NORM] += n_n
        s[:, _WINDOWS] += pred_real.shape[0]

    def update(self, pred: torch.Tensor, batch: Batch, to_real: Callable[[torch.Tensor, Batch], torch.Tensor]) -> None:
        """Add a model output for an evaluation batch; ``to_real`` is ``DataModule.to_real``."""
        pred = _squeeze_channel(pred)  # (B, T_out, H, W) normalised, model grid
        self.add(batch.dataset, to_real(pred, batch), batch.real_targets(), pred, batch.y)

    # -- DDP ---------------------------------------------------------------------------------------------------
    def pack(self) -> torch.Tensor:
        """All sums as one (D, T_out, 7) tensor, datasets in sorted order (for ``all_reduce``)."""
        return torch.stack([self._sums[n] for n in sorted(self._sums)])

    def unpack(self, packed: torch.Tensor) -> None:
        """Replace the sums by ``packed`` (e.g. after an all-reduce of ``pack()``)."""
        for i, n in enumerate(sorted(self._sums)):
            self._sums[n] = packed[i].detach().to("cpu", torch.float64).clone()

    # -- results -----------------------------------------------------------------------------------------------
    def result(self) -> dict[str, DatasetMetrics]:
        """The metrics of every dataset that received at least one point."""
        out = {}
        for name, s in self._sums.items():
            n_r, n_n = s[:, _N_REAL], s[:, _N_NORM]
            if float(n_r.sum()) == 0:
                continue
            out[name] = DatasetMetrics(
                mae=float(s[:, _ABS_REAL].sum() / n_r.sum()),
                rmse=math.sqrt(float(s[:, _SQ_REAL].sum() / n_r.sum())),
                mae_norm=float(s[:, _ABS_NORM].sum() / n_n.sum()),
                rmse_norm=math.sqrt(float(s[:, _SQ_NORM].sum() / n_n.sum())),
                per_step=StepErrors(mae=(s[:, _ABS_REAL] / n_r).tolist(), rmse=(s[:, _SQ_REAL] / n_r).sqrt().tolist()),
                n=int(s[0, _WINDOWS]),
                points=int(n_r.sum()),
            )
        return out
