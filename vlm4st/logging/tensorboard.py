"""TensorBoard backend (the default logger)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.tensorboard import SummaryWriter

from vlm4st import checks
from vlm4st.logging.base import ExperimentLogger, flatten


class TensorBoardLogger(ExperimentLogger):
    """Writes event files under ``log_dir``; the config and summary also go in as text."""

    def __init__(self, log_dir: str, images_every_epochs: int = 1) -> None:
        self.log_dir = Path(log_dir)
        self.images_every_epochs = checks.non_negative_int(images_every_epochs, "logger.images_every_epochs")
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def _write_scalars(self, scalars: dict[str, float], step: int) -> None:
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, value, global_step=step)

    def _write_image(self, tag: str, image: np.ndarray, step: int) -> None:
        self._writer.add_image(tag, image, global_step=step, dataformats="HWC")

    def _write_config(self, config: dict[str, Any]) -> None:
        text = json.dumps(config, indent=2, default=str)
        self._writer.add_text("config", f"```\n{text}\n```", global_step=0)

    def _write_summary(self, summary: dict[str, Any]) -> None:
        for tag, value in flatten(summary, "test").items():
            if isinstance(value, int | float):
                self._writer.add_scalar(tag, value, global_step=0)
        self._writer.flush()

    def close(self) -> None:
        self._writer.flush()
        self._writer.close()
