"""DDP on CPU: two gloo ranks under torchrun train the tiny preset like one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.runs import FAST, SHORT_CITIES, make_cfg, read_metrics
from vlm4st import REPO_ROOT
from vlm4st.training import checkpoint as ckpt

# No dropout anywhere: ranks draw other random numbers than one process would.
COMMON = [
    "model=tiny", "model.dims.dropout=0.0", "logger=none", "trainer.progress=false", "trainer.epochs=1",
    "trainer.max_steps=6", "trainer.drop_last=true", "trainer.schedule.warmup_epochs=0", "trainer.num_threads=1",
    "trainer.eval_batch_size=64",
]


@pytest.mark.timeout(600)
def test_torchrun_two_ranks_matches_one_process_with_the_same_global_batch(tmp_path, run_entry) -> None:
    single = tmp_path / "single"
    run_entry(make_cfg(single, *COMMON, "trainer.batch_size=16"))

    ddp = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vlm4st.run",
           "trainer=ddp", *FAST, *SHORT_CITIES, *COMMON, "trainer.batch_size=8", f"hydra.run.dir={ddp}",
           f"transfer.cache_dir={ddp}/source_models"]
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=580)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    a = ckpt.load_checkpoint(single / "checkpoints" / "last.pt")["model"]["weights"]
    b = ckpt.load_checkpoint(ddp / "checkpoints" / "last.pt")["model"]["weights"]
    assert a.keys() == b.keys()
    diffs = torch.cat([(a[k].float() - b[k].float()).abs().flatten() for k in a if a[k].is_floating_point()])
    # Adam's first steps move every weight by about lr * sign(grad), so a weight whose gradient is ~0 can land on
    # either side from float noise alone; the bulk of the weights must agree to float precision.
    assert float(diffs.quantile(0.99)) < 1e-5, f"99th percentile of weight differences {float(diffs.quantile(0.99))}"
    assert float(diffs.max()) < 2 * 1e-3 * 6, f"largest weight difference {float(diffs.max())}"
    m1, m2 = read_metrics(single)["test"], read_metrics(ddp)["test"]
    for name in m1:
        assert m2[name]["rmse"] == pytest.approx(m1[name]["rmse"], rel=1e-3)
        assert m2[name]["n"] == m1[name]["n"], "metrics are gathered over all ranks"
    assert torch.isfinite(torch.tensor(m2["city_a"]["rmse"]))
