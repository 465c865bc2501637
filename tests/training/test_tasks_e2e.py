"""Every task end to end: ``task=data``, the time budget, ``task=predict`` against ``task=test``'s saved
forecasts, and a hard ``kill -9`` of a real ``python -m vlm4st.run`` process followed by ``resume=true``."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tests.runs import FAST, SHORT_CITIES, make_cfg, read_metrics
from vlm4st import REPO_ROOT
from vlm4st.data.build import build_datamodule
from vlm4st.data.timestamps import slots_of
from vlm4st.training import checkpoint as ckpt
from vlm4st.training import trainer as trainer_module
from vlm4st.training.tasks import build_data

QUICK = ["trainer.epochs=1", "trainer.max_steps=4", "trainer.schedule.warmup_epochs=0"]


def test_task_data_prints_the_summary(tmp_path, run_entry, capsys) -> None:
    run_entry(make_cfg(tmp_path / "data", "task=data"))
    out = capsys.readouterr().out
    for city in ("city_a", "city_b", "city_c"):
        assert city in out
    assert "mode=full" in out


class _Clock:
    """A clock that advances 0.1 s each time it is read: the budget runs out after a fixed number of reads, however
    fast the machine is."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 0.1
        return self.now


def test_the_time_budget_ends_training_and_is_recorded(tmp_path, run_entry, monkeypatch) -> None:
    monkeypatch.setattr(trainer_module, "time", _Clock())
    run_dir = tmp_path / "run"
    cfg = make_cfg(run_dir, "trainer.epochs=200", "trainer.max_steps=null", "trainer.time_budget_min=0.02",
                   "trainer.schedule.warmup_epochs=0")
    per_epoch = build_data(cfg).num_train_batches(int(cfg.trainer.batch_size))
    run_entry(cfg)
    main = read_metrics(run_dir).stages["main"]
    assert 0.02 * 60 <= main.train_seconds < 0.02 * 60 + 1.0  # stopped at the first read past the budget
    assert main.epochs == 1 and 1 <= main.steps < per_epoch  # inside the first epoch, then validated
    state = ckpt.load_checkpoint(run_dir / "checkpoints" / "last.pt")["trainer_state"]
    assert state["out_of_time"] and state["finished"]


def test_predict_reproduces_the_saved_test_forecasts(tmp_path, run_entry) -> None:
    train_dir = tmp_path / "train"
    cfg = make_cfg(train_dir, *QUICK)
    run_entry(cfg)
    best = train_dir / "checkpoints" / "best.pt"
    run_entry(make_cfg(tmp_path / "test", "task=test", f"checkpoint={best}", "save_predictions=true"))
    with np.load(tmp_path / "test" / "predictions.npz") as z:
        saved, index = z["city_a.forecast"], z["city_a.index"]

    dm = build_datamodule(cfg.dataset, cfg.shot_ratio, seed=int(cfg.seed), cache_dir=str(tmp_path / "cache"))
    ds = dm.by_name["city_a"]
    positions = np.arange(5)
    batch = ds.batch("test", positions, with_real=True)
    frames = ds.to_real(batch.x, batch.channel).numpy()  # (5, T_in, H, W) raw scale
    source = tmp_path / "windows.npz"
    stamps = slots_of(batch.timestamps.numpy())  # (5, T_in, 2) [weekday, slot], as a predict file holds them
    np.savez(source, frames=frames, timestamps=stamps, channel=batch.channel.numpy())
    pred_dir = tmp_path / "predict"
    run_entry(make_cfg(pred_dir, "task=predict", f"checkpoint={best}", f"predict_input={source}",
                       "predict_dataset=city_a"))
    with np.load(pred_dir / "forecast.npz") as z:
        forecast = z["forecast"]
    rows = [int(np.flatnonzero(index == i)[0]) for i in batch.index.numpy()]
    np.testing.assert_allclose(forecast, saved[rows], rtol=1e-4, atol=1e-3)


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_kill_9_at_a_random_step_then_resume_matches_an_uninterrupted_run(tmp_path, run_entry) -> None:
    args = ["trainer.epochs=2", "trainer.max_steps=60", "trainer.checkpoint_every_steps=1",
            "trainer.schedule.warmup_epochs=0"]
    whole = tmp_path / "whole"
    run_entry(make_cfg(whole, *args))

    killed = tmp_path / "killed"
    kill_at = random.Random(os.getpid()).randint(3, 30)
    overrides = [*FAST, *SHORT_CITIES, *args, f"hydra.run.dir={killed}", f"transfer.cache_dir={killed}/source_models"]
    proc = subprocess.Popen([sys.executable, "-m", "vlm4st.run", *overrides], cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "last.pt"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if last.is_file() and ckpt.load_checkpoint(last)["trainer_state"]["step"] >= kill_at:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    state = ckpt.load_checkpoint(last)["trainer_state"]
    assert not state["finished"] and state["step"] >= kill_at

    run_entry(make_cfg(killed, *args, "resume=true"))
    a = ckpt.load_checkpoint(whole / "checkpoints" / "last.pt")["model"]["weights"]
    b = ckpt.load_checkpoint(last)["model"]["weights"]
    assert all(torch.equal(a[k], b[k]) for k in a), "weights differ after kill -9 and resume"
    assert read_metrics(whole).test == read_metrics(killed).test
