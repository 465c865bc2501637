"""Helpers for end-to-end runs of the entry point inside the test process (no subprocess start-up cost)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from vlm4st import REPO_ROOT
from vlm4st.config import compose
from vlm4st.training import checkpoint as ckpt
from vlm4st.training.run_metrics import RunMetrics, load_metrics

# Small, fast settings shared by the end-to-end tests: the tiny model on its 20-epoch schedule at lr 1e-3 (the tests
# cut it short with trainer.max_steps or fewer epochs), no progress bar, no figures (the tests of figures turn them
# on: drawing them costs a tiny run more than its training).
FAST = [
    "model=tiny",
    "trainer.epochs=20",
    "trainer.optimizer.lr=1e-3",
    "logger=none",
    "trainer.progress=false",
    "trainer.figures=false",
    "trainer.batch_size=32",
    "trainer.eval_batch_size=256",
    "trainer.num_threads=1",
]
# The default dataset's three synthetic cities on two weeks and small grids (6 x 10, 8 x 8, 6 x 6 cells): every
# split keeps a few hundred windows, the grids still differ in shape, and a step of the tiny model costs a fraction of
# one on the full-size cities.
SMALL_GRIDS = {"city_a": (6, 10), "city_b": (8, 8), "city_c": (6, 6)}
SHORT_CITIES = [
    override
    for city, (height, width) in SMALL_GRIDS.items()
    for override in (f"dataset.sources.{city}.days=14", f"dataset.sources.{city}.height={height}",
                     f"dataset.sources.{city}.width={width}")
]


def make_cfg(run_dir: Path, *overrides: str) -> DictConfig:
    """Compose the project config for a run in ``run_dir`` (its own source-model cache inside it)."""
    cities = [] if any(o.startswith("dataset=") for o in overrides) else SHORT_CITIES
    return compose([*FAST, *cities, f"transfer.cache_dir={run_dir}/source_models", *overrides],
                   output_dir=str(run_dir))


def read_metrics(run_dir: Path) -> RunMetrics:
    return load_metrics(run_dir)


def run_cli(*overrides: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m vlm4st.run <overrides>`` as a user types it (repository root, no ``HYDRA_FULL_ERROR``)."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, "-m", "vlm4st.run", *overrides], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *names: str) -> str:
    """The process ended as bad input does: exit 2, one ``error:`` line on stderr naming each of ``names``, no
    traceback. Returns the line."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def assert_same_training(one: Path, other: Path, steps: int, lr: float, weight_tol: float = 1e-5,
                         rmse_rel: float = 1e-3) -> None:
    """Two runs that must train alike (one process against DDP ranks, compiled against eager): the same weight
    keys, the bulk of the weights equal to ``weight_tol`` and none further apart than Adam's largest possible
    drift, and the same test RMSE over the same windows.

    Adam's first steps move every weight by about lr * sign(grad), so a weight whose gradient is ~0 can land on
    either side from float noise alone: the 99th percentile is held to float precision, the maximum to twice the
    distance ``steps`` such moves can cover.
    """
    a = ckpt.load_checkpoint(one / "checkpoints" / "last.pt")["model"]["weights"]
    b = ckpt.load_checkpoint(other / "checkpoints" / "last.pt")["model"]["weights"]
    assert a.keys() == b.keys()
    diffs = torch.cat([(a[k].float() - b[k].float().to(a[k].device)).abs().flatten() for k in a
                       if a[k].is_floating_point()])
    q99 = float(diffs.quantile(0.99))
    assert q99 < weight_tol, f"99th percentile of weight differences {q99}"
    assert float(diffs.max()) < 2 * lr * steps, f"largest weight difference {float(diffs.max())}"
    m1, m2 = read_metrics(one).test, read_metrics(other).test
    assert m1.keys() == m2.keys()
    for name in m1:
        assert m2[name].rmse == pytest.approx(m1[name].rmse, rel=rmse_rel), name
        assert m2[name].n == m1[name].n, f"{name}: both runs score every test window"
