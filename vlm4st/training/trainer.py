"""The training loop of one stage: optimiser and schedule from config partials, per-epoch validation, atomic
checkpoints, exact resume, a time budget, and a stop at the first non-finite loss.

``Trainer.fit(stage)`` trains one stage (the whole run, or the source / target stage of a transfer run; see
``stages``). Model selection uses the validation loss of the stage's validation datasets only. ``last.pt`` is
written every ``checkpoint_every_steps`` and at every epoch end, ``best.pt`` whenever validation improves; a stage
resumed from ``last.pt`` replays exactly what an uninterrupted run does (same batch order, RNG state, schedule),
and refuses a ``last.pt`` written by a run with another config or other data.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vlm4st.checks import one_line
from vlm4st.config import ConfigError, instantiate
from vlm4st.data.batch import Batch
from vlm4st.data.module import DataModule
from vlm4st.errors import CheckpointError
from vlm4st.logging.progress import Progress, ProgressConfig
from vlm4st.models.loss import LossParts, TrainingLoss
from vlm4st.training import checkpoint as ckpt
from vlm4st.training import host
from vlm4st.training.distributed import all_reduce_sum, barrier
from vlm4st.training.evaluate import EvalResult, evaluate, figure_images, scalar_tags
from vlm4st.training.loss_window import LossWindow, StepRecord
from vlm4st.training.optim import build_optimizer, build_schedule
from vlm4st.training.run_metrics import EpochRecord, ValErrors
from vlm4st.training.runtime import Runtime
from vlm4st.training.settings import TrainerSettings
from vlm4st.training.signals import RunInterrupted, StopSignal
from vlm4st.training.stages import Stage
from vlm4st.training.state import TrainState
from vlm4st.training.weights import load_model_state, model_state

log = logging.getLogger(__name__)

__all__ = ["NonFiniteLossError", "RunInterrupted", "StageResult", "Trainer"]

#: Config keys a resumed stage must share with the run that wrote its ``last.pt``: what builds the model and the
#: data, the seed, and every trainer key that shapes the schedule or the batches.
RESUME_KEYS = ("model", "dataset", "shot_ratio", "seed")
RESUME_TRAINER_KEYS = ("epochs", "batch_size", "drop_last", "max_steps", "time_budget_min", "optimizer", "schedule",
                       "loss", "grad_clip", "fewshot", "unknown_task_rate")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf; the message names the step, epoch and dataset of the batch."""


@dataclass
class StageResult:
    """Where the stage's checkpoints are and how it went."""

    best_path: Path
    last_path: Path
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    steps: int
    train_seconds: float
    history: list[EpochRecord]


@dataclass(frozen=True)
class _After:
    """What the loop does after a step. Under DDP every rank takes the same decisions (stop and budget are agreed
    by a collective), so ranks stop, save and read at the same step."""

    read: bool  # read the loss window on the host (log, progress, non-finite check)
    save: bool  # write last.pt
    stop: str | None  # why the run stops now (a signal, trainer.interrupt_after_steps), or None
    out_of_time: bool  # the time budget is spent: validate this partial epoch, then stop


@dataclass
class _StageRun:
    """Everything one ``fit`` call works with."""

    stage: Stage
    state: TrainState
    optimizer: torch.optim.Optimizer
    scheduler: Any
    per_epoch: int
    total: int
    budget_s: float | None
    last_path: Path
    best_path: Path


def differing_keys(stored: Any, current: Any, prefix: str) -> list[str]:
    """Dotted keys whose values differ between two nested config dicts (a key missing on one side differs)."""
    if isinstance(stored, dict) and isinstance(current, dict):
        out: list[str] = []
        for key in sorted(set(stored) | set(current), key=str):
            out += differing_keys(stored.get(key, "<missing>"), current.get(key, "<missing>"), f"{prefix}.{key}")
        return out
    return [] if stored == current else [prefix]


