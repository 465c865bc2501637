"""The one forecasting loss: weighted MSE + MAE per batch, and the same weighting from streamed error sums."""

import pytest
import torch

from vlm4st.config import ConfigError
from vlm4st.models.loss import ForecastLoss


def test_loss_weights_mse_and_mae() -> None:
    pred = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 1, 2, 2, 1).requires_grad_()
    target = torch.tensor([1.0, 1.0, 0.0, 3.0]).view(1, 1, 2, 2)
    loss, parts = ForecastLoss(1.0, 0.5)(pred, target)
    assert parts.mse.item() == pytest.approx(5 / 4) and parts.mae.item() == pytest.approx(3 / 4)
    assert loss.item() == pytest.approx(5 / 4 + 0.5 * 3 / 4) == parts.loss.item()
    assert loss.requires_grad and not any(t.requires_grad for t in (parts.loss, parts.mse, parts.mae))
    assert parts.stacked().tolist() == pytest.approx([parts.loss.item(), 5 / 4, 3 / 4])  # in LossParts.NAMES order
    with pytest.raises(ValueError, match="shape"):
        ForecastLoss(1.0, 0.5)(pred, target[..., :1])


def test_from_sums_equals_the_batch_loss() -> None:
    pred, target = torch.randn(3, 4, 5, 6, 1), torch.randn(3, 4, 5, 6)
    loss_fn = ForecastLoss(1.0, 0.5)
    loss, _ = loss_fn(pred, target)
    err = (pred[..., 0] - target).double()
    streamed = loss_fn.from_sums(err.square().sum().item(), err.abs().sum().item(), err.numel())
    assert streamed == pytest.approx(loss.item(), rel=1e-6)


@pytest.mark.parametrize(("mse", "mae", "key"), [(-1.0, 0.5, "mse_weight"), (1.0, "x", "mae_weight"),
                                                  (True, 0.5, "mse_weight"), (0.0, 0.0, "both")])
def test_bad_weights_name_the_key(mse, mae, key) -> None:
    with pytest.raises(ConfigError, match=key):
        ForecastLoss(mse, mae)
