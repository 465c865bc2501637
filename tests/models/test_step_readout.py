"""The per-step readout: any horizon up to its table, zero at initialisation, a map of its own per step."""

from __future__ import annotations

import pytest
import torch

from vlm4st.errors import ConfigError
from vlm4st.models.step_readout import StepReadout


@pytest.mark.parametrize("t_out", [1, 3, 12])
def test_any_horizon_and_zero_at_init(t_out: int) -> None:
    readout = StepReadout(t_in=6, hidden_dim=8, max_steps=12, in_channels=2, out_channels=1)
    out = readout(torch.randn(3, 5, 4, 12), torch.randn(3, 5, 4, 8), t_out)  # series: T_in x C_in = 12 per cell
    assert out.shape == (3, t_out, 5, 4, 1)
    assert torch.count_nonzero(out) == 0  # a model starts from the head's shared readout


def test_input_checks_name_the_key() -> None:
    readout = StepReadout(t_in=4, hidden_dim=8, max_steps=2)
    state = torch.randn(2, 3, 3, 8)
    assert readout(torch.randn(2, 3, 3, 4), state, 2).shape == (2, 2, 3, 3, 1)
    with pytest.raises(ValueError, match="T_in\\*C_in = 4"):
        readout(torch.randn(2, 3, 3, 5), state, 2)
    with pytest.raises(ValueError, match="width 8"):
        readout(torch.randn(2, 3, 3, 4), state[..., :4], 2)
    with pytest.raises(ValueError, match="max_steps: 2 is shorter than the horizon T_out=3"):
        readout(torch.randn(2, 3, 3, 4), state, 3)
    with pytest.raises(ConfigError, match=r"model\.head\.step_readout\.t_in: expected a positive integer, got 0"):
        StepReadout(t_in=0, hidden_dim=8, max_steps=4)


def test_each_step_learns_its_own_map() -> None:
    """Forecast step j = input step T_in - j (the window reversed) plus the state's first channel times j."""
    torch.manual_seed(0)
    t = 4
    readout = StepReadout(t_in=t, hidden_dim=3, max_steps=8)
    opt = torch.optim.Adam(readout.parameters(), lr=0.05)
    steps = torch.arange(1, t + 1).view(1, t, 1, 1)

    def target(x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return (x.flip(1) + state[None, ..., 0].transpose(0, 1) * steps).unsqueeze(-1)  # (B, T_out, H, W, 1)

    def cells(x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)  # (B, T_in, H, W) -> (B, H, W, T_in): each cell's window

    for _ in range(300):
        x, state = torch.randn(8, t, 3, 3), torch.randn(8, 3, 3, 3)
        loss = (readout(cells(x), state, t) - target(x, state)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, state = torch.randn(16, t, 3, 3), torch.randn(16, 3, 3, 3)
    assert (readout(cells(x), state, t) - target(x, state)).square().mean() < 1e-3
