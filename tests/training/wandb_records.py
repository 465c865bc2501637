"""Read the records of an offline W&B run file (``run-<id>.wandb``) without a W&B server.

The file is a 7-byte header (``:W&B``, magic 0xBEE1, version 0) followed by a LevelDB-style log: 32 KiB blocks of
chunks, each chunk a 7-byte header (CRC32, little-endian length, type FULL/FIRST/MIDDLE/LAST) and its payload.
Joined payloads are ``wandb_internal_pb2.Record`` protobuf messages.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[bytes]:
    """Yield each record's payload bytes."""
    data = Path(path).read_bytes()
    if data[:4] != b":W&B" or struct.unpack("<HB", data[4:7]) != (0xBEE1, 0):
        raise ValueError(f"{path}: not a W&B offline run file")
    pos, parts = 7, []
    while pos + 7 <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < 7:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
            continue
        if kind == FULL:
            yield payload
        elif kind == FIRST:
            parts = [payload]
        elif kind == MIDDLE:
            parts.append(payload)
        elif kind == LAST:
            parts.append(payload)
            yield b"".join(parts)
            parts = []


def history_keys_and_config(path: Path) -> tuple[set[str], bool]:
    """Every key logged to the run's history, and whether a config record was written."""
    from wandb.proto import wandb_internal_pb2

    keys: set[str] = set()
    config_seen = False
    for payload in records(path):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(payload)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            keys |= {item.key or "/".join(item.nested_key) for item in rec.history.item}
        elif kind == "config":
            config_seen = True
    return keys, config_seen


def wait_until_closed(path: Path, patience_s: float = 120.0) -> None:
    """Wait until the run file ends with its ``exit`` record. W&B's service process writes the file and can still
    be flushing it when ``run.finish()`` returns; a file read before that may miss records written long before.
    Raises AssertionError naming the file when the record has not appeared after ``patience_s`` seconds."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    deadline = time.monotonic() + patience_s
    while True:
        try:
            kinds = [wandb_internal_pb2.Record.FromString(p).WhichOneof("record_type") for p in records(path)]
        except (ValueError, DecodeError):  # the header, or the last record, is only partly written yet
            kinds = []
        if "exit" in kinds:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: no exit record after {patience_s:.0f} s (records so far: {kinds})")
        time.sleep(0.2)
