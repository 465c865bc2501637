"""End-to-end training runs: the tiny model beats the baselines, resume is exact, damaged checkpoints fail clearly."""

from __future__ import annotations

import pytest
import torch

from tests.runs import make_cfg, read_metrics
from vlm4st.errors import ConfigError
from vlm4st.training import checkpoint as ckpt
from vlm4st.training.trainer import RunInterrupted

SHORT = ["trainer.epochs=2", "trainer.max_steps=24", "trainer.checkpoint_every_steps=4",
         "trainer.schedule.warmup_epochs=0"]
#: Eight steps, still inside the first epoch, two in-epoch checkpoints: for the tests of what a checkpoint holds.
BRIEF = ["trainer.epochs=2", "trainer.max_steps=8", "trainer.checkpoint_every_steps=4",
         "trainer.schedule.warmup_epochs=0"]


@pytest.mark.integration
def test_tiny_model_beats_persistence_and_historical_average(tmp_path, run_entry) -> None:
    run_dir = tmp_path / "run"
    run_entry(make_cfg(run_dir, "seed=0", "trainer.epochs=4", "trainer.optimizer.lr=2e-3"))
    metrics = read_metrics(run_dir)
    baselines = metrics.baselines
    for name, m in metrics.test.items():
        last = baselines.last_value[name].rmse
        ha = baselines.historical_average[name].rmse
        assert m.rmse < 0.9 * last, f"{name}: model RMSE {m.rmse:.3f} vs persistence {last:.3f}"
        assert m.rmse < 0.9 * ha, f"{name}: model RMSE {m.rmse:.3f} vs historical average {ha:.3f}"
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert (run_dir / "config_resolved.yaml").is_file()
    per_step = metrics.test["city_a"].per_step.rmse
    assert len(per_step) == 6


def _weights(path):
    return ckpt.load_checkpoint(path)["model"]["weights"]


@pytest.mark.integration
def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path, run_entry) -> None:
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    run_entry(make_cfg(whole, *SHORT))
    with pytest.raises(RunInterrupted):
        run_entry(make_cfg(broken, *SHORT, "trainer.interrupt_after_steps=7"))
    state = ckpt.load_checkpoint(broken / "checkpoints" / "last.pt")["trainer_state"]
    assert state["step"] == 7 and not state["finished"]
    run_entry(make_cfg(broken, *SHORT, "resume=true"))
    a, b = _weights(whole / "checkpoints" / "last.pt"), _weights(broken / "checkpoints" / "last.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"weights differ after resume: {key}"
    assert read_metrics(whole).test == read_metrics(broken).test


def test_truncated_checkpoint_fails_clearly_and_keeps_the_previous_last(tmp_path, run_entry) -> None:
    run_dir = tmp_path / "run"
    run_entry(make_cfg(run_dir, *BRIEF))
    last = run_dir / "checkpoints" / "last.pt"
    before = last.read_bytes()
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(before[: len(before) // 2])
    with pytest.raises(ckpt.CheckpointError, match=r"damaged\.pt.*truncated or corrupted"):
        ckpt.load_checkpoint(damaged)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ckpt.CheckpointError, match=r"garbage\.pt"):
        ckpt.load_checkpoint(garbage)

    def failing_save(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise OSError("disk full")

    original = torch.save
    torch.save = failing_save
    try:
        with pytest.raises(OSError, match="disk full"):
            ckpt.save_checkpoint({"x": 1}, last)
    finally:
        torch.save = original
    assert last.read_bytes() == before, "a failed write must leave the previous last.pt intact"
    assert not list(last.parent.glob(".last.pt.*.tmp")), "the temp file of a failed write is removed"
    assert ckpt.load_checkpoint(last)["trainer_state"]["finished"]


def test_checkpoints_load_with_weights_only_and_hold_what_a_resume_needs(tmp_path, run_entry) -> None:
    run_dir = tmp_path / "run"
    run_entry(make_cfg(run_dir, *BRIEF, "trainer.save_adapters_only=true", "model.vlm.freeze=true"))
    payload = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    for key in ("model", "optimizer", "scheduler", "trainer_state", "rng", "config", "data", "adapter",
                "code_version", "stage"):
        assert key in payload, key
    assert payload["model"]["trainable_only"]
    assert [d["name"] for d in payload["data"]["datasets"]] == ["city_a", "city_b", "city_c"]
    assert all("scaler" in d for d in payload["data"]["datasets"])
    saved = sum(p.numel() for p in payload["model"]["weights"].values())
    params = read_metrics(run_dir).params
    assert params.trainable <= saved < params.total, "only trainable parameters (and buffers) are stored"


def test_a_signal_during_the_last_validation_still_stops_the_run(tmp_path, run_entry, monkeypatch) -> None:
    import os
    import signal

    from vlm4st.training.trainer import Trainer

    calls = {"n": 0}
    validate = Trainer.validate

    def validate_then_signal(self, stage):
        calls["n"] += 1
        if calls["n"] == 1:  # max_steps ends the stage inside epoch 1: this is its last validation
            os.kill(os.getpid(), signal.SIGTERM)
        return validate(self, stage)

    monkeypatch.setattr(Trainer, "validate", validate_then_signal)
    run_dir = tmp_path / "run"
    with pytest.raises(RunInterrupted, match="finished, then stopped by signal"):
        run_entry(make_cfg(run_dir, *BRIEF))
    state = ckpt.load_checkpoint(run_dir / "checkpoints" / "last.pt")["trainer_state"]
    assert state["finished"] and state["step"] == 8
    assert not (run_dir / "metrics.json").exists(), "the run stops before testing"
    monkeypatch.setattr(Trainer, "validate", validate)
    run_entry(make_cfg(run_dir, *BRIEF, "resume=true"))  # resumes: the finished stage is skipped, then tested
    assert read_metrics(run_dir).test


@pytest.mark.parametrize("value", ["yes", "1", 0, "null"])
def test_resume_takes_auto_true_or_false_only(value, tmp_path, run_entry) -> None:
    with pytest.raises(ConfigError, match=r"resume=.*expected auto, true or false"):
        run_entry(make_cfg(tmp_path / "run", "trainer.epochs=1", "trainer.max_steps=1", f"resume={value}"))


@pytest.mark.parametrize(("override", "key"), [("model.t_in=4", "model.t_in"), ("model.t_out=3", "model.t_out"),
                                               ("model.out_channels=2", "model.out_channels")])
def test_a_model_that_does_not_fit_the_data_windows_is_refused_before_training(override, key, tmp_path,
                                                                               run_entry) -> None:
    with pytest.raises(ConfigError, match=rf"{key}: .*expected {key}="):
        run_entry(make_cfg(tmp_path / "run", "trainer.epochs=1", "trainer.max_steps=1", override))
