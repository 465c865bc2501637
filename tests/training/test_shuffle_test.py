"""The input-order test (``shuffle_test``): each window's input frames permuted along T_in, and only the frames;
permutations fixed by the seed and the window id; the shuffled pass changes the forecast; ``task=test`` and
``task=train`` write the shuffled metrics and the degradation; bad values are refused naming the key."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.runs import make_cfg, read_metrics
from vlm4st.config import instantiate
from vlm4st.data.batch import Batch
from vlm4st.data.build import build_datamodule
from vlm4st.data.module import DataModule
from vlm4st.errors import ConfigError
from vlm4st.evaluation.shuffle import ShuffleTest, frame_orders, permute_frames, shuffle_inputs
from vlm4st.training import checkpoint as ckpt
from vlm4st.training import host
from vlm4st.training.distributed import DistInfo
from vlm4st.training.evaluate import EvalResult, evaluate
from vlm4st.training.tasks import build_model
from vlm4st.training.weights import load_model_state

B, T_IN, T_OUT, H, W = 9, 6, 3, 4, 5
CPU = torch.device("cpu")


def _batch() -> Batch:
    """A host batch whose frames are distinguishable: every pixel of frame t of window b holds 100 b + t."""
    frames = (100 * torch.arange(B)[:, None] + torch.arange(T_IN)[None, :]).float()  # (B, T_in)
    return Batch(
        x=frames[:, :, None, None].expand(B, T_IN, H, W).contiguous(),  # (B, T_in, H, W)
        y=torch.randn(B, T_OUT, H, W),
        timestamps=torch.randint(0, 1440, (B, T_IN, 3)),
        target_timestamps=torch.randint(0, 1440, (B, T_OUT, 3)),
        task_id=torch.arange(B) % 3,
        channel=torch.zeros(B, dtype=torch.int64),
        index=torch.arange(10, 10 + B),
        dataset="city_a",
        y_real=torch.randn(B, T_OUT, H, W),
    )


def test_the_shuffle_permutes_the_frames_of_every_window_and_nothing_else() -> None:
    batch = _batch()
    kept = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    kept = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kept.items()}
    shuffled = shuffle_inputs(batch, seed=3)
    x, moved = kept["x"], shuffled.x
    assert moved.shape == x.shape
    for b in range(B):
        original, now = x[b, :, 0, 0], moved[b, :, 0, 0]  # (T_in,) frame labels
        assert sorted(now.tolist()) == sorted(original.tolist())  # the same frames ...
        assert not torch.equal(now, original)  # ... never in order
        order = (now - 100 * b).long()  # (T_in,) which original frame sits at each position
        assert torch.equal(moved[b], x[b, order])  # whole frames moved, pixels kept together
    for key in ("timestamps", "target_timestamps", "y", "y_real", "task_id", "channel", "index", "dataset"):
        assert getattr(shuffled, key) is getattr(batch, key), key
        if isinstance(kept[key], torch.Tensor):
            assert torch.equal(getattr(shuffled, key), kept[key]), key
    assert torch.equal(batch.x, x)  # the input batch itself is left as it was


def test_frames_with_a_channel_axis_move_whole() -> None:
    x = torch.randn(4, T_IN, H, W, 2)  # (B, T, H, W, C)
    orders = frame_orders(torch.arange(4), T_IN, seed=0)  # (B, T)
    out = permute_frames(x, orders)
    for b in range(4):
        for t in range(T_IN):
            assert torch.equal(out[b, t], x[b, orders[b, t]])
    with pytest.raises(ValueError, match="do not fit"):
        permute_frames(x, orders[:, :-1])


@pytest.mark.parametrize("t", [2, 3, 12])
def test_every_order_is_a_permutation_and_never_the_identity(t: int) -> None:
    orders = frame_orders(torch.arange(400), t, seed=0)  # (400, t)
    assert torch.equal(orders.sort(dim=1).values, torch.arange(t).expand(400, t))
    assert not (orders == torch.arange(t)).all(dim=1).any()
    assert len({tuple(row) for row in orders.tolist()}) == min(400, _factorial(t) - 1)


def _factorial(n: int) -> int:
    return int(np.prod(np.arange(1, n + 1)))


def test_the_seed_and_window_id_alone_fix_a_window_order() -> None:
    ids = torch.arange(200)
    whole = frame_orders(ids, 12, seed=5)  # one batch
    chunks = [frame_orders(ids[i:i + 7], 12, seed=5) for i in range(0, 200, 7)]  # batches of 7
    assert torch.equal(torch.cat(chunks), whole)
    backwards = frame_orders(ids.flip(0), 12, seed=5)  # another batch order
    assert torch.equal(backwards.flip(0), whole)
    again = frame_orders(ids, 12, seed=5)
    assert torch.equal(again, whole)
    other = frame_orders(ids, 12, seed=6)
    assert (other != whole).any(dim=1).float().mean() > 0.9  # another seed: other orders almost everywhere


def _loaded(checkpoint: Path, cache: Path) -> tuple[torch.nn.Module, DataModule, Any]:
    """The checkpoint's model (eval weights) with its data and loss, built as ``task=test`` builds them."""
    payload = ckpt.load_checkpoint(checkpoint)
    cfg = OmegaConf.create(payload["config"])
    dm = build_datamodule(cfg.dataset, cfg.shot_ratio, seed=int(cfg.seed), cache_dir=str(cache))
    model = build_model(cfg.model, len(dm.names), dm.t_in, dm.t_out)
    load_model_state(model, payload["model"], str(checkpoint))
    return model, dm, instantiate(cfg.trainer.loss, path="trainer.loss")


