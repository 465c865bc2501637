"""Helpers of the model tests: compose a model config through Hydra and build it with the guarded instantiate."""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import DictConfig

from vlm4st import CONF_DIR
from vlm4st.config import compose, instantiate
from vlm4st.data.timestamps import following, slots_of, time_codes
from vlm4st.models import VLM4ST

T_IN, T_OUT, STEPS_PER_DAY = 6, 4, 48


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def model_config(
    preset: str = "tiny", ablation: str = "full", lora_type: str = "none", extra: list[str] | None = None
) -> DictConfig:
    """The composed root config with T_in = 6 and T_out = 4 (T_out != T_in on purpose)."""
    overrides = [f"model={preset}", f"ablation={ablation}", f"lora_type={lora_type}"]
    overrides += [f"dataset.t_in={T_IN}", f"dataset.t_out={T_OUT}"]
    return compose(overrides + list(extra or []))


def build_model(
    preset: str = "tiny", ablation: str = "full", lora_type: str = "none", extra: list[str] | None = None, seed: int = 0
) -> VLM4ST:
    torch.manual_seed(seed)
    cfg = model_config(preset, ablation, lora_type, extra)
    model = instantiate(cfg.model, path="model")
    assert isinstance(model, VLM4ST)
    return model


def codes(stamps: np.ndarray) -> torch.Tensor:
    """(..., 2) [weekday, slot] stamps of a 30-minute city -> (..., 3) time codes (what batches carry)."""
    return torch.from_numpy(time_codes(stamps, STEPS_PER_DAY))


def future(ts: torch.Tensor, t_out: int = T_OUT) -> torch.Tensor:
    """The (B, t_out, 3) codes of the steps after the last input step of the codes ``ts`` (B, T_in, 3)."""
    return codes(following(slots_of(ts[:, -1].numpy()), t_out, STEPS_PER_DAY))  # from the last [weekday, slot]


def batch(B: int, H: int, W: int, t_in: int = T_IN, seed: int = 0, t_out: int = T_OUT) -> tuple[torch.Tensor, ...]:
    """Input (B, T_in, H, W) in [-1, 1], time codes (B, T_in, 3), task ids (B,), forecast codes (B, T_out, 3)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, t_in, H, W, generator=g) * 2 - 1
    stamps = torch.stack(
        [torch.randint(0, 7, (B, t_in), generator=g), torch.randint(0, STEPS_PER_DAY, (B, t_in), generator=g)], -1
    )
    ts = codes(stamps.numpy())
    return x, ts, torch.zeros(B, dtype=torch.long), future(ts, t_out)
