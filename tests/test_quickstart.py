"""The README's first command, ``python -m vlm4st.run``, as a newcomer runs it: output piped to a file (as
under SLURM or CI). It must finish with the summary table beside the baselines, beat them, write the three kinds
of figures, and report progress as log lines without a carriage-return bar."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from vlm4st import REPO_ROOT
from vlm4st.training.run_metrics import load_metrics


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails for anything that is not a PNG."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.mark.slow
def test_the_quickstart_command_finishes_with_the_summary_figures_and_piped_progress(tmp_path) -> None:
    run_dir = tmp_path / "quickstart"
    log_file = tmp_path / "output.txt"
    with log_file.open("w") as out:
        subprocess.run([sys.executable, "-m", "vlm4st.run", f"hydra.run.dir={run_dir}",
                        f"transfer.cache_dir={run_dir}/source_models"],
                       cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=900)
    text = log_file.read_text()
    assert "\r" not in text  # no redrawn bar in a pipe
    assert "main: " in text and " steps (" in text and "eta " in text  # periodic progress lines
    assert "beside the naive baselines" in text and "| dataset |" in text and "HA" in text
    assert "RMSE per horizon step" in text and "tensorboard --logdir" in text

    metrics = load_metrics(run_dir)
    for city, m in metrics.test.items():
        for baseline, per_city in metrics.baselines.scores().items():
            assert m.rmse < per_city[city].rmse, (city, baseline.name)

    figures = run_dir / "figures"
    assert png_size(figures / "curves.png") == (1400, 360)
    for city in metrics.test:
        assert png_size(figures / f"forecast_{city}.png") == (1100, 960)
        width, height = png_size(figures / f"gates_{city}.png")
        assert height == 300 and width >= 600
