"""DataModule: batch contents, homogeneity and seeded interleaving, DDP shards, shot protocols, resize."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vlm4st.config import ConfigError
from vlm4st.data import Batch, DataMismatchError, DataValueError, build_datamodule
from vlm4st.data.sampling import epoch_plan, few_shot_positions

from .builders import dataset_cfg, series, series_source, shots, stamps_for, synthetic_sources


def module(ratio: float = 1.0, seed: int = 0, **kwargs):
    return build_datamodule(dataset_cfg(synthetic_sources(), **kwargs), {"name": "r", **shots(ratio)}, seed)


def test_batch_contents_and_alignment() -> None:
    dm = module()
    batch = next(dm.train_batches(0, 8))
    assert isinstance(batch, Batch) and batch.y_real is None  # training batches carry no raw-scale targets
    ds = dm.by_name[batch.dataset]
    B, (h, w) = len(batch.x), ds.model_hw
    assert batch.x.shape == (B, 3, h, w) and batch.y.shape == (B, 2, h, w)
    assert batch.x.dtype == torch.float32 and batch.timestamps.dtype == torch.int64
    assert batch.timestamps.shape == (B, 3, 3) and batch.target_timestamps.shape == (B, 2, 3)
    assert (batch.task_id == ds.task_id).all()
    starts = torch.from_numpy(ds.windows["train"].starts[batch.index.numpy()])
    for i in range(B):  # y is exactly the frames after x; timestamps belong to the frames
        s = int(starts[i])
        assert torch.equal(batch.x[i], ds.frames[s : s + 3]) and torch.equal(batch.y[i], ds.frames[s + 3 : s + 5])
        stamps = ds.stamps[s + 3 : s + 5]  # (2, 2) [weekday, slot] of the forecast steps
        assert batch.target_timestamps[i].tolist() == [[int(d), int(k) * 30, 30] for d, k in stamps]
    minutes = torch.cat([batch.timestamps, batch.target_timestamps], 1)[..., 1]
    assert ((minutes.diff(dim=1) % 1440) == 30).all()  # consecutive 30-min steps


def test_batches_are_homogeneous_and_interleaving_is_seeded() -> None:
    dm = module()
    epoch0 = [(b.dataset, b.index.tolist()) for b in dm.train_batches(0, 16)]
    again = [(b.dataset, b.index.tolist()) for b in dm.train_batches(0, 16)]
    epoch1 = [(b.dataset, b.index.tolist()) for b in dm.train_batches(1, 16)]
    other_seed = [(b.dataset, b.index.tolist()) for b in module(seed=1).train_batches(0, 16)]
    assert epoch0 == again and epoch0 != epoch1 and epoch0 != other_seed
    names = [n for n, _ in epoch0]
    assert set(names) == set(dm.names)
    assert names != sorted(names, key=dm.names.index)  # interleaved, not dataset after dataset
    for b in dm.train_batches(0, 16):
        assert len({tuple(x.shape) for x in b.x}) == 1 and len(b.x) <= 16
    for name in dm.names:  # each epoch visits every training window exactly once
        seen = sorted(i for n, idx in epoch0 if n == name for i in idx)
        assert seen == sorted(dm.by_name[name].windows["train"].ids.tolist())
    assert dm.num_train_batches(16) == len(epoch0)


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_ddp_shards_are_disjoint_complete_and_equal(world_size, drop_last) -> None:
    dm = module()
    plans = [
        list(dm.train_batches(2, 16, rank=r, world_size=world_size, drop_last=drop_last)) for r in range(world_size)
    ]
    assert len({len(p) for p in plans}) == 1  # equal batch counts
    for step in range(len(plans[0])):  # every rank steps through the same dataset
        assert len({p[step].dataset for p in plans}) == 1
    for name in dm.names:
        per_rank = [[i for b in p if b.dataset == name for i in b.index.tolist()] for p in plans]
        flat = [i for r in per_rank for i in r]
        assert len(flat) == len(set(flat))  # disjoint
        n = len(dm.by_name[name].windows["train"])
        if drop_last:
            assert all(len(b.x) == 16 for p in plans for b in p)
            assert len(flat) == n // (16 * world_size) * 16 * world_size
        else:
            assert len(flat) == n  # complete


def test_tiny_dataset_still_gives_every_rank_a_batch() -> None:
    plans = [epoch_plan([3], 1, 0, 0, rank=r, world_size=2) for r in range(2)]
    assert len(plans[0]) == len(plans[1]) == 2
    assert {int(i) for p in plans for _, b in p for i in b} == {0, 1, 2}


@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.5])
def test_few_shot_takes_exactly_the_head(ratio) -> None:
    full = module()
    dm = module(ratio=ratio, target="c1")
    n = len(full.by_name["c1"].windows["train"])
    k = max(1, int(np.floor(n * ratio)))
    chosen = dm.by_name["c1"].windows["train"]
    assert len(chosen) == k
    assert chosen.ids.tolist() == list(range(k))  # single channel: the first k in time order
    for src in ("c0", "c2"):
        assert len(dm.by_name[src].windows["train"]) == len(full.by_name[src].windows["train"])
    trained = {i for b in dm.train_batches(0, 8) if b.dataset == "c1" for i in b.index.tolist()}
    assert trained == set(range(k))
    assert dm.eval_names("val") == ["c1"] and dm.eval_names("test") == ["c1"]
    val_starts = set(dm.by_name["c1"].windows["val"].starts.tolist())
    assert not val_starts & set(chosen.starts.tolist())


def test_few_shot_random_is_seeded_and_exact() -> None:
    a = module(ratio=0.1, target="c1", few_shot_sampling="random", seed=3).by_name["c1"].windows["train"].ids
    b = module(ratio=0.1, target="c1", few_shot_sampling="random", seed=3).by_name["c1"].windows["train"].ids
    c = module(ratio=0.1, target="c1", few_shot_sampling="random", seed=4).by_name["c1"].windows["train"].ids
    n = len(module().by_name["c1"].windows["train"])
    assert len(a) == max(1, n // 10) and a.tolist() == b.tolist() != c.tolist()
    assert (np.diff(a) > 0).all() and a.tolist() != list(range(len(a)))


def test_few_shot_head_interleaves_channels_in_time_order(tmp_path) -> None:
    path = tmp_path / "two.npz"
    np.savez(path, data=series(T=60, C=2), timestamps=stamps_for(60))
    cfg = dataset_cfg(
        {"two": series_source(path), "c0": synthetic_sources(1)["c0"]}, target="two"
    )
    dm = build_datamodule(cfg, shots(0.2), 0)
    w = dm.by_name["two"].windows["train"]
    n_per_channel = dm.by_name["two"].available["train"] // 2
    assert len(w) == int(2 * n_per_channel * 0.2)
    assert sorted(np.bincount(w.channel).tolist()) == [len(w) // 2, len(w) - len(w) // 2]
    t = w.ids % n_per_channel  # time position within the channel
    assert t.max() < len(w) // 2 + 1
    assert few_shot_positions(w, 1.0, "head", 0).tolist() == np.lexsort((w.channel, t)).tolist()


def test_zero_shot_never_touches_target_train_or_val(monkeypatch) -> None:
    from vlm4st.data import synthetic

    reads = []
    original = synthetic.SyntheticCityReader.read

    def spy(self, window_len, splits, allow_gaps):
        reads.append((self.name, tuple(splits)))
        return original(self, window_len, splits, allow_gaps)

    monkeypatch.setattr(synthetic.SyntheticCityReader, "read", spy)
    dm = module(ratio=0.0, target="c2")
    assert ("c2", ("test",)) in reads
    assert set(dm.by_name["c2"].windows) == {"test"}
    for split in ("train", "val"):
        assert ("c2", split) not in dm.accessed
    list(dm.train_batches(0, 8))
    for name in dm.eval_names("val"):
        list(dm.eval_batches(name, "val", 32))
    assert "c2" not in dm.train_names() and "c2" not in dm.eval_names("val") and dm.eval_names("test") == ["c2"]
    assert all(b.dataset != "c2" for b in dm.train_batches(0, 8))
    assert {("c2", "train"), ("c2", "val")}.isdisjoint(dm.accessed)
    ds = dm.by_name["c2"]
    assert ds.scaler_fit.startswith("calibration prefix")
    assert float(ds.frames[torch.from_numpy(ds.scaler_frames)].max()) == pytest.approx(1.0)
    with pytest.raises(KeyError):
        next(dm.eval_batches("c2", "val", 8))


def test_zero_shot_train_scaler_is_an_explicit_opt_in() -> None:
    dm = module(ratio=0.0, target="c2", zero_shot_scaler="train")
    assert ("c2", "train") in dm.accessed and ("c2", "val") not in dm.accessed
    assert set(dm.by_name["c2"].windows) == {"test"} and dm.by_name["c2"].scaler_fit == "training frames"


def test_resize_keeps_native_targets_and_maps_back() -> None:
    dm = module(resize_to=[8, 10])
    batch = next(dm.eval_batches("c1", "test", 16))
    assert batch.x.shape[-2:] == (8, 10) and batch.y_real.shape[-2:] == (5, 5)
    assert torch.equal(batch.y_real, batch.y_real.round())  # raw counts, not an interpolation
    real = dm.to_real(batch.y, batch)
    assert real.shape == batch.y_real.shape and real.dtype == torch.float64
    assert dm.by_name["c1"].native_hw == (5, 5) and dm.by_name["c1"].model_hw == (8, 10)
    assert module(resize_to=7).by_name["c0"].model_hw == (7, 7)


def test_grid_below_min_grid_raises_with_dataset_name() -> None:
    with pytest.raises(DataValueError, match=r"synthetic:c1: grid 5x5 is smaller than dataset.min_grid 6x6"):
        module(min_grid=6)


@pytest.mark.parametrize(
    ("kwargs", "ratio", "match"),
    [
        ({"target": "nowhere"}, 1.0, "dataset.target='nowhere' is not a source"),
        ({}, 0.05, "needs dataset.target"),
        ({"few_shot_sampling": "tail"}, 1.0, r"dataset\.few_shot_sampling: expected one of .*, got 'tail'"),
        ({"scaler": {"fit_on": "test"}}, 1.0, r"dataset\.scaler\.fit_on: expected one of .*, got 'test'"),
        ({"t_out": 0}, 1.0, r"dataset\.t_out: expected a positive integer, got 0"),
        ({"scaler": {"fit_on": "train"}}, 1.0, r"dataset\.scaler\.per_channel is missing"),
        ({"min_grid": [4, 0]}, 1.0, r"dataset\.min_grid\[1\]: expected a positive integer, got 0"),
    ],
)
def test_config_errors_name_the_key(kwargs, ratio, match) -> None:
    with pytest.raises(ConfigError, match=match):
        module(ratio=ratio, **kwargs)


def test_summary_describe_and_state_dict() -> None:
    dm = module(ratio=0.1, target="c1")
    text = dm.summary()
    for word in ("mode=few", "c0", "c1", "c2", "6x8", "5x5", "target", "interval", "30 min"):
        assert word in text
    d = dm.describe()
    assert [x["task_id"] for x in d["datasets"]] == [0, 1, 2]
    assert d["datasets"][1]["windows"]["train"] < d["datasets"][1]["windows_available"]["train"]
    assert json.loads(json.dumps(module(resize_to=[8, 9]).describe()))["settings"]["resize_to"] == [8, 9]
    state = dm.state_dict()
    assert [x["name"] for x in state["datasets"]] == ["c0", "c1", "c2"]
    assert state["datasets"][0]["scaler"] == dm.by_name["c0"].scaler.state_dict()


def test_eval_batches_are_in_order_and_shard_contiguously() -> None:
    dm = module()
    ids = [i for b in dm.eval_batches("c0", "test", 7) for i in b.index.tolist()]
    assert ids == list(range(len(dm.by_name["c0"].windows["test"])))
    shards = [
        [i for b in dm.eval_batches("c0", "test", 7, rank=r, world_size=2) for i in b.index.tolist()]
        for r in range(2)
    ]
    assert shards[0] + shards[1] == ids


def test_verify_state_dict_accepts_itself_and_rejects_other_datasets() -> None:
    dm = module()
    dm.verify_state_dict(dm.state_dict(), source="ckpt.pt")
    state = dm.state_dict()
    with pytest.raises(DataMismatchError, match=r"ckpt\.pt: datasets \(names in task-id order\) differs"):
        dm.verify_state_dict(state | {"datasets": state["datasets"][::-1]}, source="ckpt.pt")
    other = module(scaler={"fit_on": "all", "per_channel": False}).state_dict()
    with pytest.raises(DataMismatchError, match=r"datasets\.c0\.layout\.scaler_on differs: stored 'all'"):
        dm.verify_state_dict(other, source="ckpt.pt")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda s, ts: s.__setitem__((5, 0, 1, 1), np.nan), "non-finite"),
        (lambda s, ts: s.fill(3.0), "constant series"),
        (lambda s, ts: ts.__setitem__((7, 1), 48), "slot out of range"),
        (lambda s, ts: ts.__setitem__((7, 0), -1), "weekday out of range"),
    ],
)
def test_bad_values_in_a_series_stop_the_build_naming_the_file(tmp_path, edit, match) -> None:
    s, ts = series(T=40), np.stack([np.zeros(40, int), np.arange(40) % 48], axis=-1)
    edit(s, ts)
    path = tmp_path / "bad.npz"
    np.savez(path, data=s, timestamps=ts)
    with pytest.raises(DataValueError, match=match) as info:
        build_datamodule(dataset_cfg({"bad": series_source(path)}), shots(1.0), 0)
    assert str(path) in str(info.value)
