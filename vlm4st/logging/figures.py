"""Figures logged as images: gate weights, PromptForge pattern weights, forecast versus truth.

Each function takes plain numpy arrays and returns an RGB ``(H, W, 3)`` uint8 image, so any logger can take it
and the figures stay independent of the model code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

BRANCHES = ("temporal", "spatial", "cross", "input")


def figure_to_rgb(fig: Figure) -> np.ndarray:
    """Render a matplotlib figure to an (H, W, 3) uint8 array and close it."""
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())  # (H, W, 4)
    plt.close(fig)
    return np.ascontiguousarray(rgba[..., :3])


def gate_weights_image(gates: np.ndarray, branches: Sequence[str] = BRANCHES) -> np.ndarray:
    """Per-cell mean gate weight of each branch. ``gates``: (H, W, n_branches), already averaged over B and T."""
    n = gates.shape[-1]
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.4), squeeze=False)
    for i in range(n):
        ax = axes[0, i]
        im = ax.imshow(gates[..., i], vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_title(f"{branches[i] if i < len(branches) else i}: {gates[..., i].mean():.2f}", fontsize=9)
        ax.axis("off")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8)
    return figure_to_rgb(fig)


def pattern_weights_image(patterns: Mapping[str, np.ndarray]) -> np.ndarray:
    """PromptForge combined weights per modality. ``patterns[name]``: (K, M) mean weight of coarse k, fine m."""
    names = list(patterns)
    fig, axes = plt.subplots(1, len(names), figsize=(2.8 * len(names), 2.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        weights = patterns[name]
        ax.imshow(weights, cmap="YlOrRd", vmin=0.0, vmax=max(float(weights.max()), 1e-6), aspect="auto")
        for (k, m), value in np.ndenumerate(weights):
            ax.text(m, k, f"{value:.2f}", ha="center", va="center", fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("fine m")
        ax.set_ylabel("coarse k")
    fig.tight_layout()
    return figure_to_rgb(fig)


def frame_rows_image(rows: Mapping[str, np.ndarray], title: str = "", max_steps: int = 6) -> np.ndarray:
    """One row of frames per entry (``label -> (T, H, W)``), first ``max_steps`` frames, one shared colour scale."""
    steps = min(max_steps, max(frames.shape[0] for frames in rows.values()))
    vmin = float(min(frames[:steps].min() for frames in rows.values()))
    vmax = float(max(frames[:steps].max() for frames in rows.values()))
    fig, axes = plt.subplots(len(rows), steps, figsize=(1.9 * steps, 1.8 * len(rows)), squeeze=False)
    for row, (label, frames) in enumerate(rows.items()):
        for t in range(steps):
            ax = axes[row, t]
            ax.set_xticks([])
            ax.set_yticks([])
            if t < frames.shape[0]:
                ax.imshow(frames[t], vmin=vmin, vmax=vmax, cmap="magma")
            else:
                ax.axis("off")
            if t == 0:
                ax.set_ylabel(label, fontsize=9)
            if row == 0:
                ax.set_title(f"step {t + 1}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return figure_to_rgb(fig)


def forecast_image(truth: np.ndarray, forecast: np.ndarray, title: str = "", max_steps: int = 6) -> np.ndarray:
    """Truth (top row) against forecast (bottom row) over the horizon. Arrays: (T_out, H, W)."""
    return frame_rows_image({"truth": truth, "forecast": forecast}, title=title, max_steps=max_steps)
