"""Few-shot and zero-shot runs: source stage, target stage, source-model reuse, the target kept out of training."""

from __future__ import annotations

import pytest

from tests.runs import make_cfg, read_metrics
from vlm4st.training import checkpoint as ckpt
from vlm4st.training.run_metrics import ReusedStage

QUICK = ["trainer.epochs=1", "trainer.max_steps=6", "trainer.fewshot.epochs=1", "trainer.schedule.warmup_epochs=0"]


@pytest.fixture
def built(monkeypatch) -> dict:
    """Records the DataModule each run builds (key ``dm``)."""
    from vlm4st.training import tasks

    seen: dict = {}
    original = tasks.build_data

    def spy(cfg):
        seen["dm"] = original(cfg)
        return seen["dm"]

    monkeypatch.setattr(tasks, "build_data", spy)
    return seen


def test_zero_shot_trains_on_sources_only_and_tests_the_target(tmp_path, run_entry, built) -> None:
    run_dir = tmp_path / "zero"
    run_entry(make_cfg(run_dir, *QUICK, "shot_ratio=zero", "dataset.target=city_b"))
    metrics = read_metrics(run_dir)
    assert list(metrics.test) == ["city_b"]
    assert metrics.run.mode == "zero"
    source = ckpt.load_checkpoint(metrics.stages["source"].best_checkpoint)
    assert source["stage_train"] == ["city_a", "city_c"]
    accessed = built["dm"].accessed
    assert ("city_b", "train") not in accessed and ("city_b", "val") not in accessed
    assert ("city_b", "test") in accessed


def test_few_shot_fine_tunes_on_the_share_and_reuses_the_cached_source(tmp_path, run_entry, built) -> None:
    first, second = tmp_path / "few5", tmp_path / "few10"
    cache = tmp_path / "cache"
    run_entry(make_cfg(first, *QUICK, "shot_ratio=few5", "dataset.target=city_b", f"transfer.cache_dir={cache}"))
    run_entry(make_cfg(second, *QUICK, "shot_ratio=few10", "dataset.target=city_b", f"transfer.cache_dir={cache}"))
    m1, m2 = read_metrics(first), read_metrics(second)
    assert m1.stages["source"].cache_hit is False and m2.stages["source"].cache_hit is True
    assert m1.stages["source"].cache == m2.stages["source"].cache
    target = ckpt.load_checkpoint(m1.stages["target"].best_checkpoint)
    assert target["stage_train"] == ["city_b"]
    share = built["dm"].by_name["city_b"]
    assert len(share.windows["train"]) == int(share.available["train"] * 0.10)
    assert list(m1.test) == ["city_b"]


def test_source_checkpoint_is_reused_and_checked(tmp_path, run_entry) -> None:
    zero = tmp_path / "zero"
    run_entry(make_cfg(zero, *QUICK, "shot_ratio=zero", "dataset.target=city_b", "transfer.source_cache=false"))
    source = read_metrics(zero).stages["source"].best_checkpoint
    few = tmp_path / "few"
    run_entry(make_cfg(few, *QUICK, "shot_ratio=few10", "dataset.target=city_b", f"source_checkpoint={source}"))
    assert read_metrics(few).stages["source"] == ReusedStage(reused=source)
    with pytest.raises(ckpt.CheckpointError, match="trained on the target 'city_a'"):
        run_entry(make_cfg(tmp_path / "bad", *QUICK, "shot_ratio=few10", "dataset.target=city_a",
                           f"source_checkpoint={source}"))
