"""The per-module study: its plan (every row, seed by seed) and its report (verdicts against the seed spread, a
control that beats the full model named first, rows without runs left out)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from tests.experiments import fakes
from vlm4st import REPO_ROOT
from vlm4st.training.run_metrics import RunMetrics

sys.path.insert(0, str(REPO_ROOT / "experiments"))
spec = importlib.util.spec_from_file_location("module_study", REPO_ROOT / "experiments" / "module_study.py")
module_study = importlib.util.module_from_spec(spec)
sys.modules["module_study"] = module_study  # dataclasses look their module up while the file executes
spec.loader.exec_module(module_study)


def fake_metrics(rmse: float, shuffled: float = 0.1) -> RunMetrics:
    return fakes.report({"bikenyc": fakes.scores(rmse)}, trainable=10, total=20, shuffled=shuffled,
                        stages={"main": fakes.stage(epochs=30, steps=3000, seconds=300.0)})


def test_plan_runs_every_row_seed_by_seed() -> None:
    runs = module_study.plan()
    bike = [r for r in runs if r.setting.name == "bike6"]
    assert len(bike) == 9 * 3 and len([r for r in runs if r.setting.name == "taxi12"]) == 4 * 3
    assert [r.seed for r in bike[:9]] == [0] * 9  # every row of seed 0 before seed 1
    assert {r.row for r in bike} == {"full", "no_dix", "no_prompt", "no_seq", "no_visual", "no_vlm", "vlm2attn",
                                     "vlm2trsf", "dix_cells"}
    cmd = bike[0].command(Path("/runs"))
    assert "shuffle_test.enabled=true" in cmd and "trainer.time_budget_min=5" in cmd and "ablation=full" in cmd
    pair = [r.overrides() for r in runs if r.setting.name == "pretrained" and r.seed == 0]
    # each pretrained/random pair differs in the text weights alone
    assert set(pair[0]) ^ set(pair[1]) == {"model.vlm.text_weights=minilm", "model.vlm.text_weights=null"}


def test_report_names_a_control_that_beats_the_full_model_first(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    scores = {"full": (4.0, 4.2, 4.1), "no_vlm": (3.5, 3.6, 3.55), "no_dix": (4.05, 4.15, 4.3), "no_seq": (5.0, 5.1),
              "vlm2attn": (4.5,)}
    records = tmp_path / "records"
    for row, values in scores.items():
        for seed, rmse in enumerate(values):
            fakes.write(runs / f"bike6_{row}_s{seed}", fake_metrics(rmse))
            assert module_study.keep_record(runs, records, f"bike6_{row}_s{seed}")
    out = tmp_path / "modules.md"
    module_study.report(records, out)
    text = out.read_text()
    controls = text.index("## Controls against the full model")
    assert "The full model is beaten by the control `no_vlm` on bike6" in text[controls:text.index("## Setup")]
    assert "| no_vlm | 0, 1, 2 | 3.55 ± 0.05 |" in text and "shown better" in text
    assert "- **no_dix** (bike6): what DiX-Attention (and the gated fusion it feeds) adds is not shown" in text
    assert "- **no_seq** (bike6): the sequence path (format resampler + BERT) helps" in text
    assert "- **vlm2attn** (bike6): one seed so far (4.50 against full's 4.10)" in text
    assert "| +10.0 % | 100 | 30 | 10 / 20 |" in text  # shuffle degradation, step ms, epochs, params
    assert "no_prompt" not in text.split("## BikeNYC")[1].split("Verdicts")[0].split("\n| row")[1]  # no run, no row
    assert "(not run yet)" in text  # the taxi12 setting has no run


def test_study_resumes_from_committed_records_and_records_what_it_runs(tmp_path: Path, monkeypatch) -> None:
    """A run with a record is skipped even when its working directory is gone (a fresh checkout); a finished working
    directory without a record is adopted; a run that ends without metrics.json leaves no record."""
    runs, records = tmp_path / "runs", tmp_path / "records"
    plan = [r for r in module_study.plan() if r.setting.name == "bike6" and r.seed == 0][:4]
    recorded, adopted, trained, failed = plan
    fakes.write(tmp_path / "elsewhere", fake_metrics(4.0))
    records.mkdir()
    (records / f"{recorded.name}.json").write_bytes((tmp_path / "elsewhere" / "metrics.json").read_bytes())
    fakes.write(runs / adopted.name, fake_metrics(4.1))
    started = []

    def fake_stream(cmd: list[str], log_path: Path, prefix: str) -> int:
        started.append(prefix)
        if prefix == trained.name:
            fakes.write(runs / prefix, fake_metrics(4.2))
        return 0

    monkeypatch.setattr(module_study, "stream", fake_stream)
    module_study.run_all(plan, runs, records)
    assert started == [trained.name, failed.name]
    assert sorted(p.stem for p in records.iterdir()) == sorted([recorded.name, adopted.name, trained.name])
    assert module_study.load_metrics(records / f"{trained.name}.json").test["bikenyc"].rmse == 4.2
