"""The two paths a newcomer takes first, as they type them, in the default tier: a plain run piped to a file ends
with the summary beside the baselines and the figures, and a ``-m`` sweep over ablations ends in the ablation
table. Both are shortened by overrides only (a few steps on two-week cities), so they test the real commands."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from tests.runs import SHORT_CITIES
from vlm4st import REPO_ROOT
from vlm4st.training.run_metrics import load_metrics

#: A few optimiser steps of the default run on short cities, one thread.
FEW_STEPS = ["trainer.epochs=1", "trainer.max_steps=6", "trainer.schedule.warmup_epochs=0",
             "trainer.num_threads=1", "logger=none", *SHORT_CITIES]


def _cli(*args: str, log_path) -> str:
    with log_path.open("w") as out:
        subprocess.run([sys.executable, "-m", "vlm4st.run", *args], cwd=REPO_ROOT, stdout=out,
                       stderr=subprocess.STDOUT, check=True, timeout=600)
    return log_path.read_text()


def test_a_plain_run_ends_with_the_summary_beside_the_baselines(tmp_path) -> None:
    run_dir = tmp_path / "run"
    text = _cli(*FEW_STEPS, f"hydra.run.dir={run_dir}", f"transfer.cache_dir={run_dir}/sources",
                log_path=tmp_path / "output.txt")
    assert "\r" not in text  # a pipe gets log lines, not a redrawn bar
    assert "beside the naive baselines" in text and "| dataset | cpu RMSE / MAE | HA | Last | ToD-mean |" in text
    for city in ("city_a", "city_b", "city_c"):
        assert f"| {city} | " in text and f"{city} RMSE per horizon step 1..6:" in text
    assert f"metrics written to {run_dir}/metrics.json" in text
    metrics = load_metrics(run_dir)
    assert metrics.run.model == "cpu" and sum(s.steps for s in metrics.trained_stages()) == 6
    assert (run_dir / "figures" / "curves.png").is_file()


def test_a_sweep_over_ablations_ends_in_the_ablation_table(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    _cli("-m", "ablation=full,no_prompt", "model=tiny", "trainer.figures=false", *FEW_STEPS, f"hydra.sweep.dir={sweep}",
         f"transfer.cache_dir={sweep}/sources", log_path=tmp_path / "sweep.txt")
    jobs = sorted(p for p in sweep.iterdir() if (p / "metrics.json").is_file())
    assert [load_metrics(j).run.ablation for j in jobs] == ["full", "no_prompt"]

    spec = importlib.util.spec_from_file_location("ablation_table", REPO_ROOT / "experiments" / "ablation_table.py")
    table = importlib.util.module_from_spec(spec)
    sys.modules["ablation_table"] = table
    spec.loader.exec_module(table)
    paths = table.make_table(sweep, tmp_path / "table", chart=False)
    text = paths["markdown"].read_text()
    assert "| full / standard |" in text and "| no_prompt / standard |" in text
    assert "2 of 2 jobs finished." in text and "Failed jobs" not in text and "Missing jobs" not in text
