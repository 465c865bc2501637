"""What `python -m vlm4st.run task=...` does: ``train`` (train, select on validation, test), ``test`` (evaluate a
checkpoint), ``predict`` (forecast a file of frames), ``data`` (build the data and print its summary).

Every task enters ``run_context`` (device, seed, threads, precision, distributed init, logger, run dir, teardown).
``train`` asks ``plan_stages`` for its stages (one stage, source + target for few-shot, source only for
zero-shot; the source stage trained, cached or reused from ``source_checkpoint``), runs them with one ``Trainer``,
tests the selected weights and hands everything to ``write_report``. ``test`` and ``predict`` rebuild the
checkpoint's model, data-shaping keys and seed, and ``test`` verifies that the rebuilt data is the data the
checkpoint was trained on. With ``shuffle_test.enabled`` the test of ``train`` and of ``test`` runs a second time
with each window's input frames permuted (the input-order test, ``vlm4st.evaluation.shuffle``).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from vlm4st import checks
from vlm4st.config import ConfigError, instantiate
from vlm4st.data.build import build_datamodule
from vlm4st.data.module import DataModule
from vlm4st.errors import CheckpointError
from vlm4st.evaluation.baselines import BaselineResults, evaluate_baselines
from vlm4st.evaluation.shuffle import ShuffleResult, ShuffleTest, log_degradation, shuffle_result
from vlm4st.models.forecaster import Forecaster
from vlm4st.models.loss import TrainingLoss
from vlm4st.training import checkpoint as ckpt
from vlm4st.training.distributed import barrier
from vlm4st.training.evaluate import EvalResult, evaluate, figure_images
from vlm4st.training.report import write_figures, write_report
from vlm4st.training.run_metrics import (
    BlendWeights,
    EpochRecord,
    ReusedStage,
    RunInfo,
    RunMetrics,
    StageSummary,
)
from vlm4st.training.runtime import Runtime, resolved_config, run_context
from vlm4st.training.settings import TrainerSettings, TransferSettings
from vlm4st.training.signals import RunInterrupted
from vlm4st.training.source_cache import locked_source_dir, source_key
from vlm4st.training.stages import Plan, plan_stages
from vlm4st.training.state import TrainState
from vlm4st.training.trainer import StageResult, Trainer
from vlm4st.training.weights import load_model_state
from vlm4st.training.zero_shot import BlendedForecast, fit_blend

log = logging.getLogger(__name__)

__all__ = ["RunInterrupted", "data_summary", "predict", "test", "train"]


def build_data(cfg: DictConfig) -> DataModule:
    """The run's ``DataModule`` (cache under ``paths.cache_dir``)."""
    return build_datamodule(cfg.dataset, cfg.shot_ratio, seed=int(cfg.seed), cache_dir=str(cfg.paths.cache_dir))


def build_model(model_cfg: DictConfig | dict[str, Any], num_datasets: int, t_in: int, t_out: int) -> Forecaster:
    """Instantiate the model tree (``model`` config node) through the guarded ``instantiate`` and check it
    against the data it will see: ``num_datasets`` task ids and windows of ``t_in`` inputs and ``t_out`` steps.

    Every per-task table (cell embeddings, routed adapters) must hold a row for each of the ``num_datasets``
    task ids the data module hands out (0 .. n-1) plus the unknown task (id ``num_tasks``); checking it here,
    once, keeps the range check out of the forward pass. The data serves one channel per window, so the
    forecast has one channel.
    """
    node = model_cfg if isinstance(model_cfg, DictConfig) else OmegaConf.create(model_cfg)
    model = instantiate(node, path="model")
    if not isinstance(model, Forecaster):
        raise ConfigError(f"model: {type(model).__name__} is not a forecaster (it lacks t_in, t_out, out_channels or "
                          "a method of vlm4st.models.forecaster.Forecaster); expected model._target_ to build one")
    for name, module in model.named_modules():
        tasks = getattr(module, "num_tasks", None)
        if isinstance(tasks, int) and tasks < num_datasets:
            raise ConfigError(
                f"model: {name or type(module).__name__} has num_tasks={tasks} but the data has {num_datasets} "
                f"dataset(s) (dataset.sources); expected num_tasks >= {num_datasets}"
            )
    for key, built, data in (("t_in", model.t_in, t_in), ("t_out", model.t_out, t_out), ("out_channels",
                             model.out_channels, 1)):
        if built != data:
            raise ConfigError(f"model.{key}: {built}, but the data's windows need {data} (dataset.t_in / t_out; "
                              f"one channel per window); expected model.{key}={data}")
    return model


