"""The command line, as a user meets a foreign target: in a shared checkpoint, on the command line, in an
``experiment=`` file from someone else, in Hydra's own settings. Every case ends in one ``error:`` line naming
the key and the target, exit status 2, and the payload never runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.runs import FAST, assert_one_line_error, run_cli
from tests.training.test_untrusted_checkpoints import TASKS, doctored, payloads, reading
from vlm4st import REPO_ROOT
from vlm4st.config import compose
from vlm4st.errors import ConfigError

SHELL = "torch.utils.cpp_extension.subprocess.run"


@pytest.mark.parametrize("task", TASKS)
def test_a_shared_checkpoint_with_a_foreign_target(task: str, trained_checkpoint, tmp_path) -> None:
    sentinel = tmp_path / "sentinel"
    bad = doctored(trained_checkpoint, payloads(sentinel, tmp_path)["shell under torch"], tmp_path / "shared.pt")
    proc = run_cli(*FAST, *reading(task, bad, tmp_path), f"hydra.run.dir={tmp_path}/run")
    assert_one_line_error(proc, str(bad), "model.head.step_readout._target_", SHELL)
    assert not sentinel.exists()


def test_a_foreign_target_on_the_command_line(tmp_path) -> None:
    sentinel = tmp_path / "sentinel"
    proc = run_cli(*FAST, f"model.head.step_readout._target_={SHELL}",
                   f"+model.head.step_readout._args_=[[touch,{sentinel}]]", f"hydra.run.dir={tmp_path}/run")
    assert_one_line_error(proc, "model.head.step_readout._target_", SHELL)
    assert not sentinel.exists()


def _experiment(folder: Path, name: str, body: dict) -> list[str]:
    """An ``experiment=<name>`` preset in a folder of the user's (added to Hydra's search path)."""
    (folder / "experiment").mkdir(parents=True, exist_ok=True)
    (folder / "experiment" / f"{name}.yaml").write_text("# @package _global_\n" + yaml.safe_dump(body))
    return [f"hydra.searchpath=[file://{folder}]", f"experiment={name}"]


def test_a_foreign_target_in_a_received_experiment_file(tmp_path) -> None:
    sentinel = tmp_path / "sentinel"
    body = {"model": {"head": {"step_readout": payloads(sentinel, tmp_path)["os"]}}}
    proc = run_cli(*FAST, *_experiment(tmp_path / "received", "colleague", body),
                   f"hydra.run.dir={tmp_path}/run")
    assert_one_line_error(proc, "model.head.step_readout._target_", "os.system")
    assert not sentinel.exists()


HYDRA_NODES = {
    "callback": ({"callbacks": {"hi": {"_target_": "os.system", "command": "touch {sentinel}"}}},
                 "hydra.callbacks.hi._target_"),
    "logging factory": ({"job_logging": {"formatters": {"simple": {"()": "os.system", "command": "touch {sentinel}"}}}},
                        "hydra.job_logging.formatters.simple.()"),
    "logging class": ({"hydra_logging": {"handlers": {"console": {"class": "logging.handlers.SocketHandler"}}}},
                      "hydra.hydra_logging.handlers.console.class"),
    "logging import": ({"job_logging": {"handlers": {"console": {"stream": "ext://antigravity.webbrowser"}}}},
                       "hydra.job_logging.handlers.console.stream"),
    "log file outside the run": ({"job_logging": {"handlers": {"file": {"filename": "{sentinel}"}}}},
                                 "hydra.job_logging.handlers.file.filename"),
    "launcher shell lines": ({"launcher": {"setup": ["touch {sentinel}"]}}, "hydra.launcher.setup"),
}


def _hydra_preset(name: str, folder: Path) -> tuple[list[str], str, Path]:
    """Overrides that load a received preset setting Hydra's own node ``HYDRA_NODES[name]``; the refused key; the
    file its payload would create."""
    node, key = HYDRA_NODES[name]
    sentinel = folder / "sentinel"
    body = yaml.safe_load(yaml.safe_dump(node).replace("{sentinel}", str(sentinel)))
    launcher = ["hydra/launcher=submitit_slurm"] if "launcher" in node else []
    return [*launcher, *_experiment(folder / "received", "preset", {"hydra": body})], key, sentinel


@pytest.mark.parametrize("name", list(HYDRA_NODES))
def test_a_received_file_cannot_make_hydra_run_code(name: str, tmp_path) -> None:
    """Hydra itself calls what its settings name (callbacks, logging, the launcher's shell lines) before any task
    starts: a received preset that sets them is refused where the config is composed."""
    overrides, key, _ = _hydra_preset(name, tmp_path)
    with pytest.raises(ConfigError, match=re.escape(f"config key '{key}'")):
        compose([*FAST, *overrides])


def test_a_hydra_callback_from_a_received_file_never_runs(tmp_path) -> None:
    """The same on the command line, where Hydra would call the callback as the run starts."""
    overrides, key, sentinel = _hydra_preset("callback", tmp_path)
    proc = run_cli(*FAST, *overrides, f"hydra.run.dir={tmp_path}/run", "task=data")
    assert_one_line_error(proc, key, "os.system")
    assert not sentinel.exists()


def test_launcher_shell_lines_typed_on_the_command_line_are_accepted(tmp_path) -> None:
    """The person running the sweep may give the launcher its setup lines: the config composes (``--cfg``)."""
    proc = run_cli(*FAST, "hydra/launcher=submitit_slurm", "hydra.launcher.setup=[echo ready]", "--cfg", "hydra")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "echo ready" in proc.stdout


def test_a_users_own_class_joins_the_registry_from_code_only(tmp_path) -> None:
    """The documented extension: a module of the user's registers its class, a launch script imports it and
    starts the command line; the same override without that script is refused."""
    (tmp_path / "my_losses.py").write_text(
        "from vlm4st.models.loss import ForecastLoss\n"
        "from vlm4st.registry import register_target\n\n\n"
        "@register_target\n"
        "class HalfLoss(ForecastLoss):\n"
        "    pass\n"
    )
    (tmp_path / "launch.py").write_text("import my_losses  # noqa: F401\nfrom vlm4st.run import cli\n\ncli()\n")
    overrides = [*FAST, "task=data", "trainer.loss._target_=my_losses.HalfLoss", f"hydra.run.dir={tmp_path}/run"]
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO_ROOT}"}
    env.pop("HYDRA_FULL_ERROR", None)
    launched = subprocess.run([sys.executable, str(tmp_path / "launch.py"), *overrides], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr[-2000:]
    assert "city_a" in launched.stdout  # the data summary: the run went through
    assert_one_line_error(run_cli(*overrides), "trainer.loss._target_", "my_losses.HalfLoss")
