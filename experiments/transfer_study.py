"""The real-data transfer study: pretrain once per target on the mixed-interval cities, transfer to each share,
run the controls, and write `experiments/results/transfer.md`.

    python experiments/transfer_study.py                      # every run, then the table
    python experiments/transfer_study.py --targets bikenyc    # one target
    python experiments/transfer_study.py --report-only        # the table from finished runs

Per target (TaxiNYC, BikeNYC; the sources are the other NYC city and the synthetic cities, one of them hourly):

1. ``pretrain``: the zero-shot run. Its source stage trains on every city but the target at the budget of
   ``experiment=transfer`` and its test is the zero-shot row; its ``checkpoints/source/best.pt`` is the pretrained
   model every few-shot run of the target starts from (``source_checkpoint``).
2. per share (5 %, 10 %) and seed (0, 1, 2): the model from the pretrained source, the same model from scratch
   (``transfer.init=scratch``) and STID from scratch, each with the target-stage schedule ``trainer.fewshot``.

Runs land in ``outputs/transfer_study/<run>/`` and are skipped when their ``metrics.json`` exists, so an interrupted
study resumes. Run nothing else beside it: the source budget is wall-clock training time.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "outputs" / "transfer_study"
RESULT = REPO / "experiments" / "results" / "transfer.md"
log = logging.getLogger("transfer_study")

TARGETS = ("taxinyc", "bikenyc")
SHARES = ("few5", "few10")
SEEDS = (0, 1, 2)
#: (run-name part, overrides) of the learned few-shot columns.
VARIANTS = (("source", []), ("scratch", ["transfer.init=scratch"]),
            ("stid", ["model=stid", "~model.window_norm", "transfer.init=scratch"]))


def command(name: str, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "vlm4st.run", "experiment=transfer", f"hydra.run.dir={OUT / name}",
            "transfer.source_cache=false", "trainer.progress=true", *overrides]


def plan(targets: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    """Every run in order: per target the pretraining (zero-shot) run first, then the few-shot runs."""
    runs = []
    for target in targets:
        pretrain = f"{target}_zero_s0"
        runs.append((pretrain, [f"dataset.target={target}", "shot_ratio=zero", "seed=0"]))
        source = OUT / pretrain / "checkpoints" / "source" / "best.pt"
        for share in SHARES:
            for seed in SEEDS:
                for variant, extra in VARIANTS:
                    overrides = [f"dataset.target={target}", f"shot_ratio={share}", f"seed={seed}", *extra]
                    if variant == "source":
                        overrides.append(f"source_checkpoint={source}")
                    runs.append((f"{target}_{share}_{variant}_s{seed}", overrides))
    return runs


def run_all(targets: tuple[str, ...]) -> None:
    for name, overrides in plan(targets):
        if (OUT / name / "metrics.json").is_file():
            log.info("%s: done already", name)
            continue
        cmd = command(name, overrides)
        log.info("%s: %s", name, " ".join(cmd[1:]))
        (OUT / name).mkdir(parents=True, exist_ok=True)
        with open(OUT / name / "study.log", "w") as out:
            proc = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            log.error("%s failed (exit %d); see %s", name, proc.returncode, OUT / name / "study.log")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not args.report_only:
        run_all(tuple(args.targets))
    table = [sys.executable, str(REPO / "experiments" / "transfer_table.py"), str(OUT), "--out", str(RESULT)]
    preamble = REPO / "experiments" / "results" / "transfer_notes.md"
    if preamble.is_file():
        table += ["--preamble", str(preamble)]
    subprocess.run(table, cwd=REPO, check=True)


if __name__ == "__main__":
    main()
