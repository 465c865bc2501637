"""The one report writer of ``task=train`` and ``task=test``: ``metrics.json``, ``predictions.npz``, the logger
summary, the figures in ``figures/``, and an end-of-run summary a person reads at a glance (the model beside the
naive baselines on the same test points, per-horizon RMSE, where the run and its pictures live)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import image as mpimg

from vlm4st.logging.figures import curves_figure
from vlm4st.training.evaluate import EvalResult
from vlm4st.training.runtime import Runtime

log = logging.getLogger(__name__)

#: Baselines in the summary table, in order, with their short column names.
BASELINE_COLUMNS = {"historical_average": "HA", "last_value": "Last", "time_of_day_mean": "ToD-mean"}


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")


def _save_predictions(path: Path, result: EvalResult) -> None:
    arrays = {f"{name}.{field}": value for name, d in (result.predictions or {}).items() for field, value in d.items()}
    np.savez_compressed(path, **arrays)
    log.info("wrote real-scale forecasts and targets of %d dataset(s) to %s", len(result.predictions or {}), path)


def _pair(metrics: dict[str, Any] | None) -> str:
    return "-" if metrics is None else f"{metrics['rmse']:.3f} / {metrics['mae']:.3f}"


def summary_table(tested: EvalResult, baselines: dict[str, Any], model_name: str) -> str:
    """Markdown-style table: one row per test dataset, the model's RMSE / MAE beside each baseline's, then the
    model's RMSE per horizon step."""
    columns = [c for c in BASELINE_COLUMNS if c in baselines]
    head = f"| dataset | {model_name} RMSE / MAE | " + " | ".join(BASELINE_COLUMNS[c] for c in columns) + " |"
    lines = [head, "|" + "---|" * (2 + len(columns))]
    for name, m in tested.metrics.items():
        cells = [_pair(baselines[c].get(name)) for c in columns]
        lines.append(f"| {name} | {_pair(m)} | " + " | ".join(cells) + " |")
    for name, m in tested.metrics.items():
        steps = " ".join(f"{v:.2f}" for v in m["per_step"]["rmse"])
        lines.append(f"{name} RMSE per horizon step 1..{len(m['per_step']['rmse'])}: {steps}")
    return "\n".join(lines)


def write_figures(rt: Runtime, images: dict[str, np.ndarray], histories: dict[str, list[dict[str, Any]]],
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


def write_report(
    rt: Runtime,
    metrics: dict[str, Any],
    tested: EvalResult,
    baselines: dict[str, Any],
    model_name: str,
) -> None:
    """Write ``metrics.json`` (``metrics`` plus the test results and baselines), ``predictions.npz`` when
    collected, the logger summary, and log the summary table. Rank 0 only."""
    if not rt.dist.is_main:
        return
    payload = {**metrics, "test": tested.metrics, "test_loss": tested.loss, "baselines": baselines}
    _write_json(rt.run_dir / "metrics.json", payload)
    rt.logger.log_summary(tested.metrics)
    if tested.predictions is not None:
        _save_predictions(rt.run_dir / "predictions.npz", tested)
    for name, m in tested.metrics.items():
        log.info("test %s: RMSE %.4f  MAE %.4f  (normalised %.4f / %.4f, %d windows)", name, m["rmse"], m["mae"],
                 m["rmse_norm"], m["mae_norm"], m["n"])
    log.info("test results (real scale) beside the naive baselines on the same test points:\n%s",
             summary_table(tested, baselines, model_name))
    log.info("metrics written to %s", rt.run_dir / "metrics.json")
    figures = sorted((rt.run_dir / "figures").glob("*.png"))
    if figures:
        log.info("figures: %s", ", ".join(str(p.relative_to(rt.run_dir)) for p in figures))
    if (rt.run_dir / "tensorboard").is_dir():
        log.info("curves: tensorboard --logdir %s", rt.run_dir / "tensorboard")
