"""The ``lora_type`` config group builds the adapters through the guarded instantiate."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from vlm4st import CONF_DIR
from vlm4st.adapters import DEFAULT_TARGETS, WIDE_TARGETS, parameter_report
from vlm4st.config import compose, instantiate
from vlm4st.errors import ConfigError

from .tiny import CLASSES, ROUTED, TYPES

GATE_HIDDEN = {"moe": 64, "mtl": 64, "task_adaptive": 32}


@pytest.mark.parametrize("kind", TYPES)
def test_lora_type_node_builds_the_adapter_inside_the_tiny_vlm(kind: str, tmp_path) -> None:
    cfg = compose([f"lora_type={kind}", "model=tiny", "dataset=synthetic"], output_dir=str(tmp_path))
    vlm = instantiate(cfg.model.vlm, path="model.vlm")
    assert type(vlm.adapter) is CLASSES[kind]
    described = vlm.adapter.describe()
    assert described | {"rank": 16, "alpha": 32, "dropout": 0.0, "init": "reference"} == described
    assert described["targets"] == DEFAULT_TARGETS
    if kind in ROUTED:
        assert described["num_tasks"] == len(cfg.dataset.sources)
        assert (described["route"], described["num_experts"]) == ("task", 4)
        if kind == "mtl":  # mtl selects per-task rows by id: no task embedding, no width to describe
            assert "task_dim" not in described
        else:
            assert described["task_dim"] == 32
        assert described["gate_hidden"] == GATE_HIDDEN[kind]
        assert 0.0 < described["task_dropout"] < 1.0
    # tiny preset: ViT depth 2, BERT 4 layers with fusion from layer 2 -> 6 + 12 + 6 q/k/v linears
    assert sum(parameter_report(vlm).adapted_linears.values()) == 24


def test_the_documented_wide_pattern_is_the_code_constant() -> None:
    text = (CONF_DIR / "lora_type" / "_base" / "lora.yaml").read_text()
    assert f"'{WIDE_TARGETS}'" in text
    for kind in TYPES:
        assert compose([f"lora_type={kind}"]).lora_type.targets == DEFAULT_TARGETS


def test_routed_types_share_one_base_and_differ_only_where_their_files_say() -> None:
    """Every LoRA type composes from ``_base/lora.yaml`` (rank, alpha, dropout, init, targets written once); moe, mtl
    and task_adaptive also from ``_base/routed.yaml``: the same shared keys, their own class and gate width, and a
    task embedding width only for the types that build one."""
    lora = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "lora_type" / "_base" / "lora.yaml"))
    assert set(lora) == {"rank", "alpha", "dropout", "init", "targets"}
    for kind in TYPES:
        own = OmegaConf.load(CONF_DIR / "lora_type" / f"{kind}.yaml")
        assert not set(own) & set(lora), kind  # no type file repeats a shared default
        node = OmegaConf.to_container(compose([f"lora_type={kind}"]).lora_type)
        assert {k: node[k] for k in lora} == lora, kind
    base = OmegaConf.load(CONF_DIR / "lora_type" / "_base" / "routed.yaml")
    composed = {kind: compose([f"lora_type={kind}"]).lora_type for kind in ROUTED}
    for kind, node in composed.items():
        assert node._target_.endswith(CLASSES[kind].__name__)
        assert ("task_dim" in node) == (kind != "mtl")
        skip = ("_target_", "gate_hidden", "defaults")
        shared = {k: v for k, v in OmegaConf.to_container(base).items() if k not in skip}
        assert {k: OmegaConf.to_container(node)[k] for k in shared} == shared
    assert {kind: node.gate_hidden for kind, node in composed.items()} == GATE_HIDDEN


@pytest.mark.parametrize("kind", ["standard", "moe"])
def test_adapter_is_injected_into_the_vlm_only(kind: str, tmp_path) -> None:
    """With the backbone frozen (``model.vlm.freeze=true``) only VLM backbone weights freeze; every other module and
    every adapter tensor trains."""
    cfg = compose([f"lora_type={kind}", "model=tiny", "dataset=synthetic", "model.vlm.freeze=true"],
                  output_dir=str(tmp_path))
    model = instantiate(cfg.model, path="model")
    adapter_names = {f"vlm.{n}" for n, _ in model.vlm.adapter.adapter_parameters(model.vlm)}
    for name, param in model.named_parameters():
        assert param.requires_grad == (name in adapter_names or not name.startswith("vlm.")), name
    counts = model.get_trainable_parameters()
    assert counts.adapter.trainable == parameter_report(model.vlm).total > 0
    x = torch.rand(2, cfg.dataset.t_in, 12, 12) * 2 - 1
    assert model(x, None, torch.tensor([0, 2])).shape[:2] == (2, cfg.dataset.t_out)


#: (overrides, the key the message must name): each a value a user can type wrong on the command line.
BAD_VALUES = [
    (["lora_type=standard", "lora_type.rank=0"], "lora_type.rank"),
    (["lora_type=standard", "lora_type.rank=65"], "lora_type.rank"),  # wider than the tiny model's 64
    (["lora_type=mtl", "lora_type.rank=-1"], "lora_type.rank"),
    (["lora_type=standard", "lora_type.alpha=0"], "lora_type.alpha"),
    (["lora_type=standard", "lora_type.dropout=1.0"], "lora_type.dropout"),
    (["lora_type=standard", "lora_type.init=xavier"], "lora_type.init"),
    (["lora_type=standard", "lora_type.targets='('"], "lora_type.targets"),
    (["lora_type=standard", "lora_type.targets=nothing"], "lora_type.targets"),
    (["lora_type=moe", "lora_type.num_experts=0"], "lora_type.num_experts"),
    (["lora_type=moe", "lora_type.gate_hidden=0"], "lora_type.gate_hidden"),
    (["lora_type=moe", "lora_type.task_dim=0"], "lora_type.task_dim"),
    (["lora_type=task_adaptive", "lora_type.route=sample"], "lora_type.route"),
    (["lora_type=mtl", "lora_type.task_dropout=1.0"], "lora_type.task_dropout"),
    (["lora_type=mtl", "lora_type.num_tasks=0"], "lora_type.num_tasks"),
    (["lora_type=none", "lora_type.freeze_backbone=maybe"], "lora_type.freeze_backbone"),
]


@pytest.mark.parametrize(("overrides", "key"), BAD_VALUES, ids=[" ".join(o) for o, _ in BAD_VALUES])
def test_bad_lora_type_value_is_a_config_error_naming_the_key(overrides: list[str], key: str) -> None:
    cfg = compose(["model=tiny", *overrides])
    with pytest.raises(ConfigError) as err:
        instantiate(cfg.model, path="model")
    message = str(err.value)
    assert key in message and "expected" in message and "\n" not in message, message


@pytest.mark.parametrize("kind", TYPES)
def test_adapter_classes_take_their_defaults_from_the_config_alone(kind: str) -> None:
    """No hyperparameter has a Python default: an adapter built without its config's values is refused, so the
    files under conf/lora_type are the one place a default is written."""
    with pytest.raises(TypeError, match="required"):
        CLASSES[kind](**({"num_tasks": 2} if kind in ROUTED else {}))
