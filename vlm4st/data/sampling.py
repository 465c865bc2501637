"""Which windows go where: few-shot selection, the per-epoch batch plan (interleaving, DDP shards), eval chunks.

Everything here is a pure function of counts and seeds, so every DDP rank computes the same plan locally.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vlm4st.data.records import Windows

FEW_SHOT_SAMPLING: tuple[str, ...] = ("head", "random")


def rng(*keys: int) -> np.random.Generator:
    """A generator seeded by integer keys (any sign), e.g. (seed, epoch, dataset position)."""
    return np.random.default_rng([int(k) % (1 << 64) for k in keys])


def time_order(windows: Windows) -> np.ndarray:
    """Positions of ``windows`` in time order: by rank within their channel, then by channel.

    Windows are stored channel-major (all channel-0 windows, then channel 1, ...), each channel in time order,
    so "the first k in time order" takes the earliest windows of every channel alike.
    """
    order = np.argsort(windows.channel, kind="stable")
    rank = np.empty(len(windows), dtype=np.int64)
    ch_sorted = windows.channel[order]
    first = np.searchsorted(ch_sorted, ch_sorted)  # index where each window's channel group begins
    rank[order] = np.arange(len(windows)) - first
    return np.lexsort((windows.channel, rank))


def few_shot_positions(windows: Windows, ratio: float, sampling: str, seed: int) -> np.ndarray:
    """Positions of the ``max(1, floor(n * ratio))`` training windows a few-shot target contributes.

    ``head``: the first ones in time order (UniST); ``random``: a seeded random subset (kept in time order).
    """
    n = len(windows)
    k = max(1, math.floor(n * ratio))
    order = time_order(windows)
    if sampling == "head":
        chosen = order[:k]
    elif sampling == "random":
        picked = rng(seed).choice(n, size=k, replace=False)
        rank_in_time = np.empty(n, dtype=np.int64)
        rank_in_time[order] = np.arange(n)
        chosen = picked[np.argsort(rank_in_time[picked])]
    else:
        raise ValueError(f"few_shot_sampling={sampling!r}; expected one of {FEW_SHOT_SAMPLING}")
    return chosen


def _shard_batches(
    n: int, batch_size: int, world_size: int, drop_last: bool, generator: np.random.Generator
) -> list[list[np.ndarray]]:
    """Shuffled positions 0..n-1 cut into batches, dealt to ranks: ``result[rank][j]`` = batch j of that rank.

    Every rank gets the same number of batches. Without ``drop_last`` the batches are disjoint, cover all n
    windows and differ in size by at most one (never above ``batch_size``); only when n is smaller than the
    number of batch slots are windows repeated. With ``drop_last`` each rank gets n // (world_size *
    batch_size) full batches and the remainder is skipped this epoch.
    """
    perm = generator.permutation(n)
    if drop_last:
        per_rank = n // (world_size * batch_size)
        chunks = list(perm[: per_rank * world_size * batch_size].reshape(-1, batch_size))
    else:
        per_rank = math.ceil(n / (world_size * batch_size))
        slots = per_rank * world_size
        if n < slots:  # fewer windows than batches: repeat some so no rank gets an empty batch
            perm = np.resize(perm, slots)
        chunks = np.array_split(perm, slots)
    return [chunks[r::world_size] for r in range(world_size)]


def epoch_plan(
    sizes: Sequence[int],
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
) -> list[tuple[int, np.ndarray]]:
    """This rank's batches for one epoch: ``(dataset position, window positions)`` in a seeded shuffled order.

    Each batch holds one dataset's windows. Datasets are shuffled with seed (seed, epoch, dataset position); the
    interleaving order with (seed, epoch), identical on every rank, so all ranks step through the same dataset
    sequence with equally many batches.
    """
    if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad batching: batch_size={batch_size}, rank={rank}, world_size={world_size}")
    per_dataset = [
        _shard_batches(n, batch_size, world_size, drop_last, rng(seed, epoch, d))[rank] for d, n in enumerate(sizes)
    ]
    slots = [(d, j) for d, batches in enumerate(per_dataset) for j in range(len(batches))]
    order = rng(seed, epoch).permutation(len(slots))
    return [(slots[i][0], per_dataset[slots[i][0]][slots[i][1]]) for i in order]


def eval_chunks(n: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[np.ndarray]:
    """In-order batches of positions 0..n-1; with several ranks each takes one contiguous share."""
    if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad batching: batch_size={batch_size}, rank={rank}, world_size={world_size}")
    share = np.array_split(np.arange(n, dtype=np.int64), world_size)[rank]
    return [share[i : i + batch_size] for i in range(0, len(share), batch_size)]
