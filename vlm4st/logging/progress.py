"""Progress of long loops: a redrawn bar on a terminal, periodic log lines anywhere else.

A training stage gets one bar over all of its steps (every epoch), with the overall ETA: the smaller of the
step-rate estimate and the time budget still left, so a time-budgeted stage shows when it will really stop.
Validation, test and baseline passes get a bar of their own. When the bar's stream is not a terminal (SLURM,
pipes, CI) no carriage-return bar is written; a log line every ``log_every_s`` seconds says the same.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from tqdm import tqdm

from vlm4st import checks

log = logging.getLogger(__name__)

BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]"


@dataclass(frozen=True)
class ProgressConfig:
    """Whether to show progress and how often to log it off a terminal (``trainer.progress*`` keys)."""

    enabled: bool
    log_every_s: float

    @classmethod
    def from_trainer(cls, trainer_cfg: Any, is_main: bool = True) -> ProgressConfig:
        """From the ``trainer`` config node; only the main process of a distributed job reports."""
        enabled = checks.flag(trainer_cfg.progress, "trainer.progress")
        every = checks.positive_number(trainer_cfg.progress_log_every_s, "trainer.progress_log_every_s")
        return cls(enabled and is_main, every)

    def bar(self, name: str, total: int, **kwargs: Any) -> Progress:
        return Progress(name, total, enabled=self.enabled, log_every_s=self.log_every_s, **kwargs)


#: For callers that report nothing (library use, tests).
QUIET = ProgressConfig(False, 30.0)


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Counts ``total`` units of a named loop; ``advance`` per unit, ``note`` for the values shown beside it.

    ``budget_s`` (training stages under a time budget) caps the ETA by the budget still left, measured from
    ``spent_s`` (the training seconds of earlier runs of a resumed stage). ``interactive=None`` asks the stream.
    """

    def __init__(
        self,
        name: str,
        total: int,
        *,
        enabled: bool,
        log_every_s: float,
        unit: str = "step",
        done: int = 0,
        budget_s: float | None = None,
        spent_s: float = 0.0,
        interactive: bool | None = None,
        stream: TextIO | None = None,
    ) -> None:
        if log_every_s <= 0:
            raise ValueError(f"progress interval: expected a positive number of seconds, got {log_every_s}")
        self.name, self.total, self.unit = name, int(total), unit
        self.done, self.start_done = int(done), int(done)
        self.budget_s, self.spent_s = budget_s, float(spent_s)
        self.log_every_s = float(log_every_s)
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.values: dict[str, str] = {}
        self.started = self.last_log = time.perf_counter()
        self.bar: tqdm | None = None
        if enabled and self.interactive:
            self.bar = tqdm(total=self.total, initial=self.done, desc=name, unit=unit, file=self.stream,
                            dynamic_ncols=True, mininterval=1.0, leave=False, bar_format=BAR_FORMAT)

    # -- estimates ------------------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def eta_s(self) -> float | None:
        """Seconds until the loop ends: by the rate so far, capped by the time budget left; None before a rate."""
        ran, elapsed = self.done - self.start_done, self.elapsed()
        by_rate = (self.total - self.done) * elapsed / ran if ran > 0 else None
        if self.budget_s is None:
            return by_rate
        left = max(0.0, self.budget_s - self.spent_s - elapsed)
        return left if by_rate is None else min(by_rate, left)

    # -- updates --------------------------------------------------------------------------------------------------
    def note(self, **values: Any) -> None:
        """Values shown beside the count (``loss=0.01``, ``epoch="2/20"``); floats get four significant digits."""
        for key, value in values.items():
            self.values[key] = f"{value:.4g}" if isinstance(value, float) else str(value)
        if self.bar is not None:
            self.bar.set_postfix_str(self._postfix(self.eta_s()), refresh=True)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            eta = self.eta_s()
            self.bar.set_postfix_str(self._postfix(eta), refresh=False)
            self.bar.update(n)
        elif self.enabled and time.perf_counter() - self.last_log >= self.log_every_s:
            self.last_log = time.perf_counter()
            log.info("%s", self.line())

    def line(self) -> str:
        """One log line: count, share, rate, values and ETA."""
        ran, elapsed = self.done - self.start_done, self.elapsed()
        rate = f"{ran / elapsed:.2f} {self.unit}/s" if elapsed > 0 else "-"
        share = 100.0 * self.done / self.total if self.total else 100.0
        return (f"{self.name}: {self.done}/{self.total} {self.unit}s ({share:.0f}%), {rate}, "
                f"elapsed {_clock(elapsed)}, {self._postfix(self.eta_s())}")

    def _postfix(self, eta: float | None) -> str:
        """``key value, ..., eta mm:ss`` (tqdm puts its own ", " before a bar's postfix)."""
        parts = [f"{k} {v}" for k, v in self.values.items()]
        parts.append(f"eta {_clock(eta)}" if eta is not None else "eta -")
        return ", ".join(parts)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
