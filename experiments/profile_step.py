"""Where one training step goes: forward time per top-level module, and the whole step (forward, backward, update).

    python experiments/profile_step.py model=cpu dataset=taxinyc                  # TaxiNYC 6 -> 6 grid (10 x 20)
    python experiments/profile_step.py model=cpu dataset=taxinyc dataset.t_in=12 dataset.t_out=12
    python experiments/profile_step.py model=stid dataset=taxinyc --fused        # fused AdamW
    python experiments/profile_step.py model=cpu dataset=taxinyc --compile       # torch.compile the model

The model is built from the same config the trainer uses (``experiment=nyc_study`` plus the overrides) and fed
random batches of the given grid, so no data file is read. Forward times come from hooks on the model's direct
children (the model's own glue between them is the difference to the sum). On a CPU the timings are synchronous;
run nothing else beside it.
"""

from __future__ import annotations

import argparse
import logging
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


def profile(overrides: list[str], batch: int, grid: tuple[int, int], steps: int, warmup: int, fused: bool,
            compile_model: bool) -> dict[str, float]:
    """Milliseconds per step (``step``) and per forward of each child module, averaged over ``steps`` steps."""
    torch.manual_seed(0)
    cfg = compose(["experiment=nyc_study", *overrides])
    t_in, t_out = cfg.dataset.t_in, cfg.dataset.t_out
    model = build_model(cfg.model, 1, t_in, t_out).train()
    H, W = grid
    x = torch.rand(batch, t_in, H, W) * 2 - 1  # (B, T_in, H, W) in [-1, 1]
    stamps = torch.from_numpy(random_codes(batch, t_in, seed=1))  # (B, T_in, 3)
    future = torch.from_numpy(random_codes(batch, t_out, seed=2))  # (B, T_out, 3)
    task = torch.zeros(batch, dtype=torch.long)  # (B,) task 0
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fused)
    net = torch.compile(model) if compile_model else model
    spent: dict[str, float] = defaultdict(float)
    for name, child in model.named_children():
        _time_forward(child, name, spent)

    def step() -> None:
        pred = net(x, stamps, task, target_timestamps=future)  # (B, T_out, H, W, C)
        loss = pred.square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    warm = time.perf_counter() - t0
    spent.clear()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    result = {"step": (time.perf_counter() - t0) / steps * 1e3, "warmup_s": warm}
    result.update({f"forward.{k}": v / steps * 1e3 for k, v in sorted(spent.items(), key=lambda kv: -kv[1])})
    return result


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=cpu dataset=taxinyc")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--grid", type=int, nargs=2, default=(10, 20), metavar=("H", "W"))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--fused", action="store_true", help="fused AdamW")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = profile(args.overrides, args.batch, tuple(args.grid), args.steps, args.warmup, args.fused, args.compile)
    log.info("step %.1f ms (forward + backward + AdamW, batch %d, grid %d x %d; warm-up %.1f s)",
             result["step"], args.batch, *args.grid, result["warmup_s"])
    for key, value in result.items():
        if key.startswith("forward."):
            log.info("  forward %-20s %7.1f ms", key.removeprefix("forward."), value)
    return result


if __name__ == "__main__":
    main()
