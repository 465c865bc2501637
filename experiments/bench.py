"""Benchmark the VLM4ST presets: parameters, FLOPs, samples/s, share of the matmul peak, peak memory.

    python experiments/bench.py                                 # tiny and small, batch 1 and 4
    python experiments/bench.py --presets vlm4st --json bench.json --markdown bench.md

FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` (matmul/conv/bmm/SDPA as 2 x MAC; norms, softmax and
elementwise ops are not counted). PyTorch has no formula for the CPU fused attention kernel
(``_scaled_dot_product_flash_attention_for_cpu`` and its backward), so its FLOPs would silently read 0; the script
checks that and then registers PyTorch's own SDPA formulas for those ops (``sdpa_flop_count``: 4·B·h·Lq·Lk·d forward,
about 2.5x that backward). Training-step FLOPs = forward + backward of one step; ``--setting pretrained``
(default) freezes the VLM backbone (adapters and spatiotemporal modules train) as loaded ALBEF weights do,
``--setting random`` trains the randomly initialised encoders in full (``model.vlm.freeze=auto`` without
weights). The optimiser's elementwise update is not counted.

Speed: warm-up iterations, then timed iterations; samples/s from the median step time (the mean is kept in the
JSON); training = forward + backward + AdamW step. Other processes on the machine distort CPU timings badly (two
threads on two cores): run it on an otherwise idle machine.
Memory: every (preset, mode, batch) runs in a fresh subprocess whose peak RSS (``resource.getrusage``,
``ru_maxrss``) is the peak memory of building the model and running the steps; timing is taken there too.
Peak: the best matmul GFLOP/s of several n^3 products in the dtype the run uses (fp32, or bf16 with ``--bf16``),
measured in the same run, so speed can be compared as a share of the machine's peak (MFU = counted FLOP/s / peak).
``--device cuda``: the model and batches on the GPU, every timed step closed by ``torch.cuda.synchronize()``,
peak memory from ``torch.cuda.max_memory_allocated`` (device memory) beside the process RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from torch.utils import flop_counter

from vlm4st.data.timestamps import random_codes
from vlm4st.models import layers
from vlm4st.models.loss import ForecastLoss

log = logging.getLogger("bench")

#: The published reference (paper preset, 32x32, 6 -> 6, standard LoRA, fp32, CPU with a ~370 GFLOP/s peak).
REFERENCE = {
    "params_total": 313_321_719, "forward_gflop": 204.4, "train_gflop": 492.0, "peak_gflops": 370.0,
    "train_sps": {1: 0.18, 4: 0.18}, "infer_sps": {4: 1.0}, "train_rss_gib": {1: 6.2, 4: 15.7},
}  # fmt: skip
CPU_SDPA = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
CPU_SDPA_BACKWARD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward


def _sdpa_fwd(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


def _sdpa_bwd(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


def sdpa_is_counted() -> bool:
    """Whether FlopCounterMode counts the fused CPU attention kernel by itself."""
    q = torch.randn(1, 2, 8, 4)
    with FlopCounter(custom=False) as counter:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    return counter.get_total_flops() > 0


class FlopCounter(flop_counter.FlopCounterMode):
    """``FlopCounterMode`` plus the CPU SDPA formulas (``custom=True``)."""

    def __init__(self, custom: bool = True) -> None:
        mapping = {CPU_SDPA: _sdpa_fwd, CPU_SDPA_BACKWARD: _sdpa_bwd} if custom else {}
        super().__init__(display=False, custom_mapping=mapping)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels (timings on CUDA are meaningless without it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> dict[str, Any]:
    """Best GFLOP/s of n^3 matmuls in ``dtype`` on ``device``, per size and overall."""
    sizes = (4096, 8192) if device.type == "cuda" else (2048, 4096)
    result: dict[str, Any] = {}
    for n in sizes:
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        a @ b  # warm-up
        synchronize(device)
        best = 0.0
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            synchronize(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
        result[f"matmul_{n}_gflops"] = best
    result["peak_gflops"] = max(result.values())
    result["peak_dtype"] = str(dtype).removeprefix("torch.")
    result["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return result


def build_model(args: argparse.Namespace, preset: str) -> torch.nn.Module:
    from vlm4st.config import compose, instantiate

    overrides = [f"model={preset}", f"lora_type={args.lora_type}", f"ablation={args.ablation}"]
    overrides += [f"dataset.t_in={args.t_in}", f"dataset.t_out={args.t_out}"]
    torch.manual_seed(0)
    model = instantiate(compose(overrides).model, path="model")
    if args.setting == "pretrained":
        model.freeze_vlm_backbone()  # what loaded ALBEF weights give: frozen backbone, adapter trains
    # "random": model.vlm.freeze=auto leaves the randomly initialised encoders trainable (with their adapter)
    if args.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


def make_batch(args: argparse.Namespace, B: int) -> tuple[torch.Tensor, ...]:
    H, W = args.grid
    x = torch.rand(B, args.t_in, H, W) * 2 - 1
    ts = torch.from_numpy(random_codes(B, args.t_in, seed=1))  # (B, T_in, 3)
    y = torch.rand(B, args.t_out, H, W) * 2 - 1
    target_ts = torch.from_numpy(random_codes(B, args.t_out, seed=2))  # (B, T_out, 3)
    batch = (x, ts, torch.zeros(B, dtype=torch.long), target_ts, y)
    return tuple(t.to(args.device) for t in batch)


def attention_context(args: argparse.Namespace) -> ExitStack:
    """The SDPA backend choice; it must also cover backward (activation recomputation runs attention again)."""
    stack = ExitStack()
    if args.attention == "math":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        stack.enter_context(sdpa_kernel(SDPBackend.MATH))
    return stack


def autocast_context(args: argparse.Namespace) -> ExitStack:
    """bf16 autocast around the forward pass (backward follows the dtypes it recorded)."""
    stack = ExitStack()
    if args.bf16:
        stack.enter_context(torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16))
    return stack


LOSS = ForecastLoss(mse_weight=1.0, mae_weight=0.5)


def forward(model, batch) -> torch.Tensor:
    x, ts, task, target_ts, _ = batch
    return model(x, ts, task, target_timestamps=target_ts)  # (B, T_out, H, W, C)


def train_step(model, opt, batch, args) -> None:
    with attention_context(args):
        with autocast_context(args):
            loss, _ = LOSS(forward(model, batch), batch[-1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
    opt.step()


@contextlib.contextmanager
def every_attention_through_sdpa() -> Iterator[None]:
    """Route every attention through SDPA while counting: ``layers.attend`` multiplies out short attentions with
    elementwise products, which the counter does not see; through SDPA the same products are counted."""
    saved = layers.SHORT_PAIRS
    layers.SHORT_PAIRS = 0
    try:
        yield
    finally:
        layers.SHORT_PAIRS = saved


@every_attention_through_sdpa()
def count_flops(model, args) -> dict[str, float]:
    """Forward and training-step GFLOP per sample (batch 1)."""
    batch = make_batch(args, 1)
    model.eval()  # grad mode stays on: the counter's module hooks reject views made under no_grad
    with FlopCounter() as fwd, attention_context(args), autocast_context(args):
        forward(model, batch)
    model.train()
    with FlopCounter() as step, attention_context(args):
        with autocast_context(args):
            loss, _ = LOSS(forward(model, batch), batch[-1])
        loss.backward()
    model.zero_grad(set_to_none=True)
    return {"forward_gflop": fwd.get_total_flops() / 1e9, "train_gflop": step.get_total_flops() / 1e9}


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Fresh process for one measurement: ``peak``, ``flops`` (and parameters) of a preset, or the speed and peak
    RSS of one mode (``train`` / ``infer``) at one batch size. The parent process computes nothing itself, so no
    idle worker threads of its own compete with the measurement."""
    args = argparse.Namespace(**spec["args"])
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if spec["mode"] == "peak":
        dtype = torch.bfloat16 if args.bf16 else torch.float32
        return {**matmul_peak(device, dtype), "threads": torch.get_num_threads()}
    if spec["mode"] == "sdpa_check":
        counted = (
            "counted by FlopCounterMode" if sdpa_is_counted() else "added by formula (flop_counter.sdpa_flop_count)"
        )
        return {"sdpa_flops": counted}
    model = build_model(args, spec["preset"]).to(device)
    if spec["mode"] == "flops":
        counts = model.get_trainable_parameters()
        return {"params_total": counts.total, "params_trainable": counts.trainable, **count_flops(model, args)}
    rss_built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    B = spec["batch"]
    batch = make_batch(args, B)
    run_model = torch.compile(model) if args.compile else model
    if spec["mode"] == "train":
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def step() -> None:
            train_step(run_model, opt, batch, args)
    else:
        model.eval()

        def step() -> None:
            with torch.no_grad(), attention_context(args), autocast_context(args):
                forward(run_model, batch)

    for _ in range(args.warmup):
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    device_gib = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {
        "samples_per_s": B / median,  # median step: robust to a step slowed by other processes
        "samples_per_s_mean": B * len(times) / sum(times),
        "seconds_per_step": times,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "model_rss_gib": rss_built,
        "peak_device_gib": device_gib,
        "threads": torch.get_num_threads(),
    }


