"""The GPU path on a real CUDA device: every task in fp32 and bf16, kill-and-resume, ``torch.compile``, DDP on
NCCL, a training step without a host synchronisation, and agreement with the CPU. Skipped without CUDA (see
``tests/conftest.py``); ``experiments/gpu_check.sh`` runs them on a GPU machine."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.runs import FAST, SHORT_CITIES, assert_same_training, make_cfg, read_metrics
from vlm4st import REPO_ROOT
from vlm4st.training import checkpoint as ckpt
from vlm4st.training import tasks
from vlm4st.training.distributed import DistInfo
from vlm4st.training.evaluate import evaluate
from vlm4st.training.loss_window import LossWindow
from vlm4st.training.runtime import Runtime
from vlm4st.training.settings import TrainerSettings, TransferSettings
from vlm4st.training.stages import plan_stages
from vlm4st.training.trainer import RunInterrupted, Trainer

pytestmark = pytest.mark.gpu

CUDA = ["trainer.device=cuda", "trainer.epochs=1", "trainer.max_steps=12", "trainer.schedule.warmup_epochs=0"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_train_test_and_predict_on_cuda(tmp_path, run_entry, precision: str) -> None:
    train_dir = tmp_path / "train"
    run_entry(make_cfg(train_dir, *CUDA, f"trainer.precision={precision}"))
    metrics = read_metrics(train_dir)
    assert all(np.isfinite(m.rmse) for m in metrics.test.values())
    best = train_dir / "checkpoints" / "best.pt"
    test_dir = tmp_path / "test"
    run_entry(make_cfg(test_dir, "task=test", f"checkpoint={best}", "trainer.device=cuda",
                       f"trainer.precision={precision}"))
    for city, m in read_metrics(test_dir).test.items():
        assert m.rmse == pytest.approx(metrics.test[city].rmse, rel=1e-3)
    frames = np.random.default_rng(0).poisson(20.0, size=(12, 10, 20)).astype(np.float32)
    source = tmp_path / "frames.npy"
    np.save(source, frames)
    pred_dir = tmp_path / "predict"
    run_entry(make_cfg(pred_dir, "task=predict", f"checkpoint={best}", f"predict_input={source}",
                       "predict_dataset=city_a", "trainer.device=cuda"))
    with np.load(pred_dir / "forecast.npz") as z:
        assert np.isfinite(z["forecast"]).all()


def test_kill_and_resume_on_cuda_matches_an_uninterrupted_run(tmp_path, run_entry) -> None:
    args = [*CUDA, "trainer.max_steps=20", "trainer.checkpoint_every_steps=5", "model.dims.dropout=0.0"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    run_entry(make_cfg(whole, *args))
    with pytest.raises(RunInterrupted):
        run_entry(make_cfg(broken, *args, "trainer.interrupt_after_steps=7"))
    run_entry(make_cfg(broken, *args, "resume=true"))
    a = ckpt.load_checkpoint(whole / "checkpoints" / "last.pt")["model"]["weights"]
    b = ckpt.load_checkpoint(broken / "checkpoints" / "last.pt")["model"]["weights"]
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)


#: Runs compared weight by weight: fp32, no dropout, a fixed number of steps.
ALIKE = [*CUDA, "trainer.precision=fp32", "model.dims.dropout=0.0", "trainer.drop_last=true"]


def test_torch_compile_trains_like_eager_on_cuda(tmp_path, run_entry) -> None:
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    run_entry(make_cfg(eager, *ALIKE))
    run_entry(make_cfg(compiled, *ALIKE, "trainer.compile=true"))
    # fused kernels reorder float sums: the weights agree to fp32 noise, not bit for bit
    assert_same_training(eager, compiled, steps=12, lr=1e-3, weight_tol=1e-4, rmse_rel=1e-2)


def _torchrun(run_dir, ranks: int, *overrides: str) -> str:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", "-m",
           "vlm4st.run", "trainer=ddp", *FAST, *SHORT_CITIES, *overrides, f"hydra.run.dir={run_dir}",
           f"transfer.cache_dir={run_dir}/source_models"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def test_ddp_on_nccl_with_one_rank_per_gpu_matches_one_process(tmp_path, run_entry) -> None:
    gpus = torch.cuda.device_count()
    if gpus < 2:
        pytest.skip(f"DDP on NCCL needs two GPUs; this machine has {gpus}")
    single = tmp_path / "single"
    run_entry(make_cfg(single, *ALIKE, f"trainer.batch_size={8 * gpus}"))
    ddp = tmp_path / "ddp"
    out = _torchrun(ddp, gpus, *ALIKE, "trainer.batch_size=8")
    assert "backend nccl" in out
    assert_same_training(single, ddp, steps=12, lr=1e-3, weight_tol=1e-4, rmse_rel=1e-2)


def test_two_ranks_on_one_gpu_match_one_process(tmp_path, run_entry) -> None:
    """More ranks than GPUs: the ranks share the device (gloo; NCCL refuses two ranks on one GPU)."""
    single = tmp_path / "single"
    run_entry(make_cfg(single, *ALIKE, "trainer.batch_size=16"))
    shared = tmp_path / "shared"
    out = _torchrun(shared, 2, *ALIKE, "trainer.batch_size=8", "trainer.distributed.backend=gloo",
                    "trainer.device=cuda:0")
    assert "backend gloo" in out and "rank 1 of 2" in out
    assert_same_training(single, shared, steps=12, lr=1e-3, weight_tol=1e-4, rmse_rel=1e-2)


def _trainer(tmp_path, device: torch.device, *overrides: str):
    cfg = make_cfg(tmp_path, "model.dims.dropout=0.0", "trainer.schedule.warmup_epochs=0", *overrides)
    dm = tasks.build_data(cfg)
    torch.manual_seed(0)
    model = tasks.build_model(cfg.model, len(dm.names), dm.t_in, dm.t_out)
    rt = Runtime(device=device, dtype=None, dist=DistInfo(), run_dir=tmp_path)
    settings = TrainerSettings.from_config(cfg.trainer)
    trainer = Trainer(model, dm, settings, rt, {"config": {}, "data": dm.state_dict()})
    plan = plan_stages(settings, TransferSettings.from_config(cfg), dm, tmp_path / "checkpoints")
    run = trainer._prepare(plan.stages[0])
    return trainer, run, dm


def test_the_training_step_never_waits_for_the_host(tmp_path) -> None:
    """With a fused optimiser the step (batch copy, forward, loss, backward, clip, update, schedule) makes no
    host synchronisation: ``torch.cuda.set_sync_debug_mode("error")`` would raise on one."""
    trainer, run, dm = _trainer(tmp_path, torch.device("cuda"), "trainer.optimizer.fused=true")
    window = LossWindow(run.optimizer, trainer.rt.device)
    batches = dm.train_batches(0, 32)
    trainer._step(trainer.model, next(batches), run, window)  # warm-up: lazy CUDA initialisation may sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            parts = trainer._step(trainer.model, next(batches), run, window)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert parts.loss.is_cuda


@pytest.fixture
def _no_tf32():
    """Full fp32 on CUDA (cuDNN convolutions default to TF32, a 1e-3 relative error), restored after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_one_step_and_the_metrics_agree_between_cpu_and_cuda(tmp_path, _no_tf32) -> None:
    """The same weights and batch give the same loss and gradients on both devices, and the same test metrics.

    Gradients, not the weights after the step, are compared: AdamW's first update is about lr * sign(grad), so a
    gradient element at rounding-noise size can move a weight by 2 lr on one device and not the other."""
    (cpu, cpu_run, dm), (gpu, gpu_run, _) = (_trainer(tmp_path / "cpu", torch.device("cpu")),
                                             _trainer(tmp_path / "gpu", torch.device("cuda")))
    gpu.model.load_state_dict(cpu.model.state_dict())
    batch = next(dm.train_batches(0, 32))
    losses = [trainer._step(trainer.model, batch, run, LossWindow(run.optimizer, trainer.rt.device)).loss
              for trainer, run in ((cpu, cpu_run), (gpu, gpu_run))]
    assert losses[1].item() == pytest.approx(losses[0].item(), rel=1e-4)
    # the step zeroes the gradients before its backward pass, so .grad holds this step's (clipped) gradients
    for (name, p), q in zip(cpu.model.named_parameters(), gpu.model.parameters(), strict=True):
        if p.grad is None:
            assert q.grad is None, name
            continue
        scale = p.grad.abs().max().item()
        torch.testing.assert_close(q.grad.cpu(), p.grad, rtol=1e-3, atol=1e-4 * scale + 1e-12, msg=name)
    names = dm.eval_names("test")
    results = [evaluate(t.model, dm, "test", names, batch_size=64, device=t.rt.device, dist=DistInfo(),
                        loss=t.loss, autocast=t.rt.autocast()) for t in (cpu, gpu)]
    for city in names:
        assert results[1].metrics[city].rmse == pytest.approx(results[0].metrics[city].rmse, rel=1e-4)
