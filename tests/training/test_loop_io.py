"""The training loop's host traffic: losses read in windows, non-finite updates skipped on the device by a
fused optimiser, batches moved through pinned memory on CUDA; and the progress report (bar or log lines)."""

from __future__ import annotations

import dataclasses
import io
import logging

import pytest
import torch

from vlm4st.data.batch import Batch
from vlm4st.logging.progress import Progress
from vlm4st.models.loss import LossParts
from vlm4st.training.loss_window import LossWindow, StepRecord


def _loss(model: torch.nn.Linear, scale: float) -> tuple[torch.Tensor, LossParts]:
    out = model(torch.ones(4, 3)) * scale
    mse, mae = out.square().mean(), out.abs().mean()
    loss = mse + 0.5 * mae
    return loss, LossParts(loss=loss.detach(), mse=mse.detach(), mae=mae.detach())


def _steps(fused: bool, scales: list[float]) -> tuple[torch.nn.Linear, torch.optim.Optimizer, LossWindow]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, fused=fused)
    window = LossWindow(opt, torch.device("cpu"))
    for i, scale in enumerate(scales):
        loss, parts = _loss(model, scale)
        opt.zero_grad()
        loss.backward()
        if window.skips_on_device:
            window.guard(loss)
        opt.step()
        window.add(parts, StepRecord(i + 1, i + 1, 0, "city"))
    return model, opt, window


def test_a_fused_optimiser_skips_every_update_from_the_first_non_finite_step_on() -> None:
    finite, _, _ = _steps(True, [1.0, 1.0])
    model, opt, window = _steps(True, [1.0, 1.0, float("inf"), 1.0, 1.0])
    assert window.skips_on_device
    torch.testing.assert_close(model.weight, finite.weight, rtol=0, atol=0)  # steps 3..5 changed nothing
    assert all(float(s["step"]) == 2 for s in opt.state.values())  # skipped steps are not counted
    got = window.read()
    assert got.first_bad == 2 and got.records[got.first_bad].step == 3
    assert got.last() == pytest.approx(dict(zip(LossParts.NAMES, got.values[1], strict=True)))
    assert list(got.last()) == ["loss", "mse", "mae"]
    assert len(window) == 0 and float(window.bad) == 0.0  # the next window starts clean
    loss, _ = _loss(model, 1.0)
    opt.zero_grad()
    loss.backward()
    window.guard(loss)
    opt.step()
    assert not torch.equal(model.weight, finite.weight)  # updates resume after the read


def test_other_optimisers_do_not_skip_on_the_device() -> None:
    _, _, window = _steps(False, [1.0, 1.0])
    assert not window.skips_on_device
    got = window.read()
    assert got.first_bad is None and got.values.shape == (2, 3)


def test_batch_to_keeps_the_name_and_moves_every_tensor() -> None:
    t = torch.zeros(2, dtype=torch.int64)
    batch = Batch(x=torch.ones(2, 3, 4, 5), y=torch.ones(2, 1, 4, 5), timestamps=torch.zeros(2, 3, 3),
                  target_timestamps=torch.zeros(2, 1, 3), task_id=t, channel=t, index=t, dataset="city_a")
    moved = batch.to(torch.device("meta"))
    assert moved.dataset == "city_a" and moved.y_real is None and len(moved) == 2
    tensors = [getattr(moved, f.name) for f in dataclasses.fields(moved) if f.name not in ("dataset", "y_real")]
    assert all(v.device.type == "meta" for v in tensors)
    assert batch.x.device.type == "cpu"  # the host batch is left where it was
    with pytest.raises(ValueError, match=r"city_a.*no raw-scale targets"):
        batch.real_targets()


def test_progress_without_a_terminal_logs_lines_and_draws_no_bar(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    with (caplog.at_level(logging.INFO, logger="vlm4st.logging.progress"),
          Progress("main", 4, enabled=True, log_every_s=1e-9, stream=stream, interactive=False) as p):
        p.note(epoch="1/2", loss=0.123456)
        for _ in range(4):
            p.advance()
    assert stream.getvalue() == ""  # no carriage-return bar in a pipe
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and lines[-1].startswith("main: 4/4 steps (100%)")
    assert "epoch 1/2" in lines[-1] and "loss 0.1235" in lines[-1] and "eta 00:00" in lines[-1]


def test_progress_on_a_terminal_draws_one_bar(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    with (caplog.at_level(logging.INFO, logger="vlm4st.logging.progress"),
          Progress("main", 3, enabled=True, log_every_s=30, stream=stream, interactive=True) as p):
        for _ in range(3):
            p.advance()
        p.note(loss=0.5)  # a loss read redraws the bar
    assert "main" in stream.getvalue() and "loss 0.5" in stream.getvalue() and "eta" in stream.getvalue()
    assert not caplog.records


def test_the_eta_is_capped_by_the_time_budget_left() -> None:
    p = Progress("main", 1000, enabled=False, log_every_s=30, budget_s=100.0, spent_s=99.0)
    p.started -= 10.0  # ten seconds for one step: 999 steps by rate, but the budget ends the stage first
    p.advance()
    assert p.eta_s() == 0.0
    q = Progress("main", 10, enabled=False, log_every_s=30, done=5)
    assert q.eta_s() is None  # no rate yet after a resume
    with pytest.raises(ValueError, match="positive"):
        Progress("main", 10, enabled=False, log_every_s=0)
