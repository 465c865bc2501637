"""The NYC study report: per-run rows beside the baselines, mean ± std over seeds, the time-to-accuracy figure, and
'not run' for missing runs (no run is dropped silently)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from tests.experiments import fakes
from vlm4st import REPO_ROOT
from vlm4st.evaluation.baselines import BaselineResults
from vlm4st.training.run_metrics import RunMetrics

spec = importlib.util.spec_from_file_location("nyc_study", REPO_ROOT / "experiments" / "nyc_study.py")
nyc_study = importlib.util.module_from_spec(spec)
sys.modules["nyc_study"] = nyc_study  # dataclasses look their module up while the file executes
spec.loader.exec_module(nyc_study)


def fake_metrics(rmse: float, seed: int) -> RunMetrics:
    test = {"taxinyc": fakes.scores(rmse, steps=[rmse - 2 + i for i in range(4)])}  # steps 1..4: rmse - 2 .. rmse + 1
    main = fakes.stage(epochs=3, seconds=180.0, val={"taxinyc": [rmse + 5 - e for e in range(3)]})
    baselines = BaselineResults(time_of_day_mean={"taxinyc": fakes.scores(34.05, 10.83)})
    return fakes.report(test, seed=seed, baselines=baselines, stages={"main": main}, train_seconds=600.0)


def test_report_from_finished_and_missing_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for name, rmse, seed in (("taxi12_cpu_s0", 20.0, 0), ("taxi12_cpu_s1", 22.0, 1), ("taxi12_stid_s0", 21.0, 0)):
        fakes.write(runs / name, fake_metrics(rmse, seed))
    out = tmp_path / "results" / "nyc.md"
    out.parent.mkdir()
    nyc_study.report(runs, out, 10.0)
    text = out.read_text()
    assert "| cpu | 0, 1 | 21.00 ± 1.41 |" in text  # mean ± sample std over the finished seeds
    assert "| stid | 0 | 21.00 |" in text
    assert "| 19.00 / 20.00 / 22.00 |" in text  # cpu, steps 1 / 2 / 4 averaged over seeds 0 and 1
    assert "| taxi12_cpu_s2 | - | not run |" in text and "| bike6_stid_s0 | - | not run |" in text
    assert "34.05" in text  # the baseline beside the model
    png = out.parent / "nyc_time_to_accuracy.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "nyc_time_to_accuracy.png" in text


def test_every_peer_runs_with_the_same_data_and_budget() -> None:
    by_key: dict[tuple[str, int], list[nyc_study.Run]] = {}
    for run in nyc_study.RUNS:
        by_key.setdefault((run.group, run.seed), []).append(run)
    for (_, _), runs in by_key.items():
        assert {r.model for r in runs} == set(nyc_study.PEERS)
        data = {tuple(o for o in r.overrides if not o.startswith("model=")) for r in runs}
        assert len(data) == 1 and len({r.budget_min for r in runs}) == 1
    cmd = nyc_study.command(nyc_study.RUNS[0], Path("/tmp/x"), 10.0)
    assert "trainer.time_budget_min=10" in cmd and "experiment=nyc_study" in cmd


def test_report_carries_the_ablation_table_and_chart(tmp_path: Path) -> None:
    sweep = tmp_path / "runs" / "ablation_bike6"
    sweep.mkdir(parents=True)
    (sweep / "ablation_table.md").write_text("| ablation | bikenyc RMSE |\n|---|---|\n| no_dix | 3.9 |\n")
    (sweep / "ablation_table.png").write_bytes(b"\x89PNG\r\n\x1a\nchart")
    out = tmp_path / "results" / "nyc.md"
    out.parent.mkdir()
    nyc_study.report(tmp_path / "runs", out, 10.0)
    text = out.read_text()
    assert "| no_dix | 3.9 |" in text and "(nyc_ablation_bike6.png)" in text
    assert (out.parent / "nyc_ablation_bike6.png").read_bytes().endswith(b"chart")
    assert "seed=0,1 ablation=full" in text  # seed by seed: a sweep cut short holds whole seeds
