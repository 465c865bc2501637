"""Window normalisation: relative to the last frame, in units of the window's change, exactly undone."""

from __future__ import annotations

import pytest
import torch

from tests.models.conftest import batch, build_model
from vlm4st.config import ConfigError
from vlm4st.models.window_norm import WindowNorm

WINDOW_NORM = ["+model.window_norm._target_=vlm4st.models.window_norm.WindowNorm", "+model.window_norm.min_scale=0.05"]


def test_restore_undoes_normalise_and_a_zero_forecast_is_the_last_frame() -> None:
    norm = WindowNorm(min_scale=0.05)
    x = torch.randn(3, 6, 4, 5) * torch.tensor([0.1, 1.0, 3.0]).view(3, 1, 1, 1) + 2.0  # (B, T, H, W)
    z, (last, scale) = norm.normalise(x)
    assert torch.allclose(z[:, -1], torch.zeros(3, 4, 5))  # the last frame is the origin
    change = x.diff(dim=1).square().mean(dim=(1, 2, 3)).sqrt()  # (B,) RMS of the frame-to-frame changes
    torch.testing.assert_close(scale.flatten(), change.clamp(min=0.05))
    stats = (last, scale)
    back = norm.restore(z.unsqueeze(-1), stats)[..., 0]  # (B, T, H, W)
    torch.testing.assert_close(back, x)
    zero = norm.restore(torch.zeros(3, 2, 4, 5, 1), stats)[..., 0]  # (B, T_out, H, W)
    torch.testing.assert_close(zero, x[:, -1:].expand(-1, 2, -1, -1))


def test_a_flat_window_is_not_blown_up() -> None:
    x = torch.full((1, 6, 3, 3), 0.4)
    x[0, 0, 0, 0] += 1e-4
    z, (_, scale) = WindowNorm(min_scale=0.05).normalise(x)
    assert float(scale) == pytest.approx(0.05) and z.abs().max() < 0.01


def test_the_model_with_window_norm_forecasts_on_the_data_scale_and_shifts_with_its_input() -> None:
    model = build_model("tiny", extra=WINDOW_NORM).eval()
    x, ts, task, target_ts = batch(2, 8, 10)
    with torch.no_grad():
        pred = model(x, ts, task, target_timestamps=target_ts)
        shifted = model(x + 0.25, ts, task, target_timestamps=target_ts)
    torch.testing.assert_close(shifted, pred + 0.25, rtol=1e-4, atol=1e-4)  # a level shift passes straight through


def test_min_scale_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"model\.window_norm\.min_scale"):
        WindowNorm(min_scale=0.0)
