"""The trainer's progress through one stage, as a typed record that checkpoints store and resume restores."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from vlm4st.errors import CheckpointError
from vlm4st.records import from_json, to_json
from vlm4st.training.run_metrics import EpochRecord


@dataclass
class TrainState:
    """Where a stage stands: counters, the best validation so far, the history, the time spent.

    ``epoch`` counts finished epochs; ``epoch_step`` the steps done inside the current one (resume mid-epoch);
    ``step`` the optimiser steps of the stage; ``epoch_loss_sum`` / ``epoch_loss_steps`` the training loss of the
    current epoch so far (its mean goes into the history). ``out_of_time`` is set when the time budget ran out
    (the partial epoch is validated, then the stage ends); ``finished`` when the stage is complete and saved.
    """

    epoch: int = 0
    epoch_step: int = 0
    step: int = 0
    best_val: float = math.inf
    best_epoch: int = -1
    history: list[EpochRecord] = field(default_factory=list)
    train_seconds: float = 0.0
    epoch_loss_sum: float = 0.0
    epoch_loss_steps: int = 0
    out_of_time: bool = False
    finished: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain values for a ``weights_only`` checkpoint."""
        return to_json(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str) -> TrainState:
        """Rebuild from ``to_dict`` output; unknown or missing fields name the checkpoint file."""
        names = {f.name for f in dataclasses.fields(cls)}
        if set(values) != names:
            raise CheckpointError(
                f"checkpoint '{source}': trainer_state has fields {sorted(values)}, expected {sorted(names)} "
                "(written by another version of the trainer?)"
            )
        history = from_json(list[EpochRecord], values["history"], f"checkpoint '{source}'", "trainer_state.history",
                            error=CheckpointError)
        return cls(**{**values, "history": history})
