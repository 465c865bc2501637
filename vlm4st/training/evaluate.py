"""Evaluation: metrics over whole splits (all ranks' sums reduced), predictions, and figures for the loggers."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from vlm4st.data.batch import Batch
from vlm4st.data.module import DataModule
from vlm4st.evaluation.metrics import SCALAR_METRICS, DatasetMetrics, ForecastMetrics
from vlm4st.evaluation.shuffle import shuffle_inputs
from vlm4st.logging import figures
from vlm4st.logging.progress import QUIET, ProgressConfig
from vlm4st.models.loss import TrainingLoss
from vlm4st.training import host
from vlm4st.training.distributed import DistInfo, all_reduce_sum

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Metrics per dataset, the pooled normalised loss, and (optionally) real-scale forecasts per dataset."""

    metrics: dict[str, DatasetMetrics]
    loss: float
    predictions: dict[str, dict[str, np.ndarray]] | None = None


def task_ids_for(batch: Batch, unseen: Iterable[str], num_tasks: int) -> torch.Tensor:
    """The batch's task ids; for a dataset the model never trained on, the unknown-task id ``num_tasks`` (the
    routed adapters and the cell embedding keep a row for it)."""
    if batch.dataset in set(unseen):
        return torch.full_like(batch.task_id, num_tasks)  # (B,)
    return batch.task_id  # (B,)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: DataModule,
    split: str,
    names: list[str],
    *,
    batch_size: int,
    device: torch.device,
    dist: DistInfo,
    loss: TrainingLoss,
    autocast: Any,
    unseen: Iterable[str] = (),
    collect: bool = False,
    progress: ProgressConfig = QUIET,
    frame_seed: int | None = None,
) -> EvalResult:
    """Run ``model`` over ``split`` of each dataset in ``names``; every rank takes a contiguous share.

    ``loss`` is the training loss over every normalised point of every dataset (pooled, not a mean of batch or
    dataset means). Datasets in ``unseen`` get the unknown-task id. ``collect`` keeps real-scale forecasts
    (single process only). ``progress`` reports the windows of this rank's share. ``frame_seed``: None evaluates
    the inputs as they are; an integer permutes each window's input frames along T_in by the permutation that the
    seed and the window id give (``vlm4st.evaluation.shuffle``, the input-order test), on the host before the
    batch moves to ``device``; time codes, targets and task ids stay in order.
    """
    was_training = model.training
    model.eval()
    unseen = set(unseen)
    metrics = ForecastMetrics(data.t_out, names)
    errors = torch.zeros(2, dtype=torch.float64, device=device)  # sum e^2, sum |e| (normalised space)
    points = 0
    kept: dict[str, dict[str, list[np.ndarray]]] = {}
    share = sum(-(-len(data.by_name[n].windows[split]) // dist.world_size) for n in names)  # ceil per rank
    bar = progress.bar(f"{split} pass", share, unit="window")
    for name in names:
        for batch in data.eval_batches(name, split, batch_size, rank=dist.rank, world_size=dist.world_size):
            bar.advance(len(batch))
            if frame_seed is not None:
                batch = shuffle_inputs(batch, frame_seed)  # x: (B, T_in, H, W), frames reordered per window
            b = batch.to(device)
            with autocast:
                pred = model(b.x, b.timestamps, task_ids_for(b, unseen, len(data.names)),
                             target_timestamps=b.target_timestamps)
            pred = pred.float()[..., 0]  # (B, T_out, H, W)
            err = (pred - b.y).double()  # (B, T_out, H, W)
            errors += torch.stack([err.square().sum(), err.abs().sum()])
            points += err.numel()
            pred = host.to_host(pred)
            metrics.update(pred, batch, data.to_real)
            if collect:
                store = kept.setdefault(name, {"forecast": [], "target": [], "channel": [], "index": []})
                store["forecast"].append(data.to_real(pred, batch).float().numpy())
                store["target"].append(batch.real_targets().float().numpy())
                store["channel"].append(batch.channel.numpy())
                store["index"].append(batch.index.numpy())
    bar.close()
    pooled = torch.cat([errors, torch.tensor([float(points)], dtype=torch.float64, device=device)])  # (3,)
    if dist.enabled:
        metrics.unpack(host.to_host(all_reduce_sum(metrics.pack().to(device))))
        pooled = all_reduce_sum(pooled)
    model.train(was_training)
    sq, ab, n = host.to_host(pooled).tolist()
    predictions = {k: {f: np.concatenate(v) for f, v in d.items()} for k, d in kept.items()} if collect else None
    return EvalResult(metrics=metrics.result(), loss=loss.from_sums(sq, ab, n), predictions=predictions)


def scalar_tags(prefix: str, result: EvalResult) -> dict[str, float]:
    """Flat logger tags: ``{prefix}/loss`` and ``{prefix}/{dataset}/{mae,rmse,mae_norm,rmse_norm}``."""
    tags = {f"{prefix}/loss": result.loss}
    for name, m in result.metrics.items():
        for key in SCALAR_METRICS:
            tags[f"{prefix}/{name}/{key}"] = getattr(m, key)
    return tags


@torch.no_grad()
def figure_images(
    model: nn.Module,
    data: DataModule,
    split: str,
    names: list[str],
    device: torch.device,
    autocast: Any,
    windows: int,
    unseen: Iterable[str] = (),
) -> dict[str, np.ndarray]:
    """Images of the first ``windows`` consecutive ``split`` windows of each dataset: ``{split}/{name}/forecast``
    (truth against forecast, real scale, native grid) and ``{split}/{name}/gates`` (fusion gates and PromptForge
    weights, when the model has either)."""
    was_training = model.training
    model.eval()
    images: dict[str, np.ndarray] = {}
    for name in names:
        batch = next(iter(data.eval_batches(name, split, windows)))
        b = batch.to(device)
        with autocast:
            pred, inter = model(b.x, b.timestamps, task_ids_for(b, unseen, len(data.names)),
                                return_intermediate=True, target_timestamps=b.target_timestamps)
        pred = host.to_host(pred.float()[..., 0])  # (B, T_out, H, W)
        real = data.to_real(pred, batch).float().numpy()  # (B, T_out, H0, W0)
        truth = batch.real_targets().float().numpy()  # (B, T_out, H0, W0)
        images[f"{split}/{name}/forecast"] = figures.forecast_figure(truth, real, name)
        gates = patterns = None
        if inter.gate_weights is not None:
            gates = host.to_host(inter.gate_weights.float().mean(dim=(0, 1))).numpy()  # (H, W, n_branches)
        if inter.pattern_info:
            patterns = {
                modality: host.to_host((w.coarse[:, :, None] * w.fine).float().mean(0)).numpy()  # (K, M)
                for modality, w in inter.pattern_info.items()
            }
        if gates is not None or patterns is not None:
            images[f"{split}/{name}/gates"] = figures.gates_figure(gates, patterns, name)
    model.train(was_training)
    return images
