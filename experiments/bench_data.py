"""Benchmark of the UniST JSON reader against a reference-style ``json.load`` on a TaxiNYC-size file.

Builds a UniST-format JSON (``X_<split> = [windows, period]`` + ``timestamps`` pairs) from the shared taxi
``.unist.npz`` windows, with period arrays (N, 3, 12, H, W) = the same steps on the 3 previous days taken from
the ``.series.npz`` (clipped at the series start), values written by ``json.dumps`` as floats (``12.0``) like
the UniST files. Then, each in a fresh subprocess:
  (a) reference: ``json.load`` + ``torch.tensor`` of each split's windows and timestamps;
  (b) ours, first load: parse + write the binary cache;
  (c) ours, second load: cache hit.
  (d) maintained JSON libraries, each used as well as it allows, to the same arrays (each split's windows as
      float32 (N, T, H, W) and its timestamps as int64): ``orjson.loads``; ``msgspec.json.decode`` with a typed
      schema that leaves the period arrays undecoded (``msgspec.Raw``); ``pysimdjson`` (simdjson) with each
      windows array flattened by ``as_buffer`` and reshaped. A library that is not installed is reported as such
      (``pip install -e ".[bench]"``).
It prints wall time and peak RSS (``ru_maxrss``) of each, and the hashing speed of the candidate digests.

    python experiments/bench_data.py [--workdir DIR] [--repeat N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vlm4st import REPO_ROOT

SHARED = REPO_ROOT / ".." / "shared" / "data"
STEM = "nyc_taxi_stdn_10x20_30min"
SPLITS = ("train", "val", "test")


def build_json(out: Path) -> None:
    """Write the TaxiNYC-size UniST JSON (about 290 MiB)."""
    windows = np.load(SHARED / f"{STEM}.unist.npz")
    series = np.load(SHARED / f"{STEM}.series.npz")["data"]  # (T, C, H, W)
    spd = int(windows["steps_per_day"])
    with open(out, "w") as f:
        f.write("{")
        for i, split in enumerate(SPLITS):
            x = windows[f"X_{split}"].astype(np.float64)  # (N, 12, H, W)
            start, chan = windows[f"start_{split}"], windows[f"chan_{split}"]
            days_back = spd * np.arange(3, 0, -1)  # 3 previous days, oldest first
            idx = start[:, None, None] - days_back[None, :, None] + np.arange(x.shape[1])[None, None, :]
            period = series[np.clip(idx, 0, None), chan[:, None, None]].astype(np.float64)  # (N, 3, 12, H, W)
            f.write(("" if i == 0 else ", ") + f'"X_{split}": [[')
            f.write(", ".join(json.dumps(w) for w in x.tolist()))
            f.write("], [")
            f.write(", ".join(json.dumps(p) for p in period.tolist()))
            f.write("]]")
        f.write(', "timestamps": ')
        json.dump({s: windows[f"ts_{s}"].astype(int).tolist() for s in SPLITS}, f)
        f.write("}")


def _child(mode: str, path: str, cache_dir: str) -> None:
    """Run one step in this (fresh) process and print its result as JSON (time and peak RSS for loads)."""
    if mode == "build":
        build_json(Path(path))
        print(json.dumps({}))
        return
    if mode == "hash":
        print(json.dumps(_hash_speeds(Path(path))))
        return
    if mode in LIBRARIES:
        try:
            shape = LIBRARIES[mode](Path(path))
        except ImportError as err:
            print(json.dumps({"missing": str(err)}))
            return
        print(json.dumps({"seconds": shape.pop(), "rss_gib": _peak_rss_gib(), "train_shape": shape}))
        return
    t0 = time.perf_counter()
    if mode == "reference":
        import torch

        with open(path) as f:
            doc = json.load(f)
        tensors = {}
        for s in SPLITS:
            tensors[s] = torch.tensor(doc[f"X_{s}"][0], dtype=torch.float32)
            tensors[f"ts_{s}"] = torch.tensor(doc["timestamps"][s], dtype=torch.long)
        shape = list(tensors["train"].shape)
    else:
        from vlm4st.data import UniSTJsonReader

        data = UniSTJsonReader(
            path, "pairs", interval_minutes=30, load_period=False, cache_dir=cache_dir, cache_beside_file=False
        ).read(12, SPLITS)
        shape = [len(data.windows["train"]), 12, *data.grid]
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "rss_gib": _peak_rss_gib(), "train_shape": shape}))


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)


def _arrays_from_lists(doc: dict) -> list[int]:
    """Each split's windows (float32) and timestamps (int64) from a decoded document; the train shape."""
    arrays = {}
    for s in SPLITS:
        arrays[s] = np.asarray(doc[f"X_{s}"][0], dtype=np.float32)  # (N, T, H, W)
        arrays[f"ts_{s}"] = np.asarray(doc["timestamps"][s], dtype=np.int64)  # (N, T, 2)
    return list(arrays["train"].shape)


