"""DataModule state: content fingerprints, window layout, and verification of rebuilt data against a checkpoint."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
import torch

from vlm4st.data import DataError, DataMismatchError, build_datamodule

from .builders import dataset_cfg, series, series_source, shots, stamps_for, synthetic_sources


def file_module(path, **kwargs):
    sources = {"city": series_source(path), **synthetic_sources(1)}
    return build_datamodule(dataset_cfg(sources, **kwargs), shots(1.0), 0)


@pytest.fixture
def city_file(tmp_path):
    path = tmp_path / "city.npz"
    np.savez(path, data=series(T=60, C=2), timestamps=stamps_for(60))
    return path


def test_state_verifies_against_itself_and_survives_a_weights_only_checkpoint(city_file, tmp_path) -> None:
    dm = file_module(city_file)
    torch.save({"data": dm.state_dict()}, tmp_path / "ckpt.pt")
    stored = torch.load(tmp_path / "ckpt.pt", weights_only=True)["data"]
    dm.verify_state_dict(stored, source="ckpt.pt")
    file_module(city_file).verify_state_dict(stored, source="ckpt.pt")  # a rebuild is the same data
    entry = stored["datasets"][0]
    assert entry["fingerprint"] == {"kind": "file", "sha256": hashlib.sha256(city_file.read_bytes()).hexdigest()}
    assert entry["layout"]["t_in"] == 3 and entry["layout"]["train_ratio"] == 0.6 and entry["layout"]["stride"] == 1
    assert stored["datasets"][1]["fingerprint"]["kind"] == "generated"


def test_a_changed_data_file_is_detected(city_file, tmp_path) -> None:
    copy = tmp_path / "copy" / "city.npz"
    copy.parent.mkdir()
    shutil.copy(city_file, copy)
    stored = file_module(copy).state_dict()
    with np.load(copy) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["data"][55, 1, 2, 3] += 1  # one value of a test frame; the training-split scaler does not see it
    np.savez(copy, **arrays)
    rebuilt = file_module(copy)
    match = r"ckpt: datasets\.city\.fingerprint\.sha256 differs: stored '[0-9a-f]{64}', current '[0-9a-f]{64}'"
    with pytest.raises(DataMismatchError, match=match):
        rebuilt.verify_state_dict(stored, source="ckpt")
    stored["datasets"][0]["fingerprint"] = rebuilt.state_dict()["datasets"][0]["fingerprint"]
    rebuilt.verify_state_dict(stored, source="ckpt")  # the file's bytes were the only difference
    assert isinstance(DataMismatchError("a", "b"), DataError)


def test_a_changed_t_in_is_detected_and_named(city_file) -> None:
    stored = file_module(city_file).state_dict()
    with pytest.raises(DataMismatchError, match=r"ckpt\.pt: t_in differs: stored 3, current 4"):
        file_module(city_file, t_in=4).verify_state_dict(stored, source="ckpt.pt")
    layout = stored["datasets"][0]["layout"]
    layout["train_ratio"] = 0.7  # a per-dataset window setting is named by its path
    with pytest.raises(DataMismatchError, match=r"datasets\.city\.layout\.train_ratio differs: stored 0\.7, current 0"):
        file_module(city_file).verify_state_dict(stored, source="ckpt.pt")


def test_generated_data_is_fingerprinted_by_its_parameters() -> None:
    a = build_datamodule(dataset_cfg(synthetic_sources()), shots(1.0), 0)
    sources = synthetic_sources()
    sources["c2"]["seed"] = 9
    b = build_datamodule(dataset_cfg(sources), shots(1.0), 0)
    assert a.content_hashes()["c0"] == b.content_hashes()["c0"] != b.content_hashes()["c2"]
    assert a.content_hashes()["c2"] != b.content_hashes()["c2"]
    with pytest.raises(DataMismatchError, match=r"datasets\.c2\.fingerprint\.sha256 differs"):
        b.verify_state_dict(a.state_dict(), source="ckpt")


def test_content_hashes_cover_every_dataset_in_task_order(city_file) -> None:
    hashes = file_module(city_file).content_hashes()
    assert list(hashes) == ["city", "c0"]
    assert hashes["city"] == hashlib.sha256(city_file.read_bytes()).hexdigest()


def test_few_shot_selection_is_part_of_the_state() -> None:
    def few(seed):
        cfg = dataset_cfg(synthetic_sources(), target="c1", few_shot_sampling="random")
        return build_datamodule(cfg, shots(0.1), seed)

    with pytest.raises(DataMismatchError, match=r"datasets\.c1\.layout\.few_shot_seed differs: stored 1, current 2"):
        few(2).verify_state_dict(few(1).state_dict(), source="ckpt")


def test_a_source_checkpoint_is_verified_on_the_sources_only() -> None:
    zero = build_datamodule(dataset_cfg(synthetic_sources(), target="c1"), shots(0.0), 0)
    few = build_datamodule(dataset_cfg(synthetic_sources(), target="c1"), shots(0.1), 0)
    few.verify_state_dict(zero.state_dict(), source="source.pt", scope="sources")
    with pytest.raises(DataMismatchError, match=r"source\.pt: mode differs: stored 'zero', current 'few'"):
        few.verify_state_dict(zero.state_dict(), source="source.pt")
    sources = synthetic_sources()
    sources["c0"]["days"] = 15
    other = build_datamodule(dataset_cfg(sources, target="c1"), shots(0.1), 0)
    with pytest.raises(DataMismatchError, match=r"datasets\.c0\.fingerprint\.sha256 differs"):
        other.verify_state_dict(zero.state_dict(), source="source.pt", scope="sources")
