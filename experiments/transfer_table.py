"""Turn transfer runs into the transfer table: per target and share, the pretrained model beside its controls.

    python experiments/transfer_table.py outputs/transfer --out experiments/results/transfer.md

Every folder below the given ones that holds a ``metrics.json`` written by ``python -m vlm4st.run`` is one run. Rows
are target x share (zero-shot, 5 %, 10 %, ...); columns are the VLM4ST model trained from the multi-city source
(``transfer.init=source``), the same model trained on the share alone (``transfer.init=scratch``), STID trained on
the share (``model=stid transfer.init=scratch``), and the naive forecasts on the same test points: the time-of-day
mean fitted on the share, the historical average of the input window and the last frame. Cells are test RMSE / MAE
on the real scale, mean +- std over seeds (n = number of seeds). A cell with no run reads "-", never a guess.
"""

from __future__ import annotations

import argparse
import logging
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from vlm4st.evaluation.baselines import HistoricalAverage, LastValue, TimeOfDayMean
from vlm4st.evaluation.metrics import DatasetMetrics
from vlm4st.training.run_metrics import METRICS_FILE, load_metrics

log = logging.getLogger("transfer_table")

#: Learned columns: (label, model is STID, transfer.init).
LEARNED = (("from source", False, "source"), ("from scratch", False, "scratch"), ("STID on the share", True, "scratch"))
#: The naive baselines in column order (the strongest first).
NAIVE = (TimeOfDayMean, HistoricalAverage, LastValue)
SHARES = {"zero": "zero-shot", "few5": "5 %", "few10": "10 %", "full": "100 %"}


@dataclass(frozen=True)
class Run:
    """One finished run: where it lives, what it was, and its test and baseline scores on its target."""

    path: Path
    target: str
    share: str
    stid: bool
    init: str
    seed: int
    model: str
    score: tuple[float, float] | None  # (rmse, mae) of the model on the target
    naive: dict[str, tuple[float, float]]  # baseline key -> (rmse, mae) on the target
    train_seconds: float


def _pair(block: dict[str, DatasetMetrics], target: str) -> tuple[float, float] | None:
    if target not in block:
        return None
    return block[target].rmse, block[target].mae


def read_run(path: Path) -> Run | None:
    """The run whose ``metrics.json`` is ``path``; None (with a log line) for runs that are not transfer runs."""
    metrics = load_metrics(path)
    run = metrics.run
    target = run.target
    if target is None or run.task != "train":
        log.info("skipped %s: not a transfer training run (no dataset.target)", path.parent)
        return None
    share = run.shot_ratio or run.mode
    scores = metrics.baselines.scores()
    naive = {cls.name: pair for cls in NAIVE if (pair := _pair(scores[cls], target)) is not None}
    model = run.model or "?"
    return Run(path.parent, target, share, model == "stid", run.init or "source", run.seed, model,
               _pair(metrics.test, target), naive, metrics.train_seconds or 0.0)


def collect(roots: list[Path]) -> list[Run]:
    runs = []
    for root in roots:
        for path in sorted(root.rglob(METRICS_FILE)):
            run = read_run(path)
            if run is not None:
                runs.append(run)
    return runs


def _cell(values: list[tuple[float, float]]) -> str:
    if not values:
        return "-"
    rmse, mae = [v[0] for v in values], [v[1] for v in values]
    if len(values) == 1:
        return f"{rmse[0]:.2f} / {mae[0]:.2f} (n=1)"
    return (f"{statistics.mean(rmse):.2f} ± {statistics.stdev(rmse):.2f} / "
            f"{statistics.mean(mae):.2f} ± {statistics.stdev(mae):.2f} (n={len(values)})")


def _share_order(share: str) -> int:
    return list(SHARES).index(share) if share in SHARES else len(SHARES)


def table(runs: list[Run]) -> str:
    """The Markdown table, rows target x share."""
    rows: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        rows[(run.target, run.share)].append(run)
    head = ["target", "share", *(label for label, _, _ in LEARNED), *(cls.short for cls in NAIVE)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for target, share in sorted(rows, key=lambda k: (k[0], _share_order(k[1]))):
        group = rows[(target, share)]
        cells = []
        for _, stid, init in LEARNED:
            scores = [r.score for r in group if r.stid == stid and r.init == init and r.score is not None]
            cells.append(_cell(scores))
        for cls in NAIVE:  # deterministic given the data: one value per share (the first run that has it)
            values = [r.naive[cls.name] for r in group if cls.name in r.naive]
            cells.append(f"{values[0][0]:.2f} / {values[0][1]:.2f}" if values else "-")
        lines.append(f"| {target} | {SHARES.get(share, share)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def runs_table(runs: list[Run]) -> str:
    """Every run with its setting, seed, score and training time (the evidence behind each cell)."""
    lines = ["| run | target | share | model | init | seed | RMSE / MAE | train s |", "|" + "---|" * 8]
    for r in sorted(runs, key=lambda r: (r.target, _share_order(r.share), r.model, r.init, r.seed)):
        score = f"{r.score[0]:.2f} / {r.score[1]:.2f}" if r.score else "-"
        lines.append(f"| {r.path.name} | {r.target} | {SHARES.get(r.share, r.share)} | {r.model} | {r.init} | "
                     f"{r.seed} | {score} | {r.train_seconds:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="+", type=Path, help="folders holding the runs (searched recursively)")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown here (default: print it)")
    parser.add_argument("--preamble", type=Path, default=None, help="Markdown placed above the tables")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    runs = collect(args.roots)
    if not runs:
        raise SystemExit(f"no transfer runs (metrics.json with a dataset.target) under {[str(r) for r in args.roots]}")
    parts = []
    if args.preamble is not None:
        parts.append(args.preamble.read_text().rstrip())
    parts += ["## Test RMSE / MAE (real scale), mean ± std over seeds", table(runs), "## Runs", runs_table(runs)]
    text = "\n\n".join(parts) + "\n"
    if args.out is None:
        print(text)  # the script's output
    else:
        args.out.write_text(text)
        log.info("wrote %s (%d runs)", args.out, len(runs))


if __name__ == "__main__":
    main()
