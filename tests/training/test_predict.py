"""task=test and task=predict reuse a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from tests.runs import SMALL_GRIDS, make_cfg, read_metrics
from vlm4st.data.errors import DataValueError

QUICK = ["trainer.epochs=1", "trainer.max_steps=4", "trainer.schedule.warmup_epochs=0"]


def test_test_and_predict_from_a_checkpoint(tmp_path, run_entry) -> None:
    train_dir = tmp_path / "train"
    run_entry(make_cfg(train_dir, *QUICK))
    best = train_dir / "checkpoints" / "best.pt"

    test_dir = tmp_path / "test"
    run_entry(make_cfg(test_dir, "task=test", f"checkpoint={best}", "save_predictions=true"))
    assert read_metrics(test_dir).test == read_metrics(train_dir).test
    with np.load(test_dir / "predictions.npz") as z:
        assert z["city_a.forecast"].shape == z["city_a.target"].shape == (132, 6, *SMALL_GRIDS["city_a"])

    frames = np.random.default_rng(0).poisson(20.0, size=(30, *SMALL_GRIDS["city_b"])).astype(np.float32)
    stamps = np.stack([np.full(30, 2), np.arange(30) % 48], axis=1)
    source = tmp_path / "frames.npz"
    np.savez(source, frames=frames, timestamps=stamps)
    pred_dir = tmp_path / "predict"
    run_entry(make_cfg(pred_dir, "task=predict", f"checkpoint={best}", f"predict_input={source}",
                       "predict_dataset=city_b"))
    with np.load(pred_dir / "forecast.npz") as z:
        assert z["forecast"].shape == (1, 6, *SMALL_GRIDS["city_b"])
        assert np.isfinite(z["forecast"]).all()
    png = pred_dir / "forecast.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Stamps are checked where they enter (the model's forward pass reads no values): a slot outside the day
    # and a window whose steps do not follow each other are refused with the file named.
    for bad, what in ((np.stack([np.full(30, 2), np.arange(30) + 40], axis=1), "slot out of range"),
                      (np.stack([np.full(30, 2), (np.arange(30) * 2) % 48], axis=1), "does not follow")):
        wrong = tmp_path / "wrong.npz"
        np.savez(wrong, frames=frames, timestamps=bad)
        with pytest.raises(DataValueError, match=what) as err:
            run_entry(make_cfg(tmp_path / "wrong", "task=predict", f"checkpoint={best}", f"predict_input={wrong}"))
        assert "wrong.npz" in str(err.value)
