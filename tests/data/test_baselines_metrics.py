"""Streaming metrics equal the metric over all points; baselines reproduce the published sanity numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vlm4st.data import build_datamodule
from vlm4st.evaluation.baselines import BaselineResults, evaluate_baselines
from vlm4st.evaluation.metrics import ForecastMetrics

from .builders import dataset_cfg, series_source, shots, source_cfg, synthetic_sources


def test_streaming_metrics_are_over_all_points_not_batch_means() -> None:
    g = torch.Generator().manual_seed(0)
    pred, y = torch.randn(10, 3, 4, 5, generator=g), torch.randn(10, 3, 4, 5, generator=g)
    pred[7:] *= 20  # a last, small batch with large errors: a mean of batch means would differ
    m = ForecastMetrics(3)
    for sl in (slice(0, 7), slice(7, 10)):
        m.add("a", pred[sl] * 2, y[sl] * 2, pred[sl], y[sl])
    r = m.result()["a"]
    e = pred.double() - y.double()
    assert r.mae_norm == pytest.approx(float(e.abs().mean()), rel=1e-12)
    assert r.rmse_norm == pytest.approx(math.sqrt(float(e.square().mean())), rel=1e-12)
    assert r.rmse == pytest.approx(2 * r.rmse_norm, rel=1e-12)
    assert r.per_step.mae == pytest.approx((2 * e.abs().mean(dim=(0, 2, 3))).tolist(), rel=1e-12)
    assert r.n == 10 and r.points == 10 * 3 * 4 * 5
    batch_means = np.mean([float((pred[s] - y[s]).abs().mean()) for s in (slice(0, 7), slice(7, 10))])
    assert abs(batch_means - r.mae_norm) > 0.1


def test_pack_unpack_sums_like_an_all_reduce() -> None:
    parts = [ForecastMetrics(2, ["a", "b"]) for _ in range(2)]
    whole = ForecastMetrics(2, ["a", "b"])
    g = torch.Generator().manual_seed(1)
    for m in parts:
        p, y = torch.randn(4, 2, 3, 3, generator=g), torch.randn(4, 2, 3, 3, generator=g)
        m.add("a", p, y, p, y)
        whole.add("a", p, y, p, y)
    merged = ForecastMetrics(2, ["a", "b"])
    merged.unpack(parts[0].pack() + parts[1].pack())
    assert merged.result() == whole.result() and "b" not in merged.result()


def test_update_maps_predictions_to_real_scale_on_the_native_grid() -> None:
    dm = build_datamodule(dataset_cfg(synthetic_sources(1), resize_to=12), shots(1.0), 0)
    m = ForecastMetrics(2)
    for batch in dm.eval_batches("c0", "test", 50):
        m.update(batch.y[..., None], batch, dm.to_real)  # perfect model on the resized grid, (B,T,H,W,1)
    r = m.result()["c0"]
    assert r.mae_norm == 0.0 and 0 < r.mae < 5  # resize round trip costs a little on the native grid


# RESULTS.md section 5 (RMSE, MAE) at the printed precision; n = windows of both channels.
HA, LAST, TOD = "historical_average", "last_value", "time_of_day_mean"
EXPECTED = {
    ("taxi", 6): {HA: (58.69, 18.97), LAST: (45.28, 13.96), TOD: (34.25, 10.90)},
    ("bike", 6): {HA: (11.18, 3.38), LAST: (9.78, 2.77), TOD: (6.14, 1.77)},
    ("taxi", 12): {HA: (77.12, 26.50), LAST: (65.52, 20.62), TOD: (34.06, 10.83)},
    ("bike", 12): {HA: (13.22, 4.44), LAST: (12.29, 3.66), TOD: (6.14, 1.77)},
}


# Two printed RMSEs are 0.005 above the exact value every definition we tried gives (pooled over channels,
# windows of the 6:2:2 split, float64): bike HA 6->6 is 11.1747 (printed 11.18), taxi ToD-mean 12->12 is 34.0547
# (printed 34.06). Their MAEs and every other figure match to the printed precision.
OFF_BY_ROUNDING = {("bike", 6, HA), ("taxi", 12, TOD)}


def _check(res: BaselineResults, name: str, horizon: int, n_windows: int) -> None:
    for baseline, (rmse, mae) in EXPECTED[(name, horizon)].items():
        got = getattr(res, baseline)[name]
        assert round(got.mae, 2) == mae, baseline
        if (name, horizon, baseline) in OFF_BY_ROUNDING:
            assert abs(got.rmse - rmse) < 0.006, baseline
        else:
            assert round(got.rmse, 2) == rmse, baseline
        assert got.n == n_windows


@pytest.mark.parametrize(("city", "horizon"), list(EXPECTED))
def test_baselines_reproduce_results_on_the_series(shared_data, city, horizon) -> None:
    path = shared_data / f"nyc_{city}_stdn_10x20_30min.series.npz"
    cfg = dataset_cfg({city: series_source(path)}, t_in=horizon, t_out=horizon)
    res = evaluate_baselines(build_datamodule(cfg, shots(1.0), 0))
    _check(res, city, horizon, 2 * (574 if horizon == 6 else 572))


@pytest.mark.parametrize("city", ["taxi", "bike"])
def test_baselines_reproduce_results_on_stored_windows(shared_data, city) -> None:
    path = shared_data / f"nyc_{city}_stdn_10x20_30min.unist.npz"
    cfg = dataset_cfg({city: source_cfg("WindowNpzReader", path=str(path))}, t_in=6, t_out=6)
    res = evaluate_baselines(build_datamodule(cfg, shots(1.0), 0))
    _check(res, city, 6, 2 * 574)


def test_zero_shot_target_skips_time_of_day_mean() -> None:
    dm = build_datamodule(dataset_cfg(synthetic_sources(), target="c1"), shots(0.0), 0)
    res = evaluate_baselines(dm)
    assert "c1" in res.skipped["time_of_day_mean"] and res.time_of_day_mean == {}
    assert set(res.last_value) == {"c1"}
