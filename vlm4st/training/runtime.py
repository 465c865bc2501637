"""Per-run runtime: device, precision, threads, seeds, determinism, the run directory and the logger.

Everything the training loop needs from the environment is decided here once, so the loop itself never reads
the environment or the raw config.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from vlm4st.config import ConfigError, instantiate
from vlm4st.logging.base import ExperimentLogger, NullLogger
from vlm4st.training.distributed import DistInfo, broadcast_object, init_distributed, shutdown_distributed

log = logging.getLogger(__name__)

CHOICE_GROUPS = ("model", "lora_type", "ablation", "dataset", "shot_ratio", "trainer", "logger", "experiment")


@dataclass
class Runtime:
    """What a task knows about where and how it runs."""

    device: torch.device
    dtype: torch.dtype | None  # autocast dtype, None for fp32
    dist: DistInfo
    run_dir: Path
    logger: ExperimentLogger = field(default_factory=NullLogger)
    choices: dict[str, str] = field(default_factory=dict)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision context for forward passes (a no-op in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; an explicit CUDA device without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name!r} but CUDA is not available; use 'auto' or 'cpu'")
    return device


def rank_device(device: torch.device, dist: DistInfo) -> torch.device:
    """A rank's device: an explicit ``cuda:N`` as given (every rank on it); plain ``cuda`` one GPU per local rank,
    ranks sharing GPUs round-robin when there are more of them than GPUs (gloo; NCCL refuses shared GPUs)."""
    if device.type != "cuda" or not dist.enabled or device.index is not None:
        return device
    return torch.device("cuda", dist.local_rank % torch.cuda.device_count())


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """``auto``: bf16 autocast on CUDA, fp32 on CPU. ``bf16`` on CPU is allowed (autocast on CPU)."""
    options = ("auto", "fp32", "bf16")
    if name not in options:
        raise ConfigError(f"trainer.precision={name!r}; expected one of {list(options)}")
    if name == "fp32" or (name == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16


def hydra_choices() -> dict[str, str]:
    """The config-group choices of this run (``ablation=no_dix`` ...) when running inside a Hydra app."""
    try:
        from hydra.core.hydra_config import HydraConfig

        choices = HydraConfig.get().runtime.choices
    except ValueError:  # not inside a Hydra app (tests, notebooks)
        return {}
    return {g: str(choices[g]) for g in CHOICE_GROUPS if choices.get(g) is not None}


def config_choices(cfg: DictConfig) -> dict[str, str]:
    """Choices from Hydra when available, else from the config's own ``name`` keys."""
    choices = hydra_choices()
    for group in ("ablation", "dataset", "shot_ratio"):
        node = cfg.get(group)
        if group not in choices and isinstance(node, Mapping) and node.get("name") is not None:
            choices[group] = str(node["name"])
    return choices


def sweep_group() -> str | None:
    """Name shared by every job of a multirun (the sweep directory's name), None for single runs."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except ValueError:
        return None
    if hc.mode != RunMode.MULTIRUN:
        return None
    sweep = Path(hc.sweep.dir)
    return f"{sweep.parent.name}_{sweep.name}" if sweep.parent.name else sweep.name


def build_logger(cfg: DictConfig, choices: Mapping[str, str], dist: DistInfo) -> ExperimentLogger:
    """The configured logger on rank 0, a ``NullLogger`` elsewhere; W&B gets group and choice tags."""
    if not dist.is_main or cfg.logger is None:
        return NullLogger()
    kwargs: dict[str, Any] = {}
    if str(cfg.logger["_target_"]).endswith("WandbLogger"):
        tags = list(cfg.logger.tags or [])
        tags += [f"{k}={v}" for k, v in choices.items() if k in ("model", "lora_type", "ablation", "dataset",
                                                                    "shot_ratio")]
        kwargs["tags"] = tags
        if cfg.logger.group is None:
            kwargs["group"] = sweep_group()
    return instantiate(cfg.logger, path="logger", **kwargs)


def setup_runtime(cfg: DictConfig) -> Runtime:
    """Decide device, precision, threads, determinism and seeds; join DDP if launched for it; open the logger."""
    trainer = cfg.trainer
    if trainer.num_threads is not None:
        torch.set_num_threads(int(trainer.num_threads))
    if trainer.deterministic:
        # cuBLAS is deterministic only with a fixed workspace, which must be chosen before the first CUDA matmul
        # (a user's own setting wins).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    dist = init_distributed(str(trainer.distributed.backend))
    device = rank_device(resolve_device(str(trainer.device)), dist)
    if trainer.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    seed_everything(int(cfg.seed))
    run_dir = Path(str(cfg.paths.output_dir))
    if dist.enabled:  # every rank resolved its own time-stamped dir: use rank 0's
        run_dir = Path(str(broadcast_object(str(run_dir))))
    run_dir.mkdir(parents=True, exist_ok=True)
    choices = config_choices(cfg)
    logger = build_logger(cfg, choices, dist)
    return Runtime(
        device=device,
        dtype=resolve_precision(str(trainer.precision), device),
        dist=dist,
        run_dir=run_dir,
        logger=logger,
        choices=choices,
    )


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as a plain dict (for checkpoints, logs and ``config_resolved.yaml``)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]


@contextlib.contextmanager
def run_context(cfg: DictConfig) -> Iterator[Runtime]:
    """The one entry of every task: device, seed, threads, precision, distributed init, logger and run dir on the
    way in; the logger closed and the process group left on the way out, whatever happened inside."""
    rt = setup_runtime(cfg)
    try:
        yield rt
    finally:
        rt.logger.close()
        shutdown_distributed()
