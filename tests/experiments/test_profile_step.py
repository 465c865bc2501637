"""The step profiler: a step time and a forward time per module of the model the trainer would build."""

from __future__ import annotations

import importlib.util
import math
import sys

from vlm4st import REPO_ROOT

spec = importlib.util.spec_from_file_location("profile_step", REPO_ROOT / "experiments" / "profile_step.py")
profile_step = importlib.util.module_from_spec(spec)
sys.modules["profile_step"] = profile_step
spec.loader.exec_module(profile_step)


def test_profile_times_the_step_and_every_module() -> None:
    result = profile_step.main(["model=tiny", "--batch", "2", "--grid", "4", "6", "--steps", "1", "--warmup", "1"])
    modules = {k.removeprefix("forward.") for k in result if k.startswith("forward.")}
    assert {"dix", "vlm", "head", "format_transformer"} <= modules
    times = [v for k, v in result.items() if k == "step" or k.startswith("forward.")]
    assert all(math.isfinite(v) and v > 0 for v in times)  # measured, not compared: speed is the script's report


def test_profile_a_model_without_submodule_stack() -> None:
    result = profile_step.main(["model=stid", "--batch", "2", "--grid", "4", "6", "--steps", "1", "--warmup", "0",
                                "--fused"])
    assert {"forward.series", "forward.encoder", "forward.regression"} <= set(result)


def test_two_models_in_one_run_and_their_ratio() -> None:
    result = profile_step.main(["model=tiny", "dataset.t_in=6", "--against", "model=tiny ablation=no_dix",
                                "--batch", "2", "--grid", "4", "6", "--steps", "1", "--warmup", "0",
                                "--rounds", "2"])
    assert result["ratio"] == result["step"] / result["against.step"]
    assert "forward.fusion" in result and "against.forward.fusion" not in result  # no_dix builds no fusion


def test_against_overrides_replace_those_of_the_same_key() -> None:
    merged = profile_step.merge_overrides(["model=cpu", "dataset=taxinyc", "+x=1"], ["model=cpu_nodix", "x=2"])
    assert merged == ["dataset=taxinyc", "model=cpu_nodix", "x=2"]
