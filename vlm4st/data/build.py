"""``build_datamodule``: the one function the entry point calls to turn the ``dataset`` and ``shot_ratio``
config groups into a ``DataModule``.

Readers are built from ``dataset.sources.<name>`` with ``vlm4st.config.instantiate``; the order of
``sources`` is the task-id order. Each reader gets its source name, the config key of its file (for error
messages) and the run's cache folder where the source leaves ``cache_dir`` null. Each source declares its own
step length (``interval_minutes`` in its node, or read from its file), so one run may mix 15-, 30- and
60-minute cities; there is no run-wide interval. Every reader is read with the dataset-level ``allow_gaps`` and
states its content fingerprint (sha256 of the file, or of the generating parameters), which the data module's
``state_dict`` stores with the window settings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from vlm4st import checks
from vlm4st.config import ConfigError, instantiate
from vlm4st.data.calibration import CONFIG_KEY as CALIBRATION_KEY
from vlm4st.data.fingerprint import array_sha256
from vlm4st.data.module import DataModule
from vlm4st.data.prepared import prepare, validate
from vlm4st.data.reader import Reader
from vlm4st.data.records import SPLITS
from vlm4st.data.resize import target_size
from vlm4st.data.sampling import FEW_SHOT_SAMPLING, few_shot_positions

log = logging.getLogger(__name__)


def _choice(cfg: Mapping, key: str, options: tuple[str, ...], default: str) -> str:
    value = cfg.get(key, default)
    if value not in options:
        raise ConfigError(f"dataset.{key}={value!r}; expected one of {list(options)}")
    return value


def _required(cfg: Mapping, key: str, kind: type) -> Any:
    """A dataset key that has no default in code: present in the config and of the expected type."""
    if key not in cfg:
        raise ConfigError(f"dataset.{key} is missing; each conf/dataset file sets it (conf/dataset/synthetic.yaml)")
    value = cfg[key]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"dataset.{key}={value!r}; expected an integer")
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"dataset.{key}={value!r}; expected true or false")
    return value


def _grid_pair(value: Any, key: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if value is not None and len(value) == 2:
        return int(value[0]), int(value[1])
    raise ConfigError(f"{key}={value!r}; expected an int or [H, W]")


#: ``shot_ratio.protocol``: every dataset trains in one stage (``full``), the target trains on its share after a
#: source stage (``few``; a share of 1.0 is the whole training split), or the target is never trained on (``zero``).
PROTOCOLS = ("full", "few", "zero")


def shot_protocol(shot_ratio_cfg: DictConfig | Mapping) -> tuple[float, str]:
    """``(ratio, protocol)`` of a ``shot_ratio`` node; the ratio must fit the protocol (full: 1, zero: 0, few: a
    share in (0, 1])."""
    for key in ("ratio", "protocol"):
        if key not in shot_ratio_cfg:
            raise ConfigError(
                f"shot_ratio.{key} is missing; each conf/shot_ratio file sets it (conf/shot_ratio/few5.yaml)"
            )
    mode = checks.choice(shot_ratio_cfg["protocol"], PROTOCOLS, "shot_ratio.protocol")
    ratio = shot_ratio_cfg["ratio"]
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"shot_ratio.ratio={ratio!r}; expected a value in [0, 1]")
    fits = {"full": ratio == 1.0, "zero": ratio == 0.0, "few": ratio > 0.0}[mode]
    if not fits:
        expected = {"full": "1.0", "zero": "0.0", "few": "a share in (0, 1]"}[mode]
        raise ConfigError(f"shot_ratio.ratio={ratio} with shot_ratio.protocol={mode}; expected ratio {expected}")
    return float(ratio), mode


def build_datamodule(
    dataset_cfg: DictConfig | Mapping, shot_ratio_cfg: DictConfig | Mapping, seed: int, cache_dir: str | None = None
) -> DataModule:
    """Read, select, scale and index every source of ``dataset_cfg`` for the ``shot_ratio_cfg`` protocol."""
    if not isinstance(dataset_cfg, DictConfig):
        dataset_cfg = OmegaConf.create(dict(dataset_cfg))
    t_in, t_out = int(dataset_cfg.get("t_in", 6)), int(dataset_cfg.get("t_out", 6))
    if t_in < 1 or t_out < 1:
        raise ConfigError(f"dataset.t_in={t_in}, dataset.t_out={t_out}; both must be >= 1")
    ratio, mode = shot_protocol(shot_ratio_cfg)
    sources = dataset_cfg.get("sources")
    if not sources:
        raise ConfigError("dataset.sources is empty; expected {<name>: {_target_: vlm4st.data.<Reader>, ...}}")
    target = dataset_cfg.get("target")
    if target is not None and target not in sources:
        raise ConfigError(f"dataset.target={target!r} is not a source; expected one of {list(sources)}")
    if mode != "full" and target is None:
        shot = shot_ratio_cfg.get("name", ratio)
        raise ConfigError(f"shot_ratio {shot} needs dataset.target (one of {list(sources)})")
    if mode == "zero" and len(sources) < 2:
        raise ConfigError("zero-shot needs at least one source besides dataset.target to train on")
    scaler_cfg = dataset_cfg.get("scaler") or {}
    fit_on = _choice(scaler_cfg, "fit_on", ("train", "all"), "train")
    per_channel = bool(scaler_cfg.get("per_channel", False))
    sampling = _choice(dataset_cfg, "few_shot_sampling", FEW_SHOT_SAMPLING, "head")
    zero_scaler = _choice(dataset_cfg, "zero_shot_scaler", ("inputs", "train"), "inputs")
    min_grid = _grid_pair(dataset_cfg.get("min_grid", 1), "dataset.min_grid")
    if "steps_per_day" in dataset_cfg:
        raise ConfigError(
            "dataset.steps_per_day is no longer read: each source sets its own step length, "
            "dataset.sources.<name>.interval_minutes (null: the file's); remove dataset.steps_per_day"
        )
    allow_gaps = _required(dataset_cfg, "allow_gaps", bool)
    calibration_steps = _required(dataset_cfg, "zero_shot_calibration_steps", int)
    if calibration_steps < t_in:
        raise ConfigError(
            f"{CALIBRATION_KEY}={calibration_steps}; expected >= dataset.t_in={t_in} (the prefix must hold an input "
            "window)"
        )

    datasets, accessed = [], set()
    for task_id, name in enumerate(sources):
        node = sources[name]
        zero_target = mode == "zero" and name == target
        splits = SPLITS
        if zero_target:  # never read the target's train/val windows unless the UniST-style scaler is asked for
            splits = ("train", "test") if zero_scaler == "train" else ("test",)
        reader = _reader(node, name, cache_dir)
        data = reader.read(t_in + t_out, splits, allow_gaps=allow_gaps)
        accessed.update((name, s) for s in data.windows)
        model_hw = target_size(dataset_cfg.get("resize_to"), data.grid, data.source)
        validate(data, min_grid, model_hw)
        positions = None
        if mode == "few" and name == target:
            positions = few_shot_positions(data.windows["train"], ratio, sampling, seed)
        scaler_on = fit_on
        if zero_target:  # the target's own training data is off limits unless explicitly opted in
            scaler_on = "calibration" if zero_scaler == "inputs" else "train"
        ds = prepare(
            data,
            task_id,
            "target" if name == target else "source",
            t_in,
            t_out,
            model_hw,
            positions,
            scaler_on,
            per_channel,
            calibration_steps,
        )
        if zero_target:
            ds.windows = {"test": ds.windows["test"]}  # the scaler-only train split is not served
        ds.fingerprint = dict(reader.fingerprint())
        few_target = mode == "few" and name == target
        ds.layout = {
            "t_in": t_in,
            "t_out": t_out,
            **data.layout,
            "allow_gaps": allow_gaps,
            "shot_ratio": ratio if name == target else 1.0,
            "few_shot_sampling": sampling if few_target else None,
            "few_shot_seed": seed if few_target and sampling == "random" else None,
            "scaler_on": scaler_on,
            "per_channel": per_channel,
            "calibration_steps": calibration_steps if scaler_on == "calibration" else None,
            "windows": {s: len(w) for s, w in ds.windows.items()},
            "available": dict(ds.available),
            "starts_sha256": {s: array_sha256(w.starts, w.channel, w.ids) for s, w in ds.windows.items()},
        }
        datasets.append(ds)
        log.info("dataset %s (task %d): %s", name, task_id, {s: len(w) for s, w in ds.windows.items()})
    resize_to = dataset_cfg.get("resize_to")
    settings = {
        "name": dataset_cfg.get("name"),
        "fit_on": fit_on,
        "per_channel": per_channel,
        "few_shot_sampling": sampling,
        "zero_shot_scaler": zero_scaler,
        "zero_shot_calibration_steps": calibration_steps,
        "allow_gaps": allow_gaps,
        "ratio": ratio,
        "resize_to": OmegaConf.to_object(resize_to) if isinstance(resize_to, ListConfig) else resize_to,
    }
    return DataModule(datasets, mode, target, seed, accessed, settings)


def _reader(node: DictConfig, name: str, cache_dir: str | None) -> Reader:
    kwargs: dict[str, Any] = {"name": name, "config_key": f"dataset.sources.{name}.path"}
    if "cache_dir" in node and node.get("cache_dir") is None and not node.get("cache_beside_file", False):
        kwargs["cache_dir"] = cache_dir
    reader = instantiate(node, path=f"dataset.sources.{name}", **kwargs)
    if not isinstance(reader, Reader):
        raise ConfigError(f"dataset.sources.{name}._target_: {type(reader).__name__} is not a dataset reader; "
                          "expected a vlm4st.data reader (SyntheticCityReader, SeriesReader, WindowNpzReader, "
                          "UniSTJsonReader)")
    return reader
