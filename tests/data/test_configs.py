"""The dataset and shot_ratio config groups compose with the project config and build data modules."""

from __future__ import annotations

import pytest
from omegaconf.errors import MissingMandatoryValue

from vlm4st.config import ConfigError, compose
from vlm4st.data import DataFileError, build_datamodule

from .builders import stored_windows, write_unist_json


def build(overrides: list[str], tmp_path):
    cfg = compose(overrides, output_dir=str(tmp_path))
    return build_datamodule(cfg.dataset, cfg.shot_ratio, cfg.seed, str(tmp_path / "cache"))


@pytest.mark.parametrize(("option", "ratio", "protocol"), [("full", 1.0, "full"), ("zero", 0.0, "zero"),
                                                          ("few5", 0.05, "few"), ("few10", 0.10, "few"),
                                                          ("few100", 1.0, "few")])
def test_shot_ratio_options(tmp_path, option, ratio, protocol) -> None:
    cfg = compose([f"shot_ratio={option}", "dataset.target=city_b"], output_dir=str(tmp_path))
    assert cfg.shot_ratio.name == option and cfg.shot_ratio.ratio == ratio and cfg.shot_ratio.protocol == protocol


def test_the_whole_target_split_as_a_transfer_share(tmp_path) -> None:
    """few100: a few-shot protocol whose share is every training window of the target (a source stage first)."""
    full = build(["shot_ratio=full"], tmp_path)
    whole = build(["shot_ratio=few100", "dataset.target=city_b"], tmp_path)
    assert whole.mode == "few" and whole.train_names() == ["city_a", "city_b", "city_c"]
    assert len(whole.by_name["city_b"].windows["train"]) == len(full.by_name["city_b"].windows["train"])
    assert whole.eval_names("test") == ["city_b"]


@pytest.mark.parametrize(("ratio", "protocol"), [(0.5, "full"), (0.0, "few"), (1.0, "zero"), (1.5, "few")])
def test_a_ratio_that_does_not_fit_its_protocol_is_refused(tmp_path, ratio, protocol) -> None:
    with pytest.raises(ConfigError, match=r"shot_ratio\.ratio="):
        build([f"shot_ratio.ratio={ratio}", f"shot_ratio.protocol={protocol}", "dataset.target=city_b"], tmp_path)


def test_default_dataset_needs_no_files(tmp_path) -> None:
    dm = build([], tmp_path)
    assert dm.mode == "full" and len(dm.names) == 3 and dm.target is None


def test_multi_few_shot_on_bikenyc(shared_data, tmp_path) -> None:
    dm = build(["dataset=multi", "shot_ratio=few5", "dataset.target=bikenyc"], tmp_path)
    assert dm.names == ["taxinyc", "bikenyc", "city_b", "city_c"]
    assert len(dm.by_name["bikenyc"].windows["train"]) == int(3442 * 0.05)
    assert dm.eval_names("test") == ["bikenyc"] and dm.by_name["bikenyc"].role == "target"


@pytest.mark.parametrize("name", ["taxinyc", "bikenyc"])
def test_nyc_configs_read_the_shared_series(shared_data, tmp_path, name) -> None:
    dm = build([f"dataset={name}"], tmp_path)
    ds = dm.by_name[name]
    assert ds.native_hw == (10, 20) and ds.n_channels == 2 and len(ds.windows["test"]) == 1148


def test_missing_nyc_file_names_path_and_key(tmp_path) -> None:
    with pytest.raises(DataFileError, match=r"set dataset\.sources\.taxinyc\.path") as info:
        build(["dataset=taxinyc", f"dataset.sources.taxinyc.path={tmp_path}/absent.series.npz"], tmp_path)
    assert "absent.series.npz" in str(info.value)


def test_unist_config_reads_a_json_and_caches_it(tmp_path) -> None:
    data_dir = tmp_path / "Dataset"
    data_dir.mkdir()
    write_unist_json(data_dir / "City_short.json", stored_windows(), fmt="datetime")
    overrides = [
        "dataset=unist",
        f"paths.data_dir={data_dir}",
        "dataset.sources.unist.path=City_short.json",
        "dataset.sources.unist.timestamp_format=datetime",
        "dataset.min_grid=2",
    ]
    dm = build(overrides, tmp_path)
    assert len(dm.by_name["unist"].windows["val"]) == 4
    assert len(list((tmp_path / "cache").glob("City_short.*.npz"))) == 3


def test_unist_config_demands_a_path(tmp_path) -> None:
    with pytest.raises(MissingMandatoryValue, match=r"sources\.unist\.path"):
        build(["dataset=unist", "dataset.sources.unist.timestamp_format=pairs"], tmp_path)


@pytest.mark.parametrize("name", ["synthetic", "taxinyc", "bikenyc", "multi", "mixed", "unist"])
def test_every_dataset_file_sets_the_integrity_keys(name) -> None:
    cfg = compose([f"dataset={name}"]).dataset
    assert cfg.allow_gaps is False
    assert cfg.zero_shot_calibration_steps >= cfg.t_in
    for node in cfg.sources.values():
        if node._target_ == "vlm4st.data.SeriesReader":
            assert node.timestamps_key == "timestamps" and node.generate_timestamps is None


def test_zero_shot_nyc_target_scores_after_its_calibration_day(shared_data, tmp_path) -> None:
    dm = build(["dataset=multi", "shot_ratio=zero", "dataset.target=bikenyc"], tmp_path)
    ds = dm.by_name["bikenyc"]
    assert ds.available["test"] == 1148 and len(ds.windows["test"]) == 1148 - 2 * (48 - 6)
    assert len(ds.scaler_frames) == 2 * 48 and set(ds.windows) == {"test"}
