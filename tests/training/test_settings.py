"""The ``trainer`` node is resolved into ``TrainerSettings`` once, at the edge: every key checked, a wrong value
refused with its key and what was expected, before any data is read."""

from __future__ import annotations

import pytest

from tests.runs import FAST, assert_one_line_error, run_cli
from vlm4st.config import ConfigError, compose
from vlm4st.training.settings import TrainerSettings


def settings(*overrides: str) -> TrainerSettings:
    return TrainerSettings.from_config(compose(list(overrides)).trainer)


def test_the_default_trainer_resolves_to_what_its_file_says() -> None:
    s = settings()
    assert (s.epochs, s.batch_size, s.eval_batch_size, s.drop_last) == (8, 32, 128, False)
    assert s.max_steps is None and s.time_budget_min is None and s.budget_s is None
    assert s.checkpoint_every_steps == 200 and s.log_every_steps == 10 and s.grad_clip == 1.0
    assert s.progress.enabled and not s.progress_for(is_main=False).enabled
    assert s.optimizer.lr == 2e-3 and s.loss._target_.endswith("ForecastLoss")


def test_budget_and_checkpoint_spacing() -> None:
    assert settings("trainer.time_budget_min=2.5").budget_s == 150.0
    assert settings("trainer.checkpoint_every_steps=0").checkpoint_every_steps is None
    assert settings("trainer.checkpoint_every_steps=null").checkpoint_every_steps is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.epochs=0", r"trainer\.epochs: expected a positive integer, got 0"),
        ("trainer.batch_size=2.5", r"trainer\.batch_size: expected a positive integer, got 2\.5"),
        ("trainer.drop_last=maybe", r"trainer\.drop_last: expected true or false, got 'maybe'"),
        ("trainer.max_steps=0", r"trainer\.max_steps: expected a positive integer or null"),
        ("trainer.time_budget_min=-1", r"trainer\.time_budget_min: expected a number > 0 or null \(no budget\)"),
        ("trainer.grad_clip=-0.5", r"trainer\.grad_clip: expected a number >= 0, got -0\.5"),
        ("trainer.unknown_task_rate=1.0", r"trainer\.unknown_task_rate: expected a number in \[0, 1\)"),
        ("trainer.log_every_steps=0", r"trainer\.log_every_steps: expected a positive integer, got 0"),
        ("trainer.checkpoint_every_steps=-5", r"trainer\.checkpoint_every_steps: expected a positive integer"),
        ("trainer.compile=yes", r"trainer\.compile: expected true or false, got 'yes'"),
    ],
)
def test_a_wrong_value_names_its_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings(override)


def test_the_command_line_refuses_a_wrong_trainer_value_before_building_anything(tmp_path) -> None:
    proc = run_cli(*FAST, "trainer.log_every_steps=0", f"hydra.run.dir={tmp_path}/run")
    assert_one_line_error(proc, "trainer.log_every_steps")
    assert not (tmp_path / "run" / "checkpoints").exists()
