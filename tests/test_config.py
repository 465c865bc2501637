"""Every config option composes, resolves and names only allowed targets; the guarded instantiate rejects others."""

from __future__ import annotations

import itertools
import os
import re

import pytest
from omegaconf import OmegaConf

from vlm4st import CONF_DIR, REPO_ROOT
from vlm4st.config import ConfigError, compose, instantiate
from vlm4st.models.stid import STID
from vlm4st.registry import check_targets

GROUPS = ("model", "lora_type", "ablation", "dataset", "shot_ratio", "trainer", "logger", "experiment")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_every_group_has_options() -> None:
    for group in GROUPS:
        assert options(group), f"config group '{group}' has no options in {CONF_DIR / group}"


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_each_option_composes_and_resolves(group: str, option: str, tmp_path) -> None:
    overrides = [f"{group}={option}"]
    if group == "shot_ratio" and option != "full":
        overrides.append("dataset.target=city_b")
    cfg = compose(overrides, output_dir=str(tmp_path))
    container = OmegaConf.to_container(cfg, resolve=True)
    check_targets(container)
    assert cfg.task in ("train", "test", "predict", "data")


#: Model presets without a VLM: ``stid`` has no DiX, PromptForge, fusion or VLM, so ablations (which override
#: those nodes) and adapters do not apply to it; it is composed on its own below.
NON_VLM_MODELS = ("stid",)


@pytest.mark.integration
def test_model_adapter_ablation_product_composes(tmp_path) -> None:
    """The groups that shape the VLM4ST model compose in every combination."""
    vlm_models = [m for m in options("model") if m not in NON_VLM_MODELS]
    combos = itertools.product(vlm_models, options("lora_type"), options("ablation"))
    for model, lora, ablation in combos:
        overrides = [f"model={model}", f"lora_type={lora}", f"ablation={ablation}"]
        cfg = compose(overrides, output_dir=str(tmp_path))
        model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
        check_targets(model_cfg, "model")
        assert cfg.ablation.name == ablation


@pytest.mark.parametrize("lora", options("lora_type"))
def test_stid_composes_with_every_lora_type_and_builds(lora: str, tmp_path) -> None:
    """``model=stid`` ignores the adapter choice: it composes under ``ablation=full`` and builds an STID."""
    cfg = compose(["model=stid", f"lora_type={lora}", "ablation=full"], output_dir=str(tmp_path))
    check_targets(OmegaConf.to_container(cfg.model, resolve=True), "model")
    model = instantiate(cfg.model, path="model")
    assert type(model) is STID
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_instantiate_rejects_targets_outside_the_allow_list() -> None:
    bad = OmegaConf.create({"sub": {"_target_": "os.system", "command": "true"}})
    with pytest.raises(ConfigError, match=r"'node\.sub\._target_'.*os\.system.*not a registered class"):
        instantiate(bad, path="node")


def test_instantiate_builds_registered_targets() -> None:
    node = OmegaConf.create({"_target_": "vlm4st.models.loss.ForecastLoss", "mse_weight": 1.0, "mae_weight": 0.5})
    loss = instantiate(node)
    assert type(loss).__name__ == "ForecastLoss"


def test_instantiate_rejects_null_node() -> None:
    with pytest.raises(ConfigError, match=r"'model\.head' is null"):
        instantiate(None, path="model.head")


def test_shared_data_path_has_one_spelling_from_every_checkout() -> None:
    """Dataset paths reached through ``..`` are normalised, so the config a checkpoint stores (and the resume check
    compares) names the same file the same way from any checkout beside the data."""
    cfg = compose(["dataset=bikenyc"])
    path = cfg.dataset.sources.bikenyc.path
    assert ".." not in path.split(os.sep)
    assert path == os.path.normpath(REPO_ROOT / ".." / "shared" / "data" / "nyc_bike_stdn_10x20_30min.series.npz")
    assert OmegaConf.create({"p": "${normpath:/a/b/../c}"}).p == "/a/c"


