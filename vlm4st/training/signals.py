"""Stopping a run on purpose: signals (kill, SLURM pre-emption, submitit's timeout) become a flag the training
loop checks at step boundaries, so ``last.pt`` is written before the run stops or is requeued."""

from __future__ import annotations

import contextlib
import signal
from typing import Any


class RunInterrupted(RuntimeError):
    """Training stopped early on purpose (a signal or ``trainer.interrupt_after_steps``); ``last.pt`` is saved."""

    def __init__(self, message: str, exit_code: int = 3) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StopSignal:
    """Turns SIGTERM / SIGUSR1 / SIGUSR2 (kill, SLURM pre-emption, submitit's timeout signal) into a flag that the
    loop checks at step boundaries: it writes ``last.pt`` first, then hands the signal to the handler that was
    installed before (submitit's checkpoint-and-requeue), or stops with ``RunInterrupted``."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignal:
        for sig in self.SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: leave signals to the caller
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum

    def forward(self) -> None:
        """After ``last.pt`` is safe: call the earlier handler of the received signal (it may requeue and exit)."""
        previous = self._previous.get(self.received) if self.received is not None else None
        if callable(previous):
            previous(self.received, None)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
