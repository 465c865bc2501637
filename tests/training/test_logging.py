"""TensorBoard event files and W&B offline files hold the scalar tags and images of a run."""

from __future__ import annotations

import pytest

from tests.runs import make_cfg
from vlm4st.config import compose, instantiate
from vlm4st.errors import ConfigError
from vlm4st.logging.progress import ProgressConfig

QUICK = ["trainer.epochs=1", "trainer.max_steps=4", "trainer.log_every_steps=1", "trainer.schedule.warmup_epochs=0",
         "trainer.figures=true"]
SCALARS = {"train/loss", "train/mse", "train/mae", "train/lr", "val/loss", "val/city_a/rmse", "val/city_a/mae",
           "val/city_a/rmse_norm", "val/city_a/mae_norm"}
IMAGES = {"val/city_a/gates", "val/city_a/forecast",  # at validation
          "figures/curves", "figures/forecast_city_a", "figures/gates_city_a"}  # the run's figures, at the end


def test_tensorboard_gets_scalars_and_images(tmp_path, run_entry) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "tb"
    run_entry(make_cfg(run_dir, *QUICK, "logger=tensorboard"))
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert set(tags["scalars"]) >= SCALARS, sorted(set(SCALARS) - set(tags["scalars"]))
    assert set(tags["images"]) >= IMAGES, sorted(set(IMAGES) - set(tags["images"]))
    assert "test/city_a/rmse" in tags["scalars"]
    for name in ("curves", "forecast_city_a", "forecast_city_b", "gates_city_c"):  # the same images as files
        assert (run_dir / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_without_figures_writes_none_and_still_tests(tmp_path, run_entry) -> None:
    from tests.runs import read_metrics

    run_dir = tmp_path / "plain"
    run_entry(make_cfg(run_dir, *QUICK[:-1], "trainer.figures=false"))
    assert not (run_dir / "figures").exists()  # the logger tests see them drawn with trainer.figures=true
    assert set(read_metrics(run_dir).test) == {"city_a", "city_b", "city_c"}


def test_wandb_offline_run_gets_the_same_scalars_and_images(tmp_path, run_entry, monkeypatch) -> None:
    pytest.importorskip("wandb")
    from tests.training.wandb_records import history_keys_and_config, wait_until_closed

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "wb"
    run_entry(make_cfg(run_dir, *QUICK, "logger=wandb", "logger.group=tests"))
    files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, f"expected one offline run file, found {files}"
    wait_until_closed(files[0])
    history_keys, config_seen = history_keys_and_config(files[0])
    assert history_keys >= SCALARS, sorted(SCALARS - history_keys)
    images = {k.removesuffix("/_type") for k in history_keys if k.endswith("/_type")}  # media are nested records
    assert images >= IMAGES, sorted(IMAGES - images)
    assert config_seen
    media = list((run_dir / "wandb").glob("offline-run-*/files/media/images/**/*.png"))
    assert media, "image files are written next to the offline run"


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["logger=wandb", "logger.mode=sometimes"], "logger.mode"),
        (["logger=wandb", "logger.images_every_epochs=-1"], "logger.images_every_epochs"),
        (["logger=tensorboard", "logger.images_every_epochs=1.5"], "logger.images_every_epochs"),
    ],
)
def test_bad_logger_value_is_a_config_error_naming_the_key(tmp_path, overrides: list[str], key: str) -> None:
    cfg = compose(overrides, output_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + ": expected"):
        instantiate(cfg.logger, path="logger")


@pytest.mark.parametrize(("override", "key"), [("trainer.progress=sometimes", "trainer.progress"),
                                               ("trainer.progress_log_every_s=0", "trainer.progress_log_every_s")])
def test_bad_progress_value_is_a_config_error_naming_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + ": expected"):
        ProgressConfig.from_trainer(compose([override]).trainer)
