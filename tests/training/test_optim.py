"""The optimiser's parameter groups and the warmup + cosine schedule (by steps and by time budget)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from vlm4st.config import ConfigError, compose, instantiate
from vlm4st.training.optim import WarmupCosine, build_optimizer, param_groups


def adamw(params, lr):
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.05, betas=(0.9, 0.999))


def schedule(opt, total_steps, warmup_steps, min_lr_ratio, budget_s=None):
    # one step per epoch, so warmup_epochs counts steps
    return WarmupCosine(opt, total_steps, 1, warmup_steps, min_lr_ratio, budget_s)


def _model() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    model[2].weight.requires_grad_(False)
    return model


def test_decay_applies_to_matrices_only_and_skips_frozen() -> None:
    groups = param_groups(_model())
    decayed = {p.shape for p in groups[0]["params"]}
    plain = {p.shape for p in groups[1]["params"]}
    assert decayed == {torch.Size([8, 4])}
    assert plain == {torch.Size([8]), torch.Size([2])}
    opt = build_optimizer(_model(), adamw, 1e-3)
    assert opt.param_groups[0]["weight_decay"] == 0.05 and opt.param_groups[1]["weight_decay"] == 0.0


def test_no_trainable_parameters_is_an_error() -> None:
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        build_optimizer(frozen, adamw, 1e-3)


def _lrs(scheduler, optimizer, steps: int, elapsed=None) -> list[float]:
    out = []
    for i in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        if elapsed is not None:
            scheduler.set_elapsed(elapsed(i))
        optimizer.step()
        scheduler.step()
    return out


def test_warmup_then_cosine_by_steps() -> None:
    opt = build_optimizer(_model(), adamw, 1e-3)
    sched = schedule(opt, total_steps=10, warmup_steps=2, min_lr_ratio=0.1)
    lrs = _lrs(sched, opt, 10)
    assert lrs[0] == pytest.approx(0.5e-3) and lrs[1] == pytest.approx(1e-3)
    assert lrs[-1] == pytest.approx(1e-4)
    assert all(a >= b for a, b in itertools.pairwise(lrs[1:])), "monotone decay after warmup"


def test_time_budget_drives_the_cosine() -> None:
    opt = build_optimizer(_model(), adamw, 1e-3)
    sched = schedule(opt, total_steps=1000, warmup_steps=0, min_lr_ratio=0.0, budget_s=10.0)
    lrs = _lrs(sched, opt, 6, elapsed=lambda i: 2.0 * (i + 1))  # 2 s per step: budget spent after 5 steps
    assert lrs[5] == pytest.approx(0.0, abs=1e-12)
    assert lrs[3] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 0.6)))


def test_schedule_state_round_trips() -> None:
    opt = build_optimizer(_model(), adamw, 1e-3)
    sched = schedule(opt, total_steps=20, warmup_steps=3, min_lr_ratio=0.01, budget_s=100.0)
    _lrs(sched, opt, 7, elapsed=lambda i: float(i))
    state = sched.state_dict()
    opt2 = build_optimizer(_model(), adamw, 1e-3)
    sched2 = schedule(opt2, total_steps=20, warmup_steps=3, min_lr_ratio=0.01, budget_s=100.0)
    sched2.load_state_dict(state)
    assert sched2.last_epoch == 7 and sched2.elapsed_s == sched.elapsed_s
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_config_nodes_build_the_optimiser_and_schedule() -> None:
    cfg = compose(["trainer.optimizer.lr=3e-3", "trainer.schedule.warmup_epochs=0.5"])
    opt = build_optimizer(_model(), instantiate(cfg.trainer.optimizer, path="trainer.optimizer"), lr=2e-3)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["lr"] == 2e-3  # the stage's LR wins
    sched = instantiate(cfg.trainer.schedule, path="trainer.schedule")(opt, total_steps=40, steps_per_epoch=10,
                                                                        budget_s=None)
    assert sched.warmup_steps == 5
    with pytest.raises(ConfigError, match=r"trainer\.schedule\.warmup_epochs: expected a number >= 0, got -1\.0"):
        WarmupCosine(opt, 10, 1, -1.0, 0.1)
    with pytest.raises(ConfigError, match=r"trainer\.schedule\.min_lr_ratio: expected a number in \[0, 1\], got 1\.5"):
        WarmupCosine(opt, 10, 1, 0.0, 1.5)
    with pytest.raises(ConfigError, match=r"trainer\.schedule: the stage has 0 optimiser steps; expected at least 1"):
        WarmupCosine(opt, 0, 1, 0.0, 0.1)  # trainer.epochs=0 or trainer.max_steps=0
