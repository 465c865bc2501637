"""Helpers for end-to-end runs of the entry point inside the test process (no subprocess start-up cost)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vlm4st import REPO_ROOT
from vlm4st.config import compose

# Small, fast settings shared by the end-to-end tests: the bare defaults (no quickstart schedule), tiny model,
# short epochs, no progress bar.
FAST = [
    "~experiment",
    "model=tiny",
    "logger=none",
    "trainer.progress=false",
    "trainer.batch_size=32",
    "trainer.eval_batch_size=256",
    "trainer.num_threads=1",
]
# Two-week synthetic cities (the default dataset): every split keeps a few hundred windows, runs stay short.
SHORT_CITIES = [f"dataset.sources.{city}.days=14" for city in ("city_a", "city_b", "city_c")]


def make_cfg(run_dir: Path, *overrides: str) -> DictConfig:
    """Compose the project config for a run in ``run_dir`` (its own source-model cache inside it)."""
    cities = [] if any(o.startswith("dataset=") for o in overrides) else SHORT_CITIES
    return compose([*FAST, *cities, f"transfer.cache_dir={run_dir}/source_models", *overrides],
                   output_dir=str(run_dir))


def read_metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.json").read_text())


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
