"""Turn a Hydra multirun directory into the ablation table (Markdown + CSV) and a bar chart (PNG).

    python experiments/ablation_table.py outputs/multirun/2026-11-25/10-00-00
    python experiments/ablation_table.py <sweep dir> --rows ablation lora_type --out <dir>

Each job folder holds ``.hydra/config.yaml`` and the ``metrics.json`` written by ``python -m vlm4st.run``. Rows are
the variants (by default ``ablation / lora_type``), columns the test datasets, cells real-scale RMSE and MAE as
mean +- std over seeds (best mean per column in bold), followed by the baselines, each variant's trainable and total
parameters, its training time per optimiser step and its training time. Jobs that failed (no ``metrics.json``) or
never ran (fewer job folders than the sweep defines in ``multirun.yaml``) are listed under the table, never dropped
silently.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vlm4st.records import to_json
from vlm4st.training.run_metrics import METRICS_FILE, RunMetrics, load_metrics

log = logging.getLogger("ablation_table")

@dataclass
class Job:
    """One multirun job: its folder, its choices and seed, and its metrics (None if it failed)."""

    path: Path
    choices: dict[str, str]
    seed: int | None
    metrics: RunMetrics | None
    error: str | None = None


@dataclass
class Row:
    """One table row: a variant (or a baseline) with its per-dataset RMSE/MAE samples over seeds."""

    label: str
    rmse: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    mae: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    trainable: list[int] = field(default_factory=list)
    total: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    step_ms: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    baseline: bool = False


def _last_error(job_dir: Path) -> str:
    """The last error-looking line of the job's logs (Hydra's log file, submitit's stderr)."""
    candidates = sorted(job_dir.glob("*.log")) + sorted(job_dir.parent.glob(".submitit/*/*_log.err"))
    for path in candidates:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        errors = [ln for ln in lines if "Error" in ln or "error" in ln or "Traceback" in ln]
        if errors:
            return errors[-1][:300]
    return "no metrics.json (the job failed or is still running)"


