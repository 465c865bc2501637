"""The tiny preset on the real NYC taxi flows (skipped without ../shared/data)."""

from __future__ import annotations

import pytest

from tests.runs import make_cfg, read_metrics


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_tiny_model_beats_the_time_of_day_mean_on_taxi(shared_data, tmp_path, run_entry) -> None:
    run_dir = tmp_path / "taxi"
    run_entry(make_cfg(run_dir, "dataset=taxinyc", "seed=0", "trainer.epochs=5", "trainer.optimizer.lr=2e-3",
                       "trainer.batch_size=32"))
    metrics = read_metrics(run_dir)
    model = metrics.test["taxinyc"]
    tod = metrics.baselines.time_of_day_mean["taxinyc"]
    assert model.n == 1148  # 574 test windows x 2 flow directions
    assert tod.rmse == pytest.approx(34.25, abs=0.01)  # RESULTS.md section 5
    assert model.rmse < tod.rmse, f"model RMSE {model.rmse:.2f} vs ToD-mean {tod.rmse:.2f}"
