"""Benchmark: compact UGE training throughput on CPU and embedding throughput, batched vs one image at a time.

Prints medians over repeats. Scratch data (synthetic 256 x 256 street-view-like PNGs, captions, subgraphs) goes to
``benchmarks/_work/bench_training/``. Run::

    OMP_NUM_THREADS=2 python benchmarks/bench_training.py [--threads 2] [--repeats 3] [--steps 12]

Figures:

- stage-1 and stage-2 training samples/s with the default compact configuration (96 px CNN, frozen cached MiniLM,
  batch 64), measured by the trainer over optimizer steps only (the MiniLM text cache is warmed once before);
- images/s of ``embed_images`` with ``batch_size=64`` vs ``batch_size=1`` on the same images (decoding included),
  and their ratio.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ugdata_pipeline.uge.embed import embed_images, load_model  # noqa: E402
from ugdata_pipeline.uge.train import TrainConfig, train  # noqa: E402
from ugdata_pipeline_tests.uge_tests.synthetic import make_dataset  # noqa: E402

WORK = REPO / "benchmarks" / "_work" / "bench_training"


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per training repeat")
    parser.add_argument("--places", type=int, default=24, help="synthetic places (x 6 views = images)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    if WORK.exists():
        shutil.rmtree(WORK)
    records, subgraphs = make_dataset(WORK / "data", n_places=args.places, views=6, size=256)
    n_train = int(((records["stage"] == 1) & (records["variant"] == "ugdata") & (records["split"] == "train")).sum())
    print(f"data: {n_train} stage-1 train records, 256x256 PNG images, threads={args.threads}")

    figures: dict[str, list[float]] = {"stage1": [], "stage2": []}
    stage1_best = None
    for repeat in range(args.repeats):
        base = {"epochs": 100, "max_steps": args.steps, "batch_size": 64, "eval_every_epoch": False, "seed": repeat}
        r1 = train(
            records,
            root=WORK / "data",
            config=TrainConfig(stage=1, out_dir=str(WORK / f"s1_{repeat}"), **base),
            progress=False,
        )
        r2 = train(
            records,
            root=WORK / "data",
            subgraphs=subgraphs,
            init_from=r1.checkpoint_dir,
            config=TrainConfig(stage=2, out_dir=str(WORK / f"s2_{repeat}"), **base),
            progress=False,
        )
        figures["stage1"].append(r1.samples_per_s)
        figures["stage2"].append(r2.samples_per_s)
        stage1_best = r1.checkpoint_dir
    for name, values in figures.items():
        print(
            f"{name} training: median {statistics.median(values):.1f} samples/s "
            f"(runs: {', '.join(f'{v:.1f}' for v in values)}; batch 64, {args.steps} steps)"
        )

    model = load_model(stage1_best)
    paths = records.loc[records["stage"] == 1, "image_path"].drop_duplicates().tolist()
    rates: dict[str, list[float]] = {"batched (64)": [], "single (1)": []}
    for _ in range(args.repeats):
        for name, batch_size in (("batched (64)", 64), ("single (1)", 1)):
            started = time.perf_counter()
            embed_images(model, paths, "Describe the place.", batch_size=batch_size, root=WORK / "data")
            rates[name].append(len(paths) / (time.perf_counter() - started))
    batched, single = statistics.median(rates["batched (64)"]), statistics.median(rates["single (1)"])
    print(f"embedding {len(paths)} images: batched {batched:.1f} images/s, single {single:.1f} images/s")
    print(f"ratio batched / single: {batched / single:.2f}x")


if __name__ == "__main__":
    main()