def data_summary(cfg: DictConfig) -> None:
    """``task=data``: build the data, print the summary table, exit."""
    with run_context(cfg):
        dm = build_data(cfg)
        sys.stdout.write(dm.summary() + "\n")


@dataclass(frozen=True)
class Evaluation:
    """What every evaluation of a run shares: its data, runtime, loss, checked trainer settings and the datasets the
    model never trained on (``unseen``: a zero-shot target)."""

    dm: DataModule
    rt: Runtime
    loss: TrainingLoss
    settings: TrainerSettings
    unseen: list[str]

    def test_split(self, model: nn.Module, collect: bool = False, frame_seed: int | None = None) -> EvalResult:
        """The test split of every dataset (with permuted input frames when ``frame_seed`` is given)."""
        dm, rt = self.dm, self.rt
        return evaluate(model, dm, "test", dm.eval_names("test"), batch_size=self.settings.eval_batch_size,
                        device=rt.device, dist=rt.dist, loss=self.loss, autocast=rt.autocast(), unseen=self.unseen,
                        collect=collect, progress=self.settings.progress_for(rt.dist.is_main), frame_seed=frame_seed)


def _test(model: nn.Module, ev: Evaluation, save_predictions: bool) -> EvalResult:
    collect = save_predictions and not ev.rt.dist.enabled
    if save_predictions and ev.rt.dist.enabled:
        log.warning("save_predictions is ignored under DDP; run task=test on one process to write them")
    return ev.test_split(model, collect=collect)


def _shuffle_test(model: nn.Module, ev: Evaluation, shuffle: ShuffleTest, ordered: EvalResult) -> ShuffleResult | None:
    """The input-order test (``shuffle_test``): the test split again with each window's input frames permuted;
    None when disabled."""
    if not shuffle.enabled:
        return None
    shuffled = ev.test_split(model, frame_seed=shuffle.seed)
    result = shuffle_result(shuffle, ordered.metrics, shuffled.metrics, shuffled.loss)
    if ev.rt.dist.is_main:
        log_degradation(result, ordered.metrics)
    return result


def _zero_shot(model: nn.Module, ev: Evaluation, blend_on: bool) -> tuple[nn.Module, dict[str, BlendWeights]]:
    """The model the test runs: with ``transfer.zero_shot_blend`` (``blend_on``) and a zero-shot target, the model
    pulled toward the last frame per forecast step by weights fitted on the target's unscored calibration prefix;
    and what was fitted (for ``metrics.json``)."""
    if not ev.unseen or not blend_on:
        return model, {}
    (name,) = ev.unseen  # a zero-shot run has one target
    blend = fit_blend(model, ev.dm.by_name[name], len(ev.dm.names), ev.rt.device, ev.rt.autocast(),
                      ev.settings.eval_batch_size, ev.loss)
    fitted = {name: BlendWeights(weights=[float(w) for w in blend.weights], prefix_windows=blend.windows)}
    return BlendedForecast(model, blend.weights).to(ev.rt.device), fitted


def _figures(model: nn.Module, ev: Evaluation, histories: dict[str, list[EpochRecord]], step: int) -> None:
    """The run's pictures from the test windows and the stage histories (main process only; none with
    ``trainer.figures=false``)."""
    if not (ev.rt.dist.is_main and ev.settings.figures):
        return
    images = figure_images(model, ev.dm, "test", ev.dm.eval_names("test"), ev.rt.device, ev.rt.autocast(),
                           ev.settings.figure_windows, unseen=ev.unseen)
    write_figures(ev.rt, images, histories, step)


def _baselines(ev: Evaluation) -> BaselineResults:
    """The naive baselines on the test split (main process only: they need no model)."""
    if not ev.rt.dist.is_main:
        return BaselineResults()
    return evaluate_baselines(ev.dm, "test", progress=ev.settings.progress)


def _stage_summary(result: StageResult) -> StageSummary:
    return StageSummary(best_epoch=result.best_epoch, best_val_loss=result.best_val_loss, epochs=result.epochs_run,
                        steps=result.steps, train_seconds=result.train_seconds, best_checkpoint=str(result.best_path),
                        history=result.history)


