"""Bad input on the real command line (``python -m vlm4st.run``): one ``error:`` line on stderr, exit status 2, no
traceback. Each case starts a process (about 10 s), so add one only for a path no in-process test covers.

``run_cli(*overrides)`` (``tests.runs``) runs the command line from the repository root without
``HYDRA_FULL_ERROR`` and with a timeout; give each run ``hydra.run.dir`` under ``tmp_path`` so nothing lands in
``outputs/``.
"""

from __future__ import annotations

from pathlib import Path

from tests.runs import assert_one_line_error, run_cli


def test_missing_albef_checkpoint_is_one_error_line(tmp_path: Path) -> None:
    proc = run_cli("model.vlm.pretrained_path=/nonexistent/ALBEF.pth", "logger=none", "trainer.epochs=1",
                   f"hydra.run.dir={tmp_path}", timeout=180)
    assert proc.stderr.count("\n") == 1  # exactly one line, not one line among blank ones
    assert_one_line_error(proc, "/nonexistent/ALBEF.pth", "model.vlm.pretrained_path")
