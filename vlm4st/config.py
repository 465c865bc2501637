"""Config plumbing: OmegaConf resolvers and the one guarded ``instantiate`` every build goes through.

Hydra config groups are the registry of swappable parts; each node names its class with ``_target_``.
``instantiate`` refuses targets outside an allow-list so a config file can never import arbitrary code.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import hydra.utils
from hydra.errors import InstantiationException
from omegaconf import DictConfig, ListConfig, OmegaConf

from vlm4st import REPO_ROOT
from vlm4st.data.errors import DataError
from vlm4st.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

ALLOWED_TARGET_PREFIXES: tuple[str, ...] = ("vlm4st.", "torch.")

__all__ = ["ALLOWED_TARGET_PREFIXES", "ConfigError", "check_targets", "compose", "instantiate", "iter_targets",
           "register_resolvers"]


def register_resolvers() -> None:
    """Register the project's OmegaConf resolvers (idempotent)."""
    resolvers = {
        "repo_root": lambda: str(REPO_ROOT),
        # "a/b/../c" -> "a/c": a path reached through ".." is stored in one spelling, so checkpoints and source-model
        # caches of the same file agree across checkouts of the repository
        "normpath": lambda path: os.path.normpath(path),
        "len": lambda node: len(node),
        "max": lambda *values: max(values),
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def iter_targets(cfg: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Yield ``(key path, target)`` for every ``_target_`` in a config tree."""
    if isinstance(cfg, DictConfig | dict):
        items = cfg.items_ex(resolve=False) if isinstance(cfg, DictConfig) else cfg.items()
        for key, value in items:
            sub = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                yield sub, str(value)
            else:
                yield from iter_targets(value, sub)
    elif isinstance(cfg, ListConfig | list | tuple):
        for i, value in enumerate(cfg):
            yield from iter_targets(value, f"{path}[{i}]")


def check_targets(cfg: Any, path: str = "") -> None:
    """Raise ``ConfigError`` if any ``_target_`` in ``cfg`` lies outside the allow-list."""
    for key, target in iter_targets(cfg, path):
        if not target.startswith(ALLOWED_TARGET_PREFIXES):
            raise ConfigError(
                f"config key '{key}': _target_ '{target}' is not allowed; "
                f"expected a class or function under one of {list(ALLOWED_TARGET_PREFIXES)}"
            )


def instantiate(cfg: Any, *args: Any, path: str = "", **kwargs: Any) -> Any:
    """Instantiate a config node after checking every nested ``_target_`` against the allow-list.

    ``path`` is the node's key in the full config and only makes error messages precise.
    """
    if cfg is None:
        raise ConfigError(f"config key '{path or '<root>'}' is null; expected a node with a _target_")
    check_targets(cfg, path)
    check_targets(kwargs, path)
    try:
        return hydra.utils.instantiate(cfg, *args, **kwargs)
    except InstantiationException as err:
        raise _user_error_behind(err) from None


def _user_error_behind(err: InstantiationException) -> BaseException:
    """The project's own error (a bad config value, data file or checkpoint) that Hydra wrapped while calling a
    target, so the command line prints its one line; ``err`` itself when the cause is anything else (a bug)."""
    cause = err.__cause__
    while cause is not None:
        if isinstance(cause, ConfigError | DataError | CheckpointError):
            return cause
        cause = cause.__cause__
    return err


def compose(overrides: list[str] | None = None, output_dir: str | None = None) -> DictConfig:
    """Compose the project config outside a Hydra app (tests, notebooks, scripts).

    ``output_dir`` replaces ``paths.output_dir`` (inside an app it is Hydra's run directory).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from vlm4st import CONF_DIR

    register_resolvers()
    overrides = list(overrides or [])
    if output_dir is not None:
        overrides.append(f"paths.output_dir={output_dir}")
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)
