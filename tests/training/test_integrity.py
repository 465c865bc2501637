"""Runs that could silently measure the wrong thing fail instead: a resume of another run, a non-finite loss,
a stale source model, a rebuilt test on changed data; checkpoint renames are durable."""

from __future__ import annotations

import math
import os
import stat

import pytest
import torch

import vlm4st
from tests.runs import make_cfg, read_metrics
from vlm4st.data.module import DataModule
from vlm4st.errors import CheckpointError
from vlm4st.training import checkpoint as ckpt
from vlm4st.training.signals import RunInterrupted
from vlm4st.training.source_cache import source_key
from vlm4st.training.trainer import NonFiniteLossError

SHORT = ["trainer.epochs=2", "trainer.max_steps=24", "trainer.checkpoint_every_steps=4",
         "trainer.schedule.warmup_epochs=0"]


def test_resume_refuses_a_last_pt_of_a_different_run(tmp_path, run_entry) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        run_entry(make_cfg(run_dir, *SHORT, "trainer.interrupt_after_steps=5"))
    with pytest.raises(CheckpointError, match=r"last\.pt.*trainer\.batch_size"):
        run_entry(make_cfg(run_dir, *SHORT, "trainer.batch_size=16", "resume=true"))
    with pytest.raises(CheckpointError, match=r"model\.dims\.d_model"):
        run_entry(make_cfg(run_dir, *SHORT, "model.dims.d_model=48", "resume=true"))
    run_entry(make_cfg(run_dir, *SHORT, "resume=true"))  # the same run resumes
    assert ckpt.load_checkpoint(run_dir / "checkpoints" / "last.pt")["trainer_state"]["finished"]


@pytest.mark.parametrize("fused", [False, True])
def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_finite_step(tmp_path, run_entry, monkeypatch,
                                                                         fused: bool) -> None:
    """Without fusion the step reads its loss and refuses the update; a fused optimiser skips it on the device
    and the loss window finds the step at its next read: the same error and the same last.pt either way."""
    original = DataModule.train_batches

    def overflowing(self, *args, **kwargs):
        for i, batch in enumerate(original(self, *args, **kwargs)):
            if i == 5:
                batch = {**batch, "y": batch["y"] * 1e30}  # squared errors overflow float32
            yield batch

    monkeypatch.setattr(DataModule, "train_batches", overflowing)
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"step 6 \(epoch 1, a batch of dataset 'city_[abc]'\)"):
        run_entry(make_cfg(run_dir, *SHORT, f"trainer.optimizer.fused={str(fused).lower()}"))
    payload = ckpt.load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert payload["trainer_state"]["step"] == 5
    assert all(torch.isfinite(w).all() for w in payload["model"]["weights"].values() if w.is_floating_point())


def test_resume_across_an_epoch_end_a_validation_and_a_best_update_and_best_is_the_argmin(tmp_path, run_entry) -> None:
    args = ["trainer.epochs=2", "trainer.max_steps=null", "trainer.checkpoint_every_steps=3", "trainer.batch_size=128",
            "trainer.schedule.warmup_epochs=0"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    run_entry(make_cfg(whole, *args))
    with pytest.raises(RunInterrupted):
        run_entry(make_cfg(broken, *args, "trainer.interrupt_after_steps=2"))
    run_entry(make_cfg(broken, *args, "resume=true"))
    a, b = read_metrics(whole), read_metrics(broken)
    losses = [h["val_loss"] for h in a["stages"]["main"]["history"]]
    assert len(losses) == 2
    assert a["stages"]["main"]["best_epoch"] == min(range(2), key=losses.__getitem__)
    assert a["stages"]["main"]["best_val_loss"] == min(losses)
    assert a["stages"]["main"]["history"][0]["val_loss"] == b["stages"]["main"]["history"][0]["val_loss"]
    assert [h["val_loss"] for h in a["stages"]["main"]["history"]] == [
        h["val_loss"] for h in b["stages"]["main"]["history"]]
    assert a["test"] == b["test"]
    best_a = ckpt.load_checkpoint(whole / "checkpoints" / "best.pt")["model"]["weights"]
    best_b = ckpt.load_checkpoint(broken / "checkpoints" / "best.pt")["model"]["weights"]
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)


