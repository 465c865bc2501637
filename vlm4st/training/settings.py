"""``TrainerSettings``: the ``trainer`` config node resolved into one checked record at the edge of a run.

The training loop, the evaluation and the tasks read these fields instead of the config node, so a wrong value
stops the run before any data is read, with the key and the expected value in the message, and the code that
uses a setting never converts or re-checks it. The optimiser, schedule and loss stay config nodes: they are
instantiated through the allow-list where they are used.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from vlm4st import checks
from vlm4st.config import ConfigError
from vlm4st.logging.progress import ProgressConfig


def _optional_positive_number(value: object, key: str, null_means: str) -> float | None:
    if value is None:
        return None
    try:
        return checks.positive_number(value, key)
    except ConfigError:
        raise ConfigError(f"{key}: expected a number > 0 or null ({null_means}), got {value!r}") from None


@dataclass(frozen=True)
class TrainerSettings:
    """What the loop needs from ``trainer``; ``conf/trainer/default.yaml`` documents each key."""

    epochs: int
    lr: float  # the optimiser's learning rate of a full-data or source stage
    fewshot_epochs: int  # a transfer target's stage
    fewshot_lr: float
    batch_size: int
    eval_batch_size: int
    drop_last: bool
    max_steps: int | None
    time_budget_min: float | None
    interrupt_after_steps: int | None
    grad_clip: float  # 0: no clipping
    unknown_task_rate: float
    checkpoint_every_steps: int | None  # null: last.pt only at epoch ends
    log_every_steps: int
    figures: bool  # the run's figures after the test (the metrics do not depend on it)
    figure_windows: int
    compile: bool
    grad_checkpointing: bool
    save_adapters_only: bool
    progress: ProgressConfig  # as the main process reports; ``progress_for`` gives another rank's
    optimizer: DictConfig
    schedule: DictConfig
    loss: DictConfig

    @property
    def budget_s(self) -> float | None:
        """The training-time budget in seconds (None: none)."""
        return None if self.time_budget_min is None else self.time_budget_min * 60.0

    def progress_for(self, is_main: bool) -> ProgressConfig:
        """Only the main process of a distributed job reports progress."""
        return ProgressConfig(self.progress.enabled and is_main, self.progress.log_every_s)

    @classmethod
    def from_config(cls, node: DictConfig) -> TrainerSettings:
        """Check every key of the ``trainer`` node; ``ConfigError`` names the first wrong one."""
        every = node.checkpoint_every_steps
        return cls(
            epochs=checks.positive_int(node.epochs, "trainer.epochs"),
            lr=checks.positive_number(node.optimizer.lr, "trainer.optimizer.lr"),
            fewshot_epochs=checks.positive_int(node.fewshot.epochs, "trainer.fewshot.epochs"),
            fewshot_lr=checks.positive_number(node.fewshot.lr, "trainer.fewshot.lr"),
            batch_size=checks.positive_int(node.batch_size, "trainer.batch_size"),
            eval_batch_size=checks.positive_int(node.eval_batch_size, "trainer.eval_batch_size"),
            drop_last=checks.flag(node.drop_last, "trainer.drop_last"),
            max_steps=checks.optional_positive_int(node.max_steps, "trainer.max_steps", "run all epochs"),
            time_budget_min=_optional_positive_number(node.time_budget_min, "trainer.time_budget_min", "no budget"),
            interrupt_after_steps=checks.optional_positive_int(
                node.interrupt_after_steps, "trainer.interrupt_after_steps", "never"
            ),
            grad_clip=checks.non_negative_number(node.grad_clip, "trainer.grad_clip"),
            unknown_task_rate=checks.probability(node.unknown_task_rate, "trainer.unknown_task_rate"),
            checkpoint_every_steps=None if every == 0 else checks.optional_positive_int(
                every, "trainer.checkpoint_every_steps", "only at epoch ends"
            ),
            log_every_steps=checks.positive_int(node.log_every_steps, "trainer.log_every_steps"),
            figures=checks.flag(node.figures, "trainer.figures"),
            figure_windows=checks.positive_int(node.figure_windows, "trainer.figure_windows"),
            compile=checks.flag(node.compile, "trainer.compile"),
            grad_checkpointing=checks.flag(node.grad_checkpointing, "trainer.grad_checkpointing"),
            save_adapters_only=checks.flag(node.save_adapters_only, "trainer.save_adapters_only"),
            progress=ProgressConfig.from_trainer(node),
            optimizer=node.optimizer,
            schedule=node.schedule,
            loss=node.loss,
        )


#: ``transfer.init``: the target stage starts from the source stage, or from the weights as built (the control).
TRANSFER_INITS = ("source", "scratch")


@dataclass(frozen=True)
class TransferSettings:
    """The ``transfer`` node and ``source_checkpoint``: where a transfer run's source stage comes from and what its
    target stage starts from (``conf/config.yaml`` documents each key)."""

    init: str  # source | scratch
    zero_shot_blend: bool
    source_cache: bool
    cache_dir: str
    source_checkpoint: str | None

    @classmethod
    def from_config(cls, cfg: DictConfig) -> TransferSettings:
        """From the run's root config (``transfer`` and ``source_checkpoint``)."""
        node = cfg.transfer
        given = cfg.source_checkpoint
        return cls(
            init=checks.choice(node.init, TRANSFER_INITS, "transfer.init"),
            zero_shot_blend=checks.flag(node.zero_shot_blend, "transfer.zero_shot_blend"),
            source_cache=checks.flag(node.source_cache, "transfer.source_cache"),
            cache_dir=str(node.cache_dir),
            source_checkpoint=str(given) if given else None,
        )
