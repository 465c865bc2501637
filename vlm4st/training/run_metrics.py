"""A run's report, ``metrics.json``, as typed records: written by ``write_metrics`` at the end of ``task=train`` and
``task=test``, read back by ``load_metrics`` in every experiment script and table.

Layout (keys of ``RunMetrics``): ``run`` (what ran: task, seed, protocol and the config-group choices), ``params``
(train only), ``stages`` (train only: per stage its summary and epoch history, or the checkpoint it reused),
``best_val_loss``, ``zero_shot_blend``, ``shuffle_test`` (empty unless enabled), ``train_seconds``,
``wall_seconds``, ``test`` (per dataset), ``test_loss`` and ``baselines``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlm4st.errors import ReportError
from vlm4st.evaluation.baselines import BaselineResults
from vlm4st.evaluation.metrics import DatasetMetrics
from vlm4st.evaluation.shuffle import ShuffleResult
from vlm4st.models.forecaster import ParamReport
from vlm4st.records import from_json, to_json

#: File name of the report in a run directory.
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class ValErrors:
    """A dataset's real-scale validation errors after one epoch."""

    mae: float
    rmse: float


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of a stage: where it ended, the mean training loss, the pooled and per-dataset validation."""

    epoch: int  # 0-based
    step: int  # optimiser steps of the stage after this epoch
    train_seconds: float  # training time of the stage so far
    train_loss: float
    val_loss: float
    val: dict[str, ValErrors]


@dataclass(frozen=True)
class StageSummary:
    """A trained stage: the selected epoch and its validation loss, what was spent, where the best weights are.

    A stage served from the source cache also names the cache entry and whether the entry already held it.
    """

    best_epoch: int
    best_val_loss: float
    epochs: int
    steps: int
    train_seconds: float
    best_checkpoint: str
    history: list[EpochRecord]
    cache: str | None = None
    cache_hit: bool | None = None


@dataclass(frozen=True)
class ReusedStage:
    """A stage not trained in this run: its weights came from ``transfer.source_checkpoint``."""

    reused: str


@dataclass(frozen=True)
class BlendWeights:
    """The zero-shot blend fitted for a target: the model's weight over the last frame per forecast step, and how
    many calibration-prefix windows it was fitted on."""

    weights: list[float]
    prefix_windows: int


@dataclass(frozen=True)
class RunInfo:
    """What ran: the task, seed and protocol, and the config-group choices (the groups of
    ``vlm4st.training.runtime.CHOICE_GROUPS``; None where the run did not record one)."""

    task: str
    seed: int
    mode: str
    target: str | None
    init: str | None = None  # train: transfer.init
    checkpoint: str | None = None  # test: the checkpoint evaluated
    model: str | None = None
    lora_type: str | None = None
    ablation: str | None = None
    dataset: str | None = None
    shot_ratio: str | None = None
    trainer: str | None = None
    logger: str | None = None
    experiment: str | None = None


@dataclass(frozen=True)
class RunMetrics:
    """Everything ``metrics.json`` holds (see the module docstring)."""

    run: RunInfo
    test: dict[str, DatasetMetrics]
    test_loss: float
    baselines: BaselineResults
    zero_shot_blend: dict[str, BlendWeights] = field(default_factory=dict)
    shuffle_test: ShuffleResult | None = None
    params: ParamReport | None = None
    stages: dict[str, StageSummary | ReusedStage] = field(default_factory=dict)
    best_val_loss: float | None = None
    train_seconds: float | None = None
    wall_seconds: float | None = None

    def trained_stages(self) -> list[StageSummary]:
        """The stages this run trained (or took from the source cache), in order."""
        return [s for s in self.stages.values() if isinstance(s, StageSummary)]

    def step_ms(self) -> float | None:
        """Training milliseconds per optimiser step over the trained stages; None when none ran a step."""
        stages = self.trained_stages()
        steps = sum(s.steps for s in stages)
        return 1e3 * sum(s.train_seconds for s in stages) / steps if steps else None


def write_metrics(metrics: RunMetrics, run_dir: Path) -> Path:
    """Write ``run_dir/metrics.json``; returns its path."""
    path = run_dir / METRICS_FILE
    path.write_text(json.dumps(to_json(metrics), indent=2) + "\n")
    return path


def load_metrics(path: Path | str) -> RunMetrics:
    """Read a ``metrics.json`` (or the run directory that holds one); ``ReportError`` names the file and the key
    when it is missing, not JSON, or not in this layout."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise ReportError(f"{path}: no such report file; expected the {METRICS_FILE} a finished run writes")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ReportError(f"{path}: not JSON ({err}); expected the {METRICS_FILE} a finished run writes") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: holds a {type(data).__name__}; expected the {METRICS_FILE} object of a run")
    return from_json(RunMetrics, _earlier_layout(data), str(path), "metrics")


def _earlier_layout(data: dict[str, Any]) -> dict[str, Any]:
    """Reports of earlier versions in this layout: a disabled shuffle test written as ``{}`` (now null), and a
    cached stage's ``reused`` flag (now ``cache_hit``; ``reused`` names a reused checkpoint only)."""
    data = dict(data)
    if data.get("shuffle_test") == {}:
        data["shuffle_test"] = None
    stages = data.get("stages")
    if isinstance(stages, dict):
        data["stages"] = {name: _cache_flag(stage) for name, stage in stages.items()}
    return data


def _cache_flag(stage: Any) -> Any:
    if isinstance(stage, dict) and "cache" in stage and isinstance(stage.get("reused"), bool):
        stage = {k: v for k, v in stage.items() if k != "reused"} | {"cache_hit": stage["reused"]}
    return stage
