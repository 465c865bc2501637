"""The training loop: AdamW + warmup/cosine, clipped gradients, per-epoch validation, atomic checkpoints, resume.

One ``Trainer.fit(stage)`` call trains one stage (the whole run, or the source / target stage of a transfer
run). Model selection uses the validation loss of the stage's validation datasets only. ``last.pt`` is written
every ``checkpoint_every_steps`` and at every epoch end, ``best.pt`` whenever validation improves; a stage
resumed from ``last.pt`` replays exactly what an uninterrupted run does (same batch order, RNG state, schedule).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from vlm4st.data.module import DataModule
from vlm4st.training import checkpoint as ckpt
from vlm4st.training.distributed import all_reduce_sum, barrier
from vlm4st.training.evaluate import EvalResult, evaluate, figure_images, scalar_tags
from vlm4st.training.optim import build_optimizer, build_scheduler
from vlm4st.training.runtime import Runtime
from vlm4st.training.state import load_model_state, model_state

log = logging.getLogger(__name__)


class RunInterrupted(RuntimeError):
    """Training stopped early on purpose (a signal or ``trainer.interrupt_after_steps``); ``last.pt`` is saved."""

    def __init__(self, message: str, exit_code: int = 3) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Stage:
    """One training stage: which datasets train and validate, for how long, at what learning rate."""

    name: str
    train: list[str]
    val: list[str]
    epochs: int
    lr: float
    checkpoint_dir: Path
    unseen: list[str] = field(default_factory=list)  # datasets evaluated with the "unknown task" id


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
    history: list[dict[str, Any]]


class _StopSignal:
    """Turns SIGTERM / SIGUSR1 / SIGUSR2 (kill, SLURM pre-emption, submitit's timeout signal) into a flag that the
    loop checks at step boundaries: it writes ``last.pt`` first, then hands the signal to the handler that was
    installed before (submitit's checkpoint-and-requeue), or stops with ``RunInterrupted``."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignal:
        for sig in self.SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: leave signals to the caller
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum

    def forward(self) -> None:
        """After ``last.pt`` is safe: call the earlier handler of the received signal (it may requeue and exit)."""
        previous = self._previous.get(self.received) if self.received is not None else None
        if callable(previous):
            previous(self.received, None)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """Trains a ``VLM4ST`` on a ``DataModule`` under a ``Runtime``; ``cfg`` is the ``trainer`` config node."""

    def __init__(
        self,
        model: nn.Module,
        data: DataModule,
        cfg: Mapping[str, Any],
        runtime: Runtime,
        run_meta: Mapping[str, Any],
    ) -> None:
        self.model = model.to(runtime.device)
        self.data, self.cfg, self.rt = data, cfg, runtime
        self.run_meta = dict(run_meta)  # resolved config, data state, adapter description: stored in checkpoints
        self.loss_cfg = dict(cfg["loss"])
        self.global_step_offset = 0  # steps of earlier stages, so logger steps keep increasing

    # -- public ---------------------------------------------------------------------------------------------------
    def fit(self, stage: Stage, resume: bool = True) -> StageResult:
        """Train ``stage`` (resuming from its ``last.pt`` when present and ``resume``) and return its result."""
        cfg, rt = self.cfg, self.rt
        bs = int(cfg["batch_size"])
        per_epoch = self.data.num_train_batches(bs, drop_last=bool(cfg.get("drop_last", False)), names=stage.train,
                                                world_size=rt.dist.world_size)
        if per_epoch == 0:
            raise ValueError(f"stage '{stage.name}': no training batches for datasets {stage.train}")
        total = stage.epochs * per_epoch
        if cfg.get("max_steps"):
            total = min(total, int(cfg["max_steps"]))
        warmup = round(float(cfg["schedule"]["warmup_epochs"]) * per_epoch)
        optimizer = build_optimizer(self.model, cfg["optimizer"], lr=stage.lr)
        budget = float(cfg["time_budget_min"]) * 60.0 if cfg.get("time_budget_min") else None
        scheduler = build_scheduler(optimizer, total, warmup, float(cfg["schedule"]["min_lr_ratio"]), budget)
        state = {"epoch": 0, "epoch_step": 0, "step": 0, "best_val": math.inf, "best_epoch": -1,
                 "history": [], "train_seconds": 0.0, "finished": False}
        last_path, best_path = stage.checkpoint_dir / "last.pt", stage.checkpoint_dir / "best.pt"
        if resume and last_path.is_file():
            state = self._restore(last_path, optimizer, scheduler, stage)
        if state["finished"]:
            log.info("stage '%s' already finished (%s); skipping training", stage.name, last_path)
        else:
            self._run_epochs(stage, state, optimizer, scheduler, per_epoch, total, last_path, best_path, budget)
        self.global_step_offset += state["step"]
        barrier()  # rank 0 has written the checkpoints every rank reads next
        if not best_path.is_file():
            raise RuntimeError(f"stage '{stage.name}' ended without a best checkpoint at {best_path}")
        return StageResult(best_path, last_path, state["best_epoch"], state["best_val"],
                           state["epoch"], state["step"], state["train_seconds"], state["history"])

    # -- loop -----------------------------------------------------------------------------------------------------
    def _run_epochs(self, stage, state, optimizer, scheduler, per_epoch, total, last_path, best_path, budget) -> None:
        cfg, rt = self.cfg, self.rt
        net = self._wrap()
        clip = float(cfg["optimizer"].get("grad_clip") or 0.0)
        every_ckpt = int(cfg.get("checkpoint_every_steps") or 0)
        interrupt_at = cfg.get("interrupt_after_steps")
        log_every = max(1, int(cfg.get("log_every_steps", 10)))
        show = bool(cfg.get("progress", True)) and rt.dist.is_main
        with _StopSignal() as stop:
            while state["epoch"] < stage.epochs and state["step"] < total and not state.get("out_of_time"):
                epoch, start = state["epoch"], state["epoch_step"]
                self.model.train()
                batches = self.data.train_batches(epoch, int(cfg["batch_size"]), names=stage.train, start=start,
                                                  drop_last=bool(cfg.get("drop_last", False)), rank=rt.dist.rank,
                                                  world_size=rt.dist.world_size)
                steps_left = min(per_epoch - start, total - state["step"])
                bar = tqdm(total=steps_left, desc=f"{stage.name} epoch {epoch + 1}/{stage.epochs}", disable=not show,
                           unit="step", dynamic_ncols=True, mininterval=1.0, leave=False)
                tick, running = time.perf_counter(), None
                for batch in batches:
                    scheduler.set_elapsed(state["train_seconds"] + time.perf_counter() - tick)
                    parts = self._step(net, batch, optimizer, scheduler, clip)
                    state["step"] += 1
                    state["epoch_step"] += 1
                    running = parts["total_loss"] if running is None else 0.9 * running + 0.1 * parts["total_loss"]
                    bar.update(1)
                    bar.set_postfix(loss=f"{running:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}", refresh=False)
                    if state["step"] % log_every == 0:
                        rt.logger.log_scalars(
                            {"train/loss": parts["total_loss"], "train/mse": parts["mse_loss"],
                             "train/mae": parts["mae_loss"], "train/lr": scheduler.get_last_lr()[0]},
                            self.global_step_offset + state["step"],
                        )
                    stopping = self._agree(stop.received is not None or (interrupt_at is not None and
                                                                        state["step"] >= int(interrupt_at)))
                    if stopping or (every_ckpt and state["step"] % every_ckpt == 0):
                        state["train_seconds"] += time.perf_counter() - tick
                        tick = time.perf_counter()
                        self._save(last_path, state, optimizer, scheduler, stage)
                    if stopping:
                        bar.close()
                        why = f"signal {stop.received}" if stop.received is not None else "interrupt_after_steps"
                        self._interrupt(stop, f"stage '{stage.name}' stopped at step {state['step']} ({why})",
                                        last_path)
                    if budget and self._agree(state["train_seconds"] + time.perf_counter() - tick >= budget):
                        state["out_of_time"] = True  # validate this partial epoch, then stop
                        log.info("stage '%s': time budget of %.1f min spent at step %d", stage.name, budget / 60,
                                 state["step"])
                        break
                    if state["step"] >= total:
                        break
                bar.close()
                state["train_seconds"] += time.perf_counter() - tick
                self._end_epoch(stage, state, optimizer, scheduler, last_path, best_path)
            state["finished"] = True
            self._save(last_path, state, optimizer, scheduler, stage)
            if self._agree(stop.received is not None):
                # The signal came during the last validation: the stage is complete and saved, so a resumed run
                # skips it; the signal still ends (or requeues) the run instead of being swallowed.
                self._interrupt(stop, f"stage '{stage.name}' finished, then stopped by signal {stop.received}",
                                last_path)

    @staticmethod
    def _interrupt(stop: _StopSignal, what: str, last_path: Path) -> NoReturn:
        """Stop the run once ``last_path`` is written: hand the signal on (submitit may requeue), then raise."""
        barrier()  # rank 0 has written last.pt
        stop.forward()
        raise RunInterrupted(f"{what}; resume with resume=true from {last_path}")

    def _agree(self, flag: bool) -> bool:
        """Whether any rank wants to stop (all ranks must stop at the same step under DDP)."""
        if not self.rt.dist.enabled:
            return flag
        return bool(all_reduce_sum(torch.tensor([float(flag)], device=self.rt.device)).item() > 0)

    def _step(self, net, batch, optimizer, scheduler, clip) -> dict[str, float]:
        dev = self.rt.device
        x, y = batch["x"].to(dev, non_blocking=True), batch["y"].to(dev, non_blocking=True)
        ts, task = batch["timestamps"].to(dev), batch["task_id"].to(dev)
        target_ts = batch["target_timestamps"].to(dev)  # (B, T_out, 2)
        with self.rt.autocast():
            pred = net(x, ts, task, target_timestamps=target_ts)  # (B, T_out, H, W, C)
        loss, parts = self.model.get_loss(pred.float(), y, self.loss_cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], clip)
        optimizer.step()
        scheduler.step()
        return parts

    def _end_epoch(self, stage, state, optimizer, scheduler, last_path, best_path) -> None:
        rt, epoch = self.rt, state["epoch"]
        result = self.validate(stage)
        improved = result.loss < state["best_val"]
        record = {"epoch": epoch, "step": state["step"], "train_seconds": state["train_seconds"],
                  "val_loss": result.loss,
                  "val": {n: {k: m[k] for k in ("mae", "rmse")} for n, m in result.metrics.items()}}
        state["history"].append(record)
        state["epoch"], state["epoch_step"] = epoch + 1, 0
        step = self.global_step_offset + state["step"]
        rt.logger.log_scalars({**scalar_tags("val", result), "epoch": epoch + 1}, step)
        if rt.logger.wants_images(epoch) and rt.dist.is_main:
            for tag, image in figure_images(self.model, self.data, "val", stage.val, rt.device, rt.autocast(),
                                            stage.unseen).items():
                rt.logger.log_image(tag, image, step)
        log.info("%s epoch %d/%d: val loss %.5f%s | %s", stage.name, epoch + 1, stage.epochs, result.loss,
                 " (best)" if improved else "",
                 ", ".join(f"{n} rmse {m['rmse']:.4g} mae {m['mae']:.4g}" for n, m in result.metrics.items()))
        if improved:
            state["best_val"], state["best_epoch"] = result.loss, epoch
            self._save(best_path, state, optimizer, scheduler, stage)
        self._save(last_path, state, optimizer, scheduler, stage)

    def validate(self, stage: Stage) -> EvalResult:
        """Validation metrics and pooled loss over ``stage.val`` (never test data, never an unseen target)."""
        return evaluate(self.model, self.data, "val", stage.val, batch_size=int(self.cfg["eval_batch_size"]),
                        device=self.rt.device, dist=self.rt.dist, loss_cfg=self.loss_cfg,
                        autocast=self.rt.autocast(), unseen=stage.unseen)

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def _wrap(self) -> nn.Module:
        """The module the loop calls: DDP-wrapped when distributed, compiled when asked."""
        net: nn.Module = self.model
        if self.rt.dist.enabled:
            ids = [self.rt.device.index] if self.rt.device.type == "cuda" else None
            net = DistributedDataParallel(net, device_ids=ids, find_unused_parameters=False)
        if self.cfg.get("compile"):
            net = torch.compile(net)
        return net

    def _save(self, path: Path, state: dict, optimizer, scheduler, stage: Stage) -> None:
        if not self.rt.dist.is_main:
            return
        payload = {
            **self.run_meta,
            "stage": stage.name,
            "stage_train": list(stage.train),
            "model": model_state(self.model, trainable_only=bool(self.cfg.get("save_adapters_only"))),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "trainer_state": {k: v for k, v in state.items()},
            "rng": ckpt.rng_state(),
        }
        ckpt.save_checkpoint(payload, path)

    def _restore(self, path: Path, optimizer, scheduler, stage: Stage) -> dict[str, Any]:
        payload = ckpt.load_checkpoint(path)
        if payload.get("stage") != stage.name:
            raise ckpt.CheckpointError(f"checkpoint '{path}' belongs to stage '{payload.get('stage')}', "
                                       f"expected '{stage.name}'")
        load_model_state(self.model, payload["model"], str(path))
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        ckpt.set_rng_state(payload["rng"])
        state = dict(payload["trainer_state"])
        log.info("resumed stage '%s' from %s at epoch %d, step %d", stage.name, path, state["epoch"], state["step"])
        return state
