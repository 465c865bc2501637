"""The stage plan of a training run: which stages train, on what, from which weights, and what the test treats
as an unseen dataset.

- full data (``shot_ratio=full``): one stage, ``main``, trains and validates on every dataset.
- few-shot (a ratio below 1 with ``dataset.target``): ``source`` on every other dataset, then ``target`` on the
  target's share, starting from the source stage's best weights. With ``transfer.init: scratch`` (the control)
  there is no source stage: ``target`` alone trains the share from the weights as built.
- zero-shot (ratio 0): ``source`` only; the test evaluates the target with the unknown-task id.
The source stage is either trained here, trained in (or reused from) the source-model cache
(``transfer.source_cache``), or replaced by a given ``source_checkpoint``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from vlm4st.data.module import DataModule
from vlm4st.errors import ConfigError
from vlm4st.training.settings import TrainerSettings, TransferSettings

log = logging.getLogger(__name__)

@dataclass
class Stage:
    """One training stage: which datasets train and validate, for how long, at what learning rate.

    ``start`` says where its weights come from: ``"model"`` (as built), ``"previous"`` (the best checkpoint of the
    stage before it). ``reuse`` names a checkpoint that replaces training (the stage only loads it);
    ``cached`` trains in the source-model cache entry, reusing it when another run already trained it.
    """

    name: str
    train: list[str]
    val: list[str]
    epochs: int
    lr: float
    checkpoint_dir: Path
    start: str = "model"
    reuse: Path | None = None
    cached: bool = False


@dataclass
class Plan:
    """The stages in order and the datasets the test evaluates with the unknown-task id (never trained on)."""

    stages: list[Stage]
    unseen: list[str] = field(default_factory=list)


def plan_stages(trainer: TrainerSettings, transfer: TransferSettings, dm: DataModule, checkpoint_dir: Path) -> Plan:
    """The run's stages from its settings and data mode (``full``, ``few`` or ``zero``)."""
    if dm.mode == "full":
        main = Stage("main", dm.train_names(), dm.eval_names("val"), trainer.epochs, trainer.lr, checkpoint_dir)
        return Plan([main])
    target = Stage("target", [str(dm.target)], [str(dm.target)], trainer.fewshot_epochs, trainer.fewshot_lr,
                   checkpoint_dir / "target", start="previous")
    if transfer.init == "scratch":
        if dm.mode == "zero":
            raise ConfigError("transfer.init=scratch with shot_ratio=zero: a zero-shot target has no share to train "
                              "from scratch; expected transfer.init=source, or a few-shot ratio (few5, few10)")
        target.start = "model"
        if transfer.source_checkpoint:
            log.info("transfer.init=scratch: source_checkpoint %s is not loaded (the control trains from scratch)",
                     transfer.source_checkpoint)
        return Plan([target])
    sources = [n for n in dm.names if n != dm.target]
    source = Stage("source", sources, sources, trainer.epochs, trainer.lr, checkpoint_dir / "source")
    if transfer.source_checkpoint:
        source.reuse = Path(transfer.source_checkpoint)
    elif transfer.source_cache:
        source.cached = True
    if dm.mode == "zero":
        return Plan([source], unseen=[str(dm.target)])
    return Plan([source, target])
