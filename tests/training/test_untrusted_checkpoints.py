"""A checkpoint is data: a stored config that names a callable which runs code is refused before any task rebuilds
from it (``task=test``, ``task=predict``, ``source_checkpoint``, the source-model cache, ``resume``), and the
payload never runs."""

from __future__ import annotations

import contextlib
import importlib
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.runs import SMALL_GRIDS, make_cfg
from vlm4st.errors import CheckpointError


class _Touch:
    """Unpickling this creates ``path``: the pickle a ``torch.load(weights_only=False)`` payload would read."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Path]]:
        return Path.touch, (self.path,)


def payloads(sentinel: Path, folder: Path) -> dict[str, dict[str, Any]]:
    """Config nodes that each create ``sentinel`` when Hydra instantiates them."""
    evil = folder / "evil.pkl"
    evil.write_bytes(pickle.dumps(_Touch(sentinel)))
    return {
        "shell under torch": {"_target_": "torch.utils.cpp_extension.subprocess.run",
                              "_args_": [["touch", str(sentinel)]]},
        "pickle under torch": {"_target_": "torch.load", "f": str(evil), "weights_only": False},
        "file write under torch": {"_target_": "torch.save", "obj": 1, "f": str(sentinel)},
        "builtins": {"_target_": "builtins.exec", "_args_": [f"open({str(sentinel)!r}, 'w').close()"]},
        "os": {"_target_": "os.system", "command": f"touch {sentinel}"},
        "subprocess": {"_target_": "subprocess.run", "args": ["touch", str(sentinel)]},
        "vlm4st function": {"_target_": "vlm4st.training.checkpoint.save_checkpoint", "payload": {},
                            "path": str(sentinel)},
    }


NAMES = list(payloads(Path("x"), Path("/tmp")))


def doctored(checkpoint: Path, node: dict[str, Any], path: Path) -> Path:
    """A copy of ``checkpoint`` whose stored config builds the head's step readout from ``node``."""
    payload = torch.load(checkpoint, weights_only=True)
    payload["config"]["model"]["head"]["step_readout"] = node
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def _locate(name: str) -> Any:
    """The object a dotted name reaches: the longest importable module, then attributes."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise AssertionError(f"{name} resolves to nothing")


@pytest.mark.parametrize("name", NAMES)
def test_each_payload_runs_code_when_its_target_is_called(name: str, tmp_path) -> None:
    """The payloads are live: calling each target as a config node asks creates the sentinel (so the tests below
    can fail)."""
    sentinel = tmp_path / "sentinel"
    node = payloads(sentinel, tmp_path)[name]
    with contextlib.suppress(RuntimeError):  # torch.load reads the pickle as its magic number, then complains
        _locate(node["_target_"])(*node.get("_args_", []), **{k: v for k, v in node.items() if k[0] != "_"})
    assert sentinel.exists()


def _refused(err: pytest.ExceptionInfo, bad: Path, target: str) -> None:
    message = str(err.value)
    assert str(bad) in message and "model.head.step_readout._target_" in message and repr(target) in message
    assert "\n" not in message


TASKS = ["test", "predict", "source_checkpoint"]


def reading(task: str, checkpoint: Path, folder: Path) -> list[str]:
    """The overrides of a run that reads ``checkpoint`` through ``task`` (a frames file for predict in ``folder``)."""
    frames = folder / "frames.npy"
    np.save(frames, np.zeros((8, *SMALL_GRIDS["city_a"]), dtype=np.float32))
    return {
        "test": ["task=test", f"checkpoint={checkpoint}"],
        "predict": ["task=predict", f"checkpoint={checkpoint}", f"predict_input={frames}"],
        "source_checkpoint": ["shot_ratio=zero", "dataset.target=city_c", f"source_checkpoint={checkpoint}"],
    }[task]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("name", NAMES)
def test_a_stored_foreign_target_is_refused_by_every_task(name: str, task: str, trained_checkpoint, tmp_path,
                                                          run_entry) -> None:
    sentinel = tmp_path / "sentinel"
    node = payloads(sentinel, tmp_path)[name]
    bad = doctored(trained_checkpoint, node, tmp_path / "shared.pt")
    with pytest.raises(CheckpointError) as err:
        run_entry(make_cfg(tmp_path / "run", *reading(task, bad, tmp_path)))
    _refused(err, bad, node["_target_"])
    assert not sentinel.exists()


QUICK = ["trainer.epochs=1", "trainer.max_steps=2", "trainer.schedule.warmup_epochs=0"]


def test_a_doctored_resume_checkpoint_is_refused(trained_checkpoint, tmp_path, run_entry) -> None:
    sentinel = tmp_path / "sentinel"
    node = payloads(sentinel, tmp_path)["shell under torch"]
    run_dir = tmp_path / "run"
    bad = doctored(trained_checkpoint, node, run_dir / "checkpoints" / "last.pt")
    with pytest.raises(CheckpointError) as err:
        run_entry(make_cfg(run_dir, *QUICK, "resume=true"))
    _refused(err, bad, node["_target_"])
    assert not sentinel.exists()


def test_a_doctored_source_cache_entry_is_refused(tmp_path, run_entry) -> None:
    """Another job's cache entry is a checkpoint read by this run: it is checked like any other."""
    zero_shot = [*QUICK, "shot_ratio=zero", "dataset.target=city_c"]
    run_entry(make_cfg(tmp_path / "first", *zero_shot, f"transfer.cache_dir={tmp_path}/cache"))
    (entry,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    sentinel = tmp_path / "sentinel"
    node = payloads(sentinel, tmp_path)["pickle under torch"]
    shutil.copy(entry / "last.pt", tmp_path / "clean.pt")
    bad = doctored(tmp_path / "clean.pt", node, entry / "last.pt")
    with pytest.raises(CheckpointError) as err:
        run_entry(make_cfg(tmp_path / "second", *zero_shot, f"transfer.cache_dir={tmp_path}/cache"))
    _refused(err, bad, node["_target_"])
    assert not sentinel.exists()


def test_a_weight_of_another_shape_is_a_checkpoint_error(trained_checkpoint, tmp_path, run_entry) -> None:
    payload = torch.load(trained_checkpoint, weights_only=True)
    key = next(k for k, v in payload["model"]["weights"].items() if v.ndim == 2)
    payload["model"]["weights"][key] = torch.zeros(3, 3)
    bad = tmp_path / "reshaped.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match=rf"{bad}.*does not fit the model.*{key}"):
        run_entry(make_cfg(tmp_path / "run", "task=test", f"checkpoint={bad}"))


def test_an_optimiser_state_that_does_not_fit_is_a_checkpoint_error(trained_checkpoint, tmp_path,
                                                                    run_entry) -> None:
    run_dir = tmp_path / "run"
    payload = torch.load(trained_checkpoint, weights_only=True)
    payload["optimizer"]["param_groups"] = payload["optimizer"]["param_groups"][:1]
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save(payload, run_dir / "checkpoints" / "last.pt")
    with pytest.raises(CheckpointError, match=r"last\.pt': its optimiser, schedule or random state does not fit"):
        run_entry(make_cfg(run_dir, "trainer.epochs=1", "trainer.max_steps=4", "trainer.schedule.warmup_epochs=0",
                           "resume=true"))
