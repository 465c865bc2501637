"""The exact allow-list of callables a config may name with ``_target_``.

Configs, command lines and the configs stored in checkpoints are data: the only code they may reach is a class
on this list. A name matches exactly (no prefix match, and no dotted path that merely resolves through an
import, such as ``torch.utils.cpp_extension.subprocess.run``), and the check runs before Hydra imports or calls
anything. The list holds:

- the project's classes that ``conf/`` names: models and their modules, adapters, readers, loss, schedule and
  loggers (``PROJECT_TARGETS``);
- every optimiser of ``torch.optim`` and every schedule of ``torch.optim.lr_scheduler``, under their public names;
- the Hydra launcher and sweeper plugins the project ships configs for (``HYDRA_PLUGIN_TARGETS``);
- what the user's own code adds with ``register_target``. Only code extends the list: nothing read from a file
  can, so a received YAML file or checkpoint cannot allow itself a target.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from types import ModuleType
from typing import Any, TypeVar

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vlm4st.errors import ConfigError

__all__ = ["HYDRA_PLUGIN_TARGETS", "PROJECT_TARGETS", "TORCH_TARGETS", "check_targets", "is_registered",
           "iter_targets", "join_key", "plain", "register_target", "registered_targets"]

#: The project's classes, spelled as ``conf/`` spells them.
PROJECT_TARGETS: frozenset[str] = frozenset({
    # model and its modules
    "vlm4st.models.VLM4ST",
    "vlm4st.models.stid.STID",
    "vlm4st.models.dix_attention.DiXAttention",
    "vlm4st.models.input_projection.InputProjection",
    "vlm4st.models.prompt_forge.PromptForge",
    "vlm4st.models.gated_fusion.AdaptiveGatedFusion",
    "vlm4st.models.format_transformer.DualPathFormatTransformer",
    "vlm4st.models.format_image.ImageProjector",
    "vlm4st.models.format_sequence.SequenceResampler",
    "vlm4st.models.vlm_module.VLMModule",
    "vlm4st.models.vlm_controls.AttentionControl",
    "vlm4st.models.vlm_controls.TransformerControl",
    "vlm4st.models.prompt_token.PromptToken",
    "vlm4st.models.prediction_head.PredictionHead",
    "vlm4st.models.step_readout.StepReadout",
    "vlm4st.models.cell_embedding.CellEmbedding",
    "vlm4st.models.window_norm.WindowNorm",
    # adapters
    "vlm4st.adapters.none.NoAdapter",
    "vlm4st.adapters.StandardLora",
    "vlm4st.adapters.MTLLora",
    "vlm4st.adapters.MoELora",
    "vlm4st.adapters.TaskAdaptiveLora",
    # readers
    "vlm4st.data.SyntheticCityReader",
    "vlm4st.data.SeriesReader",
    "vlm4st.data.WindowNpzReader",
    "vlm4st.data.UniSTJsonReader",
    # training
    "vlm4st.models.loss.ForecastLoss",
    "vlm4st.training.optim.WarmupCosine",
    # loggers
    "vlm4st.logging.base.NullLogger",
    "vlm4st.logging.tensorboard.TensorBoardLogger",
    "vlm4st.logging.wandb.WandbLogger",
})

#: Hydra's own launcher and sweeper, and the submitit launchers of ``conf/hydra/launcher``.
HYDRA_PLUGIN_TARGETS: frozenset[str] = frozenset({
    "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
    "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
})


def _public_subclasses(module: ModuleType, base: type) -> frozenset[str]:
    """``module.Name`` for every public class of ``module`` that derives from ``base`` (``base`` excluded)."""
    return frozenset(
        f"{module.__name__}.{name}" for name, obj in vars(module).items()
        if not name.startswith("_") and isinstance(obj, type) and issubclass(obj, base) and obj is not base
    )


#: ``torch.optim.AdamW``, ..., ``torch.optim.lr_scheduler.OneCycleLR``, ...: constructing one runs no code
#: beyond the optimiser or schedule itself.
TORCH_TARGETS: frozenset[str] = _public_subclasses(torch.optim, torch.optim.Optimizer) | _public_subclasses(
    torch.optim.lr_scheduler, torch.optim.lr_scheduler.LRScheduler
)

_BUILTIN = PROJECT_TARGETS | TORCH_TARGETS | HYDRA_PLUGIN_TARGETS
_user_targets: set[str] = set()
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")

T = TypeVar("T", type, str)


def register_target(target: T) -> T:
    """Allow ``target`` in configs: a class (use it as a decorator) or the dotted name of one (a class of another
    package, e.g. a Hydra sweeper plugin). Returns ``target`` unchanged.

        @register_target
        class MyReader: ...

    The name a config must use is ``<module>.<qualified name>`` of the class as defined, and the module holding
    the registration must be imported before the config is composed (by the script that starts the run).
    """
    if isinstance(target, type):
        name = f"{target.__module__}.{target.__qualname__}"
    elif isinstance(target, str) and _DOTTED.match(target):
        name = target
    else:
        raise TypeError(f"register_target: expected a class or a dotted class name, got {target!r}")
    _user_targets.add(name)
    return target


def is_registered(target: str) -> bool:
    """Whether ``target`` is exactly one of the registered names."""
    return target in _BUILTIN or target in _user_targets


def registered_targets() -> frozenset[str]:
    """Every name a config may use as ``_target_`` now (built-in and user-registered)."""
    return _BUILTIN | frozenset(_user_targets)


def join_key(path: str, key: object) -> str:
    """The dotted config key of ``key`` under ``path`` (``path`` empty: the root)."""
    return f"{path}.{key}" if path else str(key)


def plain(cfg: Any) -> Any:
    """``cfg`` as plain containers, resolved where it resolves (a node reached through an interpolation such as
    ``adapter: ${lora_type}`` is then looked into); as written when some value cannot be resolved here (e.g.
    ``${hydra:...}`` outside a run), where every node still stands literally somewhere in the tree."""
    if not isinstance(cfg, DictConfig | ListConfig):
        return cfg
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:
        return OmegaConf.to_container(cfg, resolve=False)


def iter_targets(cfg: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(key path, target)`` for every ``_target_`` in a config tree (a ``DictConfig`` or plain containers);
    a target left unresolved (``${...}``) is refused by ``check_targets`` like any unregistered name."""
    cfg = plain(cfg)
    if isinstance(cfg, dict):
        for key, value in cfg.items():
            sub = join_key(path, key)
            yield from ([(sub, value)] if key == "_target_" else iter_targets(value, sub))
    elif isinstance(cfg, list | tuple):
        for i, value in enumerate(cfg):
            yield from iter_targets(value, f"{path}[{i}]")


def check_targets(cfg: Any, path: str = "", source: str | None = None) -> None:
    """Raise ``ConfigError`` if any ``_target_`` in ``cfg`` is not exactly a registered name (``vlm4st.registry``).

    Nothing is imported or called: the names are compared as strings. ``source`` names where the config came from
    (e.g. ``checkpoint 'best.pt'``) in the message.
    """
    for key, target in iter_targets(cfg, path):
        if isinstance(target, str) and is_registered(target):
            continue
        where = f"{source}: stored config key" if source else "config key"
        close = difflib.get_close_matches(str(target), sorted(registered_targets()), n=1, cutoff=0.8)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(
            f"{where} '{key}': _target_ {target!r} is not a registered class{hint}; expected a class of "
            "vlm4st.registry (the classes conf/ names, torch.optim optimisers and schedules; add your own with "
            "vlm4st.registry.register_target)"
        )
