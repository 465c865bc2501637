"""Config plumbing: OmegaConf resolvers and the one guarded ``instantiate`` every build goes through.

Hydra config groups are the registry of swappable parts; each node names its class with ``_target_``.
``instantiate`` accepts only the exact names of ``vlm4st.registry``, so a config file can never import or call
other code.
"""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from typing import Any

import hydra.utils
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from vlm4st import REPO_ROOT
from vlm4st.config_guard import install_hydra_guard
from vlm4st.data.errors import DataError
from vlm4st.errors import CheckpointError, ConfigError
from vlm4st.registry import check_targets, join_key, plain

log = logging.getLogger(__name__)

__all__ = ["ConfigError", "compose", "instantiate", "prepare_hydra"]


def prepare_hydra() -> None:
    """What every composition of the project's config needs (idempotent): its OmegaConf resolvers, the check of
    every composed config, and silence about the submitit launcher files that keep the plugin's option names and
    are validated against its schema."""
    register_resolvers()
    install_hydra_guard()
    warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema with the same name")


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


def instantiate(cfg: Any, *args: Any, path: str = "", **kwargs: Any) -> Any:
    """Instantiate a config node after checking every nested ``_target_`` against the allow-list.

    ``path`` is the node's key in the full config and only makes error messages precise.
    """
    if cfg is None:
        raise ConfigError(f"config key '{path or '<root>'}' is null; expected a node with a _target_")
    check_targets(cfg, path)
    check_targets(kwargs, path)
    check_arguments(cfg, path)
    check_required(cfg, path, len(args), set(kwargs))
    try:
        return hydra.utils.instantiate(cfg, *args, **kwargs)
    except InstantiationException as err:
        raise _user_error_behind(err) from None


def check_arguments(cfg: Any, path: str = "") -> None:
    """Raise ``ConfigError`` naming the key when a node gives its (registered) class an argument it does not take,
    such as a key typed with ``+`` that the class has no parameter for; Hydra would raise a ``TypeError``."""
    node = plain(cfg)
    if isinstance(node, list):
        for i, item in enumerate(node):
            check_arguments(item, f"{path}[{i}]")
        return
    if not isinstance(node, dict):
        return
    target = node.get("_target_")
    names = _arguments(hydra.utils.get_class(target)) if isinstance(target, str) else None
    for key in node if names is not None else ():
        if isinstance(key, str) and not key.startswith("_") and key not in names:
            raise ConfigError(f"config key '{join_key(path, key)}': {target} takes no argument '{key}'; expected one "
                              f"of {sorted(names)}")
    for key, value in node.items():
        if key != "_target_":
            check_arguments(value, join_key(path, key))


def check_required(cfg: Any, path: str, n_positional: int, given: set[str]) -> None:
    """Raise ``ConfigError`` naming the key when a node leaves out an argument its class requires (one with no
    default: its default lives in a config file, such as a reader's in ``conf/dataset/_base/reader/``) and the
    caller does not pass it either; Hydra would raise a ``TypeError`` from inside the call."""
    node = plain(cfg)
    if not isinstance(node, dict) or not isinstance(node.get("_target_"), str) or node.get("_partial_"):
        return
    target = node["_target_"]
    init = hydra.utils.get_class(target).__init__
    params = list(inspect.signature(init).parameters.values())[1 + n_positional :]  # without self and the args
    missing = [
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.default is p.empty
        and p.name not in node
        and p.name not in given
    ]
    if missing:
        raise ConfigError(f"config key '{join_key(path, missing[0])}' is missing: {target} needs it (a value of "
                          f"type {_annotation(params, missing[0])}); missing in all: {missing}")


def _annotation(params: list[inspect.Parameter], name: str) -> str:
    (param,) = [p for p in params if p.name == name]
    return param.annotation if isinstance(param.annotation, str) else getattr(param.annotation, "__name__", "any")


def _arguments(cls: type) -> set[str] | None:
    """The keyword arguments ``cls(...)`` takes, following ``**kwargs`` handed up the class hierarchy; None when
    it takes any."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = list(inspect.signature(init).parameters.values())[1:]  # without self
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if all(p.kind is not p.VAR_KEYWORD for p in params):
            return names
    return None


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

    prepare_hydra()
    overrides = list(overrides or [])
    if output_dir is not None:
        overrides.append(f"paths.output_dir={output_dir}")
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)
