"""The typed report of a run: ``metrics.json`` written from records and read back into the same records, bad files
refused naming the file and the key, earlier layouts still read; and the forecaster contract the trainer relies on."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from tests.experiments import fakes
from tests.runs import make_cfg
from vlm4st.config import ConfigError
from vlm4st.errors import CheckpointError, ReportError
from vlm4st.evaluation.baselines import BASELINES, BaselineResults
from vlm4st.models.forecaster import Forecaster, ParamReport
from vlm4st.models.stid import STID
from vlm4st.records import from_json, to_json
from vlm4st.training.run_metrics import ReusedStage, RunInfo, RunMetrics, load_metrics, write_metrics
from vlm4st.training.runtime import CHOICE_GROUPS
from vlm4st.training.state import TrainState
from vlm4st.training.tasks import build_model


def _report() -> RunMetrics:
    test = {"city_a": fakes.scores(4.0), "city_b": fakes.scores(6.0, steps=[5.0, 6.0, 7.0])}
    baselines = BaselineResults(skipped={"time_of_day_mean": {"city_b": "no training windows"}},
                                last_value={name: fakes.scores(9.0) for name in test},
                                time_of_day_mean={"city_a": fakes.scores(5.0)})
    stages = {"source": ReusedStage(reused="/runs/source/best.pt"),
              "target": dataclasses.replace(fakes.stage(val={"city_b": [7.0, 6.5, 6.0]}), cache="/cache/k",
                                            cache_hit=True)}
    return dataclasses.replace(fakes.report(test, seed=3, choices={"model": "cpu", "ablation": "no_dix"},
                                            baselines=baselines, shuffled=0.25),
                               stages=stages, best_val_loss=math.nan)


def test_a_report_reads_back_as_the_records_it_was_written_from(tmp_path: Path) -> None:
    written = _report()
    path = write_metrics(written, tmp_path)
    read = load_metrics(tmp_path)
    assert math.isnan(read.best_val_loss)
    assert dataclasses.replace(read, best_val_loss=0.0) == dataclasses.replace(written, best_val_loss=0.0)
    assert load_metrics(path).run == written.run  # the file itself, or the run directory
    data = json.loads(path.read_text())
    assert data["run"]["model"] == "cpu" and data["run"]["seed"] == 3  # the config choices sit beside the seed
    assert data["baselines"]["skipped"] == {"time_of_day_mean": {"city_b": "no training windows"}}
    assert isinstance(read.stages["source"], ReusedStage) and read.stages["target"].cache_hit is True
    assert read.step_ms() == pytest.approx(1e3 * 60.0 / 300)  # the trained stages only


def test_every_choice_group_has_a_field_in_the_run_record() -> None:
    fields = {f.name for f in dataclasses.fields(RunInfo)}
    assert set(CHOICE_GROUPS) <= fields


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["test"]["city_a"].pop("rmse"), r"metrics\.test\.city_a\.rmse is missing"),
    (lambda d: d["test"]["city_a"].update(rmse="4.0"), r"metrics\.test\.city_a\.rmse is '4\.0'; expected float"),
    (lambda d: d["run"].update(seed=True), r"metrics\.run\.seed is True; expected int"),
    (lambda d: d["baselines"].update(persistence={}), r"metrics\.baselines has unknown key\(s\) \['persistence'\]"),
    (lambda d: d["stages"]["target"]["history"][1]["val"].update(city_b=[1.0]),
     r"metrics\.stages\.target is .*; expected StageSummary \| ReusedStage"),
    (lambda d: d.update(test=[]), r"metrics\.test is list; expected an object"),
])
def test_a_damaged_report_names_the_file_and_the_key(tmp_path: Path, change, message: str) -> None:
    path = write_metrics(_report(), tmp_path)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ReportError, match=message) as err:
        load_metrics(path)
    assert str(path) in str(err.value)


def test_missing_and_unreadable_files_are_report_errors(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no such report file"):
        load_metrics(tmp_path)
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(ReportError, match="not JSON"):
        load_metrics(tmp_path)
    (tmp_path / "metrics.json").write_text("[1, 2]")
    with pytest.raises(ReportError, match="holds a list"):
        load_metrics(tmp_path)


def test_reports_of_earlier_versions_still_read(tmp_path: Path) -> None:
    data = to_json(_report())
    data["shuffle_test"] = {}  # a disabled shuffle test was written as an empty object
    target = data["stages"]["target"]
    target["reused"] = target.pop("cache_hit")  # a cached stage's flag was called "reused"
    (tmp_path / "metrics.json").write_text(json.dumps(data))
    read = load_metrics(tmp_path)
    assert read.shuffle_test is None and read.stages["target"].cache_hit is True


def test_baseline_scores_follow_the_baseline_classes() -> None:
    results = BaselineResults(last_value={"a": fakes.scores(1.0)})
    assert list(results.scores()) == list(BASELINES)
    assert {cls.name for cls in BASELINES} == {f.name for f in dataclasses.fields(BaselineResults)} - {"skipped"}
    assert results.scores()[BASELINES[1]] == {"a": fakes.scores(1.0)} and results.scores()[BASELINES[0]] == {}


def test_a_checkpoint_history_is_checked_like_a_report() -> None:
    state = TrainState(history=fakes.stage(val={"a": [3.0, 2.0, 1.0]}).history)
    stored = state.to_dict()
    assert json.loads(json.dumps(stored)) == stored  # plain values only
    assert TrainState.from_dict(stored, "last.pt") == state
    stored["history"][0]["val"]["a"] = {"rmse": 1.0}
    with pytest.raises(CheckpointError, match=r"checkpoint 'last\.pt': trainer_state\.history\[0\]\.val\.a\.mae"):
        TrainState.from_dict(stored, "last.pt")


def test_the_codec_refuses_what_it_cannot_write() -> None:
    with pytest.raises(TypeError, match="Tensor is not a record"):
        to_json({"x": torch.zeros(1)})
    assert from_json(list[int], [1, 2], "x.json") == [1, 2]
    with pytest.raises(ReportError, match=r"x\.json: list\[int\]\[1\] is 2\.5; expected int"):
        from_json(list[int], [1, 2.5], "x.json")


@pytest.mark.parametrize("preset", ["tiny", "stid"])
def test_both_forecasters_meet_the_contract(tmp_path: Path, preset: str) -> None:
    cfg = make_cfg(tmp_path, f"model={preset}")
    model = build_model(cfg.model, 3, int(cfg.dataset.t_in), int(cfg.dataset.t_out))
    assert isinstance(model, Forecaster)
    report = model.get_trainable_parameters()
    assert isinstance(report, ParamReport) and report.total == sum(c.total for c in report.modules.values())
    if isinstance(model, STID):
        assert report.vlm is None and report.adapter.type == "none" and report.frozen_encoders == {}
    else:
        assert report.vlm == "VLMModule" and set(report.frozen_encoders) == {"vision", "text"}


def test_build_model_refuses_a_target_that_is_not_a_forecaster() -> None:
    node = {"_target_": "vlm4st.models.loss.ForecastLoss", "mse_weight": 1.0, "mae_weight": 0.0}
    with pytest.raises(ConfigError, match="ForecastLoss is not a forecaster"):
        build_model(node, 1, 6, 6)
