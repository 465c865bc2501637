"""Assemble ``experiments/results/gpu.md`` from what ``experiments/gpu_check.sh`` wrote to its output folder.

    python experiments/gpu_report.py outputs/gpu_check experiments/results/gpu.md

The targets it checks: paper-size (``vlm4st``) training in bf16 at >= 40 % of the bf16 matmul peak measured in
the same run, inference at >= 50 %.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vlm4st.training.run_metrics import METRICS_FILE, load_metrics

TARGETS = {"train": 0.40, "infer": 0.50}


def _tail(path: Path, lines: int = 1) -> str:
    if not path.is_file():
        return f"(missing: {path.name})"
    text = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return "\n".join(text[-lines:]) if text else "(empty)"


def _num(value: float | None, spec: str, scale: float = 1.0) -> str:
    """A number for the table, or "-" where the benchmark measured none (a CPU run has no device memory)."""
    return "-" if value is None else format(scale * value, spec)


def bench_section(out: Path, precision: str) -> list[str]:
    path = out / f"bench_{precision}.json"
    if not path.is_file():
        return [f"### Benchmark, {precision}", "", f"No results: {_tail(out / f'bench_{precision}.txt', 5)}", ""]
    result = json.loads(path.read_text())
    machine = result["machine"]
    lines = [f"### Benchmark, {precision}", "",
             f"{machine['device_name']}: {machine['peak_dtype']} matmul peak {machine['peak_gflops'] / 1e3:.1f} "
             "TFLOP/s (measured in this run).", "",
             "| preset | batch | fwd GFLOP/sample | train GFLOP/sample | train samples/s | train % peak | "
             "infer samples/s | infer % peak | device GiB train / infer |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["presets"]:
        for batch, run in row["runs"].items():
            tr, inf = run["train"], run["infer"]
            lines.append(f"| {row['preset']} | {batch} | {_num(row['forward_gflop'], '.1f')} | "
                         f"{_num(row['train_gflop'], '.1f')} | {_num(tr['samples_per_s'], '.1f')} | "
                         f"{_num(tr['share_of_peak'], '.0f', 100)} % | {_num(inf['samples_per_s'], '.1f')} | "
                         f"{_num(inf['share_of_peak'], '.0f', 100)} % | "
                         f"{_num(tr['peak_device_gib'], '.2f')} / {_num(inf['peak_device_gib'], '.2f')} |")
    return [*lines, ""]


def targets(out: Path) -> list[str]:
    path = out / "bench_bf16.json"
    if not path.is_file():
        return ["Targets: not measured (no bf16 benchmark)."]
    result = json.loads(path.read_text())
    rows = [r for r in result["presets"] if r["preset"] == "vlm4st"]
    if not rows:
        return ["Targets: not measured (no vlm4st preset in the bf16 benchmark)."]
    lines = []
    for mode, goal in TARGETS.items():
        best = max(run[mode]["share_of_peak"] for run in rows[0]["runs"].values())
        verdict = "met" if best >= goal else "not met"
        lines.append(f"- vlm4st {mode} in bf16: best {100 * best:.0f} % of the bf16 peak (target "
                     f"{100 * goal:.0f} %): {verdict}.")
    return lines


def training_section(out: Path) -> list[str]:
    run_dir = out / "taxi6_small"
    if not (run_dir / METRICS_FILE).is_file():
        return ["### TaxiNYC 6 -> 6, small preset, timed run", "", _tail(out / "taxi6_small.txt", 5), ""]
    m = load_metrics(run_dir)
    test = m.test["taxinyc"]
    (stage,) = m.trained_stages()
    base = {cls.short: scores["taxinyc"].rmse for cls, scores in m.baselines.scores().items() if "taxinyc" in scores}
    return ["### TaxiNYC 6 -> 6, small preset, timed run", "",
            f"Test RMSE / MAE {test.rmse:.2f} / {test.mae:.2f} after {stage.epochs} epochs "
            f"({stage.steps} steps, {stage.train_seconds / 60:.1f} training minutes); baselines RMSE: "
            + ", ".join(f"{k} {v:.2f}" for k, v in base.items()) + ".", ""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="the folder gpu_check.sh wrote")
    p.add_argument("report", type=Path, help="the Markdown file to write")
    args = p.parse_args()
    lines = ["# GPU check", "", "Written by `experiments/gpu_check.sh` (see its header for what each step runs).", "",
             "```", _tail(args.out / "nvidia_smi.csv", 3), "```", "",
             "## gpu-marked tests", "", "```", _tail(args.out / "gpu_tests.txt", 14), "```", "",
             "### torch.compile", "", "```", _tail(args.out / "compile_test.txt", 6), "```", "",
             "## Speed", "", *bench_section(args.out, "fp32"), *bench_section(args.out, "bf16"), *targets(args.out),
             "", "## Training", "", *training_section(args.out)]
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