def _run(model, dm: DataModule, loss, batch_size: int, frame_seed: int | None, device: torch.device = CPU,
         collect: bool = True) -> EvalResult:
    return evaluate(model, dm, "test", ["city_a"], batch_size=batch_size, device=device, dist=DistInfo(), loss=loss,
                    autocast=contextlib.nullcontext(), collect=collect, frame_seed=frame_seed)


def test_shuffled_inputs_change_the_forecast_the_same_way_at_every_batch_size(trained_checkpoint, tmp_path) -> None:
    model, dm, loss = _loaded(trained_checkpoint, tmp_path / "cache")
    ordered = _run(model, dm, loss, 256, None).predictions["city_a"]
    shuffled = _run(model, dm, loss, 256, 0).predictions["city_a"]
    np.testing.assert_array_equal(shuffled["target"], ordered["target"])
    np.testing.assert_array_equal(shuffled["index"], ordered["index"])
    change = np.abs(shuffled["forecast"] - ordered["forecast"]).max(axis=(1, 2, 3))  # (N,) per window
    assert (change > 1e-4).all(), "a window's forecast did not change with its frames shuffled"
    small = _run(model, dm, loss, 7, 0).predictions["city_a"]  # other batches, the same permutations
    np.testing.assert_allclose(small["forecast"], shuffled["forecast"], rtol=1e-5, atol=1e-4)
    reseeded = _run(model, dm, loss, 256, 1).predictions["city_a"]
    assert not np.allclose(reseeded["forecast"], shuffled["forecast"], atol=1e-4)


def test_the_shuffled_pass_keeps_every_batch_on_the_model_device(trained_checkpoint, tmp_path, monkeypatch) -> None:
    """On ``meta`` (refuses CPU tensors meeting device tensors, as CUDA does) the shuffled pass runs: the frames are
    reordered on the host before the batch moves, nothing of the host meets the model's device."""
    meta = torch.device("meta")
    monkeypatch.setattr(host, "to_host", lambda t: torch.zeros(t.shape, dtype=t.dtype) if t.is_meta else t)
    model, dm, loss = _loaded(trained_checkpoint, tmp_path / "cache")
    result = _run(model.to(meta), dm, loss, 64, 0, device=meta, collect=False)
    assert set(result.metrics) == {"city_a"}


def test_task_test_writes_the_shuffled_metrics_and_the_degradation(trained_checkpoint, tmp_path, run_entry,
                                                                    caplog) -> None:
    run_dir = tmp_path / "test"
    caplog.set_level(logging.INFO, logger="vlm4st")
    run_entry(make_cfg(run_dir, "task=test", f"checkpoint={trained_checkpoint}", "shuffle_test.enabled=true",
                       "shuffle_test.seed=7"))
    metrics = read_metrics(run_dir)
    section = metrics.shuffle_test
    assert section.seed == 7 and section.loss > 0
    assert set(section.shuffled) == set(metrics.test) == set(section.degradation)
    for name, ordered in metrics.test.items():
        shuffled = section.shuffled[name]
        assert shuffled.n == ordered.n and shuffled.points == ordered.points
        assert shuffled.rmse != ordered.rmse
        change = section.degradation[name]
        assert change.rmse == pytest.approx(shuffled.rmse / ordered.rmse - 1)
        assert change.mae == pytest.approx(shuffled.mae / ordered.mae - 1)
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"input-order test {name} ")]
        assert len(lines) == 1 and "seed 7" in lines[0], lines


def test_the_final_test_of_train_runs_the_shuffle_too(tmp_path, run_entry) -> None:
    run_dir = tmp_path / "train"
    run_entry(make_cfg(run_dir, "trainer.epochs=1", "trainer.max_steps=1", "trainer.schedule.warmup_epochs=0",
                       "shuffle_test.enabled=true"))
    metrics = read_metrics(run_dir)
    assert set(metrics.shuffle_test.degradation) == set(metrics.test)


def test_the_shuffle_is_off_by_default(tmp_path) -> None:
    cfg = make_cfg(tmp_path)
    assert ShuffleTest.from_config(cfg.shuffle_test) == ShuffleTest(enabled=False, seed=0)


@pytest.mark.parametrize(("override", "key"), [
    ("shuffle_test.enabled=yes", "shuffle_test.enabled"),
    ("shuffle_test.enabled=1", "shuffle_test.enabled"),
    ("shuffle_test.seed=-1", "shuffle_test.seed"),
    ("shuffle_test.seed=abc", "shuffle_test.seed"),
    ("shuffle_test.seed=1.5", "shuffle_test.seed"),
    ("+shuffle_test.windows=3", "shuffle_test.windows"),
    ("~shuffle_test.seed", "shuffle_test.seed"),
    ("shuffle_test=null", "shuffle_test"),
])
def test_a_bad_value_is_a_config_error_naming_the_key(override, key, trained_checkpoint, tmp_path, run_entry) -> None:
    for task in (["task=test", f"checkpoint={trained_checkpoint}"], ["task=train"]):
        with pytest.raises(ConfigError, match=rf"^{key}\b"):
            run_entry(make_cfg(tmp_path / "run", *task, override))


def test_a_window_of_one_input_frame_cannot_be_shuffled(tmp_path, run_entry) -> None:
    with pytest.raises(ConfigError, match=r"^shuffle_test\.enabled: .*t_in=1"):
        run_entry(make_cfg(tmp_path / "run", "dataset.t_in=1", "shuffle_test.enabled=true"))
