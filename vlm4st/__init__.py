"""vlm4st: spatiotemporal grid forecasting through a LoRA-adapted vision-language encoder."""

from pathlib import Path

__version__ = "0.1.0"

#: Repository root (the folder holding ``conf/``, ``vlm4st/`` and ``tests/``).
REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"
