"""Shared pytest fixtures and options: CPU-only, small presets, real NYC data when the shared folder exists."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

from vlm4st import REPO_ROOT

SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()

# Property-based tests (hypothesis): the same bounded set of generated cases on every run (a fixed seed through
# derandomize, no example database), no per-example deadline (the CPU is shared), so CI is reproducible.
# `--hypothesis-profile=explore` searches more cases with a random seed.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, max_examples=40,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("explore", deadline=None, max_examples=1000,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile("ci")


#: The command that runs the integration tier (``.ci/run`` runs it after the default tier).
INTEGRATION_CMD = "python -m pytest --integration -m integration"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")
    parser.addoption("--integration", action="store_true", default=False,
                     help=f"run the integration tier too (tests marked integration); alone: {INTEGRATION_CMD}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_slow = pytest.mark.skip(reason="slow test: pass --runslow to run it")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; none is available")
    skip_integration = pytest.mark.skip(reason=f"integration tier: {INTEGRATION_CMD}")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "integration" in item.keywords and not config.getoption("--integration"):
            item.add_marker(skip_integration)


@pytest.fixture(autouse=True)
def _one_thread_and_seed() -> Iterator[None]:
    """Every test: a fixed seed, and one intra-op thread (the tests' tiny models run many times faster without
    thread wake-ups per small kernel, and timings do not depend on what else the machine runs). Restored after."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real NYC datasets; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def run_entry():
    """The entry point's dispatcher (``vlm4st.run.run``): runs a composed config in this process."""
    from vlm4st.run import run

    return run


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``best.pt`` of a four-step run of the tiny model on the short synthetic cities (trained once per session);
    tests copy it before changing anything."""
    from tests.runs import make_cfg
    from vlm4st.run import run

    run_dir = tmp_path_factory.mktemp("trained")
    run(make_cfg(run_dir, "trainer.epochs=1", "trainer.max_steps=4", "trainer.schedule.warmup_epochs=0"))
    return run_dir / "checkpoints" / "best.pt"
