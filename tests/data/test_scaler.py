"""MinMax scaler: exact round trip (pooled, per channel, numpy and torch), state dict, fit_on protocols."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlm4st.data import DataValueError, MinMaxScaler, build_datamodule
from vlm4st.data.windows import split_counts

from .builders import dataset_cfg, series, series_source, shots, stamps_for


def test_round_trip_pooled_and_per_channel() -> None:
    rng = np.random.default_rng(0)
    frames = rng.uniform(-5, 300, size=(40, 3, 4))
    chan = np.repeat([0, 1], 20)
    frames[chan == 1] *= 10
    for per_channel in (False, True):
        sc = MinMaxScaler.fit(frames, chan, 2, per_channel, "f")
        z = sc.transform(frames, chan)
        assert z.min() == pytest.approx(-1) and z.max() == pytest.approx(1)
        if per_channel:
            for c in (0, 1):
                assert z[chan == c].min() == pytest.approx(-1) and z[chan == c].max() == pytest.approx(1)
        np.testing.assert_allclose(sc.inverse(z, chan), frames, rtol=1e-12, atol=1e-9)
        zt = sc.transform(torch.from_numpy(frames), torch.from_numpy(chan))
        np.testing.assert_allclose(zt.numpy(), z, rtol=1e-12)
        back = sc.inverse(zt.float(), torch.from_numpy(chan), dtype=torch.float64)
        np.testing.assert_allclose(back.numpy(), frames, rtol=1e-6, atol=1e-4)  # float32 storage
        again = MinMaxScaler.from_state_dict(sc.state_dict())
        np.testing.assert_array_equal(again.transform(frames, chan), z)


def test_state_dict_is_plain_data() -> None:
    sc = MinMaxScaler([0.0, 1.0], [10.0, 5.0], per_channel=True)
    state = sc.state_dict()
    assert state == {"minimum": [0.0, 1.0], "maximum": [10.0, 5.0], "per_channel": True}
    assert all(type(v) is float for v in state["minimum"] + state["maximum"])


def test_constant_series_raises() -> None:
    with pytest.raises(DataValueError, match=r"f\.npz: constant series \(channel 1\)"):
        MinMaxScaler.fit(np.stack([np.arange(4.0).reshape(2, 2), np.ones((2, 2))]), np.array([0, 1]), 2, True, "f.npz")


def test_per_channel_scaler_needs_channels() -> None:
    sc = MinMaxScaler([0.0, 0.0], [1.0, 2.0], per_channel=True)
    with pytest.raises(ValueError, match="needs the channel"):
        sc.transform(np.zeros((1, 2)))


@pytest.mark.parametrize("fit_on", ["train", "all"])
def test_fit_on_train_versus_all(tmp_path, fit_on) -> None:
    s = series(T=60, C=2)  # ramp: later frames are larger
    path = tmp_path / "city.npz"
    np.savez(path, data=s, timestamps=stamps_for(len(s)))
    cfg = dataset_cfg({"city": series_source(path)}, scaler={"fit_on": fit_on, "per_channel": False})
    dm = build_datamodule(cfg, shots(1.0), 0)
    ds = dm.by_name["city"]
    train_frames = ds.train_frame_indices()
    raw_train = s.transpose(1, 0, 2, 3).reshape(-1, *s.shape[2:])[train_frames]
    if fit_on == "train":
        assert ds.scaler.maximum == [float(raw_train.max())]
        assert float(ds.frames[torch.from_numpy(train_frames)].max()) == pytest.approx(1.0)
        assert float(ds.frames.max()) > 1.0  # test frames lie above the training range
    else:
        assert ds.scaler.maximum == [float(s.max())] and ds.scaler.minimum == [float(s.min())]
        assert float(ds.frames.max()) == pytest.approx(1.0)


def test_per_channel_scaler_in_the_module(tmp_path) -> None:
    s = series(T=40, C=2)
    s[:, 1] *= 100
    path = tmp_path / "city.npz"
    np.savez(path, data=s, timestamps=stamps_for(len(s)))
    cfg = dataset_cfg({"city": series_source(path)}, scaler={"fit_on": "train", "per_channel": True})
    dm = build_datamodule(cfg, shots(1.0), 0)
    sc = dm.by_name["city"].scaler
    assert sc.per_channel and len(sc.maximum) == 2 and sc.maximum[1] > 50 * sc.maximum[0]
    batch = next(dm.eval_batches("city", "test", 64))
    t0 = sum(list(split_counts(40 - 5 + 1, 0.6, 0.2).values())[:2])  # first test window's start
    for c in (0, 1):  # y_real is the raw series, per channel, on the native grid
        first = int(torch.nonzero(batch.channel == c)[0])
        np.testing.assert_array_equal(batch.y_real[first].numpy(), s[t0 + 3 : t0 + 5, c])
    real = dm.to_real(batch.y, batch)
    torch.testing.assert_close(real, batch.y_real.double(), rtol=1e-5, atol=1e-3)
