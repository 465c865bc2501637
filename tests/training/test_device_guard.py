"""The training loop never mixes devices: a train stage (steps, validation, checkpoints) and a test pass run with
the model and every batch on a device that is not the CPU.

The device is ``meta`` (shapes and dtypes, no data). As on CUDA, a tensor created on the CPU that meets a meta
tensor in a non-scalar operation (``stack``, ``cat``, an elementwise op with a non-scalar) fails, so a test here
catches on a CPU-only machine the bugs that would crash the first GPU run. The host reads of the loop
(``vlm4st.training.host``) are replaced by zeros of the right shape, since a meta tensor holds no values.
"""

from __future__ import annotations

import torch

from tests.runs import make_cfg
from vlm4st.training import host, tasks
from vlm4st.training.distributed import DistInfo
from vlm4st.training.evaluate import evaluate
from vlm4st.training.runtime import Runtime
from vlm4st.training.settings import TrainerSettings, TransferSettings
from vlm4st.training.stages import plan_stages
from vlm4st.training.trainer import Trainer

META = torch.device("meta")


def _read(t: torch.Tensor) -> torch.Tensor:
    """A host read of a meta tensor: zeros of its shape and dtype (CPU tensors pass through)."""
    return torch.zeros(t.shape, dtype=t.dtype) if t.is_meta else t.detach().cpu().clone()


def test_training_validation_checkpoints_and_test_run_on_a_non_cpu_device(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(host, "to_host", _read)
    monkeypatch.setattr(host, "host_copy", _read)
    cfg = make_cfg(tmp_path, "trainer.epochs=1", "trainer.max_steps=3", "trainer.checkpoint_every_steps=2",
                   "trainer.log_every_steps=2", "trainer.schedule.warmup_epochs=0")
    dm = tasks.build_data(cfg)
    model = tasks.build_model(cfg.model, len(dm.names), dm.t_in, dm.t_out)
    rt = Runtime(device=META, dtype=None, dist=DistInfo(), run_dir=tmp_path)
    settings = TrainerSettings.from_config(cfg.trainer)
    trainer = Trainer(model, dm, settings, rt, {"config": {}, "data": dm.state_dict()})
    assert all(p.is_meta for p in model.parameters())
    plan = plan_stages(settings, TransferSettings.from_config(cfg), dm, tmp_path / "checkpoints")
    result = trainer.fit(plan.stages[0], resume=False)
    assert result.steps == 3 and result.best_path.is_file()  # three steps, a validation, two checkpoint writes
    test = evaluate(model, dm, "test", dm.eval_names("test"), batch_size=64, device=META, dist=DistInfo(),
                    loss=trainer.loss, autocast=rt.autocast(), collect=True)
    assert set(test.metrics) == set(dm.eval_names("test"))


def test_the_guard_device_rejects_a_cpu_tensor_meeting_a_device_tensor() -> None:
    """What the test above relies on: meta refuses the mix that CUDA refuses (and allows CPU scalars, as CUDA)."""
    on_device = torch.ones(3, device=META)
    for mix in (lambda: torch.stack([on_device.sum(), torch.tensor(3.0)]),
                lambda: torch.cat([on_device, torch.ones(1)]),
                lambda: on_device + torch.ones(3)):
        try:
            mix()
        except RuntimeError as err:
            assert "device" in str(err)
        else:
            raise AssertionError("a CPU tensor met a meta tensor without an error")
    assert (on_device + torch.tensor(2.0)).is_meta
