"""Cities at different intervals in one run, end to end: training, checkpoints, ``task=test``, ``task=predict``,
zero-shot to an hourly city, and the from-scratch transfer control."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.runs import SMALL_GRIDS, make_cfg, read_metrics
from vlm4st.data.errors import DataValueError
from vlm4st.errors import CheckpointError, ConfigError
from vlm4st.training import checkpoint as ckpt
from vlm4st.training import tasks

HOURLY = "dataset.sources.city_b.interval_minutes=60"  # city_b of the default data becomes an hourly city
QUICK = ["trainer.epochs=1", "trainer.max_steps=4", "trainer.schedule.warmup_epochs=0"]


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory):
    """Two epochs on two half-hourly cities and one hourly city (trained once for this module)."""
    from vlm4st.run import run

    run_dir = tmp_path_factory.mktemp("mixed")
    run(make_cfg(run_dir, HOURLY, "trainer.epochs=2", "trainer.max_steps=null", "trainer.schedule.warmup_epochs=0",
                 "trainer.batch_size=128"))
    return run_dir


def test_a_48_and_a_24_slot_source_train_together_and_both_validate(mixed_run) -> None:
    history = read_metrics(mixed_run).stages["main"].history
    assert [h.epoch for h in history] == [0, 1]  # two epochs, each validated
    for record in history:
        assert set(record.val) == {"city_a", "city_b", "city_c"}
        assert all(np.isfinite(m.rmse) for m in record.val.values())


def test_checkpoints_keep_every_datasets_interval_and_test_rebuilds_it(mixed_run, run_entry, tmp_path) -> None:
    best = mixed_run / "checkpoints" / "best.pt"
    datasets = ckpt.load_checkpoint(best)["data"]["datasets"]
    assert {d["name"]: d["interval_minutes"] for d in datasets} == {"city_a": 30, "city_b": 60, "city_c": 30}
    run_entry(make_cfg(tmp_path / "test", "task=test", f"checkpoint={best}"))  # verifies the rebuilt data
    assert set(read_metrics(tmp_path / "test").test) == {"city_a", "city_b", "city_c"}


def test_predict_on_the_hourly_city_reads_hourly_stamps(mixed_run, run_entry, tmp_path) -> None:
    best = mixed_run / "checkpoints" / "best.pt"
    frames = np.random.default_rng(0).poisson(20, size=(10, *SMALL_GRIDS["city_b"])).astype(np.float32)  # (T, H, W)
    stamps = np.stack([np.full(10, 4), np.arange(14, 24)], axis=-1)  # Friday 14:00 .. 23:00, hourly slots
    source = tmp_path / "hourly.npz"
    np.savez(source, frames=frames, timestamps=stamps)
    out = tmp_path / "predict"
    run_entry(make_cfg(out, "task=predict", f"checkpoint={best}", f"predict_input={source}",
                       "predict_dataset=city_b"))
    with np.load(out / "forecast.npz") as z:
        assert z["forecast"].shape == (1, 6, *SMALL_GRIDS["city_b"]) and np.isfinite(z["forecast"]).all()
    half_hourly = np.stack([np.full(10, 4), np.arange(30, 40)], axis=-1)  # slot 30 does not exist in an hourly day
    np.savez(source, frames=frames, timestamps=half_hourly)
    with pytest.raises(DataValueError, match=r"slot out of range 0\.\.23.*60-minute steps"):
        run_entry(make_cfg(tmp_path / "bad", "task=predict", f"checkpoint={best}", f"predict_input={source}",
                           "predict_dataset=city_b"))


def test_zero_shot_to_an_hourly_city_from_half_hourly_sources(run_entry, tmp_path) -> None:
    run_dir = tmp_path / "zero"
    run_entry(make_cfg(run_dir, HOURLY, "shot_ratio=zero", "dataset.target=city_b",
                       "dataset.zero_shot_calibration_steps=24", *QUICK))
    metrics = read_metrics(run_dir)
    assert list(metrics.test) == ["city_b"] and np.isfinite(metrics.test["city_b"].rmse)
    assert "city_b" in metrics.baselines.last_value
    blend = metrics.zero_shot_blend["city_b"]  # fitted on the 24-frame (one day) calibration prefix
    assert blend.prefix_windows == 24 - 12 + 1 and all(0.0 <= w <= 1.0 for w in blend.weights)


def test_scratch_control_loads_no_source_weight(trained_checkpoint, run_entry, tmp_path, monkeypatch) -> None:
    loaded: list[str] = []
    real_load = tasks.ckpt.load_checkpoint

    def recording_load(path, *args, **kwargs):
        loaded.append(str(path))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(tasks.ckpt, "load_checkpoint", recording_load)
    run_dir = tmp_path / "scratch"
    run_entry(make_cfg(run_dir, "shot_ratio=few10", "dataset.target=city_a", "transfer.init=scratch",
                       f"source_checkpoint={trained_checkpoint}", *QUICK))
    metrics = read_metrics(run_dir)
    assert list(metrics.stages) == ["target"] and metrics.run.init == "scratch"
    assert str(trained_checkpoint) not in loaded
    assert loaded and all("/checkpoints/target/" in path for path in loaded)  # the target stage's own best.pt
    assert not (run_dir / "source_models").exists() and not (run_dir / "checkpoints" / "source").exists()


def test_scratch_has_no_zero_shot_meaning(run_entry, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"transfer\.init=scratch with shot_ratio=zero"):
        run_entry(make_cfg(tmp_path / "z", "shot_ratio=zero", "dataset.target=city_a", "transfer.init=scratch",
                           *QUICK))


def test_a_checkpoint_from_before_per_dataset_intervals_is_refused_clearly(trained_checkpoint, tmp_path) -> None:
    payload = torch.load(trained_checkpoint, weights_only=True)
    payload["format_version"] = 1
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    with pytest.raises(CheckpointError, match=r"format_version 1, expected 2: .*interval_minutes.*retrain"):
        ckpt.load_checkpoint(old)


def test_stid_trains_on_half_hourly_and_hourly_cities(run_entry, tmp_path) -> None:
    run_dir = tmp_path / "stid"
    run_entry(make_cfg(run_dir, HOURLY, "model=stid", *QUICK))
    metrics = read_metrics(run_dir)
    assert set(metrics.test) == {"city_a", "city_b", "city_c"}
    assert all(np.isfinite(m.rmse) for m in metrics.test.values())


def test_unknown_task_rate_feeds_that_share_of_samples_as_the_unknown_task() -> None:
    from types import SimpleNamespace

    from vlm4st.training.trainer import Trainer

    settings = SimpleNamespace(unknown_task_rate=0.3)
    trainer = SimpleNamespace(settings=settings, data=SimpleNamespace(names=["a", "b", "c"]))
    torch.manual_seed(0)
    task = torch.randint(0, 3, (20_000,))
    hidden = Trainer._hide_tasks(trainer, task)
    unknown = hidden == 3
    assert abs(float(unknown.float().mean()) - 0.3) < 0.02
    assert torch.equal(hidden[~unknown], task[~unknown])  # the others keep their own id
    settings.unknown_task_rate = 0.0
    assert Trainer._hide_tasks(trainer, task) is task
