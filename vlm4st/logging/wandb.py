"""Weights & Biases backend: offline unless an API key is configured, so runs never block on a server.

Runs of one Hydra sweep share a group (the sweep directory's name) and carry tags for the swept choices, so the
W&B table of a group is the ablation table.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from vlm4st import checks
from vlm4st.logging.base import ExperimentLogger, flatten

log = logging.getLogger(__name__)

_MODES = ("auto", "online", "offline", "disabled")


def resolve_mode(mode: str) -> str:
    """``auto`` means online when ``WANDB_API_KEY`` is set (or ``WANDB_MODE`` says so), offline otherwise."""
    checks.choice(mode, _MODES, "logger.mode")
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE") in ("online", "offline", "disabled"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


class WandbLogger(ExperimentLogger):
    """Scalars, images, config and summary to a W&B run (offline files under ``dir/wandb`` by default)."""

    def __init__(
        self,
        project: str,
        dir: str,
        entity: str | None = None,
        mode: str = "auto",
        group: str | None = None,
        tags: list[str] | None = None,
        name: str | None = None,
        images_every_epochs: int = 1,
    ) -> None:
        self.images_every_epochs = checks.non_negative_int(images_every_epochs, "logger.images_every_epochs")
        self.mode = resolve_mode(mode)
        import wandb

        os.makedirs(dir, exist_ok=True)
        self._wandb = wandb
        self._run = wandb.init(
            project=project,
            entity=entity,
            dir=dir,
            mode=self.mode,
            group=group,
            tags=list(tags or []),
            name=name,
            reinit="create_new",
        )
        log.info("W&B run %s (%s mode) in group %s, files under %s", self._run.id, self.mode, group, dir)

    @property
    def run_dir(self) -> str:
        """Directory holding this run's files (the offline ``.wandb`` file among them)."""
        return str(self._run.dir)

    def _write_scalars(self, scalars: dict[str, float], step: int) -> None:
        self._run.log(scalars, step=step)

    def _write_image(self, tag: str, image: np.ndarray, step: int) -> None:
        self._run.log({tag: self._wandb.Image(image)}, step=step)

    def _write_config(self, config: dict[str, Any]) -> None:
        self._run.config.update(config, allow_val_change=True)

    def _write_summary(self, summary: dict[str, Any]) -> None:
        for key, value in flatten(summary, "test").items():
            if isinstance(value, int | float | str):
                self._run.summary[key] = value

    def close(self) -> None:
        self._run.finish()
