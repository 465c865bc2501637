"""``DatasetSpec``: the ``dataset`` config node resolved into one typed, checked record at the edge.

Every key is required: the defaults are written once, in ``conf/dataset/_base/protocol.yaml``, which each dataset
file pulls in. A missing key or a value of the wrong kind is a ``ConfigError`` naming ``dataset.<key>`` and what
was expected; nothing falls back to a default here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from vlm4st import checks
from vlm4st.config import ConfigError
from vlm4st.data.calibration import CONFIG_KEY as CALIBRATION_KEY
from vlm4st.data.sampling import FEW_SHOT_SAMPLING

FIT_ON = ("train", "all")
ZERO_SHOT_SCALERS = ("inputs", "train")
_WHERE = "each conf/dataset file sets it through conf/dataset/_base/protocol.yaml"


def _required(node: Mapping, key: str, prefix: str = "dataset") -> Any:
    if key not in node:
        raise ConfigError(f"{prefix}.{key} is missing; {_WHERE}")
    return node[key]


def _grid_pair(value: Any, key: str) -> tuple[int, int]:
    """An int or [H, W] as (H, W), each a positive integer."""
    if isinstance(value, (list, tuple, ListConfig)) and len(value) == 2:
        return checks.positive_int(value[0], f"{key}[0]"), checks.positive_int(value[1], f"{key}[1]")
    if isinstance(value, (list, tuple, ListConfig)):
        raise ConfigError(f"{key}: expected an int or [H, W], got {list(value)!r}")
    side = checks.positive_int(value, key)
    return side, side


@dataclass(frozen=True)
class DatasetSpec:
    """What a run reads and how it windows, scales and shares it. ``sources`` keeps the reader nodes in task-id
    order (each is instantiated through the allow-list by the data builder)."""

    name: str
    t_in: int
    t_out: int
    resize_to: int | list[int] | None  # null: native grids; an int or [H, W]: bilinear resize before scaling
    fit_on: str
    per_channel: bool
    target: str | None
    few_shot_sampling: str
    zero_shot_scaler: str
    calibration_steps: int
    allow_gaps: bool
    min_grid: tuple[int, int]
    sources: DictConfig

    @classmethod
    def from_config(cls, node: DictConfig | Mapping) -> DatasetSpec:
        if not isinstance(node, DictConfig):
            node = OmegaConf.create(dict(node))
        if "steps_per_day" in node:
            raise ConfigError(
                "dataset.steps_per_day is no longer read: each source sets its own step length, "
                "dataset.sources.<name>.interval_minutes (null: the file's); remove dataset.steps_per_day"
            )
        t_in = checks.positive_int(_required(node, "t_in"), "dataset.t_in")
        t_out = checks.positive_int(_required(node, "t_out"), "dataset.t_out")
        sources = _required(node, "sources")
        if not isinstance(sources, DictConfig) or not sources:
            raise ConfigError("dataset.sources is empty; expected {<name>: {_target_: vlm4st.data.<Reader>, ...}}")
        target = _required(node, "target")
        if target is not None and target not in sources:
            raise ConfigError(f"dataset.target={target!r} is not a source; expected one of {list(sources)}")
        scaler = _required(node, "scaler")
        if not isinstance(scaler, DictConfig):
            raise ConfigError(f"dataset.scaler: expected a node with fit_on and per_channel, got {scaler!r}")
        calibration_steps = checks.positive_int(_required(node, "zero_shot_calibration_steps"), CALIBRATION_KEY)
        if calibration_steps < t_in:
            raise ConfigError(
                f"{CALIBRATION_KEY}={calibration_steps}; expected >= dataset.t_in={t_in} (the prefix must hold an "
                "input window)"
            )
        resize_to = _required(node, "resize_to")
        if resize_to is not None:
            _grid_pair(resize_to, "dataset.resize_to")
        return cls(
            name=str(_required(node, "name")),
            t_in=t_in,
            t_out=t_out,
            resize_to=OmegaConf.to_object(resize_to) if isinstance(resize_to, ListConfig) else resize_to,
            fit_on=checks.choice(_required(scaler, "fit_on", "dataset.scaler"), FIT_ON, "dataset.scaler.fit_on"),
            per_channel=checks.flag(_required(scaler, "per_channel", "dataset.scaler"), "dataset.scaler.per_channel"),
            target=target,
            few_shot_sampling=checks.choice(
                _required(node, "few_shot_sampling"), FEW_SHOT_SAMPLING, "dataset.few_shot_sampling"
            ),
            zero_shot_scaler=checks.choice(
                _required(node, "zero_shot_scaler"), ZERO_SHOT_SCALERS, "dataset.zero_shot_scaler"
            ),
            calibration_steps=calibration_steps,
            allow_gaps=checks.flag(_required(node, "allow_gaps"), "dataset.allow_gaps"),
            min_grid=_grid_pair(_required(node, "min_grid"), "dataset.min_grid"),
            sources=sources,
        )
