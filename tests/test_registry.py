"""The allow-list of ``_target_`` names: exactly the classes the configs use, matched exactly, extended only by code."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import hydra.utils
import pytest
import yaml
from omegaconf import OmegaConf

from vlm4st import CONF_DIR, registry
from vlm4st.config import ConfigError, instantiate
from vlm4st.registry import (
    HYDRA_PLUGIN_TARGETS,
    PROJECT_TARGETS,
    TORCH_TARGETS,
    check_targets,
    is_registered,
    register_target,
)


def conf_targets() -> Iterator[tuple[Path, str]]:
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        for _key, target in registry.iter_targets(yaml.safe_load(path.read_text()) or {}):
            if target != "???":  # a base file whose target each option sets
                yield path, target


def _resolve(name: str) -> object:
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def test_every_target_in_conf_is_registered() -> None:
    unregistered = [(str(p.relative_to(CONF_DIR)), t) for p, t in conf_targets() if not is_registered(t)]
    assert not unregistered


def test_the_project_list_holds_exactly_what_conf_names() -> None:
    named = {t for _, t in conf_targets()} - TORCH_TARGETS - HYDRA_PLUGIN_TARGETS
    assert named == PROJECT_TARGETS  # every reader too: conf/dataset/_base/reader/ holds each one's defaults


@pytest.mark.parametrize("name", sorted(PROJECT_TARGETS | HYDRA_PLUGIN_TARGETS | TORCH_TARGETS))
def test_every_registered_name_is_a_class(name: str) -> None:
    assert isinstance(_resolve(name), type), f"{name} is not a class: a function target could run anything"


def test_torch_optimisers_and_schedules_are_registered_by_their_public_names() -> None:
    for name in ("torch.optim.AdamW", "torch.optim.SGD", "torch.optim.lr_scheduler.OneCycleLR",
                 "torch.optim.lr_scheduler.ReduceLROnPlateau"):
        assert is_registered(name)
    assert not is_registered("torch.optim.Optimizer")  # the base class is no optimiser
    assert not is_registered("torch.optim.adamw.AdamW")  # one spelling per class


#: Names that resolve to callables which run commands, load pickles or write files. A prefix test (anything under
#: ``torch.`` or ``vlm4st.``) let the first five through.
FOREIGN = [
    "torch.utils.cpp_extension.subprocess.run",  # a module path that merely imports subprocess
    "torch.load",
    "torch.save",
    "torch.hub.load",
    "vlm4st.training.checkpoint.save_checkpoint",
    "vlm4st.models",  # a module, not a class
    "builtins.exec",
    "os.system",
    "subprocess.run",
    "vlm4st.models.VLM4ST.__init__",
    "VLM4ST",
    "${oc.env:TARGET}",
]


@pytest.mark.parametrize("target", FOREIGN)
def test_foreign_targets_are_refused_by_name_before_anything_is_imported(target: str, monkeypatch) -> None:
    def no_import(*args, **kwargs):
        raise AssertionError("the check imported or called something")

    monkeypatch.setattr(hydra.utils, "instantiate", no_import)
    monkeypatch.setattr(importlib, "import_module", no_import)
    node = OmegaConf.create({"model": {"head": {"_target_": target}}})
    with pytest.raises(ConfigError, match=r"config key 'model\.head\._target_'.*not a registered class") as err:
        instantiate(node.model, path="model")
    assert repr(target) in str(err.value)


@pytest.mark.parametrize("value", [3, ["os.system"], {"a": 1}, None])
def test_a_target_that_is_no_string_is_refused(value) -> None:
    with pytest.raises(ConfigError, match=r"'x\._target_'"):
        check_targets({"x": {"_target_": value}})


def test_targets_in_lists_and_nested_args_are_checked() -> None:
    cfg = {"a": [{"b": {"_args_": [{"_target_": "os.system"}]}}]}
    with pytest.raises(ConfigError, match=r"'a\[0\]\.b\._args_\[0\]\._target_'"):
        check_targets(cfg)


def test_a_near_miss_is_answered_with_the_registered_spelling() -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'vlm4st\.models\.stid\.STID'"):
        check_targets({"model": {"_target_": "vlm4st.models.stid.STDI"}})


def test_a_stored_config_names_its_source() -> None:
    with pytest.raises(ConfigError, match=r"^checkpoint 'c\.pt': stored config key 'model\._target_'"):
        check_targets({"model": {"_target_": "os.system"}}, source="checkpoint 'c.pt'")


@pytest.fixture
def user_registry(monkeypatch) -> None:
    """A fresh set of user registrations, restored after the test."""
    monkeypatch.setattr(registry, "_user_targets", set())


class MyReader:
    """Stands for a user's own class."""

    def __init__(self, value: int) -> None:
        self.value = value


def test_user_classes_are_registered_by_decorator_or_name(user_registry) -> None:
    name = f"{__name__}.MyReader"
    assert not is_registered(name)
    assert register_target(MyReader) is MyReader
    assert is_registered(name)
    assert instantiate(OmegaConf.create({"_target_": name, "value": 3})).value == 3
    register_target("some_plugin.sweeper.Sweeper")
    assert is_registered("some_plugin.sweeper.Sweeper")
    assert not is_registered(f"{__name__}.MyOtherReader")


@pytest.mark.parametrize("bad", ["os system", "", "nodots", 3, print])
def test_register_target_takes_only_classes_and_dotted_names(bad, user_registry) -> None:
    with pytest.raises(TypeError, match="expected a class or a dotted class name"):
        register_target(bad)
