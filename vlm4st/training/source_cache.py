"""A cache of source-stage models for transfer runs, so one source model serves zero-shot and every few-shot ratio.

The key hashes everything that shapes the source stage: the resolved model (adapter included), dataset (sources,
windows, scaling, target) and trainer settings, the seed, the content of every data file and the package version;
not the shot ratio, which only matters after the source stage. A file lock serialises jobs that need the same
source model: the first trains it, the rest reuse it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import vlm4st

log = logging.getLogger(__name__)

_IGNORED_TRAINER_KEYS = ("fewshot", "progress", "progress_log_every_s", "log_every_steps", "interrupt_after_steps",
                         "num_threads")


def source_key(config: dict[str, Any], data_hashes: Mapping[str, str]) -> str:
    """A short stable hash of what determines the source stage: the resolved model, dataset and trainer settings,
    the seed, the content hash of every data file (``data_hashes``) and the package version, so a source model
    is never reused after its data or the code changed."""
    dataset = {k: v for k, v in config["dataset"].items() if k != "name"}
    trainer = {k: v for k, v in config["trainer"].items() if k not in _IGNORED_TRAINER_KEYS}
    shaped_by = {"model": config["model"], "dataset": dataset, "trainer": trainer, "seed": config["seed"],
                 "data_hashes": dict(data_hashes), "version": vlm4st.__version__}
    text = json.dumps(shaped_by, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def locked_source_dir(cache_dir: str | Path, key: str, target: str, lock: bool = True) -> Iterator[Path]:
    """Yield the cache entry's checkpoint folder for ``key``, holding an exclusive file lock when ``lock``.

    In a DDP job only rank 0 locks (then a barrier releases the others), so the ranks of one job never wait on
    each other's lock.
    """
    root = Path(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    entry = root / f"{target}-{key}"
    if not lock:
        yield entry
        return
    with open(root / f"{target}-{key}.lock", "w") as lock_file:
        log.info("source-model cache entry %s: waiting for its lock", entry)
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield entry
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
