"""Imagery benchmarks, both parts of issue 3 in one command.

(a) Mapillary download throughput against a loopback server with 100 ms latency, concurrent vs sequential
    (``benchmarks/imagery_download.py``; target >= 20x).
(b) Offline renderer views per second on one core at 256x256 with the full scene, beside a bare wall raycaster
    (``benchmarks/imagery_render.py``; target >= 100 views/s).

Run from the repository root: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_imagery.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the two parts live beside this script

import imagery_download
import imagery_render


def main() -> None:
    print("== (a) download")
    imagery_download.main([])
    print("== (b) renderer")
    sys.argv = sys.argv[:1]
    imagery_render.main()


if __name__ == "__main__":
    main()
