"""Content fingerprints of datasets: what a checkpoint stores so a rebuilt run can prove it sees the same data.

A data file is identified by the sha256 of its bytes (not its path, which differs between machines, nor its
modification time, which a copy changes); generated data by the sha256 of the canonical JSON of the parameters
that generate it. Either way the fingerprint is ``{"kind": "file" | "generated", "sha256": <hex>}``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def file_fingerprint(path: Path) -> dict[str, str]:
    """``{"kind": "file", "sha256": ...}`` of the file's bytes, read in blocks (memory stays flat)."""
    with open(path, "rb") as f:
        return {"kind": "file", "sha256": hashlib.file_digest(f, "sha256").hexdigest()}


def config_fingerprint(params: dict[str, Any]) -> dict[str, str]:
    """``{"kind": "generated", "sha256": ...}`` of the generating parameters (key order does not matter)."""
    text = json.dumps(params, sort_keys=True, default=str)
    return {"kind": "generated", "sha256": hashlib.sha256(text.encode()).hexdigest()}


def array_sha256(*arrays: Any) -> str:
    """sha256 over the bytes, dtypes and shapes of arrays (e.g. the window starts a dataset serves)."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()
