"""Multiruns on a real one-node SLURM cluster through the submitit launcher (started by `.ci/slurm-up`).

Skipped with a reason when `sbatch` is absent or the cluster does not answer.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.launch.test_ddp import COMMON
from tests.runs import SHORT_CITIES, make_cfg, read_metrics
from vlm4st import REPO_ROOT
from vlm4st.training import checkpoint as ckpt

pytestmark = [pytest.mark.slurm, pytest.mark.integration]


def _cluster_ready() -> str | None:
    if shutil.which("sbatch") is None:
        return "sbatch is not on PATH (no SLURM here; .ci/slurm-up starts a one-node cluster)"
    try:
        state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20).stdout
    except (subprocess.SubprocessError, OSError) as err:
        return f"sinfo failed: {err}"
    if not any(s.strip().startswith(("idle", "mix", "alloc")) for s in state.splitlines()):
        return f"no usable SLURM node (sinfo says {state.strip()!r}); run .ci/slurm-up"
    return None


skip_reason = _cluster_ready()
if skip_reason:
    pytestmark = [*pytestmark, pytest.mark.skip(reason=skip_reason)]

JOB = [
    "model=tiny", "trainer.epochs=20", "trainer.optimizer.lr=1e-3", "logger=none", "trainer.progress=false",
    "trainer.num_threads=1",
    "trainer.batch_size=32",
    "trainer.figures=false", "trainer.schedule.warmup_epochs=0", *SHORT_CITIES,  # the cities make_cfg gives
    "hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=20",
    "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", "hydra.launcher.array_parallelism=2",
]


def _multirun(sweep: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "vlm4st.run", "-m", f"hydra.sweep.dir={sweep}",
            f"transfer.cache_dir={sweep}/source_models", *JOB, *overrides]


def _ablation_table():
    spec = importlib.util.spec_from_file_location("ablation_table", REPO_ROOT / "experiments" / "ablation_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["ablation_table"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(900)
def test_multirun_on_slurm_writes_metrics_and_builds_the_ablation_table(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    cmd = _multirun(sweep, "ablation=full,no_prompt", "trainer.epochs=1", "trainer.max_steps=8")
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=880)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in sweep.glob(".submitit/*")), "jobs went through submitit"
    for job in ("0", "1"):
        assert (sweep / job / "metrics.json").is_file(), f"job {job} wrote no metrics.json"
    paths = _ablation_table().make_table(sweep)
    table = paths["markdown"].read_text()
    assert "full / standard" in table and "no_prompt / standard" in table
    assert "Time-of-day mean" in table and "2 of 2 jobs finished" in table
    assert paths["csv"].is_file() and paths["chart"].is_file()


def _job_id(sweep: Path, index: int, timeout: float = 120.0) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for folder in sweep.glob(".submitit/*_*"):
            if folder.name.endswith(f"_{index}"):
                return folder.name
        time.sleep(0.5)
    raise TimeoutError(f"no submitit folder for job {index} under {sweep}")


def _wait_for_step(last: Path, step: int, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if last.is_file():
            state = ckpt.load_checkpoint(last)["trainer_state"]
            if state["step"] >= step:
                assert not state["finished"], "the job finished before it could be interrupted; make it longer"
                return
        time.sleep(0.3)
    raise TimeoutError(f"{last} did not reach step {step}")


def _release_requeued(job: str, timeout: float = 120.0) -> None:
    """SLURM holds a requeued batch job back for a couple of minutes (its begin time); start it now instead."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T %r"], capture_output=True, text=True).stdout
        if state.startswith("PENDING"):
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True, timeout=30)
            return
        time.sleep(0.5)


@pytest.mark.timeout(1200)
def test_requeued_job_resumes_and_matches_an_uninterrupted_job(tmp_path) -> None:
    """Job 0 gets submitit's timeout signal mid-training, writes last.pt, is requeued and resumes; job 1 (the same
    training: only its logging interval differs) runs uninterrupted. Both end with the same test metrics."""
    sweep = tmp_path / "sweep"
    cmd = _multirun(sweep, "trainer.log_every_steps=9,10", "trainer.epochs=3", "trainer.checkpoint_every_steps=5",
                    "hydra.launcher.max_num_timeout=2")
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        job = _job_id(sweep, 0)
        _wait_for_step(sweep / "0" / "checkpoints" / "last.pt", 5)
        subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
        _release_requeued(job)
        out, _ = proc.communicate(timeout=1100)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-4000:]
    logs = "\n".join(p.read_text(errors="replace") for p in sweep.glob(f".submitit/{job}/*"))
    assert "Requeued" in logs or "requeue" in logs.lower(), "job 0 was requeued by submitit"
    assert "resumed stage 'main'" in logs, "the requeued job resumed from last.pt"

    interrupted, clean = read_metrics(sweep / "0"), read_metrics(sweep / "1")
    assert interrupted.test == clean.test
    assert interrupted.stages["main"].steps == clean.stages["main"].steps


@pytest.mark.timeout(900)
def test_a_two_task_slurm_job_trains_with_ddp_like_one_process(tmp_path, run_entry) -> None:
    """``hydra.launcher.tasks_per_node=2``: SLURM starts two tasks, each finds its rank in the environment submitit
    exports and joins a gloo group; with half the batch per rank the job matches one process on the same global
    batch (the same config with GPUs is what a user sends to a GPU partition: one task per GPU, nccl)."""
    single = tmp_path / "single"
    run_entry(make_cfg(single, *COMMON, "trainer.batch_size=16"))

    sweep = tmp_path / "sweep"
    job = [o for o in JOB if not o.startswith("trainer.batch_size=")]
    cmd = [sys.executable, "-m", "vlm4st.run", "-m", f"hydra.sweep.dir={sweep}",
           f"transfer.cache_dir={sweep}/source_models", *job, *COMMON, "trainer.batch_size=8",
           "hydra.launcher.tasks_per_node=2", "hydra.launcher.cpus_per_task=1"]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=880)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    logs = "\n".join(p.read_text(errors="replace") for p in sweep.glob(".submitit/*/*"))
    assert "rank 0 of 2" in logs and "rank 1 of 2" in logs, "both SLURM tasks joined one process group"

    a = ckpt.load_checkpoint(single / "checkpoints" / "last.pt")["model"]["weights"]
    b = ckpt.load_checkpoint(sweep / "0" / "checkpoints" / "last.pt")["model"]["weights"]
    assert a.keys() == b.keys()
    diffs = torch.cat([(a[k].float() - b[k].float()).abs().flatten() for k in a if a[k].is_floating_point()])
    assert float(diffs.quantile(0.99)) < 1e-5, f"99th percentile of weight differences {float(diffs.quantile(0.99))}"
    ours, theirs = read_metrics(single).test, read_metrics(sweep / "0").test
    for city, m in ours.items():
        assert theirs[city].rmse == pytest.approx(m.rmse, rel=1e-3), city
