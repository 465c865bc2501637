"""The experiment-logger interface: scalars, images, the resolved config and a final summary.

Training code talks only to this interface; `logger=tensorboard|wandb|none` picks the backend. Only rank 0 of a
distributed run gets a real logger; other ranks get a ``NullLogger``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


class ExperimentLogger:
    """Base class. Subclasses override the ``_write_*`` hooks; the public methods validate input once."""

    #: Log images every this many epochs (0 disables images).
    images_every_epochs: int = 1

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        """Log scalar values under their tags (e.g. ``train/loss``, ``val/taxinyc/rmse``) at ``step``."""
        clean = {tag: float(value) for tag, value in scalars.items()}
        self._write_scalars(clean, step)

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        """Log an RGB image ``(H, W, 3)`` uint8 under ``tag`` at ``step``."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"log_image '{tag}': expected an (H, W, 3) uint8 array, got {image.shape} {image.dtype}")
        self._write_image(tag, image, step)

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Record the resolved run config (a plain nested dict)."""
        self._write_config(dict(config))

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        """Record final results (test metrics) once at the end of a run."""
        self._write_summary(dict(summary))

    def wants_images(self, epoch: int) -> bool:
        """Whether images should be produced for ``epoch`` (figures cost time; skip them when unused)."""
        return self.images_every_epochs > 0 and epoch % self.images_every_epochs == 0

    def close(self) -> None:
        """Flush and release the backend."""

    def _write_scalars(self, scalars: dict[str, float], step: int) -> None:
        pass

    def _write_image(self, tag: str, image: np.ndarray, step: int) -> None:
        pass

    def _write_config(self, config: dict[str, Any]) -> None:
        pass

    def _write_summary(self, summary: dict[str, Any]) -> None:
        pass


class NullLogger(ExperimentLogger):
    """``logger=none``: accepts everything, writes nothing, asks for no images."""

    images_every_epochs = 0


def flatten(tree: Mapping[str, Any], prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """Flatten a nested mapping into ``{'a/b/c': value}`` (lists of numbers become ``a/b/0``, ...)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, name, sep))
        elif isinstance(value, list | tuple) and all(isinstance(v, int | float) for v in value):
            flat.update({f"{name}{sep}{i}": v for i, v in enumerate(value)})
        else:
            flat[name] = value
    return flat
