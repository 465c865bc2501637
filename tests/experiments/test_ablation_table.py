"""The ablation-table builder on a hand-made multirun directory with known metrics."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

from tests.experiments import fakes
from vlm4st import REPO_ROOT
from vlm4st.evaluation.baselines import BaselineResults


@pytest.fixture(scope="module")
def table():
    spec = importlib.util.spec_from_file_location("ablation_table", REPO_ROOT / "experiments" / "ablation_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["ablation_table"] = module
    spec.loader.exec_module(module)
    return module


def _job(sweep: Path, num: int, ablation: str, lora: str, seed: int, rmse: dict | None, trainable: int = 1000):
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    choices = {"ablation": ablation, "lora_type": lora, "model": "tiny", "dataset": "synthetic"}
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": seed}))
    if rmse is None:
        (job / "run.log").write_text("[INFO] start\nValueError: something broke in the job\n")
        return
    baselines = BaselineResults(last_value={name: fakes.scores(9.0, 4.0) for name in rmse},
                                time_of_day_mean={name: fakes.scores(5.0, 2.5) for name in rmse})
    fakes.write(job, fakes.report({name: fakes.scores(v, v / 2) for name, v in rmse.items()}, seed=seed,
                                  choices=choices, baselines=baselines, trainable=trainable, total=10 * trainable,
                                  stages={"main": fakes.stage(epochs=1, steps=100, seconds=10.0 + seed)}))


def test_table_from_a_hand_made_sweep(table, tmp_path) -> None:
    sweep = tmp_path / "sweep"
    _job(sweep, 0, "full", "standard", 0, {"a": 4.0, "b": 6.0})
    _job(sweep, 1, "full", "standard", 1, {"a": 6.0, "b": 8.0})
    _job(sweep, 2, "no_dix", "standard", 0, {"a": 3.0, "b": 9.0}, trainable=500)
    _job(sweep, 3, "no_dix", "standard", 1, None)  # failed job
    multirun = {"hydra": {"overrides": {"task": ["ablation=full,no_dix,no_prompt", "seed=0,1"]},
                          "sweeper": {"params": {}}}}
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(multirun))

    paths = table.make_table(sweep)
    md = paths["markdown"].read_text()
    lines = {ln.split(" | ")[0].strip("| "): ln for ln in md.splitlines() if ln.startswith("|")}
    full, no_dix = lines["full / standard"], lines["no_dix / standard"]
    assert "5.000 ± 1.414" in full  # a: mean of 4 and 6, sample std
    assert "**7.000 ± 1.414**" in full  # b: best mean RMSE in its column
    assert "**3.000 ± 0.000**" in no_dix  # a: best
    assert "| 2 | 1,000 / 10,000 | 105 | 10.5 |" in full  # seeds, params, ms per step, mean train time
    assert "9.000 ± 0.000" in lines["Last value"] and "5.000 ± 0.000" in lines["Time-of-day mean"]
    assert "3 of 6 jobs finished" in md
    assert "`3`" in md and "ValueError: something broke in the job" in md
    assert "Missing jobs: the sweep defines 6 jobs, 4 job folders exist." in md

    rows = list(csv.DictReader(paths["csv"].open()))
    full_a = next(r for r in rows if r["variant"] == "full / standard" and r["dataset"] == "a")
    assert float(full_a["rmse_mean"]) == pytest.approx(5.0)
    assert float(full_a["mae_mean"]) == pytest.approx(2.5)
    assert paths["chart"].read_bytes()[:4] == b"\x89PNG"


def test_rows_can_group_by_other_choices(table, tmp_path) -> None:
    sweep = tmp_path / "sweep"
    _job(sweep, 0, "full", "standard", 0, {"a": 4.0})
    _job(sweep, 1, "full", "moe", 0, {"a": 2.0})
    md = table.make_table(sweep, row_keys=("lora_type",), chart=False)["markdown"].read_text()
    assert "| lora_type |" in md and "| moe | **2.000 ± 0.000**" in md


def test_empty_directory_is_an_error(table, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no Hydra job folders"):
        table.make_table(tmp_path)
