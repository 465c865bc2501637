"""Hand-made run reports for the experiment scripts' tests, built from the real records and written by the real
writer, so that a script and the trainer can never disagree about the layout of ``metrics.json``."""

from __future__ import annotations

from pathlib import Path

from vlm4st.adapters.counting import ParamCount
from vlm4st.evaluation.baselines import BaselineResults
from vlm4st.evaluation.metrics import DatasetMetrics, StepErrors
from vlm4st.evaluation.shuffle import Degradation, ShuffleResult
from vlm4st.models.forecaster import ParamReport
from vlm4st.training.run_metrics import EpochRecord, RunInfo, RunMetrics, StageSummary, ValErrors, write_metrics


def scores(rmse: float, mae: float | None = None, steps: list[float] | None = None, n: int = 10) -> DatasetMetrics:
    """A dataset's metrics with the given RMSE (MAE a third of it unless given; every step at the RMSE unless
    ``steps`` gives them)."""
    mae = rmse / 3 if mae is None else mae
    per_step = steps if steps is not None else [rmse] * 4
    return DatasetMetrics(mae=mae, rmse=rmse, mae_norm=mae / 100, rmse_norm=rmse / 100,
                          per_step=StepErrors(mae=[mae] * len(per_step), rmse=per_step), n=n, points=100 * n)


def stage(epochs: int = 3, steps: int = 300, seconds: float = 60.0,
          val: dict[str, list[float]] | None = None) -> StageSummary:
    """A trained stage of ``epochs`` epochs; ``val`` gives each dataset's validation RMSE per epoch."""
    val = val or {}
    history = [EpochRecord(epoch=e, step=(e + 1) * steps // epochs, train_seconds=seconds * (e + 1) / epochs,
                           train_loss=0.1, val_loss=0.1,
                           val={name: ValErrors(mae=1.0, rmse=values[e]) for name, values in val.items()})
               for e in range(epochs)]
    return StageSummary(best_epoch=epochs - 1, best_val_loss=0.1, epochs=epochs, steps=steps, train_seconds=seconds,
                        best_checkpoint="checkpoints/best.pt", history=history)


def params(trainable: int = 10, total: int = 20) -> ParamReport:
    return ParamReport(total=total, trainable=trainable, modules={"head": ParamCount(total=total, trainable=trainable)})


def shuffle(test: dict[str, DatasetMetrics], degradation: float) -> ShuffleResult:
    """The input-order test: every dataset's RMSE and MAE ``degradation`` worse."""
    worse = {name: scores(m.rmse * (1 + degradation), m.mae * (1 + degradation)) for name, m in test.items()}
    return ShuffleResult(seed=0, loss=0.2, shuffled=worse,
                         degradation={name: Degradation(rmse=degradation, mae=degradation) for name in test})


def report(test: dict[str, DatasetMetrics], *, seed: int = 0, choices: dict[str, str] | None = None,
           baselines: BaselineResults | None = None, stages: dict[str, StageSummary] | None = None,
           trainable: int = 10, total: int = 20, shuffled: float | None = None,
           train_seconds: float | None = None) -> RunMetrics:
    """A training run's report."""
    stages = stages if stages is not None else {"main": stage()}
    seconds = sum(s.train_seconds for s in stages.values()) if train_seconds is None else train_seconds
    return RunMetrics(run=RunInfo(task="train", seed=seed, mode="full", target=None, init="source", **(choices or {})),
                      test=test, test_loss=0.1, baselines=baselines or BaselineResults(),
                      shuffle_test=None if shuffled is None else shuffle(test, shuffled),
                      params=params(trainable, total), stages=stages, best_val_loss=0.1, train_seconds=seconds,
                      wall_seconds=seconds + 10.0)


def write(run_dir: Path, metrics: RunMetrics) -> Path:
    """Write ``metrics`` as ``run_dir/metrics.json`` (folders created)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    return write_metrics(metrics, run_dir)