def _check_source_checkpoint(payload: dict[str, Any], dm: DataModule, path: str) -> None:
    """A reused source stage must know the same task ids, the same data, and must never have trained on the
    target."""
    names = [d["name"] for d in payload["data"]["datasets"]]
    if names != dm.names:
        raise CheckpointError(f"source_checkpoint '{path}' was trained with datasets {names}; this run has "
                              f"{dm.names} (task ids must match: same dataset.sources in the same order)")
    if dm.target in payload["stage_train"]:
        raise CheckpointError(f"source_checkpoint '{path}' trained on the target '{dm.target}'; a transfer "
                              "run needs a source model that never saw it")
    dm.verify_state_dict(payload["data"], path, scope="sources")


def _load_best(model, path: Path) -> None:
    load_model_state(model, ckpt.load_checkpoint(path)["model"], str(path))


def _run_plan(plan: Plan, trainer: Trainer, resume: bool, cache_dir: str, dm: DataModule, rt: Runtime,
              config: dict[str, Any]) -> tuple[dict[str, StageSummary | ReusedStage], StageResult | None]:
    """Run the stages in order (each from its ``last.pt`` when ``resume``; a cached source stage always resumes
    from its cache entry under ``cache_dir``); returns their summaries and the result whose best weights the test
    uses."""
    stages: dict[str, StageSummary | ReusedStage] = {}
    result: StageResult | None = None
    for stage in plan.stages:
        if stage.start == "previous" and result is not None:
            _load_best(trainer.model, result.best_path)
        if stage.reuse is not None:
            payload = ckpt.load_checkpoint(stage.reuse)
            _check_source_checkpoint(payload, dm, str(stage.reuse))
            load_model_state(trainer.model, payload["model"], str(stage.reuse))
            stages[stage.name] = ReusedStage(reused=str(stage.reuse))
            result = None
        elif stage.cached:
            key = source_key(config, dm.content_hashes())
            with locked_source_dir(cache_dir, key, str(dm.target), lock=rt.dist.is_main) as entry:
                barrier()
                stage.checkpoint_dir = entry
                reused = (entry / "last.pt").is_file()
                result = trainer.fit(stage, resume=True)
            stages[stage.name] = dataclasses.replace(_stage_summary(result), cache=str(entry), cache_hit=reused)
        else:
            result = trainer.fit(stage, resume=resume)
            stages[stage.name] = _stage_summary(result)
    return stages, result


def _resume_choice(value: object) -> bool:
    """``resume``: ``auto`` or ``true`` continue from ``last.pt`` when it exists, ``false`` starts over."""
    if value == "auto" or value is True:
        return True
    if value is False:
        return False
    raise ConfigError(f"resume={value!r}; expected auto, true or false")


def train(cfg: DictConfig) -> float:
    """Train the planned stages, test the selected weights, write the report."""
    with run_context(cfg) as rt:
        return _train(cfg, rt)


def _train(cfg: DictConfig, rt: Runtime) -> float:
    started = time.perf_counter()
    shuffle = ShuffleTest.from_config(cfg.shuffle_test)
    settings = TrainerSettings.from_config(cfg.trainer)
    transfer = TransferSettings.from_config(cfg)
    resume = _resume_choice(cfg.resume)
    dm = build_data(cfg)
    shuffle.check_frames(dm.t_in)
    log.info("data:\n%s", dm.summary())
    model = build_model(cfg.model, len(dm.names), dm.t_in, dm.t_out)
    params = model.get_trainable_parameters()
    log.info("model: %s parameters, %s trainable (%s in adapters)", f"{params.total:,}", f"{params.trainable:,}",
             f"{params.adapter.trainable:,}")
    if settings.grad_checkpointing:
        model.set_grad_checkpointing(True)
    config = resolved_config(cfg)
    if rt.dist.is_main:
        (rt.run_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(config))
        rt.logger.log_config(config)
    meta = {"config": config, "data": dm.state_dict(), "adapter": model.describe_adapter()}
    trainer = Trainer(model, dm, settings, rt, meta)
    plan = plan_stages(settings, transfer, dm, rt.run_dir / "checkpoints")
    stages, result = _run_plan(plan, trainer, resume, transfer.cache_dir, dm, rt, config)
    if result is not None:
        _load_best(model, result.best_path)
    ev = Evaluation(dm, rt, trainer.loss, settings, plan.unseen)
    forecaster, blend = _zero_shot(model, ev, transfer.zero_shot_blend)
    tested = _test(forecaster, ev, checks.flag(cfg.save_predictions, "save_predictions"))
    shuffled = _shuffle_test(forecaster, ev, shuffle, tested)
    baselines = _baselines(ev)
    trained = {name: s for name, s in stages.items() if isinstance(s, StageSummary)}
    _figures(forecaster, ev, {name: s.history for name, s in trained.items()}, trainer.global_step_offset)
    objective = float(result.best_val_loss) if result is not None else float("nan")
    metrics = RunMetrics(
        run=RunInfo(task="train", seed=int(cfg.seed), mode=dm.mode, target=dm.target, init=transfer.init,
                    **rt.choices),
        test=tested.metrics,
        test_loss=tested.loss,
        baselines=baselines,
        zero_shot_blend=blend,
        shuffle_test=shuffled,
        params=params,
        stages=stages,
        best_val_loss=objective,
        train_seconds=sum(s.train_seconds for s in trained.values()),
        wall_seconds=time.perf_counter() - started,
    )
    write_report(rt, metrics, tested, _model_name(rt))
    return objective


