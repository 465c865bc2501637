"""DDP on CPU: two gloo ranks under torchrun train the tiny preset like one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.runs import FAST, SHORT_CITIES, assert_same_training, make_cfg
from vlm4st import REPO_ROOT
from vlm4st.training.distributed import DistInfo
from vlm4st.training.runtime import rank_device

# No dropout anywhere: ranks draw other random numbers than one process would.
COMMON = [
    "model=tiny", "model.dims.dropout=0.0", "logger=none", "trainer.progress=false", "trainer.epochs=1",
    "trainer.max_steps=6", "trainer.drop_last=true", "trainer.schedule.warmup_epochs=0", "trainer.num_threads=1",
    "trainer.eval_batch_size=64",
]


@pytest.mark.integration
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

    assert_same_training(single, ddp, steps=6, lr=1e-3)  # trainer/default.yaml's lr


def test_ranks_take_one_gpu_each_and_share_them_round_robin(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    third = DistInfo(rank=3, world_size=4, local_rank=3)
    assert rank_device(torch.device("cuda"), third) == torch.device("cuda", 1)  # 4 ranks on 2 GPUs
    assert rank_device(torch.device("cuda", 0), third) == torch.device("cuda", 0)  # an explicit GPU: every rank on it
    assert rank_device(torch.device("cpu"), third) == torch.device("cpu")
    assert rank_device(torch.device("cuda"), DistInfo()) == torch.device("cuda")  # one process: torch's choice
