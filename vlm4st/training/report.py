"""The one report writer of ``task=train`` and ``task=test``: ``metrics.json``, ``predictions.npz``, the logger
summary, the figures in ``figures/``, and an end-of-run summary a person reads at a glance (the model beside the
naive baselines on the same test points, per-horizon RMSE, where the run and its pictures live)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from matplotlib import image as mpimg

from vlm4st.evaluation.baselines import BaselineResults
from vlm4st.evaluation.metrics import DatasetMetrics
from vlm4st.logging.figures import curves_figure
from vlm4st.records import to_json
from vlm4st.training.evaluate import EvalResult
from vlm4st.training.run_metrics import EpochRecord, RunMetrics, write_metrics
from vlm4st.training.runtime import Runtime

log = logging.getLogger(__name__)


def _save_predictions(path: Path, result: EvalResult) -> None:
    arrays = {f"{name}.{field}": value for name, d in (result.predictions or {}).items() for field, value in d.items()}
    np.savez_compressed(path, **arrays)
    log.info("wrote real-scale forecasts and targets of %d dataset(s) to %s", len(result.predictions or {}), path)


def _pair(metrics: DatasetMetrics | None) -> str:
    return "-" if metrics is None else f"{metrics.rmse:.3f} / {metrics.mae:.3f}"


def summary_table(tested: EvalResult, baselines: BaselineResults, model_name: str) -> str:
    """Markdown-style table: one row per test dataset, the model's RMSE / MAE beside each baseline's, then the
    model's RMSE per horizon step."""
    scores = baselines.scores()
    head = f"| dataset | {model_name} RMSE / MAE | " + " | ".join(cls.short for cls in scores) + " |"
    lines = [head, "|" + "---|" * (2 + len(scores))]
    for name, m in tested.metrics.items():
        cells = [_pair(per_dataset.get(name)) for per_dataset in scores.values()]
        lines.append(f"| {name} | {_pair(m)} | " + " | ".join(cells) + " |")
    for name, m in tested.metrics.items():
        steps = " ".join(f"{v:.2f}" for v in m.per_step.rmse)
        lines.append(f"{name} RMSE per horizon step 1..{len(m.per_step.rmse)}: {steps}")
    return "\n".join(lines)


def write_figures(rt: Runtime, images: dict[str, np.ndarray], histories: dict[str, list[EpochRecord]],
                  step: int) -> list[Path]:
    """Save ``figures/forecast_<dataset>.png``, ``figures/gates_<dataset>.png`` (from ``figure_images`` tags
    ``<split>/<dataset>/<kind>``) and ``figures/curves.png`` (from the stage histories); send each to the logger.
    Rank 0 only; returns the files written."""
    if not rt.dist.is_main:
        return []
    out = rt.run_dir / "figures"
    out.mkdir(parents=True, exist_ok=True)
    named = {f"{tag.split('/')[-1]}_{tag.split('/')[-2]}": image for tag, image in images.items()}
    if any(histories.values()):
        named["curves"] = curves_figure(histories)
    written = []
    for name, image in named.items():
        path = out / f"{name}.png"
        mpimg.imsave(path, image)
        rt.logger.log_image(f"figures/{name}", image, step)
        written.append(path)
    return written


def write_report(rt: Runtime, metrics: RunMetrics, tested: EvalResult, model_name: str) -> None:
    """Write ``metrics.json``, ``predictions.npz`` when collected, the logger summary, and log the summary table.
    Rank 0 only."""
    if not rt.dist.is_main:
        return
    path = write_metrics(metrics, rt.run_dir)
    rt.logger.log_summary(to_json(tested.metrics))
    if tested.predictions is not None:
        _save_predictions(rt.run_dir / "predictions.npz", tested)
    for name, m in tested.metrics.items():
        log.info("test %s: RMSE %.4f  MAE %.4f  (normalised %.4f / %.4f, %d windows)", name, m.rmse, m.mae,
                 m.rmse_norm, m.mae_norm, m.n)
    log.info("test results (real scale) beside the naive baselines on the same test points:\n%s",
             summary_table(tested, metrics.baselines, model_name))
    log.info("metrics written to %s", path)
    figures = sorted((rt.run_dir / "figures").glob("*.png"))
    if figures:
        log.info("figures: %s", ", ".join(str(p.relative_to(rt.run_dir)) for p in figures))
    if (rt.run_dir / "tensorboard").is_dir():
        log.info("curves: tensorboard --logdir %s", rt.run_dir / "tensorboard")
