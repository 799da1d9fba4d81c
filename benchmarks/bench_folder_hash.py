"""Start-up cost of an image folder's file list (size + SHA-256 of every file, what a study's data
snapshot records and every process checks): hashing every file at each start (the old way, the
baseline, measured in the same run) against the hash index of :mod:`hpsearch.data.cache`, cold (no
index yet: every file hashed, the index written) and warm (a later start: nothing re-read).

    python benchmarks/bench_folder_hash.py                      # 3000 PNGs of 32x32 RGB
    python benchmarks/bench_folder_hash.py --files 5000 --side 96

The folder and the cache live in a temporary folder that is removed after. The files' times are set
in the past, as for a data set copied some time before the study starts. The page cache is warm
for every variant (the files were just written), so the figures are the hashing and ``stat`` costs,
not the disk's: on a cold network file system the baseline costs more, the warm index no more.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def baseline_manifest(root: Path) -> list[list[Any]]:
    """The file list as hpsearch made it before the hash index: every file read and hashed."""
    out: list[list[Any]] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        h = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        out.append([rel.as_posix(), path.stat().st_size, h.hexdigest()])
    return out


def write_folder(root: Path, n: int, side: int) -> int:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    total = 0
    for i in range(n):
        cls = root / f"class{i % 2}"
        cls.mkdir(parents=True, exist_ok=True)
        path = cls / f"{i:05d}.png"
        Image.fromarray(rng.integers(0, 255, size=(side, side, 3), dtype=np.uint8), "RGB").save(path)
        past = 1_600_000_000 * 10**9
        os.utime(path, ns=(past, past))
        total += path.stat().st_size
    return total


def _time(fn: Any, repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--side", type=int, default=32, help="image side in pixels (RGB PNG of random noise)")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-folder-hash-") as tmp:
        os.environ["HPSEARCH_CACHE"] = str(Path(tmp) / "cache")
        from hpsearch.data.cache import hashed_files

        root = Path(tmp) / "imgs"
        size = write_folder(root, a.files, a.side)
        base, want = _time(lambda: baseline_manifest(root), a.repeat)

        def cold() -> Any:
            for f in (Path(tmp) / "cache" / "hashes").glob("*.json"):
                f.unlink()
            return hashed_files(root)

        cold_s, (got, cold_stats) = _time(cold, a.repeat)
        warm_s, (again, warm_stats) = _time(lambda: hashed_files(root), a.repeat)
        assert got == want == again and cold_stats.hashed == a.files and warm_stats.hashed == 0
        row = {"files": a.files, "bytes": size, "baseline_s": round(base, 4), "index_cold_s": round(cold_s, 4),
               "index_warm_s": round(warm_s, 4), "speedup_warm": round(base / warm_s, 1),
               "index_bytes": cold_stats.index.stat().st_size}
        print(json.dumps(row))
        print(f"{a.files} files, {size / 2**20:.1f} MiB: every file hashed (before) {base * 1000:.0f} ms;"
              f" hash index cold (first start) {cold_s * 1000:.0f} ms, warm (later starts) {warm_s * 1000:.0f} ms"
              f" ({base / warm_s:.1f}x less); index file {row['index_bytes'] / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
