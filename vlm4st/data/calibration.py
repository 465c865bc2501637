"""The zero-shot calibration prefix: the scaler of an unseen target is fitted on frames that are never scored.

A zero-shot target has no training data to fit its scaler on. Fitting it on the input frames of every test
window would fit it on scored values: with stride-1 windows the inputs of a later window are the targets of an
earlier one. Instead the first ``steps`` frames of the target's test period (per channel) are a calibration
prefix: the scaler sees only them, and a test window is scored only when its first target frame comes after
the prefix (its inputs may lie inside it). With stride-1 windows that drops ``steps - t_in`` windows per channel.
"""

from __future__ import annotations

import numpy as np

from vlm4st.data.errors import DataValueError
from vlm4st.data.records import Windows
from vlm4st.data.timestamps import week_step

CONFIG_KEY = "dataset.zero_shot_calibration_steps"


def calibration_split(
    windows: Windows,
    stamps: np.ndarray,
    t_in: int,
    capacity: int,
    steps: int,
    steps_per_day: int,
    time_ordered: bool,
    source: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Frames to fit the scaler on (sorted frame indices) and the positions of the test windows left to score.

    ``windows`` are the test windows, each backed by ``capacity`` frames (the stored window length, or the window
    length of a series); ``stamps`` (F, 2) those of the frame store. ``time_ordered`` says the frame
    store holds each channel in time order with no instant twice (a series); stored windows qualify only when
    each channel's test frames form one run of consecutive stamps, else the prefix has no meaning and this raises.
    """
    fit, keep = [], []
    for c in np.unique(windows.channel):
        pos = np.flatnonzero(windows.channel == c)  # (n_c,)
        covered = np.unique(windows.starts[pos, None] + np.arange(capacity))  # (F_c,) the channel's test period
        if not time_ordered:
            step = np.diff(week_step(stamps[covered], steps_per_day)) % (7 * steps_per_day)  # (F_c - 1,)
            if (step != 1).any():
                i = int(np.flatnonzero(step != 1)[0])
                raise DataValueError(
                    source,
                    f"zero-shot calibration needs the test windows of channel {int(c)} to form one continuous series; "
                    f"frame {int(covered[i + 1])} does not follow frame {int(covered[i])}, so stored windows cannot "
                    "be put in time order (set dataset.zero_shot_scaler=train to fit on the training split instead)",
                )
        if len(covered) < steps:
            raise DataValueError(
                source,
                f"{CONFIG_KEY}={steps} is longer than the test period of channel {int(c)} ({len(covered)} frames)",
            )
        prefix = covered[:steps]  # (steps,)
        scored = windows.starts[pos] + t_in > prefix[-1]  # first target frame after the prefix
        if not scored.any():
            raise DataValueError(
                source, f"{CONFIG_KEY}={steps} leaves no test window of channel {int(c)} to score; lower it"
            )
        fit.append(prefix)
        keep.append(pos[scored])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(keep))
