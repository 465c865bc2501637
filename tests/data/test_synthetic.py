"""Synthetic cities: deterministic by seed, different grids, plausible structure, learnable from timestamps."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.data.readers import city_series
from vlm4st.config import compose
from vlm4st.data import DataValueError, build_datamodule
from vlm4st.evaluation.baselines import evaluate_baselines

from .builders import dataset_cfg, shots, source_cfg


def test_generation_is_deterministic_by_seed() -> None:
    a, sa = city_series(6, 9, 7, seed=5)
    b, sb = city_series(6, 9, 7, seed=5)
    c, _ = city_series(6, 9, 7, seed=6)
    assert np.array_equal(a, b) and np.array_equal(sa, sb) and not np.array_equal(a, c)
    assert a.shape == (7 * 48, 6, 9) and a.dtype == np.float32
    assert (a >= 0).all() and np.array_equal(a, np.round(a))  # non-negative counts


def test_daily_weekly_and_zone_structure() -> None:
    counts, stamps = city_series(12, 12, 28, seed=0)
    total = counts.sum(axis=(1, 2))  # (T,)
    weekend = stamps[:, 0] >= 5
    by_slot = np.array([total[(stamps[:, 1] == s) & ~weekend].mean() for s in range(48)])
    assert by_slot[16] > 3 * by_slot[6] and by_slot[35] > 3 * by_slot[6]  # 08:00 and 17:30 peaks vs 03:00
    assert total[weekend].mean() < total[~weekend].mean()
    morning, evening = counts[(stamps[:, 1] == 16) & ~weekend].mean(0), counts[(stamps[:, 1] == 35) & ~weekend].mean(0)
    ratio = evening / np.maximum(morning, 1e-9)
    assert ratio.max() > 1.5 * ratio.min()  # business and residential cells peak differently


def test_default_config_builds_several_grids_without_files() -> None:
    dm = build_datamodule(compose(["dataset=synthetic"]).dataset, shots(1.0), 0)
    grids = {dm.by_name[n].native_hw for n in dm.names}
    assert len(dm.names) >= 3 and len(grids) == len(dm.names)
    for name in dm.names:
        days = len(dm.by_name[name].frames) / 48
        assert 20 <= days <= 36


def test_time_of_day_mean_clearly_beats_persistence() -> None:
    """On the default dataset a model that uses timestamps has something to learn."""
    dm = build_datamodule(compose(["dataset=synthetic"]).dataset, shots(1.0), 0)
    res = evaluate_baselines(dm)
    for name in dm.names:
        tod, last = res.time_of_day_mean[name], res.last_value[name]
        assert tod.rmse < 0.8 * last.rmse and tod.mae < 0.8 * last.mae


def test_bad_parameters_name_the_dataset() -> None:
    with pytest.raises(DataValueError, match="synthetic:c9"):
        build_datamodule(
            dataset_cfg({"c9": source_cfg("SyntheticCityReader", height=0, width=4, seed=0)}),
            shots(1.0),
            0,
        )


def test_reading_files_does_not_import_torch() -> None:
    """Readers and the JSON cache need numpy only; torch loads with the DataModule."""
    code = "import sys; from vlm4st.data import UniSTJsonReader, SeriesReader; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
