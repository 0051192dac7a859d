"""Compare checkpoints on a built UGBench benchmark.

``python -m ugdata_pipeline.ugbench.cli --tasks BENCH_DIR --model baseline=CKPT_A --model uge=CKPT_B --out DIR``

``--tasks`` is a directory written by :func:`~ugdata_pipeline.ugbench.tasks.save_benchmark` (tasks plus the
subgraphs the fusion mode needs) or a bare tasks Parquet file (then ``--modes`` must leave out ``fusion`` unless
``--subgraphs DIR`` names a directory holding ``subgraph_nodes.parquet`` and ``subgraph_edges.parquet``). Each
``--model NAME=CHECKPOINT`` loads a UGE checkpoint through :class:`~ugdata_pipeline.ugbench.models.UgeModel`; a
NAME given several times is one model trained with several seeds (in the order given). Blind scorers are scored
beside the models. Writes ``results.parquet``, ``per_record.parquet``, ``comparisons.parquet``, ``report.md`` and
PNG charts into ``--out``; the path of the report goes to stdout.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from ugdata_pipeline.ugbench._records import MODES
from ugdata_pipeline.ugbench.evaluate import evaluate
from ugdata_pipeline.ugbench.models import EmbeddingModel, UgeModel
from ugdata_pipeline.ugbench.report import write_report
from ugdata_pipeline.ugbench.tasks import SUBGRAPH_EDGES_FILE, SUBGRAPH_NODES_FILE, load_benchmark

logger = logging.getLogger(__name__)


def _model_spec(text: str) -> tuple[str, str]:
    name, sep, checkpoint = text.partition("=")
    if not sep or not name or not checkpoint:
        msg = f"--model must be NAME=CHECKPOINT_DIR, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return name, checkpoint


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the UGBench CLI."""
    parser = argparse.ArgumentParser(prog="python -m ugdata_pipeline.ugbench.cli", description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", required=True, type=Path, help="benchmark directory or tasks .parquet")
    parser.add_argument(
        "--model",
        required=True,
        action="append",
        type=_model_spec,
        dest="models",
        help="NAME=CHECKPOINT_DIR; repeat to compare models",
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory for results and report")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="query modes to run")
    parser.add_argument("--subgraphs", type=Path, default=None, help="directory with the subgraph Parquet tables")
    parser.add_argument("--image-root", type=Path, default=None, help="root the tasks' image paths are relative to")
    parser.add_argument("--cache-dir", type=Path, default=None, help="embedding cache (default OUT/cache)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% intervals")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--batch-size", type=int, default=32, help="items per model call")
    parser.add_argument("--limit", type=int, default=None, help="first N records per task/type/city/split")
    return parser


def main(argv: Sequence[str] | None = None, *, load_model: Callable[[str], EmbeddingModel] = UgeModel) -> int:
    """
    Run the CLI.

    Parameters
    ----------
    argv
        Arguments (default ``sys.argv[1:]``).
    load_model
        ``checkpoint -> model``; :class:`UgeModel` by default (tests pass fakes).

    Returns
    -------
    code
        0 on success.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tasks, nodes, edges = load_benchmark(args.tasks)
    if args.subgraphs is not None:
        nodes = pd.read_parquet(args.subgraphs / SUBGRAPH_NODES_FILE)
        edges = pd.read_parquet(args.subgraphs / SUBGRAPH_EDGES_FILE)
    models: dict[str, list[EmbeddingModel]] = {}
    for name, checkpoint in args.models:
        models.setdefault(name, []).append(load_model(checkpoint))
    evaluation = evaluate(
        tasks,
        models,
        modes=args.modes,
        bootstrap=args.bootstrap,
        seed=args.seed,
        subgraph_nodes=nodes,
        subgraph_edges=edges,
        image_root=args.image_root,
        cache_dir=args.cache_dir or args.out / "cache",
        batch_size=args.batch_size,
        limit_per_group=args.limit,
    )
    report = write_report(evaluation, args.out, bootstrap=args.bootstrap, seed=args.seed)
    sys.stdout.write(f"{report}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
