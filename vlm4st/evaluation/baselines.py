"""Reference forecasters that need no training: pipeline sanity checks and the floor a model must beat.

- ``historical_average``: the mean of the input window, repeated over the horizon (HA);
- ``last_value``: the last input frame, repeated (persistence);
- ``time_of_day_mean``: per cell, channel and slot of day, the mean over the training part of the series
  (the frames covered by the training windows; for stored overlapping windows the same frames once each, for
  non-overlapping stored windows every frame of every training window). Each target step is predicted by the
  mean of its slot. A slot absent from the training frames falls back to that cell's mean over all training
  frames of the channel. A zero-shot target has no training part: the baseline is skipped for it (reported
  under ``skipped``), since fitting it on test inputs would turn it into something else.

All work in the normalised space on the model grid and are scored by ``ForecastMetrics`` exactly like a model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from vlm4st.data.batch import Batch
from vlm4st.data.module import DataModule
from vlm4st.data.prepared import PreparedDataset
from vlm4st.evaluation.metrics import DatasetMetrics, ForecastMetrics
from vlm4st.logging.progress import QUIET, Progress, ProgressConfig

log = logging.getLogger(__name__)


class HistoricalAverage:
    name: ClassVar[str] = "historical_average"
    short: ClassVar[str] = "HA"  # table column
    label: ClassVar[str] = "HA (input window)"  # table row

    def fit(self, ds: PreparedDataset) -> None:
        """Nothing to fit."""

    def predict(self, batch: Batch) -> torch.Tensor:
        return batch.x.mean(dim=1, keepdim=True).expand(-1, batch.y.shape[1], -1, -1)  # (B, T_out, H, W)


class LastValue:
    name: ClassVar[str] = "last_value"
    short: ClassVar[str] = "Last"
    label: ClassVar[str] = "Last value"

    def fit(self, ds: PreparedDataset) -> None:
        """Nothing to fit."""

    def predict(self, batch: Batch) -> torch.Tensor:
        return batch.x[:, -1:].expand(-1, batch.y.shape[1], -1, -1)  # (B, T_out, H, W)


class TimeOfDayMean:
    name: ClassVar[str] = "time_of_day_mean"
    short: ClassVar[str] = "ToD-mean"
    label: ClassVar[str] = "Time-of-day mean"

    def __init__(self) -> None:
        self.tables: dict[str, torch.Tensor] = {}  # dataset -> (C, steps_per_day, H, W)

    def fit(self, ds: PreparedDataset) -> None:
        if "train" not in ds.windows or len(ds.windows["train"]) == 0:
            raise ValueError(f"{ds.name}: no training windows to fit the time-of-day mean on")
        idx = torch.from_numpy(ds.train_frame_indices())  # (F_train,)
        frames = ds.frames[idx].double()  # (F_train, H, W)
        slot = ds.stamps[idx, 1]
        channel = torch.from_numpy(ds.frame_channel[idx.numpy()])  # (F_train,)
        C, S = ds.n_channels, ds.steps_per_day
        key = channel * S + slot  # (F_train,)
        sums = torch.zeros(C * S, *frames.shape[1:], dtype=torch.float64).index_add_(0, key, frames)
        counts = torch.bincount(key, minlength=C * S).double()  # (C * S,)
        table = sums / counts.clamp(min=1)[:, None, None]
        per_channel = torch.zeros(C, *frames.shape[1:], dtype=torch.float64).index_add_(0, channel, frames)
        per_channel /= torch.bincount(channel, minlength=C).double().clamp(min=1)[:, None, None]
        missing = counts == 0
        table[missing] = per_channel.repeat_interleave(S, dim=0)[missing]
        self.tables[ds.name] = table.reshape(C, S, *frames.shape[1:]).float()

    def predict(self, batch: Batch) -> torch.Tensor:
        table = self.tables[batch.dataset]
        codes = batch.target_timestamps  # (B, T_out, 3) [weekday, minute, interval]
        slots = codes[..., 1] // codes[..., 2]  # (B, T_out): slot of day at the dataset's own step length
        return table[batch.channel[:, None], slots]  # (B, T_out, H, W)


BASELINES = (HistoricalAverage, LastValue, TimeOfDayMean)
Baseline = HistoricalAverage | LastValue | TimeOfDayMean


@dataclass(frozen=True)
class BaselineResults:
    """The ``baselines`` entry of ``metrics.json``: each baseline's metrics per dataset, and per baseline the
    datasets it could not be fitted on with the reason. Empty on the DDP ranks that do not score them."""

    skipped: dict[str, dict[str, str]] = field(default_factory=dict)
    historical_average: dict[str, DatasetMetrics] = field(default_factory=dict)
    last_value: dict[str, DatasetMetrics] = field(default_factory=dict)
    time_of_day_mean: dict[str, DatasetMetrics] = field(default_factory=dict)

    def scores(self) -> dict[type[Baseline], dict[str, DatasetMetrics]]:
        """Each baseline class (in ``BASELINES`` order, for its name and labels) with its metrics per dataset."""
        return {cls: getattr(self, cls.name) for cls in BASELINES}


def evaluate_baselines(
    dm: DataModule, split: str = "test", batch_size: int = 256, progress: ProgressConfig = QUIET
) -> BaselineResults:
    """Score every baseline on ``split`` of the datasets the protocol evaluates there."""
    skipped: dict[str, dict[str, str]] = {}
    scored: dict[str, dict[str, DatasetMetrics]] = {}
    names = dm.eval_names(split)
    windows = sum(len(dm.by_name[n].windows[split]) for n in names)
    with progress.bar(f"baselines ({split})", windows * len(BASELINES), unit="window") as bar:
        for cls in BASELINES:
            scored[cls.name] = _score(cls(), dm, split, names, batch_size, skipped, bar)
    return BaselineResults(skipped=skipped, **scored)


def _score(baseline: Baseline, dm: DataModule, split: str, names: list[str], batch_size: int,
           skipped: dict[str, dict[str, str]], bar: Progress) -> dict[str, DatasetMetrics]:
    """Fit ``baseline`` on each dataset and score it on ``split``; a dataset it cannot be fitted on is added to
    ``skipped`` with the reason."""
    metrics = ForecastMetrics(dm.t_out)
    for name in names:
        ds = dm.by_name[name]
        try:
            baseline.fit(ds)
        except ValueError as err:
            skipped.setdefault(baseline.name, {})[name] = str(err)
            log.info("baseline %s skipped on %s: %s", baseline.name, name, err)
            continue
        for batch in dm.eval_batches(name, split, batch_size):
            metrics.update(baseline.predict(batch), batch, dm.to_real)
            bar.advance(len(batch))
    return metrics.result()
