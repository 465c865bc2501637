"""What `python -m vlm4st.run task=...` does: ``train`` (train, select on validation, test), ``test`` (evaluate a
checkpoint), ``predict`` (forecast a file of frames), ``data`` (build the data and print its summary).

Transfer runs (``shot_ratio`` below 1 with ``dataset.target``) train a source stage on every other dataset,
then either evaluate the target directly (zero-shot, with the adapter's "unknown task" id) or fine-tune on the
target's share first (few-shot). ``source_checkpoint=...`` reuses a source stage instead of retraining it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from vlm4st.config import ConfigError, instantiate
from vlm4st.data.build import build_datamodule
from vlm4st.data.module import DataModule
from vlm4st.training import checkpoint as ckpt
from vlm4st.training.distributed import barrier, shutdown_distributed
from vlm4st.training.evaluate import EvalResult, evaluate
from vlm4st.training.runtime import Runtime, resolved_config, setup_runtime
from vlm4st.training.source_cache import locked_source_dir, source_key
from vlm4st.training.state import load_model_state
from vlm4st.training.trainer import RunInterrupted, Stage, StageResult, Trainer

log = logging.getLogger(__name__)

__all__ = ["RunInterrupted", "data_summary", "predict", "test", "train"]


def build_data(cfg: DictConfig) -> DataModule:
    """The run's ``DataModule`` (cache under ``paths.cache_dir``)."""
    return build_datamodule(cfg.dataset, cfg.shot_ratio, seed=int(cfg.seed), cache_dir=str(cfg.paths.cache_dir))


def build_model(model_cfg: DictConfig | dict[str, Any]) -> Any:
    """Instantiate the model tree (``model`` config node) through the guarded ``instantiate``."""
    node = model_cfg if isinstance(model_cfg, DictConfig) else OmegaConf.create(model_cfg)
    return instantiate(node, path="model")


def data_summary(cfg: DictConfig) -> None:
    """``task=data``: build the data, print the summary table, exit."""
    dm = build_data(cfg)
    sys.stdout.write(dm.summary() + "\n")


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")


def _save_predictions(path: Path, result: EvalResult) -> None:
    arrays = {f"{name}.{field}": value for name, d in (result.predictions or {}).items() for field, value in d.items()}
    np.savez_compressed(path, **arrays)
    log.info("wrote real-scale forecasts and targets of %d dataset(s) to %s", len(result.predictions or {}), path)


def _test(model, dm: DataModule, cfg: DictConfig, rt: Runtime, unseen: list[str]) -> EvalResult:
    collect = bool(cfg.save_predictions) and not rt.dist.enabled
    if cfg.save_predictions and rt.dist.enabled:
        log.warning("save_predictions is ignored under DDP; run task=test on one process to write them")
    return evaluate(model, dm, "test", dm.eval_names("test"), batch_size=int(cfg.trainer.eval_batch_size),
                    device=rt.device, dist=rt.dist, loss_cfg=cfg.trainer.loss, autocast=rt.autocast(),
                    unseen=unseen, collect=collect)


def _stage_summary(result: StageResult) -> dict[str, Any]:
    return {"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss, "epochs": result.epochs_run,
            "steps": result.steps, "train_seconds": result.train_seconds, "best_checkpoint": str(result.best_path),
            "history": result.history}


def _check_source_checkpoint(payload: dict[str, Any], dm: DataModule, path: str) -> None:
    """A reused source stage must know the same task ids and must never have trained on the target."""
    names = [d["name"] for d in payload["data"]["datasets"]]
    if names != dm.names:
        raise ckpt.CheckpointError(f"source_checkpoint '{path}' was trained with datasets {names}; this run has "
                                   f"{dm.names} (task ids must match: same dataset.sources in the same order)")
    if dm.target in payload.get("stage_train", []):
        raise ckpt.CheckpointError(f"source_checkpoint '{path}' trained on the target '{dm.target}'; a transfer "
                                   "run needs a source model that never saw it")


def train(cfg: DictConfig) -> float:
    """Train (one stage, or source + target stages), test the selected weights, write ``metrics.json``."""
    rt = setup_runtime(cfg)
    try:
        return _train(cfg, rt)
    finally:
        rt.logger.close()
        shutdown_distributed()


