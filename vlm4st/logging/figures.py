"""The figures of a run, as RGB ``(H, W, 3)`` uint8 images that any logger takes and ``figures/`` stores.

- ``forecast_figure``: for a few cells, the truth and the forecast at horizon steps 1 and T_out over consecutive
  test windows, and one frame map (truth, forecast, absolute error) with colour bars in real units;
- ``curves_figure``: training and validation loss per epoch, validation RMSE per dataset against epoch and
  against training minutes;
- ``gates_figure``: the mean gate weight of each DiX branch per cell and the PromptForge pattern weights;
- ``frame_rows_image``: rows of frames on one colour scale (``task=predict``'s history and forecast).
Inputs are plain numpy arrays and history records, so the figures do not depend on the model code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

BRANCHES = ("temporal", "spatial", "cross", "input")
UNIT_LABEL = "flow per cell and step (real scale)"


def figure_to_rgb(fig: Figure) -> np.ndarray:
    """Render a matplotlib figure to an (H, W, 3) uint8 array and close it."""
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())  # (H, W, 4)
    plt.close(fig)
    return np.ascontiguousarray(rgba[..., :3])


def frame_rows_image(rows: Mapping[str, np.ndarray], title: str = "", max_steps: int = 6) -> np.ndarray:
    """One row of frames per entry (``label -> (T, H, W)``), first ``max_steps`` frames, one shared colour scale."""
    steps = min(max_steps, max(frames.shape[0] for frames in rows.values()))
    vmin = float(min(frames[:steps].min() for frames in rows.values()))
    vmax = float(max(frames[:steps].max() for frames in rows.values()))
    fig, axes = plt.subplots(len(rows), steps, figsize=(1.9 * steps + 1.2, 1.8 * len(rows)), squeeze=False,
                             layout="constrained")
    image = None
    for row, (label, frames) in enumerate(rows.items()):
        for t in range(steps):
            ax = axes[row, t]
            ax.set_xticks([])
            ax.set_yticks([])
            if t < frames.shape[0]:
                image = ax.imshow(frames[t], vmin=vmin, vmax=vmax, cmap="magma")
            else:
                ax.axis("off")
            if t == 0:
                ax.set_ylabel(label, fontsize=9)
            if row == 0:
                ax.set_title(f"step {t + 1}", fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.9, label=UNIT_LABEL)
    if title:
        fig.suptitle(title, fontsize=10)
    return figure_to_rgb(fig)


def pick_cells(truth: np.ndarray, count: int) -> list[tuple[int, int]]:
    """The busiest, a middle and a quiet cell (by mean truth; all-zero cells skipped), ``count`` at most."""
    mean = truth.mean(axis=(0, 1))  # (H, W)
    order = [int(i) for i in np.argsort(mean, axis=None)[::-1] if mean.flat[i] > 0] or [0]
    picks = [order[round(q * (len(order) - 1))] for q in np.linspace(0.0, 0.75, count)]
    unique = list(dict.fromkeys(picks))
    return [divmod(i, mean.shape[1]) for i in unique]


def forecast_figure(truth: np.ndarray, forecast: np.ndarray, name: str, cells: int = 3) -> np.ndarray:
    """``truth`` / ``forecast``: (N, T_out, H, W) real-scale values of N consecutive windows."""
    n, t_out = truth.shape[:2]
    chosen = pick_cells(truth, cells)
    fig = plt.figure(figsize=(11, 3.0 + 2.2 * len(chosen)), layout="constrained")
    grid = fig.add_gridspec(len(chosen) + 1, 3, height_ratios=[1.0] * len(chosen) + [1.6])
    windows = np.arange(n)
    for row, (h, w) in enumerate(chosen):
        ax = fig.add_subplot(grid[row, :])
        ax.plot(windows, truth[:, 0, h, w], color="black", lw=1.2, label="truth (step 1)")
        ax.plot(windows, forecast[:, 0, h, w], color="tab:blue", lw=1.2, label="forecast, step 1")
        if t_out > 1:
            ax.plot(windows + t_out - 1, forecast[:, -1, h, w], color="tab:orange", lw=1.0, ls="--",
                    label=f"forecast, step {t_out} (drawn at the time it forecasts)")
        ax.set_title(f"{name}: cell (row {h}, col {w})", fontsize=9)
        ax.set_ylabel("flow", fontsize=8)
        if row == 0:
            ax.legend(fontsize=7, loc="upper right")
    ax.set_xlabel("test window (consecutive steps)", fontsize=8)
    vmax = float(max(truth[0, 0].max(), forecast[0, 0].max(), 1e-6))
    error = np.abs(forecast[0, 0] - truth[0, 0])
    maps = [("truth, window 0, step 1", truth[0, 0], "magma", 0.0, vmax),
            ("forecast", forecast[0, 0], "magma", 0.0, vmax),
            ("absolute error", error, "viridis", 0.0, float(max(error.max(), 1e-6)))]
    for col, (title, frame, cmap, lo, hi) in enumerate(maps):
        ax = fig.add_subplot(grid[-1, col])
        image = ax.imshow(frame, cmap=cmap, vmin=lo, vmax=hi)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(image, ax=ax, shrink=0.85, label=UNIT_LABEL if col == 0 else None)
    return figure_to_rgb(fig)


class _Errors(Protocol):
    rmse: float


class EpochPoint(Protocol):
    """What the curves read of an epoch record (the trainer's ``EpochRecord``)."""

    epoch: int
    train_seconds: float
    train_loss: float
    val_loss: float
    val: Mapping[str, _Errors]


def curves_figure(stages: Mapping[str, Sequence[EpochPoint]]) -> np.ndarray:
    """``stages``: stage name -> its epoch records, in training order; later stages continue the epoch axis."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6), layout="constrained")
    offset_epochs, offset_min = 0, 0.0
    for stage, history in stages.items():
        if not history:
            continue
        epochs = np.array([h.epoch + 1 for h in history]) + offset_epochs
        minutes = np.array([h.train_seconds for h in history]) / 60.0 + offset_min
        axes[0].plot(epochs, [h.train_loss for h in history], marker=".", label=f"{stage}: train")
        axes[0].plot(epochs, [h.val_loss for h in history], marker=".", label=f"{stage}: validation")
        for dataset in history[0].val:
            rmse = [h.val[dataset].rmse for h in history]
            axes[1].plot(epochs, rmse, marker=".", label=f"{stage}: {dataset}")
            axes[2].plot(minutes, rmse, marker=".", label=f"{stage}: {dataset}")
        offset_epochs, offset_min = int(epochs[-1]), float(minutes[-1])
    axes[0].set(xlabel="epoch", ylabel="loss (normalised)", yscale="log", title="training and validation loss")
    axes[1].set(xlabel="epoch", ylabel="RMSE (real scale)", title="validation RMSE per dataset")
    axes[2].set(xlabel="training minutes", ylabel="RMSE (real scale)", title="validation RMSE against time")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return figure_to_rgb(fig)


def gates_figure(gates: np.ndarray | None, patterns: Mapping[str, np.ndarray] | None, name: str) -> np.ndarray:
    """``gates``: (H, W, n_branches) mean gate weights (None without fusion); ``patterns``: modality -> (K, M)
    PromptForge weights (None without PromptForge). At least one must be given."""
    n_gates = 0 if gates is None else gates.shape[-1]
    mods = list(patterns or {})
    if n_gates + len(mods) == 0:
        raise ValueError("gates_figure: neither gate weights nor pattern weights to draw")
    fig, axes = plt.subplots(1, n_gates + len(mods), figsize=(2.9 * (n_gates + len(mods)) + 1.0, 3.0),
                             squeeze=False, layout="constrained")
    image = None
    lo, hi = (float(gates.min()), float(max(gates.max(), gates.min() + 1e-6))) if n_gates else (0.0, 1.0)
    for i in range(n_gates):
        ax = axes[0, i]
        image = ax.imshow(gates[..., i], vmin=lo, vmax=hi, cmap="viridis")  # one scale over the branches
        ax.set_title(f"gate {BRANCHES[i] if i < len(BRANCHES) else i}: mean {gates[..., i].mean():.2f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if image is not None:
        fig.colorbar(image, ax=axes[0, :n_gates].tolist(), shrink=0.85, label="gate weight")
    for j, modality in enumerate(mods):
        ax = axes[0, n_gates + j]
        weights = patterns[modality]
        shown = ax.imshow(weights, cmap="YlOrRd", vmin=0.0, vmax=max(float(weights.max()), 1e-6), aspect="auto")
        ax.set_title(f"PromptForge {modality}", fontsize=9)
        ax.set_xlabel("fine pattern m", fontsize=8)
        ax.set_ylabel("coarse pattern k", fontsize=8)
        fig.colorbar(shown, ax=ax, shrink=0.85, label="weight")
    fig.suptitle(f"{name}: fusion gates and prompt patterns (test windows)", fontsize=10)
    return figure_to_rgb(fig)