def _orjson(path: Path) -> list[float]:
    import orjson

    t0 = time.perf_counter()
    shape = _arrays_from_lists(orjson.loads(path.read_bytes()))
    return [*shape, time.perf_counter() - t0]


def _msgspec(path: Path) -> list[float]:
    import msgspec

    windows = tuple[list[list[list[list[float]]]], msgspec.Raw]  # [windows, period]: period left undecoded
    stamps = dict[str, list[list[list[int]]]]
    schema = msgspec.defstruct("UniST", [("X_train", windows), ("X_val", windows), ("X_test", windows),
                                         ("timestamps", stamps)])
    t0 = time.perf_counter()
    doc = msgspec.json.decode(path.read_bytes(), type=schema)
    shape = _arrays_from_lists({f"X_{s}": getattr(doc, f"X_{s}") for s in SPLITS} | {"timestamps": doc.timestamps})
    return [*shape, time.perf_counter() - t0]


def _simdjson(path: Path) -> list[float]:
    import simdjson

    t0 = time.perf_counter()
    doc = simdjson.Parser().parse(path.read_bytes())
    shape: list[int] = []
    for s in SPLITS:
        x = doc[f"X_{s}"][0]
        dims = [len(x), len(x[0]), len(x[0][0]), len(x[0][0][0])]  # from the first element: no ragged check
        flat = np.frombuffer(x.as_buffer(of_type="d"), dtype=np.float64)
        windows = flat.astype(np.float32).reshape(dims)  # (N, T, H, W)
        ts = doc["timestamps"][s]
        stamps = np.frombuffer(ts.as_buffer(of_type="i"), dtype=np.int64).reshape(len(ts), -1, 2)  # (N, T, 2)
        if s == "train":
            shape = list(windows.shape)
        del windows, stamps
    return [*shape, time.perf_counter() - t0]


LIBRARIES = {"orjson": _orjson, "msgspec": _msgspec, "simdjson": _simdjson}


def _run(mode: str, path: Path, cache_dir: Path) -> dict:
    """Run ``mode`` in a fresh interpreter. The parent stays small: Linux keeps ``ru_maxrss`` across fork+exec,
    so a child of a large parent would report the parent's peak."""
    cmd = [sys.executable, __file__, "--child", mode, str(path), str(cache_dir)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _hash_speeds(path: Path) -> dict[str, float]:
    data = path.read_bytes()
    out = {}
    for name in ("md5", "sha1", "sha256", "blake2b"):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            hashlib.new(name, data).digest()
            times.append(time.perf_counter() - t0)
        out[name] = min(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the JSON here (default: a temp dir)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; the median is reported")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "PATH", "CACHE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    if not SHARED.is_dir():
        sys.exit(f"shared datasets not found at {SHARED}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vlm4st_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / "TaxiNYC_short.json"
    if not path.is_file():
        t0 = time.perf_counter()
        _run("build", path, work)
        print(f"built {path} ({path.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f} s")
    print("hash of the file (s, best of 3):", {k: round(v, 3) for k, v in _run("hash", path, work).items()})
    rows = {"(a) reference json.load": [], "(b) ours, first load": [], "(c) ours, second load": []}
    rows |= {f"(d) {name}": [] for name in LIBRARIES}
    for _ in range(args.repeat):
        cache = work / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        rows["(a) reference json.load"].append(_run("reference", path, cache))
        rows["(b) ours, first load"].append(_run("ours", path, cache))
        rows["(c) ours, second load"].append(_run("ours", path, cache))
        for name in LIBRARIES:
            rows[f"(d) {name}"].append(_run(name, path, cache))
    print(f"\n{'load':<26} {'seconds':>8} {'peak RSS GiB':>13}  train windows shape")
    for label, runs in rows.items():
        if "missing" in runs[0]:
            print(f"{label:<26} not installed ({runs[0]['missing']})")
            continue
        sec = statistics.median(r["seconds"] for r in runs)
        rss = statistics.median(r["rss_gib"] for r in runs)
        print(f"{label:<26} {sec:>8.2f} {rss:>13.2f}  {runs[0]['train_shape']}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