def _train(cfg: DictConfig, rt: Runtime) -> float:
    from vlm4st.baselines import evaluate_baselines

    started = time.perf_counter()
    dm = build_data(cfg)
    log.info("data:\n%s", dm.summary())
    model = build_model(cfg.model)
    params = model.get_trainable_parameters()
    log.info("model: %s parameters, %s trainable (%s in adapters)", f"{params['total']:,}",
             f"{params['trainable']:,}", f"{params['adapter']['trainable']:,}")
    if cfg.trainer.get("grad_checkpointing"):
        model.set_grad_checkpointing(True)
    config = resolved_config(cfg)
    if rt.dist.is_main:
        (rt.run_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(config))
        rt.logger.log_config(config)
    meta = {"config": config, "data": dm.state_dict(), "adapter": model.describe_adapter()}
    trainer = Trainer(model, dm, cfg.trainer, rt, meta)
    resume = str(cfg.resume).lower() not in ("false", "0", "no")
    ckpt_dir = rt.run_dir / "checkpoints"
    tr = cfg.trainer
    stages: dict[str, Any] = {}
    unseen: list[str] = []
    if dm.mode == "full":
        result = trainer.fit(Stage("main", dm.train_names(), dm.eval_names("val"), int(tr.epochs),
                                   float(tr.optimizer.lr), ckpt_dir), resume=resume)
        stages["main"] = _stage_summary(result)
    else:
        sources = [n for n in dm.names if n != dm.target]
        source = Stage("source", sources, sources, int(tr.epochs), float(tr.optimizer.lr), ckpt_dir / "source")
        if cfg.source_checkpoint:
            payload = ckpt.load_checkpoint(str(cfg.source_checkpoint))
            _check_source_checkpoint(payload, dm, str(cfg.source_checkpoint))
            load_model_state(model, payload["model"], str(cfg.source_checkpoint))
            stages["source"] = {"reused": str(cfg.source_checkpoint)}
            result = None
        elif cfg.transfer.source_cache:
            key = source_key(config)
            with locked_source_dir(cfg.transfer.cache_dir, key, str(dm.target), lock=rt.dist.is_main) as entry:
                barrier()
                source.checkpoint_dir = entry
                reused = (entry / "last.pt").is_file()
                result = trainer.fit(source, resume=True)
            stages["source"] = {**_stage_summary(result), "cache": str(entry), "reused": reused}
        else:
            result = trainer.fit(source, resume=resume)
            stages["source"] = _stage_summary(result)
        if dm.mode == "zero":
            unseen = [dm.target]
        else:
            if result is not None:
                load_model_state(model, ckpt.load_checkpoint(result.best_path)["model"], str(result.best_path))
            result = trainer.fit(Stage("target", [dm.target], [dm.target], int(tr.fewshot.epochs),
                                       float(tr.fewshot.lr), ckpt_dir / "target"), resume=resume)
            stages["target"] = _stage_summary(result)
    if result is not None:
        load_model_state(model, ckpt.load_checkpoint(result.best_path)["model"], str(result.best_path))
    tested = _test(model, dm, cfg, rt, unseen)
    baselines = evaluate_baselines(dm, "test") if rt.dist.is_main else {}
    objective = float(result.best_val_loss) if result is not None else float("nan")
    if rt.dist.is_main:
        metrics = {
            "run": {"task": "train", "seed": int(cfg.seed), "mode": dm.mode, "target": dm.target, **rt.choices},
            "params": params,
            "stages": stages,
            "best_val_loss": objective,
            "train_seconds": sum(s.get("train_seconds", 0.0) for s in stages.values()),
            "wall_seconds": time.perf_counter() - started,
            "test": tested.metrics,
            "test_loss": tested.loss,
            "baselines": baselines,
        }
        _write_json(rt.run_dir / "metrics.json", metrics)
        rt.logger.log_summary(tested.metrics)
        if tested.predictions is not None:
            _save_predictions(rt.run_dir / "predictions.npz", tested)
        for name, m in tested.metrics.items():
            log.info("test %s: RMSE %.4f  MAE %.4f  (normalised %.4f / %.4f, %d windows)", name, m["rmse"], m["mae"],
                     m["rmse_norm"], m["mae_norm"], m["n"])
        log.info("metrics written to %s", rt.run_dir / "metrics.json")
    return objective


def _checkpoint_config(cfg: DictConfig) -> tuple[dict[str, Any], DictConfig]:
    if not cfg.checkpoint:
        raise ConfigError(f"task={cfg.task} needs checkpoint=<path to best.pt or last.pt>")
    payload = ckpt.load_checkpoint(str(cfg.checkpoint))
    return payload, OmegaConf.create(payload["config"])


def test(cfg: DictConfig) -> float:
    """Evaluate ``checkpoint`` on the test split of the data it was trained with; writes ``metrics.json``."""
    payload, trained = _checkpoint_config(cfg)
    run_cfg = cfg.copy()
    for key in ("model", "dataset", "shot_ratio"):  # rebuild exactly what was trained
        OmegaConf.update(run_cfg, key, trained[key], merge=False)
    rt = setup_runtime(run_cfg)
    try:
        dm = build_data(run_cfg)
        model = build_model(trained.model).to(rt.device)
        load_model_state(model, payload["model"], str(cfg.checkpoint))
        unseen = [dm.target] if dm.mode == "zero" else []
        result = _test(model, dm, run_cfg, rt, unseen)
        if rt.dist.is_main:
            _write_json(rt.run_dir / "metrics.json", {"run": {"task": "test", "checkpoint": str(cfg.checkpoint)},
                                                      "test": result.metrics, "test_loss": result.loss})
            if result.predictions is not None:
                _save_predictions(rt.run_dir / "predictions.npz", result)
            for name, m in result.metrics.items():
                log.info("test %s: RMSE %.4f  MAE %.4f", name, m["rmse"], m["mae"])
        return result.loss
    finally:
        rt.logger.close()
        shutdown_distributed()


def predict(cfg: DictConfig) -> None:
    """Forecast ``predict_input`` with ``checkpoint``; writes ``forecast.npz`` and ``forecast.png``."""
    from vlm4st.training.predict import run_predict

    payload, trained = _checkpoint_config(cfg)
    run_predict(cfg, payload, build_model(trained.model))
