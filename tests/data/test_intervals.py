"""Per-source step lengths: each source declares its interval (config or file), its stamps are checked at it, and
batches carry interval-free time codes, so 30- and 60-minute cities share one data module and one model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlm4st.config import ConfigError
from vlm4st.data.build import build_datamodule
from vlm4st.data.errors import DataValueError
from vlm4st.data.timestamps import slots_of, steps_per_day_of, time_codes
from vlm4st.models.calendar import CalendarEmbedding
from vlm4st.models.stid import STID

from .builders import dataset_cfg, series, series_source, shots, source_cfg, stamps_for

HOURLY = 24  # steps per day of a 60-minute city


def _mixed_sources() -> dict[str, dict]:
    return {
        "half": source_cfg("SyntheticCityReader", height=5, width=6, days=10, seed=1, interval_minutes=30),
        "hour": source_cfg("SyntheticCityReader", height=4, width=7, days=20, seed=2, interval_minutes=60),
    }


def test_a_30_and_a_60_minute_source_build_together_with_their_own_intervals() -> None:
    dm = build_datamodule(dataset_cfg(_mixed_sources()), shots(1.0), 0)
    assert [d.interval_minutes for d in dm.datasets] == [30, 60]
    assert [d["interval_minutes"] for d in dm.state_dict()["datasets"]] == [30, 60]
    assert "60 min" in dm.summary() and "30 min" in dm.summary()
    for name, interval in (("half", 30), ("hour", 60)):
        batch = next(iter(dm.eval_batches(name, "val", 16)))
        codes = torch.cat([batch.timestamps, batch.target_timestamps], dim=1)  # (B, L, 3)
        assert (codes[..., 2] == interval).all()
        assert ((codes[..., 1].diff(dim=1) % 1440) == interval).all()  # consecutive steps, interval apart
        ds = dm.by_name[name]
        assert (codes[..., 1] < 1440).all() and int(ds.stamps[:, 1].max()) == 1440 // interval - 1


def test_eight_oclock_is_the_same_time_code_and_encoding_in_a_30_and_a_60_minute_city() -> None:
    half, hour = time_codes(np.array([[2, 16]]), 48), time_codes(np.array([[2, 8]]), HOURLY)  # Wednesday 08:00
    assert half[0, :2].tolist() == hour[0, :2].tolist() == [2, 480]
    assert slots_of(half).tolist() == [[2, 16]] and slots_of(hour).tolist() == [[2, 8]]
    cal = CalendarEmbedding(8, 24, key="k")
    cal.clock.interval.weight.data.normal_()  # a trained model may read the interval ...
    a, b = cal(torch.from_numpy(half)), cal(torch.from_numpy(hour))
    step = cal.clock.interval.weight[:, 0]  # ... which adds log2(60/30) = 1 times this for the hourly city
    torch.testing.assert_close(b - a, step[None].detach())
    stid = STID(6, 6, harmonics=24, cell_embedding=None)
    minute_half = stid.time_of_day.minute(torch.zeros(1, 48))  # the clock part of STID's time of day
    assert minute_half.shape == (1, 32)
    torch.testing.assert_close(stid.time_of_day(torch.from_numpy(half)), stid.time_of_day(torch.from_numpy(hour)))


def test_stamps_that_disagree_with_the_declared_interval_name_the_file_and_the_first_bad_frame(tmp_path) -> None:
    path = tmp_path / "hourly.npz"
    np.savez(path, data=series(T=60), timestamps=stamps_for(60, start_slot=20, steps_per_day=HOURLY))
    bad = r"frame 4 does not follow frame 3 \(expected \[2, 24\], found \[3, 0\]"  # hourly stamps read at 30 min
    with pytest.raises(DataValueError, match=bad) as info:
        build_datamodule(dataset_cfg({"c": series_source(path)}), shots(1.0), 0)  # declared 30 min
    assert str(path) in str(info.value)
    dm = build_datamodule(dataset_cfg({"c": series_source(path, interval_minutes=60)}), shots(1.0), 0)
    assert dm.datasets[0].interval_minutes == 60


def test_the_interval_comes_from_the_file_or_the_config_and_they_must_agree(tmp_path) -> None:
    path = tmp_path / "hourly.npz"
    np.savez(path, data=series(T=60), timestamps=stamps_for(60, steps_per_day=HOURLY), interval_minutes=np.int32(60))
    node = source_cfg("SeriesReader", path=str(path), interval_minutes=None)
    assert build_datamodule(dataset_cfg({"c": node}), shots(1.0), 0).datasets[0].interval_minutes == 60
    with pytest.raises(DataValueError, match=r"file stores interval_minutes=60 but the config sets "
                                             r"dataset\.sources\.c\.interval_minutes=30"):
        build_datamodule(dataset_cfg({"c": series_source(path)}), shots(1.0), 0)
    bare = tmp_path / "bare.npz"
    np.savez(bare, data=series(T=60), timestamps=stamps_for(60))
    with pytest.raises(ConfigError, match=r"dataset\.sources\.c\.interval_minutes is null and .*stores no step"):
        build_datamodule(dataset_cfg({"c": source_cfg("SeriesReader", path=str(bare))}), shots(1.0), 0)


@pytest.mark.parametrize("value", [0, 7, 50, 2000, 1.5, True, "30"])
def test_an_interval_must_divide_a_day(value) -> None:
    with pytest.raises(ConfigError, match=r"dataset\.sources\.x\.interval_minutes=.*divide a day"):
        steps_per_day_of(value, "dataset.sources.x.interval_minutes")


def test_a_run_wide_steps_per_day_is_refused_with_the_new_key() -> None:
    with pytest.raises(ConfigError, match=r"dataset\.steps_per_day is no longer read.*interval_minutes"):
        build_datamodule(dataset_cfg(_mixed_sources(), steps_per_day=48), shots(1.0), 0)


def test_a_zero_shot_target_at_60_minutes_is_calibrated_and_checked_at_its_own_interval() -> None:
    cfg = dataset_cfg(_mixed_sources(), target="hour", zero_shot_calibration_steps=HOURLY)
    dm = build_datamodule(cfg, shots(0.0), 0)
    target = dm.by_name["hour"]
    assert set(target.windows) == {"test"} and target.interval_minutes == 60
    batch = next(iter(dm.eval_batches("hour", "test", 8)))
    assert (batch.target_timestamps[..., 2] == 60).all()
