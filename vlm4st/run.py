"""Hydra entry point: compose the config, then train / test / predict / summarise the data.

    python -m vlm4st.run                                  # train + test on the default synthetic cities
    python -m vlm4st.run lora_type=moe ablation=no_prompt
    python -m vlm4st.run -m ablation=full,no_dix,no_prompt,no_seq,no_visual
    python -m vlm4st.run task=test checkpoint=outputs/.../checkpoints/best.pt
    python -m vlm4st.run task=data dataset=multi          # build the data, print its summary, exit

Everything a run needs is in its config (`conf/`); everything it produces lands in its run directory.
"""

from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

from vlm4st import CONF_DIR
from vlm4st.config import ConfigError, prepare_hydra
from vlm4st.config_guard import command_line_refusals
from vlm4st.data.errors import DataError
from vlm4st.errors import CheckpointError, exit_on_user_error

log = logging.getLogger("vlm4st")

#: Bad input (a config value, a data file, a checkpoint): one line on stderr and exit status ``USER_ERROR_EXIT``,
#: no traceback (``HYDRA_FULL_ERROR=1`` shows it). Anything else is a bug and keeps its traceback.
USER_ERRORS = (ConfigError, DataError, CheckpointError)

prepare_hydra()


def run(cfg: DictConfig) -> float | None:
    """Dispatch ``cfg.task``; returns the selection objective (best validation loss) when there is one."""
    from vlm4st.training import tasks

    handlers = {"train": tasks.train, "test": tasks.test, "predict": tasks.predict, "data": tasks.data_summary}
    if cfg.task not in handlers:
        raise ConfigError(f"config key 'task': got '{cfg.task}', expected one of {sorted(handlers)}")
    return handlers[cfg.task](cfg)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """The Hydra app: runs one composed config (the command line enters through ``cli``)."""
    from vlm4st.training.tasks import RunInterrupted

    try:
        return run(cfg)
    except RunInterrupted as stop:
        log.warning("%s", stop)
        sys.exit(stop.exit_code)
    except USER_ERRORS as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        exit_on_user_error(err)


def cli() -> None:
    """Console entry point (`python -m vlm4st.run` / `vlm4st-run`): a config refused while Hydra composes it (a
    foreign ``_target_`` in a file or on the command line) ends in the same one line and exit status as every
    other bad input."""
    with command_line_refusals():
        main()


if __name__ == "__main__":
    cli()
