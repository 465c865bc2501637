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

from omegaconf import DictConfig

from vlm4st import checks
from vlm4st.config import ConfigError, instantiate
from vlm4st.data.fingerprint import array_sha256
from vlm4st.data.module import DataModule
from vlm4st.data.prepared import prepare, validate
from vlm4st.data.reader import Reader
from vlm4st.data.records import SPLITS
from vlm4st.data.resize import target_size
from vlm4st.data.sampling import few_shot_positions
from vlm4st.data.spec import DatasetSpec

log = logging.getLogger(__name__)


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
    spec = DatasetSpec.from_config(dataset_cfg)
    t_in, t_out, sources, target = spec.t_in, spec.t_out, spec.sources, spec.target
    ratio, mode = shot_protocol(shot_ratio_cfg)
    if mode != "full" and target is None:
        raise ConfigError(f"shot_ratio {ratio:g} ({mode}-shot) needs dataset.target (one of {list(sources)})")
    if mode == "zero" and len(sources) < 2:
        raise ConfigError("zero-shot needs at least one source besides dataset.target to train on")
    fit_on, per_channel, sampling = spec.fit_on, spec.per_channel, spec.few_shot_sampling
    zero_scaler, allow_gaps, calibration_steps = spec.zero_shot_scaler, spec.allow_gaps, spec.calibration_steps

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
        model_hw = target_size(spec.resize_to, data.grid, data.source)
        validate(data, spec.min_grid, model_hw)
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
    settings = {
        "name": spec.name,
        "fit_on": fit_on,
        "per_channel": per_channel,
        "few_shot_sampling": sampling,
        "zero_shot_scaler": zero_scaler,
        "zero_shot_calibration_steps": calibration_steps,
        "allow_gaps": allow_gaps,
        "ratio": ratio,
        "resize_to": spec.resize_to,
    }
    return DataModule(datasets, mode, target, seed, accessed, settings)


def _reader(node: DictConfig, name: str, cache_dir: str | None) -> Reader:
    kwargs: dict[str, Any] = {"name": name, "config_key": f"dataset.sources.{name}.path"}
    beside_file = "cache_beside_file" in node and node["cache_beside_file"]
    if "cache_dir" in node and node["cache_dir"] is None and not beside_file:  # the run's cache folder
        kwargs["cache_dir"] = cache_dir
    reader = instantiate(node, path=f"dataset.sources.{name}", **kwargs)
    if not isinstance(reader, Reader):
        raise ConfigError(f"dataset.sources.{name}._target_: {type(reader).__name__} is not a dataset reader; "
                          "expected a vlm4st.data reader (SyntheticCityReader, SeriesReader, WindowNpzReader, "
                          "UniSTJsonReader)")
    return reader
