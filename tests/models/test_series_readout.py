"""The direct per-step readout of the input series: any horizon, zero at initialisation, per-step maps."""

from __future__ import annotations

import pytest
import torch

from vlm4st.models.series_readout import SeriesReadout


@pytest.mark.parametrize("t_out", [1, 3, 12])
def test_any_horizon_and_zero_at_init(t_out: int) -> None:
    readout = SeriesReadout(t_in=6, max_steps=12, in_channels=2, out_channels=1)
    out = readout(torch.randn(3, 6, 5, 4, 2), t_out)
    assert out.shape == (3, t_out, 5, 4, 1)
    assert torch.count_nonzero(out) == 0  # a model starts from the head's own readout


def test_input_without_a_channel_axis_reads_as_one_channel() -> None:
    readout = SeriesReadout(t_in=4, max_steps=2)
    assert readout(torch.randn(2, 4, 3, 3), 2).shape == (2, 2, 3, 3, 1)
    with pytest.raises(ValueError, match="T_in=4"):
        readout(torch.randn(2, 5, 3, 3), 2)
    with pytest.raises(ValueError, match="max_steps: 2 is shorter than the horizon T_out=3"):
        readout(torch.randn(2, 4, 3, 3), 3)


def test_each_step_learns_its_own_map() -> None:
    """Forecast step j = input step T_in - j (the window reversed): every step needs a different map."""
    torch.manual_seed(0)
    t = 4
    readout = SeriesReadout(t_in=t, max_steps=8)
    opt = torch.optim.Adam(readout.parameters(), lr=0.05)
    for _ in range(300):
        x = torch.randn(8, t, 3, 3)  # (B, T_in, H, W)
        target = x.flip(1).unsqueeze(-1)  # (B, T_out = T_in, H, W, 1)
        loss = (readout(x, t) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.randn(16, t, 3, 3)
    err = (readout(x, t) - x.flip(1).unsqueeze(-1)).square().mean()
    assert err < 1e-3


def test_bad_sizes_name_the_key() -> None:
    with pytest.raises(ValueError, match="series_readout"):
        SeriesReadout(t_in=0, max_steps=4)
    with pytest.raises(ValueError, match="series_readout"):
        SeriesReadout(t_in=4, max_steps=0)
