"""Every config Hydra composes for this project is checked before Hydra or the project acts on it.

Hydra itself calls code that a config names: the callbacks of ``hydra.callbacks`` and the launcher and sweeper
(``_target_``), the logging factories and handler classes of ``hydra.job_logging`` / ``hydra.hydra_logging``
(``()``, ``class``, ``ext://``), and the submitit launcher runs ``hydra.launcher.setup`` as shell lines. A YAML
file received from someone else (an ``experiment=`` preset, a launcher config) could use any of these before the
run's own ``instantiate`` is reached, so the check runs where Hydra composes: ``install_hydra_guard`` wraps Hydra's
config loader, and every composed config (a run, a multirun's base and each of its jobs, the compose API) passes
``check_composed`` first:

- every ``_target_`` anywhere, ``hydra`` included, is exactly a registered name (``vlm4st.registry``);
- logging configs use only the standard handler and formatter classes or registered factories, reference only
  ``ext://sys.stdout`` / ``ext://sys.stderr``, and write their files inside the run directory;
- ``hydra.launcher.setup`` (shell lines) is accepted only when given on the command line, where the person who
  runs it typed it.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vlm4st.errors import ConfigError, exit_on_user_error
from vlm4st.registry import check_targets, is_registered

__all__ = ["check_composed", "command_line_refusals", "install_hydra_guard"]

#: Classes a logging config may name with ``class`` (handlers, formatters).
LOGGING_CLASSES = frozenset({
    "logging.Formatter",
    "logging.StreamHandler",
    "logging.FileHandler",
    "logging.NullHandler",
    "logging.handlers.RotatingFileHandler",
    "logging.handlers.TimedRotatingFileHandler",
    "logging.handlers.WatchedFileHandler",
})
#: The only external objects a logging config may reference.
LOGGING_EXTERNALS = frozenset({"ext://sys.stdout", "ext://sys.stderr"})
#: A log file must be written inside the run directory.
LOG_FILE_PREFIXES = ("${hydra.runtime.output_dir}/", "${hydra:runtime.output_dir}/")
LOGGING_SECTIONS = ("hydra_logging", "job_logging")
SETUP_KEY = "hydra.launcher.setup"

_exit_on_refusal = False


def check_composed(cfg: DictConfig, overrides: list[str]) -> None:
    """Raise ``ConfigError`` naming the key when a composed config could make Hydra or the project run code the
    registry does not hold; ``overrides`` are the command-line overrides it was composed with."""
    check_targets(cfg)
    hydra = cfg.get("hydra")
    if not isinstance(hydra, DictConfig):
        return
    for section in LOGGING_SECTIONS:
        node = hydra.get(section)
        if node is not None:
            _check_logging(OmegaConf.to_container(node, resolve=False), f"hydra.{section}")
    launcher = hydra.get("launcher")
    setup = launcher.get("setup") if isinstance(launcher, DictConfig) else None
    typed = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    if setup and SETUP_KEY not in typed:
        raise ConfigError(
            f"config key '{SETUP_KEY}' holds shell lines ({list(setup)!r}) that come from a config file; expected "
            f"them on the command line only ({SETUP_KEY}=[...]), so that no received file runs commands"
        )


def _check_logging(node: Any, path: str) -> None:
    """Walk a ``logging.config.dictConfig`` tree (unresolved) for the keys through which it calls or imports."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            sub = f"{path}.{key}"
            if key == "()" and not (isinstance(value, str) and is_registered(value)):
                raise ConfigError(f"config key '{sub}': logging factory {value!r} is not a registered class; "
                                  "expected a class of vlm4st.registry")
            if key == "class" and value not in LOGGING_CLASSES and not is_registered(str(value)):
                raise ConfigError(f"config key '{sub}': logging class {value!r}; expected one of "
                                  f"{sorted(LOGGING_CLASSES)} or a registered class")
            if key == "filename" and not (str(value).startswith(LOG_FILE_PREFIXES) and ".." not in str(value)):
                raise ConfigError(f"config key '{sub}': log file {value!r} lies outside the run directory; "
                                  f"expected a path under {LOG_FILE_PREFIXES[0]}")
            _check_logging(value, sub)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_logging(value, f"{path}[{i}]")
    elif isinstance(node, str) and node.startswith("ext://") and node not in LOGGING_EXTERNALS:
        raise ConfigError(f"config key '{path}': {node!r} imports an object; expected one of "
                          f"{sorted(LOGGING_EXTERNALS)}")


def install_hydra_guard() -> None:
    """Wrap Hydra's config loader so that every composed config passes ``check_composed`` (idempotent)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    original: Callable[..., DictConfig] = ConfigLoaderImpl.load_configuration
    if getattr(original, "vlm4st_guarded", False):
        return

    @functools.wraps(original)
    def load_configuration(self: Any, config_name: str | None, overrides: list[str], *args: Any,
                           **kwargs: Any) -> DictConfig:
        cfg = original(self, config_name, overrides, *args, **kwargs)
        try:
            check_composed(cfg, list(overrides))
        except ConfigError as err:
            if _exit_on_refusal and os.environ.get("HYDRA_FULL_ERROR") != "1":
                exit_on_user_error(err)
            raise
        return cfg

    load_configuration.vlm4st_guarded = True  # type: ignore[attr-defined]
    ConfigLoaderImpl.load_configuration = load_configuration  # type: ignore[method-assign]


@contextlib.contextmanager
def command_line_refusals() -> Iterator[None]:
    """Inside: a refused config prints its one line and exits with the user-error status. Hydra's own error
    reporter, which composes the config, would print a traceback and exit 1 instead."""
    global _exit_on_refusal
    previous, _exit_on_refusal = _exit_on_refusal, True
    try:
        yield
    finally:
        _exit_on_refusal = previous
