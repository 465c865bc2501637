"""Where one training step goes: forward time per top-level module, and the whole step (forward, backward, update).

    python experiments/profile_step.py model=cpu dataset=taxinyc                  # TaxiNYC 6 -> 6 grid (10 x 20)
    python experiments/profile_step.py model=cpu dataset=taxinyc dataset.t_in=12 dataset.t_out=12
    python experiments/profile_step.py model=stid dataset=taxinyc --fused        # fused AdamW
    python experiments/profile_step.py model=cpu dataset=taxinyc --compile       # torch.compile the model
    python experiments/profile_step.py model=cpu dataset=taxinyc --against model=cpu_nodix   # both, and the ratio

The model is built from the same config the trainer uses (``experiment=nyc_study`` plus the overrides) and fed
random batches of the given grid, so no data file is read. Forward times come from hooks on the model's direct
children (the model's own glue between them is the difference to the sum). On a CPU the timings are synchronous;
run nothing else beside it.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import statistics
import time
from collections import defaultdict

import torch

from vlm4st.config import compose
from vlm4st.data.timestamps import random_codes
from vlm4st.training.tasks import build_model

log = logging.getLogger("profile_step")


def _time_forward(module: torch.nn.Module, name: str, spent: dict[str, float]) -> None:
    """Add each forward of ``module`` to ``spent[name]`` (seconds)."""
    started = [0.0]

    def before(_module, _args) -> None:
        started[0] = time.perf_counter()

    def after(_module, _args, _out) -> None:
        spent[name] += time.perf_counter() - started[0]

    module.register_forward_pre_hook(before)
    module.register_forward_hook(after)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def merge_overrides(base: list[str], changes: list[str]) -> list[str]:
    """``base`` with each of ``changes`` replacing the override of the same key (or added)."""
    changed = {_key(c) for c in changes}
    return [o for o in base if _key(o) not in changed] + list(changes)


class Profiled:
    """One model the trainer would build, its optimiser and a random batch of the grid; ``step`` runs one training
    step (forward, backward, AdamW) and ``spent`` collects the forward time per direct child (seconds)."""

    def __init__(self, overrides: list[str], batch: int, grid: tuple[int, int], fused: bool, compile_model: bool):
        torch.manual_seed(0)
        cfg = compose(["experiment=nyc_study", *overrides])
        t_in, t_out = cfg.dataset.t_in, cfg.dataset.t_out
        self.model = build_model(cfg.model, 1, t_in, t_out).train()
        H, W = grid
        self.x = torch.rand(batch, t_in, H, W) * 2 - 1  # (B, T_in, H, W) in [-1, 1]
        self.stamps = torch.from_numpy(random_codes(batch, t_in, seed=1))  # (B, T_in, 3)
        self.future = torch.from_numpy(random_codes(batch, t_out, seed=2))  # (B, T_out, 3)
        self.task = torch.zeros(batch, dtype=torch.long)  # (B,) task 0
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, fused=fused)
        self.net = torch.compile(self.model) if compile_model else self.model
        self.spent: dict[str, float] = defaultdict(float)
        for name, child in self.model.named_children():
            _time_forward(child, name, self.spent)

    def step(self) -> None:
        pred = self.net(self.x, self.stamps, self.task, target_timestamps=self.future)  # (B, T_out, H, W, C)
        loss = pred.square().mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def timed(self, steps: int) -> float:
        """Seconds per step over ``steps`` steps."""
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        return (time.perf_counter() - t0) / steps


def profile(overrides: list[str], batch: int, grid: tuple[int, int], steps: int, warmup: int, fused: bool,
            compile_model: bool, against: list[str] | None = None, rounds: int = 5) -> dict[str, float]:
    """Milliseconds per step (``step``) and per forward of each child module, averaged over ``steps`` steps.

    With ``against`` (overrides replacing or added to ``overrides``) a second model is profiled in the same run:
    both models take turns, ``steps`` steps each per round over ``rounds`` rounds, and each step time is the median
    over rounds, so load that drifts during the run reaches both alike. The result then also holds ``against.step``,
    ``against.forward.*`` and ``ratio`` (step / against.step).
    """
    runs = {"": Profiled(overrides, batch, grid, fused, compile_model)}
    if against is not None:
        runs["against."] = Profiled(merge_overrides(overrides, against), batch, grid, fused, compile_model)
    result: dict[str, float] = {}
    for prefix, run in runs.items():
        t0 = time.perf_counter()
        for _ in range(warmup):
            run.step()
        result[f"{prefix}warmup_s"] = time.perf_counter() - t0
        run.spent.clear()
    turns = rounds if against is not None else 1
    per_step: dict[str, list[float]] = {prefix: [] for prefix in runs}
    for _ in range(turns):
        for prefix, run in runs.items():
            per_step[prefix].append(run.timed(steps))
    for prefix, run in runs.items():
        result[f"{prefix}step"] = statistics.median(per_step[prefix]) * 1e3
        spent = sorted(run.spent.items(), key=lambda kv: -kv[1])
        result.update({f"{prefix}forward.{k}": v / (steps * turns) * 1e3 for k, v in spent})
    if against is not None:
        result["ratio"] = result["step"] / result["against.step"]
    return result


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=cpu dataset=taxinyc")
    p.add_argument("--against", default=None, metavar="OVERRIDES",
                   help="profile a second model in the same run, the overrides plus these (quoted), e.g. "
                        "'model=cpu_nodix'; both take turns and the ratio of their step times is reported")
    p.add_argument("--rounds", type=int, default=5, help="turns of each model with --against (median over them)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--grid", type=int, nargs=2, default=(10, 20), metavar=("H", "W"))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--fused", action="store_true", help="fused AdamW")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    against = None if args.against is None else shlex.split(args.against)
    result = profile(args.overrides, args.batch, tuple(args.grid), args.steps, args.warmup, args.fused, args.compile,
                     against, args.rounds)
    names = {"": " ".join(args.overrides) or "defaults"}
    if against is not None:
        names["against."] = " ".join(merge_overrides(args.overrides, against))
    for prefix, name in names.items():
        log.info("%s: step %.1f ms (forward + backward + AdamW, batch %d, grid %d x %d; warm-up %.1f s)",
                 name, result[f"{prefix}step"], args.batch, *args.grid, result[f"{prefix}warmup_s"])
        for key, value in result.items():
            if key.startswith(f"{prefix}forward."):
                log.info("  forward %-20s %7.1f ms", key.removeprefix(f"{prefix}forward."), value)
    if against is not None:
        log.info("step ratio %.2fx (%s against %s; median of %d rounds of %d steps each)", result["ratio"],
                 names[""], names["against."], args.rounds, args.steps)
    return result


if __name__ == "__main__":
    main()
