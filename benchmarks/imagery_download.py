"""Benchmark the Mapillary downloader: concurrent vs sequential throughput against a slow loopback server.

Run from the repository root::

    .venv/bin/python benchmarks/imagery_download.py                      # 200 images, 100 ms, concurrency 32
    .venv/bin/python benchmarks/imagery_download.py --images 400 --repeats 5

What is measured
    The loopback Mapillary server (``ugdata_pipeline_tests/imagery_tests/mapillary_server.py``, one thread per
    connection) sleeps ``latency_s`` before every answer, like the ~1 s round trips people report against
    Mapillary, scaled down. Each image costs two requests: resolving its thumbnail URL on the Graph API and
    fetching the JPEG; the JPEG is verified (Pillow verify + full decode) and written atomically, exactly as in
    production. Each repeat downloads into a fresh folder under ``benchmarks/_work/`` (nothing is skipped as
    already present). Times are MEDIANS over the repeats; throughput is images per second.

    The sequential baseline (``concurrency=1``) runs in the same process against the same server. It downloads
    ``sequential_images`` images (default ``max(10, n_images // 8)``) rather than all of them, because its time
    per image is constant (two round trips) and 200 sequential images would take 40 s per repeat; the ratio
    compares throughputs, so the subset does not flatter the concurrent run.

Target
    concurrent throughput >= 20x sequential at 100 ms latency and concurrency 32 (the ideal is 32x).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from ugdata_pipeline.imagery.mapillary import MapillaryClient
from ugdata_pipeline.throttle import RetryPolicy

REPO_ROOT = Path(__file__).resolve().parent.parent
try:
    from ugdata_pipeline_tests.imagery_tests.mapillary_server import FakeImage, MapillaryServer
except ModuleNotFoundError:  # run as a script: the tests package is not installed, import it from the checkout
    sys.path.insert(0, str(REPO_ROOT))
    from ugdata_pipeline_tests.imagery_tests.mapillary_server import FakeImage, MapillaryServer
WORK_DIR = REPO_ROOT / "benchmarks" / "_work"
TARGET_SPEEDUP = 20.0
TOKEN = "MLY|0|benchmark"


def _images(n: int) -> list[FakeImage]:
    return [
        FakeImage(f"{10**15 + i}", 24.94 + (i % 50) * 1e-4, 60.16 + (i // 50) * 1e-4, sequence=f"s{i // 20}")
        for i in range(n)
    ]


def _frame(images: list[FakeImage]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": [i.image_id for i in images],
            "lon": [i.lon for i in images],
            "lat": [i.lat for i in images],
            "compass_angle": 90.0,
            "captured_at": "2020-09-13T12:26:40Z",
            "sequence_id": [i.sequence for i in images],
            "is_pano": False,
            "creator": "bench",
        }
    )


def _timed_download(server: MapillaryServer, frame: pd.DataFrame, concurrency: int) -> tuple[float, float]:
    """Wall and CPU seconds (this process: client and server threads) to download ``frame`` into a fresh folder;
    raises if any image failed (a benchmark must be clean)."""
    client = MapillaryClient(
        TOKEN,
        graph_url=server.url,
        concurrency=concurrency,
        requests_per_second=100_000.0,
        timeout_s=30.0,
        retry=RetryPolicy(max_attempts=3, base_delay_s=0.05),
    )
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="imagery_download_", dir=WORK_DIR))
    try:
        started, cpu_started = time.perf_counter(), time.process_time()
        result = asyncio.run(client.download(frame, root=root, city_slug="bench"))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if result.counts["downloaded"] != len(frame):
        msg = f"benchmark run incomplete: {result.counts} / failures {result.failures.to_dict('records')}"
        raise RuntimeError(msg)
    return elapsed, cpu


def measure_download(
    n_images: int = 200,
    latency_s: float = 0.1,
    concurrency: int = 32,
    *,
    repeats: int = 3,
    sequential_images: int | None = None,
    thumb_size: tuple[int, int] = (128, 96),
) -> dict[str, Any]:
    """
    Download throughput, concurrent vs sequential, against the loopback server with ``latency_s`` per request.

    Parameters
    ----------
    n_images
        Images per concurrent run.
    latency_s
        Server-side delay before every answer, in seconds (two requests per image).
    concurrency
        Concurrency of the measured run (the baseline uses 1).
    repeats
        Runs per configuration (medians are reported); at least 3.
    sequential_images
        Images per sequential run (default ``max(10, n_images // 8)``).
    thumb_size
        Pixel size of the served JPEGs.

    Returns
    -------
    dict
        ``n_images``, ``latency_s``, ``concurrency``, ``repeats``, ``concurrent_s`` (median seconds),
        ``concurrent_images_per_s``, ``sequential_images``, ``sequential_s`` (median), ``sequential_images_per_s``,
        ``speedup`` (throughput ratio), ``cpu_ms_per_image`` (CPU of the concurrent run, client and server
        together, per image: when it times ``n_images`` exceeds the ideal wall time, the machine's cores are the
        limit, not the downloader), ``ideal_speedup``, ``target_speedup``, ``meets_target``, ``runs_s``
        (all timings).
    """
    repeats = max(3, int(repeats))
    n_sequential = sequential_images if sequential_images is not None else max(10, n_images // 8)
    images = _images(max(n_images, n_sequential))
    with MapillaryServer(images, token=TOKEN, latency_s=latency_s, thumb_size=thumb_size) as server:
        _timed_download(server, _frame(images[: min(8, n_images)]), concurrency)  # warm-up: imports, JPEG cache
        concurrent_runs, sequential_runs, cpu_runs = [], [], []
        for _ in range(repeats):  # interleaved, so drift in machine load hits both alike
            wall, cpu = _timed_download(server, _frame(images[:n_images]), concurrency)
            concurrent_runs.append(wall)
            cpu_runs.append(cpu)
            sequential_runs.append(_timed_download(server, _frame(images[:n_sequential]), 1)[0])
    concurrent_s = statistics.median(concurrent_runs)
    sequential_s = statistics.median(sequential_runs)
    concurrent_rate = n_images / concurrent_s
    sequential_rate = n_sequential / sequential_s
    speedup = concurrent_rate / sequential_rate
    return {
        "n_images": n_images,
        "latency_s": latency_s,
        "concurrency": concurrency,
        "repeats": repeats,
        "concurrent_s": round(concurrent_s, 3),
        "concurrent_images_per_s": round(concurrent_rate, 2),
        "sequential_images": n_sequential,
        "sequential_s": round(sequential_s, 3),
        "sequential_images_per_s": round(sequential_rate, 2),
        "speedup": round(speedup, 1),
        "cpu_ms_per_image": round(1000 * statistics.median(cpu_runs) / n_images, 2),
        "ideal_speedup": float(concurrency),
        "target_speedup": TARGET_SPEEDUP,
        "meets_target": speedup >= TARGET_SPEEDUP,
        "runs_s": {
            "concurrent": [round(t, 3) for t in concurrent_runs],
            "sequential": [round(t, 3) for t in sequential_runs],
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per request")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sequential-images", type=int, default=None)
    args = parser.parse_args(argv)
    figures = measure_download(
        args.images, args.latency, args.concurrency, repeats=args.repeats, sequential_images=args.sequential_images
    )
    print(
        f"Mapillary download, loopback server, {figures['latency_s'] * 1000:.0f} ms per request, "
        f"2 requests per image, medians over {figures['repeats']} repeats"
    )
    print(
        f"  concurrent (concurrency={figures['concurrency']}): {figures['n_images']} images in "
        f"{figures['concurrent_s']:.2f} s = {figures['concurrent_images_per_s']:.1f} images/s"
    )
    print(
        f"  sequential (concurrency=1):  {figures['sequential_images']} images in {figures['sequential_s']:.2f} s "
        f"= {figures['sequential_images_per_s']:.2f} images/s"
    )
    verdict = "meets" if figures["meets_target"] else "MISSES"
    print(
        f"  speedup: {figures['speedup']:.1f}x (ideal {figures['ideal_speedup']:.0f}x; {verdict} the "
        f"{figures['target_speedup']:.0f}x target)"
    )
    print(f"  CPU per image (client + server, concurrent run): {figures['cpu_ms_per_image']:.1f} ms")
    print(f"  runs (s): {figures['runs_s']}")


if __name__ == "__main__":
    main()