@pytest.mark.parametrize(("overrides", "node", "key"), [
    (["+model.vlm.weights_only=false"], "model", "model.vlm.weights_only"),
    (["lora_type=mtl", "+lora_type.task_dim=8"], "model", "model.vlm.adapter.task_dim"),
    (["+trainer.optimizer.momentum=0.9"], "trainer.optimizer", "trainer.optimizer.momentum"),
    (["+dataset.sources.city_a.colour=red"], "dataset.sources.city_a", "dataset.sources.city_a.colour"),
])
def test_an_argument_the_class_does_not_take_names_its_key(overrides: list[str], node: str, key: str) -> None:
    """A key added with ``+`` that the class has no parameter for is a ConfigError before anything is built
    (keys handed up through ``**kwargs`` count: ``lora_type.num_experts`` reaches the routed base class)."""
    cfg = compose(overrides)
    with pytest.raises(ConfigError, match=rf"config key '{re.escape(key)}': .* takes no argument") as err:
        instantiate(OmegaConf.select(cfg, node), path=node)
    assert "\n" not in str(err.value)


def test_every_dataset_takes_the_protocol_from_one_file(tmp_path) -> None:
    """The protocol keys (window lengths, scaling, transfer and stamp settings) are written once, in
    ``conf/dataset/_base/protocol.yaml``: no dataset file repeats one, and each composes with its values."""
    import yaml

    protocol = yaml.safe_load((CONF_DIR / "dataset" / "_base" / "protocol.yaml").read_text())
    assert {"t_in", "t_out", "scaler", "zero_shot_calibration_steps", "allow_gaps", "min_grid"} <= set(protocol)
    for option in options("dataset"):
        own = yaml.safe_load((CONF_DIR / "dataset" / f"{option}.yaml").read_text())
        assert own["defaults"][0] == "_base/protocol@_here_", option
        assert not set(own) & set(protocol), (option, set(own) & set(protocol))
        composed = OmegaConf.to_container(compose([f"dataset={option}"], output_dir=str(tmp_path)).dataset)
        assert {k: composed[k] for k in protocol} == protocol, option
        assert composed["name"] == option


#: Reader arguments the dataset builder passes itself (the source's name and the config key of its file), and the
#: UniST reader's folder for relative paths, which the other readers take from a path alone.
BUILDER_ARGUMENTS = {"name", "config_key", "data_dir"}


def test_every_reader_takes_its_defaults_from_one_file(tmp_path) -> None:
    """Each reader's config keys are written once, with their defaults, in ``conf/dataset/_base/reader/``: the
    classes give them no Python default, each file lists exactly its class's keys, and every source of every
    dataset composes to a node with all of them."""
    import inspect

    import hydra.utils

    bases = {}
    for path in sorted((CONF_DIR / "dataset" / "_base" / "reader").glob("*.yaml")):
        node = OmegaConf.load(path)
        params = list(inspect.signature(hydra.utils.get_class(node._target_).__init__).parameters.values())[1:]
        config_keys = {p.name for p in params} - BUILDER_ARGUMENTS
        assert all(p.default is p.empty for p in params if p.name in config_keys), path.name
        assert set(node) - {"_target_", "data_dir"} == config_keys, path.name
        bases[node._target_] = set(node)
    assert len(bases) == 4
    for option in options("dataset"):
        for name, source in compose([f"dataset={option}"], output_dir=str(tmp_path)).dataset.sources.items():
            assert set(source) == bases[source._target_], (option, name)


def test_a_source_without_a_required_key_is_a_config_error_naming_it() -> None:
    cfg = compose(["~dataset.sources.city_b.days"])
    with pytest.raises(ConfigError, match=r"config key 'dataset\.sources\.city_b\.days' is missing: "
                                          r"vlm4st\.data\.SyntheticCityReader needs it"):
        instantiate(cfg.dataset.sources.city_b, path="dataset.sources.city_b", name="city_b", config_key="")
