"""Benchmark caption throughput against a loopback chat-completions endpoint with 200 ms latency.

Run from the repository root::

    .venv/bin/python benchmarks/bench_captions.py                      # limits 6,000 and 1,200 req/min, 3 repeats
    .venv/bin/python benchmarks/bench_captions.py --rpm 6000 --repeats 1 --reference-images 1   # quick

What is measured
    A loopback server (``ugdata_pipeline_tests/context_tests/chat_server.py``, run as a separate process so it
    does not share the client's GIL) answers every chat completion after ``--latency`` seconds (200 ms).

    * **ours**: :class:`~ugdata_pipeline.context.openai_captioner.OpenAICompatibleCaptioner` with concurrency 64 and a
      requests/min limit (``--rpm``, default 6,000 and 1,200 = 100 and 20 requests/s), no cache. The limit reachable is
      ``min(rpm / 60, concurrency / latency)``; the figure reported is captions/s as a share of that limit
      (target >= 0.8). One row per ``--rpm`` value; each run captions about ``--seconds-per-run`` seconds' worth
      of images at the limit. The client's and the server's CPU per caption are printed too: on a busy machine
      the client becomes CPU-bound (openai + httpx cost a few ms of CPU per call) before it reaches a high limit.
      The token bucket starts full (one second of burst), so the headline rate is measured in
      the steady state, from the completion that follows twice the burst to the last one; the overall rate
      (burst included) is printed beside it.
    * **reference pattern** (UGData ``generate_captions_*``): strictly sequential calls through the ``openai``
      client, with a fixed 6 s ``time.sleep`` after every image (reference §5.6), over ``--reference-images``.

    Rates are medians over ``--repeats`` runs. Images are small PNG-like files under ``benchmarks/_work/``.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import openai

from ugdata_pipeline.context.caption_prompt import SYSTEM_MESSAGE, build_prompt
from ugdata_pipeline.context.captioners import CaptionRequest
from ugdata_pipeline.context.openai_captioner import OpenAICompatibleCaptioner

REPO_ROOT = Path(__file__).resolve().parent.parent
WORK_DIR = REPO_ROOT / "benchmarks" / "_work" / "captions"
TARGET_SHARE = 0.8
REFERENCE_PAUSE_S = 6.0


def make_requests(n: int) -> list[CaptionRequest]:
    folder = WORK_DIR / "images"
    folder.mkdir(parents=True, exist_ok=True)
    requests = []
    for i in range(n):
        path = folder / f"b{i:05d}.png"
        if not path.exists():
            path.write_bytes(b"\x89PNG\r\n\x1a\n" + f"bench image {i}".encode() * 200)  # about 3 kB
        description = (
            f"[img:b{i:05d}] This network contains 14 locations, with 1 center node and 22 connections. "
            "Nearby: Alpha Street (residential), Cafe Uno (food) 40 m north-east, Central Park 120 m east."
        )
        requests.append(CaptionRequest(f"b{i:05d}", path, description))
    return requests


def start_server(latency_s: float) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "ugdata_pipeline_tests.context_tests.chat_server", "--latency", str(latency_s)],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    base_url = server.stdout.readline().strip()
    if not base_url.startswith("http"):
        server.kill()
        raise SystemExit(f"chat server did not start (got {base_url!r})")
    return server, base_url


def run_ours(base_url: str, requests: list[CaptionRequest], *, concurrency: int, rpm: float | None) -> dict:
    finished_at: list[float] = []
    captioner = OpenAICompatibleCaptioner(
        "bench-vlm", base_url=base_url, api_key="EMPTY", concurrency=concurrency, requests_per_minute=rpm, timeout_s=30
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    frame = captioner.caption_all(
        requests, cache_dir=None, progress=lambda n, total: finished_at.append(time.perf_counter())
    )
    elapsed = time.perf_counter() - started
    cpu_ms = (time.process_time() - cpu_started) / len(requests) * 1000
    done = int((frame["status"] == "done").sum())
    burst = int(2 * rpm / 60) if rpm else concurrency
    k0 = min(burst, len(finished_at) // 2)
    steady = (len(finished_at) - 1 - k0) / (finished_at[-1] - finished_at[k0])
    return {"done": done, "overall": done / elapsed, "steady": steady, "elapsed": elapsed, "cpu_ms": cpu_ms}


def run_reference(base_url: str, requests: list[CaptionRequest]) -> float:
    client = openai.OpenAI(api_key="EMPTY", base_url=base_url, max_retries=0, timeout=30)
    started = time.perf_counter()
    for request in requests:
        data_url = "data:image/png;base64," + base64.b64encode(request.image_path.read_bytes()).decode()
        client.chat.completions.create(
            model="bench-vlm",
            temperature=0.2,
            max_tokens=1300,
            messages=[
                {"role": "system", "content": SYSTEM_MESSAGE},
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": data_url}},
                        {"type": "text", "text": build_prompt(request.description)},
                    ],
                },
            ],
        )
        time.sleep(REFERENCE_PAUSE_S)  # the reference's unconditional per-item delay
    client.close()
    return len(requests) / (time.perf_counter() - started)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux ``/proc``), for the server's share of the cost."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="most images per run")
    parser.add_argument(
        "--seconds-per-run",
        type=float,
        default=10.0,
        help="a run captions about limit x this many images (at most --images)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--rpm",
        type=float,
        nargs="+",
        default=[6000.0, 1200.0],
        help="requests/min limits of our captioner, one row each",
    )
    parser.add_argument("--latency", type=float, default=0.2, help="server latency per request, seconds")
    parser.add_argument("--reference-images", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    requests = make_requests(args.images)
    server, base_url = start_server(args.latency)
    rows = []
    try:
        for rpm in args.rpm:
            limit = min(rpm / 60.0, args.concurrency / args.latency)
            n = max(min(args.images, int(limit * args.seconds_per_run)), min(args.images, int(4 * limit)))
            server_cpu = _cpu_seconds(server.pid)
            runs = [
                run_ours(base_url, requests[:n], concurrency=args.concurrency, rpm=rpm) for _ in range(args.repeats)
            ]
            server_ms = (_cpu_seconds(server.pid) - server_cpu) / (n * args.repeats) * 1000
            rows.append((rpm, limit, n, runs, server_ms))
        reference = run_reference(base_url, requests[: args.reference_images])
    finally:
        server.stdin.close()
        server.wait(10)
    print(
        f"caption throughput, loopback endpoint with {args.latency * 1000:.0f} ms latency, concurrency "
        f"{args.concurrency} ({args.repeats} repeats; medians)"
    )
    for rpm, limit, n, runs, server_ms in rows:
        steady = statistics.median(r["steady"] for r in runs)
        overall = statistics.median(r["overall"] for r in runs)
        cpu_ms = statistics.median(r["cpu_ms"] for r in runs)
        share = steady / limit
        print(f"  ours, limit {rpm:.0f} req/min = {limit:.1f} captions/s reachable, {n} images per run:")
        print(
            f"    steady state   {steady:8.2f} captions/s   share of limit {share:.2f} "
            f"(target >= {TARGET_SHARE}) {'PASS' if share >= TARGET_SHARE else 'FAIL'}"
        )
        print(
            f"    overall        {overall:8.2f} captions/s   (burst included; all done: "
            f"{all(r['done'] == n for r in runs)})"
        )
        print(
            f"    CPU            client {cpu_ms:.2f} + server {server_ms:.2f} ms per caption -> "
            f"{limit * (cpu_ms + server_ms) / 1000:.2f} cores needed at the limit"
        )
    print(f"  machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"  reference pattern: sequential, {REFERENCE_PAUSE_S:.0f} s pause, {args.reference_images} images")
    print(f"                   {reference:8.3f} captions/s")
    best = max(statistics.median(r["steady"] for r in runs) for _, _, _, runs, _ in rows)
    print(f"  speed-up (ours, fastest row / reference): {best / reference:.0f}x")


if __name__ == "__main__":
    main()