def _choices(job_dir: Path, metrics: RunMetrics | None) -> dict[str, str]:
    """Group choices from the job's ``.hydra/hydra.yaml`` (falls back to metrics.json's ``run`` section)."""
    hydra_file = job_dir / ".hydra" / "hydra.yaml"
    if hydra_file.is_file():
        hydra_cfg = yaml.safe_load(hydra_file.read_text()) or {}
        choices = ((hydra_cfg.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
        found = {k: str(v) for k, v in choices.items() if "/" not in k and v is not None}
        if found:
            return found
    if metrics is None:
        return {}
    return {k: v for k, v in to_json(metrics.run).items() if isinstance(v, str)}


def _seed(job_dir: Path, metrics: RunMetrics | None) -> int | None:
    if metrics is not None:
        return metrics.run.seed
    cfg_file = job_dir / ".hydra" / "config.yaml"
    if cfg_file.is_file():
        seed = (yaml.safe_load(cfg_file.read_text()) or {}).get("seed")
        return None if seed is None else int(seed)
    return None


def collect_jobs(sweep_dir: Path) -> list[Job]:
    """Every job folder under ``sweep_dir`` (folders holding ``.hydra/``), failed ones included."""
    jobs = []
    for hydra_dir in sorted(sweep_dir.rglob(".hydra")):
        job_dir = hydra_dir.parent
        metrics = load_metrics(job_dir) if (job_dir / METRICS_FILE).is_file() else None
        error = None if metrics is not None else _last_error(job_dir)
        jobs.append(Job(job_dir, _choices(job_dir, metrics), _seed(job_dir, metrics), metrics, error))
    return jobs


def expected_job_count(sweep_dir: Path) -> int | None:
    """How many jobs the sweep defines (``multirun.yaml``: command-line sweeps and ``hydra.sweeper.params``)."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = yaml.safe_load(path.read_text()) or {}
    hydra_cfg = cfg.get("hydra") or {}
    task = list((hydra_cfg.get("overrides") or {}).get("task") or [])
    params = (hydra_cfg.get("sweeper") or {}).get("params") or {}
    by_key = {f"{k}={v}".split("=", 1)[0]: f"{k}={v}" for k, v in params.items()}
    by_key.update({o.split("=", 1)[0]: o for o in task})
    count = 1
    for override in OverridesParser.create().parse_overrides(list(by_key.values())):
        if override.is_sweep_override():
            count *= len(list(override.sweep_string_iterator()))
    return count


def build_rows(jobs: list[Job], row_keys: tuple[str, ...]) -> tuple[list[Row], list[str]]:
    """Variant rows (in first-seen order) plus baseline rows, and the dataset columns."""
    rows: dict[str, Row] = {}
    baselines: dict[str, Row] = {}
    datasets: list[str] = []
    for job in jobs:
        if job.metrics is None:
            continue
        label = " / ".join(job.choices.get(k, "?") for k in row_keys)
        row = rows.setdefault(label, Row(label))
        m = job.metrics
        for name, test in m.test.items():
            if name not in datasets:
                datasets.append(name)
            row.rmse[name].append(test.rmse)
            row.mae[name].append(test.mae)
        if m.params is not None:
            row.trainable.append(m.params.trainable)
            row.total.append(m.params.total)
        row.seconds.append(m.train_seconds or 0.0)
        step_ms = m.step_ms()  # training seconds per optimiser step over the run's stages
        if step_ms is not None:
            row.step_ms.append(step_ms)
        if job.seed is not None:
            row.seeds.append(job.seed)
        for cls, per_dataset in m.baselines.scores().items():
            if not per_dataset:  # not scored in this job
                continue
            base = baselines.setdefault(cls.name, Row(cls.label, baseline=True))
            for name, score in per_dataset.items():
                if not base.rmse[name]:  # deterministic: one value per dataset is enough
                    base.rmse[name].append(score.rmse)
                    base.mae[name].append(score.mae)
    return [*rows.values(), *baselines.values()], datasets


def _stats(values: list[float]) -> tuple[float, float] | None:
    if not values:
        return None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _cell(values: list[float], bold: bool) -> str:
    stats = _stats(values)
    if stats is None:
        return "-"
    text = f"{stats[0]:.3f} ± {stats[1]:.3f}"
    return f"**{text}**" if bold else text


def render(rows: list[Row], datasets: list[str], jobs: list[Job], expected: int | None,
           row_keys: tuple[str, ...]) -> str:
    """The Markdown report: table, notes on failed / missing jobs."""
    best = {}
    for name in datasets:
        means = [(s[0], r.label) for r in rows if not r.baseline and (s := _stats(r.rmse[name]))]
        best[name] = min(means)[1] if means else None
    head = [" / ".join(row_keys)] + [f"{d} RMSE" for d in datasets] + [f"{d} MAE" for d in datasets]
    head += ["seeds", "trainable / total params", "step (ms)", "train time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.label]
        cells += [_cell(r.rmse[d], best[d] == r.label) for d in datasets]
        cells += [_cell(r.mae[d], best[d] == r.label) for d in datasets]
        if r.baseline:
            cells += ["-", "0", "-", "-"]
        else:
            t, step = _stats(r.seconds), _stats(r.step_ms)
            cells += [str(len(r.seeds) or len(r.trainable)),
                      (f"{int(statistics.median(r.trainable)):,} / {int(statistics.median(r.total)):,}"
                       if r.trainable else "-"),
                      f"{step[0]:.0f}" if step else "-", f"{t[0]:.1f}" if t else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [j for j in jobs if j.metrics is None]
    total = expected if expected is not None else len(jobs)
    notes = ["", "Real-scale test metrics, mean ± std over seeds; best variant per dataset (lowest mean RMSE) in "
             f"bold. {len(jobs) - len(failed)} of {total} jobs finished."]
    if failed:
        notes += ["", "Failed jobs:"] + [f"- `{j.path.name}` ({', '.join(f'{k}={v}' for k, v in j.choices.items())}): "
                                         f"{j.error}" for j in failed]
    if expected is not None and expected > len(jobs):
        notes += ["", f"Missing jobs: the sweep defines {expected} jobs, {len(jobs)} job folders exist."]
    return "\n".join(lines + notes) + "\n"


def write_csv(path: Path, rows: list[Row], datasets: list[str]) -> None:
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["variant", "baseline", "dataset", "rmse_mean", "rmse_std", "mae_mean", "mae_std", "seeds",
                      "trainable_params", "total_params", "step_ms", "train_seconds"])
        for r in rows:
            for d in datasets:
                rs, ms = _stats(r.rmse[d]), _stats(r.mae[d])
                if rs is None or ms is None:
                    continue
                out.writerow([r.label, r.baseline, d, rs[0], rs[1], ms[0], ms[1], len(r.rmse[d]),
                              statistics.median(r.trainable) if r.trainable else 0,
                              statistics.median(r.total) if r.total else 0,
                              statistics.fmean(r.step_ms) if r.step_ms else 0.0,
                              statistics.fmean(r.seconds) if r.seconds else 0.0])


def bar_chart(path: Path, rows: list[Row], datasets: list[str]) -> None:
    """Grouped bars of mean RMSE (error bars = std over seeds), one group per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(datasets) + 0.3 * len(rows)), 4.0))
    for i, r in enumerate(rows):
        stats = [_stats(r.rmse[d]) or (math.nan, 0.0) for d in datasets]
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(datasets))]
        ax.bar(xs, [s[0] for s in stats], width, yerr=[s[1] for s in stats], label=r.label,
               hatch="//" if r.baseline else None, alpha=0.6 if r.baseline else 1.0, capsize=2)
    ax.set_xticks(range(len(datasets)), datasets)
    ax.set_ylabel("test RMSE (real scale)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def make_table(sweep_dir: Path, out_dir: Path | None = None, row_keys: tuple[str, ...] = ("ablation", "lora_type"),
               chart: bool = True) -> dict[str, Path]:
    """Build ``ablation_table.md``, ``ablation_table.csv`` and ``ablation_table.png`` for ``sweep_dir``."""
    sweep_dir = Path(sweep_dir)
    out_dir = Path(out_dir) if out_dir else sweep_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = collect_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"no Hydra job folders (with .hydra/) under '{sweep_dir}'")
    rows, datasets = build_rows(jobs, row_keys)
    paths = {"markdown": out_dir / "ablation_table.md", "csv": out_dir / "ablation_table.csv"}
    paths["markdown"].write_text(render(rows, datasets, jobs, expected_job_count(sweep_dir), row_keys))
    write_csv(paths["csv"], rows, datasets)
    if chart and datasets:
        paths["chart"] = out_dir / "ablation_table.png"
        bar_chart(paths["chart"], rows, datasets)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="a Hydra multirun directory")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the sweep dir)")
    parser.add_argument("--rows", nargs="+", default=["ablation", "lora_type"], help="choice groups forming a row")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG bar chart")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = make_table(args.sweep_dir, args.out, tuple(args.rows), chart=not args.no_chart)
    print(paths["markdown"].read_text())  # the script's output
    for kind, path in paths.items():
        log.info("%s: %s", kind, path)


if __name__ == "__main__":
    main()