class Trainer:
    """Trains a model on a ``DataModule`` under a ``Runtime`` with the checked ``settings`` of the ``trainer`` node;
    ``run_meta`` (resolved config, data state, adapter description) goes into every checkpoint."""

    def __init__(
        self, model: nn.Module, data: DataModule, settings: TrainerSettings, runtime: Runtime, run_meta: dict[str, Any]
    ) -> None:
        self.model = model.to(runtime.device)
        self.data, self.settings, self.rt = data, settings, runtime
        self.run_meta = dict(run_meta)
        self.loss: TrainingLoss = instantiate(settings.loss, path="trainer.loss")
        self.progress: ProgressConfig = settings.progress_for(runtime.dist.is_main)
        self.global_step_offset = 0  # steps of earlier stages, so logger steps keep increasing

    # -- public ---------------------------------------------------------------------------------------------------
    def fit(self, stage: Stage, resume: bool = True) -> StageResult:
        """Train ``stage`` (resuming from its ``last.pt`` when present and ``resume``) and return its result."""
        run = self._prepare(stage)
        if resume and run.last_path.is_file():
            run.state = self._restore(run)
        if run.state.finished:
            log.info("stage '%s' already finished (%s); skipping training", stage.name, run.last_path)
        else:
            self._run_epochs(run)
        self.global_step_offset += run.state.step
        barrier()  # rank 0 has written the checkpoints every rank reads next
        if not run.best_path.is_file():
            raise CheckpointError(f"stage '{stage.name}' ended without a best checkpoint at {run.best_path}")
        st = run.state
        return StageResult(run.best_path, run.last_path, st.best_epoch, st.best_val, st.epoch, st.step,
                           st.train_seconds, st.history)

    def validate(self, stage: Stage) -> EvalResult:
        """Validation metrics and pooled loss over ``stage.val`` (never test data, never an unseen target)."""
        return evaluate(self.model, self.data, "val", stage.val, batch_size=self.settings.eval_batch_size,
                        device=self.rt.device, dist=self.rt.dist, loss=self.loss, autocast=self.rt.autocast(),
                        progress=self.progress)

    # -- setup ----------------------------------------------------------------------------------------------------
    def _prepare(self, stage: Stage) -> _StageRun:
        s = self.settings
        per_epoch = self.data.num_train_batches(s.batch_size, drop_last=s.drop_last, names=stage.train,
                                                world_size=self.rt.dist.world_size)
        if per_epoch == 0:
            raise ConfigError(f"stage '{stage.name}': no training batches for datasets {stage.train} at "
                              f"trainer.batch_size={s.batch_size}, trainer.drop_last={s.drop_last}; expected a "
                              "batch size that a full batch of the training windows reaches, or drop_last=false")
        total = stage.epochs * per_epoch
        if s.max_steps is not None:
            total = min(total, s.max_steps)
        budget = s.budget_s
        optimizer = build_optimizer(self.model, instantiate(s.optimizer, path="trainer.optimizer"), stage.lr)
        scheduler = build_schedule(instantiate(s.schedule, path="trainer.schedule"), optimizer, total, per_epoch,
                                   budget)
        return _StageRun(stage, TrainState(), optimizer, scheduler, per_epoch, total, budget,
                         stage.checkpoint_dir / "last.pt", stage.checkpoint_dir / "best.pt")

    # -- loop -----------------------------------------------------------------------------------------------------
    def _run_epochs(self, run: _StageRun) -> None:
        """Epochs until the stage's epochs or steps are done or its time budget is spent; each ends validated and
        saved. A signal received meanwhile ends the run once the stage is saved."""
        st, stage = run.state, run.stage
        net = self._wrap()
        window = LossWindow(run.optimizer, self.rt.device)
        progress = self.progress.bar(stage.name, run.total, done=st.step, budget_s=run.budget_s,
                                     spent_s=st.train_seconds)
        with StopSignal() as stop, progress:
            while st.epoch < stage.epochs and st.step < run.total and not st.out_of_time:
                self._train_epoch(net, run, window, progress, stop)
                self._read(window, run, progress)
                self._end_epoch(run)
            st.finished = True
            self._save(run.last_path, run)
            if self._agree(stop.received is not None):
                # The signal came during the last validation: the stage is complete and saved, so a resumed run
                # skips it; the signal still ends (or requeues) the run instead of being swallowed.
                self._interrupt(stop, f"stage '{stage.name}' finished, then stopped by signal {stop.received}",
                                run.last_path)

    def _train_epoch(self, net: nn.Module, run: _StageRun, window: LossWindow, progress: Progress,
                     stop: StopSignal) -> None:
        """The steps of one epoch (from ``epoch_step`` on a resumed run), each followed by what ``_decide`` says."""
        s, st, stage = self.settings, run.state, run.stage
        self.model.train()
        progress.note(epoch=f"{st.epoch + 1}/{stage.epochs}")
        batches = self.data.train_batches(st.epoch, s.batch_size, names=stage.train, start=st.epoch_step,
                                          drop_last=s.drop_last, rank=self.rt.dist.rank,
                                          world_size=self.rt.dist.world_size)
        tick = time.perf_counter()
        for batch in batches:
            run.scheduler.set_elapsed(st.train_seconds + time.perf_counter() - tick)
            parts = self._step(net, batch, run, window)
            if parts is None:  # non-finite loss read in the step: no update was made
                self._bank(st, tick)
                self._read(window, run, progress)
                self._diverged(run, StepRecord(st.step + 1, st.epoch_step + 1, st.epoch, batch.dataset))
            st.step += 1
            st.epoch_step += 1
            window.add(parts, StepRecord(st.step, st.epoch_step, st.epoch, batch.dataset))
            progress.advance()
            after = self._decide(run, stop, tick)
            if after is None:
                continue
            if after.read:
                self._read(window, run, progress)  # every save follows a read: never a non-finite state
            if after.save:
                tick = self._bank(st, tick)
                self._save(run.last_path, run)
            if after.stop is not None:
                self._interrupt(stop, f"stage '{stage.name}' stopped at step {st.step} ({after.stop})", run.last_path)
            if after.out_of_time:
                st.out_of_time = True
                log.info("stage '%s': time budget of %.1f min spent at step %d", stage.name, run.budget_s / 60,
                         st.step)
                break
            if st.step >= run.total:
                break
        self._bank(st, tick)

    def _decide(self, run: _StageRun, stop: StopSignal, tick: float) -> _After | None:
        """What follows the step just taken; None: nothing (under DDP, between two reads of the window).

        Under DDP the ranks agree (a collective) only at steps where the window is read anyway; a single process
        checks its stop flags after every step.
        """
        s, st = self.settings, run.state
        every = s.checkpoint_every_steps
        ckpt_now = every is not None and st.step % every == 0
        read_now = st.step % s.log_every_steps == 0 or st.step >= run.total or ckpt_now
        if self.rt.dist.enabled and not read_now:
            return None
        interrupted = s.interrupt_after_steps is not None and st.step >= s.interrupt_after_steps
        stopping = self._agree(stop.received is not None or interrupted)
        out_of_time = run.budget_s is not None and self._agree(
            st.train_seconds + time.perf_counter() - tick >= run.budget_s)
        why = None
        if stopping:
            why = f"signal {stop.received}" if stop.received is not None else "interrupt_after_steps"
        return _After(read=read_now or stopping or ckpt_now or out_of_time, save=stopping or ckpt_now, stop=why,
                      out_of_time=out_of_time)

    @staticmethod
    def _bank(st: TrainState, tick: float) -> float:
        """Add the training time since ``tick`` to the state; the new tick."""
        now = time.perf_counter()
        st.train_seconds += now - tick
        return now

    def _step(
        self, net: nn.Module, batch: Batch, run: _StageRun, window: LossWindow
    ) -> LossParts | None:
        """One optimiser step; the loss parts as device tensors, or None (no update) for a non-finite loss.

        With an optimiser that skips flagged updates on the device the step reads nothing on the host; with
        any other optimiser it reads the loss once, to refuse a non-finite update.
        """
        b = batch.to(self.rt.device)
        task = self._hide_tasks(b.task_id)  # (B,)
        with self.rt.autocast():
            pred = net(b.x, b.timestamps, task, target_timestamps=b.target_timestamps)
        loss, parts = self.loss(pred.float(), b.y)  # fp32 loss outside autocast
        if not window.skips_on_device and not math.isfinite(host.host_float(loss)):
            return None
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.settings.grad_clip
        if clip > 0:
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], clip)
        if window.skips_on_device:
            window.guard(loss)
        run.optimizer.step()
        run.scheduler.step()
        return parts

    def _hide_tasks(self, task: torch.Tensor) -> torch.Tensor:
        """``trainer.unknown_task_rate`` of the samples train as the unknown task (id = number of datasets), so the
        path a zero-shot city takes (no cell identity, the unknown adapter route) is trained, not left at its
        initial weights. Drawn on the device from the checkpointed torch RNG; a rate of 0 draws nothing."""
        rate = self.settings.unknown_task_rate
        if rate == 0.0:
            return task
        hide = torch.rand(task.shape, device=task.device) < rate  # (B,)
        return torch.where(hide, torch.full_like(task, len(self.data.names)), task)  # (B,)

    def _read(self, window: LossWindow, run: _StageRun, progress: Progress) -> None:
        """Read the window on the host: log the last step's losses, update the progress, stop at a bad step."""
        if not len(window):
            return
        got = window.read()
        run.state.epoch_loss_sum += float(got.values[:got.finite, 0].sum())
        run.state.epoch_loss_steps += got.finite
        last = got.last()
        lr = run.scheduler.get_last_lr()[0]
        if last:
            progress.note(loss=last["loss"], lr=f"{lr:.2e}")
            self.rt.logger.log_scalars({**{f"train/{name}": value for name, value in last.items()}, "train/lr": lr},
                                       self.global_step_offset + got.records[got.finite - 1].step)
        if got.first_bad is not None:
            self._diverged(run, got.records[got.first_bad])

    def _diverged(self, run: _StageRun, bad: StepRecord) -> NoReturn:
        """Write ``last.pt`` with the weights of the last finite step and stop with an error naming the batch."""
        st = run.state
        st.step, st.epoch_step = bad.step - 1, bad.epoch_step - 1  # updates after the first bad step were skipped
        self._save(run.last_path, run)
        barrier()
        raise NonFiniteLossError(
            f"stage '{run.stage.name}': the training loss is not finite at step {bad.step} (epoch {bad.epoch + 1}, "
            f"a batch of dataset '{bad.dataset}'); {run.last_path} holds the weights of the last finite step. "
            "Check that dataset's values and scaler, or lower trainer.optimizer.lr"
        )

    def _end_epoch(self, run: _StageRun) -> None:
        rt, st, stage = self.rt, run.state, run.stage
        epoch = st.epoch
        result = self.validate(stage)
        improved = result.loss < st.best_val
        train_loss = st.epoch_loss_sum / st.epoch_loss_steps if st.epoch_loss_steps else math.nan
        st.epoch_loss_sum, st.epoch_loss_steps = 0.0, 0
        st.history.append(EpochRecord(epoch=epoch, step=st.step, train_seconds=st.train_seconds, train_loss=train_loss,
                                      val_loss=result.loss,
                                      val={n: ValErrors(mae=m.mae, rmse=m.rmse) for n, m in result.metrics.items()}))
        st.epoch, st.epoch_step = epoch + 1, 0
        step = self.global_step_offset + st.step
        rt.logger.log_scalars({**scalar_tags("val", result), "epoch": epoch + 1}, step)
        if rt.logger.wants_images(epoch) and rt.dist.is_main:
            images = figure_images(self.model, self.data, "val", stage.val, rt.device, rt.autocast(),
                                   self.settings.figure_windows)
            for tag, image in images.items():
                rt.logger.log_image(tag, image, step)
        log.info("%s epoch %d/%d: val loss %.5f%s | %s", stage.name, epoch + 1, stage.epochs, result.loss,
                 " (best)" if improved else "",
                 ", ".join(f"{n} rmse {m.rmse:.4g} mae {m.mae:.4g}" for n, m in result.metrics.items()))
        if improved:
            st.best_val, st.best_epoch = result.loss, epoch
            self._save(run.best_path, run)
        self._save(run.last_path, run)

    @staticmethod
    def _interrupt(stop: StopSignal, what: str, last_path: Path) -> NoReturn:
        """Stop the run once ``last_path`` is written: hand the signal on (submitit may requeue), then raise."""
        barrier()  # rank 0 has written last.pt
        stop.forward()
        raise RunInterrupted(f"{what}; resume with resume=true from {last_path}")

    def _agree(self, flag: bool) -> bool:
        """Whether any rank wants to stop (all ranks must stop at the same step under DDP)."""
        if not self.rt.dist.enabled:
            return flag
        return host.host_float(all_reduce_sum(torch.tensor([float(flag)], device=self.rt.device))) > 0

    def _wrap(self) -> nn.Module:
        """The module the loop calls: DDP-wrapped when distributed, compiled when asked."""
        net: nn.Module = self.model
        if self.rt.dist.enabled:
            ids = [self.rt.device.index] if self.rt.device.type == "cuda" else None
            net = DistributedDataParallel(net, device_ids=ids, find_unused_parameters=False)
        if self.settings.compile:
            net = torch.compile(net)
        return net

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def _save(self, path: Path, run: _StageRun) -> None:
        if not self.rt.dist.is_main:
            return
        payload = {
            **self.run_meta,
            "stage": run.stage.name,
            "stage_train": list(run.stage.train),
            "model": model_state(self.model, trainable_only=self.settings.save_adapters_only),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "trainer_state": run.state.to_dict(),
            "rng": ckpt.rng_state(),
        }
        ckpt.save_checkpoint(payload, path)

    def _check_same_run(self, payload: dict[str, Any], path: Path, stage: Stage) -> None:
        """Refuse a ``last.pt`` from another run: other model, data, seed or schedule-shaping trainer keys.

        A source stage does not depend on the shot ratio or on the target's share (one cached source model serves
        zero-shot and every few-shot ratio), so for it those are not compared.
        """
        stored, current = payload["config"], self.run_meta["config"]
        source = stage.name == "source"
        diff = []
        for key in RESUME_KEYS:
            if not (source and key == "shot_ratio"):
                diff += differing_keys(stored.get(key), current.get(key), key)
        for key in RESUME_TRAINER_KEYS:
            diff += differing_keys(stored["trainer"].get(key), current["trainer"].get(key), f"trainer.{key}")
        if diff:
            raise CheckpointError(
                f"checkpoint '{path}' was written by a different run: {', '.join(diff[:8])}"
                f"{' ...' if len(diff) > 8 else ''} differ; start a new run dir or set resume=false"
            )
        self.data.verify_state_dict(payload["data"], str(path), scope="sources" if source else "all")

    def _restore(self, run: _StageRun) -> TrainState:
        path = run.last_path
        payload = ckpt.load_checkpoint(path)
        if payload["stage"] != run.stage.name:
            raise CheckpointError(f"checkpoint '{path}' belongs to stage '{payload['stage']}', "
                                  f"expected '{run.stage.name}'")
        self._check_same_run(payload, path, run.stage)
        load_model_state(self.model, payload["model"], str(path))
        try:  # states whose inside belongs to torch and Python: they refuse what does not fit
            run.optimizer.load_state_dict(payload["optimizer"])
            run.scheduler.load_state_dict(payload["scheduler"])
            ckpt.set_rng_state(payload["rng"])
        except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as err:
            raise CheckpointError(f"checkpoint '{path}': its optimiser, schedule or random state does not fit this "
                                  f"run: {one_line(err)}") from None
        state = TrainState.from_dict(dict(payload["trainer_state"]), str(path))
        log.info("resumed stage '%s' from %s at epoch %d, step %d", run.stage.name, path, state.epoch, state.step)
        return state