def test_the_few_shot_target_stage_resumes_exactly(tmp_path, run_entry) -> None:
    transfer = ["shot_ratio=few10", "dataset.target=city_c", "trainer.epochs=1", "trainer.max_steps=6",
                "trainer.fewshot.epochs=2", "trainer.schedule.warmup_epochs=0", "trainer.checkpoint_every_steps=2"]
    source_dir = tmp_path / "source"
    run_entry(make_cfg(source_dir, *transfer, "transfer.source_cache=false"))
    source = source_dir / "checkpoints" / "source" / "best.pt"
    args = [*transfer, f"source_checkpoint={source}", "trainer.max_steps=null"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    run_entry(make_cfg(whole, *args))
    with pytest.raises(RunInterrupted, match="stage 'target' stopped at step 3"):
        run_entry(make_cfg(broken, *args, "trainer.interrupt_after_steps=3"))
    run_entry(make_cfg(broken, *args, "resume=true"))
    assert read_metrics(whole)["test"] == read_metrics(broken)["test"]


def test_the_source_cache_key_follows_the_data_content_and_the_code_version(monkeypatch) -> None:
    config = {"model": {"a": 1}, "dataset": {"name": "x", "t_in": 6}, "trainer": {"lr": 1.0}, "seed": 0}
    key = source_key(config, {"city_a": "aa"})
    assert source_key(config, {"city_a": "aa"}) == key
    assert source_key(config, {"city_a": "ab"}) != key
    monkeypatch.setattr(vlm4st, "__version__", "0.0.0-other")
    assert source_key(config, {"city_a": "aa"}) != key


def test_a_checkpoint_write_fsyncs_its_folder_after_the_rename(tmp_path, monkeypatch) -> None:
    synced: list[bool] = []
    real_fsync = os.fsync

    def recording(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    ckpt.save_checkpoint({"x": torch.zeros(2)}, tmp_path / "a.pt")
    assert synced == [False, True], "the file, then its folder"


def test_task_test_detects_a_changed_data_file(tmp_path, run_entry) -> None:
    import numpy as np

    series = tmp_path / "city.series.npz"
    rng = np.random.default_rng(0)
    days, steps = 14, 48
    frames = rng.poisson(30.0, size=(days * steps, 6, 8)).astype(np.float32)
    slots = np.arange(days * steps)
    stamps = np.stack([(slots // steps) % 7, slots % steps], axis=1)
    np.savez(series, data=frames, timestamps=stamps, interval_minutes=np.int32(30))
    data = ["dataset=taxinyc", f"dataset.sources.taxinyc.path={series}"]
    train_dir = tmp_path / "train"
    run_entry(make_cfg(train_dir, *data, "trainer.epochs=1", "trainer.max_steps=3"))
    best = train_dir / "checkpoints" / "best.pt"
    frames[10, 2, 3] += 1.0
    np.savez(series, data=frames, timestamps=stamps, interval_minutes=np.int32(30))
    with pytest.raises(ValueError, match=r"best\.pt.*sha256|sha256.*best\.pt"):
        run_entry(make_cfg(tmp_path / "test", *data, "task=test", f"checkpoint={best}"))


def test_task_test_rebuilds_with_the_checkpoint_seed(tmp_path, run_entry) -> None:
    train_dir = tmp_path / "train"
    run_entry(make_cfg(train_dir, "seed=3", "trainer.epochs=1", "trainer.max_steps=3"))
    best = train_dir / "checkpoints" / "best.pt"
    run_entry(make_cfg(tmp_path / "test", "seed=0", "task=test", f"checkpoint={best}"))
    tested = read_metrics(tmp_path / "test")
    assert tested["run"]["seed"] == 3
    assert tested["test"] == read_metrics(train_dir)["test"]
    assert not math.isnan(tested["test_loss"])