def _model_name(rt: Runtime) -> str:
    return rt.choices.get("model", "model")


def _checkpoint_config(cfg: DictConfig) -> tuple[dict[str, Any], DictConfig]:
    if not cfg.checkpoint:
        raise ConfigError(f"task={cfg.task} needs checkpoint=<path to best.pt or last.pt>")
    payload = ckpt.load_checkpoint(str(cfg.checkpoint))
    return payload, OmegaConf.create(payload["config"])


#: What a checkpoint decides when ``task=test`` / ``task=predict`` rebuild its model and data.
TRAINED_KEYS = ("model", "dataset", "shot_ratio", "seed")


def _as_trained(cfg: DictConfig, trained: DictConfig) -> DictConfig:
    """``cfg`` with the model, data-shaping keys and seed of the checkpoint's run (rebuild exactly what trained)."""
    run_cfg = cfg.copy()
    for key in TRAINED_KEYS:
        OmegaConf.update(run_cfg, key, trained[key], merge=False)
    return run_cfg


def test(cfg: DictConfig) -> float:
    """Evaluate ``checkpoint`` on the test split of the data it was trained with (verified), and again with
    shuffled input frames when ``shuffle_test.enabled``; write the report."""
    shuffle = ShuffleTest.from_config(cfg.shuffle_test)
    payload, trained = _checkpoint_config(cfg)
    run_cfg = _as_trained(cfg, trained)
    settings = TrainerSettings.from_config(run_cfg.trainer)
    transfer = TransferSettings.from_config(run_cfg)
    with run_context(run_cfg) as rt:
        dm = build_data(run_cfg)
        dm.verify_state_dict(payload["data"], str(cfg.checkpoint))
        shuffle.check_frames(dm.t_in)
        model = build_model(trained.model, len(dm.names), dm.t_in, dm.t_out).to(rt.device)
        load_model_state(model, payload["model"], str(cfg.checkpoint))
        loss = instantiate(settings.loss, path="trainer.loss")
        unseen = plan_stages(settings, transfer, dm, rt.run_dir / "checkpoints").unseen
        ev = Evaluation(dm, rt, loss, settings, unseen)
        forecaster, blend = _zero_shot(model, ev, transfer.zero_shot_blend)
        result = _test(forecaster, ev, checks.flag(run_cfg.save_predictions, "save_predictions"))
        shuffled = _shuffle_test(forecaster, ev, shuffle, result)
        baselines = _baselines(ev)
        state = TrainState.from_dict(dict(payload["trainer_state"]), str(cfg.checkpoint))
        _figures(forecaster, ev, {str(payload["stage"]): state.history}, state.step)
        metrics = RunMetrics(
            run=RunInfo(task="test", seed=int(run_cfg.seed), mode=dm.mode, target=dm.target,
                        checkpoint=str(cfg.checkpoint)),
            test=result.metrics,
            test_loss=result.loss,
            baselines=baselines,
            zero_shot_blend=blend,
            shuffle_test=shuffled,
        )
        write_report(rt, metrics, result, _model_name(rt))
        return result.loss


def predict(cfg: DictConfig) -> None:
    """Forecast ``predict_input`` with ``checkpoint``; writes ``forecast.npz`` and ``forecast.png``."""
    from vlm4st.training.predict import run_predict

    payload, trained = _checkpoint_config(cfg)
    run_cfg = _as_trained(cfg, trained)
    with run_context(run_cfg) as rt:
        data = payload["data"]
        model = build_model(trained.model, len(data["datasets"]), data["t_in"], data["t_out"]).to(rt.device)
        given = run_cfg.predict_input
        run_predict(str(cfg.checkpoint), None if given is None else str(given),
                    None if run_cfg.predict_dataset is None else str(run_cfg.predict_dataset), payload, model, rt)