def run_worker(args: argparse.Namespace, preset: str | None, mode: str, batch: int = 0) -> dict[str, Any]:
    worker_args = {k: v for k, v in vars(args).items() if k not in ("json", "markdown", "worker")}
    spec = {"args": worker_args, "preset": preset, "mode": mode, "batch": batch}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, env=os.environ
    )
    # a log line per worker, so that a run stopped by a time limit still says where its time went
    log.info("worker %s (%s, batch %d): %.1f s", mode, preset, batch, time.perf_counter() - started)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {mode} ({preset}, batch {batch}) failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_preset(args: argparse.Namespace, preset: str, peak: float) -> dict[str, Any]:
    flops = run_worker(args, preset, "flops")
    row: dict[str, Any] = {"preset": preset, **flops, "runs": {}}
    for B in args.batch_sizes:
        train, infer = run_worker(args, preset, "train", B), run_worker(args, preset, "infer", B)
        for mode, res, gflop in (("train", train, flops["train_gflop"]), ("infer", infer, flops["forward_gflop"])):
            res["achieved_gflops"] = res["samples_per_s"] * gflop
            res["share_of_peak"] = res["achieved_gflops"] / peak
            # speed normalised by the peak, relative to the reference's samples/s per GFLOP/s of its peak
            ref = REFERENCE[f"{mode}_sps"].get(B)
            res["vs_reference_normalised"] = (
                None if ref is None else (res["samples_per_s"] / peak) / (ref / REFERENCE["peak_gflops"])
            )
        row["runs"][str(B)] = {"train": train, "infer": infer}
        log.info("%s batch %d: train %.3f samples/s, infer %.3f samples/s", preset, B, train["samples_per_s"],
                 infer["samples_per_s"])  # fmt: skip
    return row


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(result: dict[str, Any]) -> str:
    peak = result["machine"]["peak_gflops"]
    lines = [
        f"Device: {result['machine']['device_name']}. Peak {result['machine']['peak_dtype']} matmul: {peak:.1f} "
        f"GFLOP/s ({result['machine']['threads']} threads). "
        f"Settings: {json.dumps(result['settings'])}. SDPA FLOPs: {result['sdpa_flops']}.",
        "",
        "| preset | batch | params (trainable) | fwd GFLOP/sample | train GFLOP/sample | train samples/s | "
        "train % peak | infer samples/s | infer % peak | train x ref (norm.) | infer x ref (norm.) | "
        "peak RSS train / infer GiB | peak device memory train / infer GiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["presets"]:
        for B, run in row["runs"].items():
            tr, inf = run["train"], run["infer"]

            def ratio(r: dict[str, Any]) -> str:
                return "-" if r["vs_reference_normalised"] is None else f"{r['vs_reference_normalised']:.2f}"

            lines.append(
                f"| {row['preset']} | {B} | {row['params_total'] / 1e6:.1f} M ({row['params_trainable'] / 1e6:.1f} M) "
                f"| {row['forward_gflop']:.1f} | {row['train_gflop']:.1f} | {tr['samples_per_s']:.3f} | "
                f"{100 * tr['share_of_peak']:.0f} % | {inf['samples_per_s']:.3f} | {100 * inf['share_of_peak']:.0f} % "
                f"| {ratio(tr)} | {ratio(inf)} | {tr['peak_rss_gib']:.2f} / {inf['peak_rss_gib']:.2f} "
                f"| {_gib(tr['peak_device_gib'])} / {_gib(inf['peak_device_gib'])} |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="tiny,small", help="comma-separated model presets (vlm4st = paper size)")
    p.add_argument("--batch-sizes", default="1,4", help="comma-separated batch sizes")
    p.add_argument("--grid", type=int, nargs=2, default=(32, 32), metavar=("H", "W"))
    p.add_argument("--t-in", type=int, default=6)
    p.add_argument("--t-out", type=int, default=6)
    p.add_argument("--lora-type", default="standard")
    p.add_argument("--ablation", default="full")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--attention", choices=("sdpa", "math"), default="sdpa", help="fused SDPA kernels or math")
    p.add_argument("--compile", action="store_true", help="torch.compile the model for the timed runs")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (and the peak measured in bf16)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument(
        "--setting", choices=("pretrained", "random"), default="pretrained",
        help="pretrained: backbone frozen, adapter trains (loaded ALBEF weights); random: no weights, "
        "model.vlm.freeze=auto trains the random encoders in full",
    )
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--markdown", type=Path, default=None, help="write the Markdown table here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.batch_sizes = [int(b) for b in str(args.batch_sizes).split(",")]
    args.presets = [s for s in str(args.presets).split(",") if s]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    machine = run_worker(args, None, "peak")
    log.info("%s %s matmul peak %.1f GFLOP/s", machine["device_name"], machine["peak_dtype"], machine["peak_gflops"])
    settings = {k: v for k, v in vars(args).items() if k not in ("json", "markdown", "worker")}
    sdpa = run_worker(args, None, "sdpa_check")["sdpa_flops"]
    result = {"machine": machine, "settings": settings, "sdpa_flops": sdpa, "reference": REFERENCE, "presets": []}
    for preset in args.presets:
        result["presets"].append(bench_preset(args, preset, machine["peak_gflops"]))
    table = markdown(result)
    sys.stdout.write(table)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    if args.markdown is not None:
        args.markdown.write_text(table)


if __name__ == "__main__":
    main()
