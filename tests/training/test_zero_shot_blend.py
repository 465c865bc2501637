"""The zero-shot blend: fitted only on the calibration prefix, per step in [0, 1], and undone to the last frame
when the model's departures do not help."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tests.data.builders import dataset_cfg, shots, source_cfg
from vlm4st.data.build import build_datamodule
from vlm4st.models.loss import ForecastLoss
from vlm4st.training.zero_shot import BlendedForecast, fit_blend, prefix_starts

T_IN, T_OUT = 3, 2


def _zero_shot_module():
    sources = {f"c{i}": source_cfg("SyntheticCityReader", height=5, width=6, days=6, seed=i) for i in range(2)}
    cfg = dataset_cfg(sources, target="c1", t_in=T_IN, t_out=T_OUT, zero_shot_calibration_steps=24)
    return build_datamodule(cfg, shots(0.0), 0)


class LastPlusNoise(nn.Module):
    """Repeats the last input frame, plus ``noise`` times a fixed random field (a model whose departures hurt)."""

    def __init__(self, noise: float) -> None:
        super().__init__()
        self.noise = noise

    def forward(self, x, timestamps, task_id, return_intermediate=False, target_timestamps=None):
        g = torch.Generator().manual_seed(0)
        pred = x[:, -1:].expand(-1, T_OUT, -1, -1) + self.noise * torch.randn(x.shape[0], T_OUT, *x.shape[2:],
                                                                                generator=g)
        return pred[..., None]  # (B, T_out, H, W, 1)


def test_prefix_windows_lie_inside_the_calibration_frames_and_before_every_scored_target() -> None:
    dm = _zero_shot_module()
    ds = dm.by_name["c1"]
    starts = prefix_starts(ds)
    assert len(starts) == 24 - (T_IN + T_OUT) + 1  # one channel, a 24-frame prefix
    covered = set((starts[:, None] + np.arange(T_IN + T_OUT)).ravel().tolist())
    assert covered <= set(ds.scaler_frames.tolist())
    test = ds.windows["test"]
    scored = set((test.starts[:, None] + T_IN + np.arange(T_OUT)).ravel().tolist())  # frames that are scored
    assert not covered & scored


def test_a_model_whose_departures_hurt_is_pulled_back_to_the_last_frame() -> None:
    dm = _zero_shot_module()
    ds = dm.by_name["c1"]
    loss = ForecastLoss(1.0, 0.5)
    blend = fit_blend(LastPlusNoise(0.5), ds, 2, torch.device("cpu"), torch.autocast("cpu", enabled=False), 8, loss)
    assert blend.windows == 20 and blend.weights.tolist() == [0.0, 0.0]
    x = torch.rand(4, T_IN, 5, 6)
    out = BlendedForecast(LastPlusNoise(0.5), blend.weights)(x, None, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(out[..., 0], x[:, -1:].expand(-1, T_OUT, -1, -1))


def test_full_weight_leaves_the_forecast_as_it_is() -> None:
    model = LastPlusNoise(0.3)
    x = torch.rand(2, T_IN, 4, 4)
    blended = BlendedForecast(model, torch.ones(T_OUT))(x, None, torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(blended, model(x, None, None))
