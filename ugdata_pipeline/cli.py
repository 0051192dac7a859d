"""Command line: ``python -m ugdata_pipeline.cli {cities,summary,release-dead-runs,launch}`` (used by ``make run``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ugdata_pipeline.cities import load_registry


def _root() -> Path:
    return Path(os.environ.get("UGDATA_ROOT") or Path(__file__).resolve().parent.parent / "data")


def cmd_cities(args: argparse.Namespace) -> int:
    registry = load_registry()
    slugs = registry.offline_slugs() if args.offline else registry.slugs()
    print("\n".join(slugs))
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from ugdata_pipeline.table_files import read_table, table_path

    registry = load_registry()
    root = str(args.root or _root())
    rows = []
    for city in registry:
        nodes_path = table_path(root, "nodes", city.slug)
        edges_path = table_path(root, "edges", city.slug)
        if not nodes_path.exists() or not edges_path.exists():
            continue
        nodes, edges = read_table(nodes_path), read_table(edges_path)
        by_node = nodes["kind"].value_counts()
        by_edge = edges["kind"].value_counts()
        rows.append((city.slug, city.split, len(nodes), len(edges), by_node, by_edge))
    if not rows:
        print(f"nothing built under {root} yet; run `make run`")
        return 1
    node_kinds = ["street", "crossing", "poi", "aoi"]
    edge_kinds = ["crossing", "along_street", "nearest", "bounds", "within"]
    header = ["city", "split", "nodes", "edges", *node_kinds, *edge_kinds]
    table = [
        [slug, split, n, e, *(int(bn.get(k, 0)) for k in node_kinds), *(int(be.get(k, 0)) for k in edge_kinds)]
        for slug, split, n, e, bn, be in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table, strict=True)]
    print("Urban graphs (nodes and edges by kind):")
    for line in [header, *table]:
        print("  ".join(str(x).rjust(w) for x, w in zip(line, widths, strict=True)))
    print(f"\nTables: {root}/<city>/<asset>.parquet; previews (maps, contact sheets, charts): {root}/<city>/previews/")
    _print_dataset(registry, root)
    _print_benchmark(root)
    return 0


def _rows(root: str, city: str, asset: str) -> int | None:
    import pyarrow.parquet as pq

    from ugdata_pipeline.table_files import table_path

    path = table_path(root, asset, city)
    return pq.ParquetFile(path.open("rb")).metadata.num_rows if path.exists() else None


def _print_dataset(registry, root: str) -> None:
    """Images, paths, subgraphs, captions, records and benchmark records per city."""
    assets = ["images", "srp", "subgraphs", "captions", "training_records", "benchmark_tasks"]
    table = [[city.slug, *(_rows(root, city.slug, a) for a in assets)] for city in registry]
    table = [row for row in table if any(v is not None for v in row[1:])]
    if not table:
        return
    header = ["city", *assets]
    cells = [[str("-" if v is None else v) for v in row] for row in table]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *cells, strict=True)]
    print("\nUGData (rows per table):")
    for line in [header, *cells]:
        print("  ".join(str(x).rjust(w) for x, w in zip(line, widths, strict=True)))


def _print_benchmark(root: str) -> None:
    """The UGBench headline table (models beside chance and the best blind scorer) and the key comparisons."""
    import pandas as pd

    from ugdata_pipeline.ugbench.report import headline_metric

    folder = Path(root) / "reports" / "ugbench"
    if not (folder / "results.parquet").exists():
        print("\nUGBench: not run yet (benchmark_job)")
        return
    results = pd.read_parquet(folder / "results.parquet")
    results = results[results["role"] == "headline"]
    results = results.assign(metric=results["task"].map(headline_metric))
    results["value"] = [row[m] for m, row in zip(results["metric"], results.to_dict("records"), strict=True)]
    results["chance"] = [
        row[f"chance_{m}"] for m, row in zip(results["metric"], results.to_dict("records"), strict=True)
    ]
    keys = ["task", "query_type", "city", "mode", "metric"]
    table = results[results["kind"] == "model"].pivot_table(index=keys, columns="model", values="value")
    models = list(dict.fromkeys(results.loc[results["kind"] == "model", "model"]))
    table = table[[m for m in models if m in table.columns]]
    table.insert(0, "blind", results[results["kind"] == "blind"].groupby(keys)["value"].max())
    table.insert(0, "chance", results.groupby(keys)["chance"].first())
    print(
        "\nUGBench headline (%; Hit@5 with 20 candidates, Hit@1 for perception; mean over seeds; "
        "blind = best blind scorer):"
    )
    print((100 * table).round(1).to_string())
    comparisons_path = folder / "comparisons.parquet"
    if comparisons_path.exists():
        comparisons = pd.read_parquet(comparisons_path)
        key = comparisons[
            (comparisons["role"] == "headline") & (comparisons["metric"] == "mrr") & (comparisons["b"] != "chance")
        ]
        if len(key):
            print("\nPaired MRR differences (points, clustered 95 % interval):")
            for row in key.sort_values(["a", "b", "task", "city"]).to_dict("records"):
                print(
                    f"  {row['a']} - {row['b']:<24} {row['task']:<11} {row['query_type']:<18} {row['city']:<10} "
                    f"{row['mode']:<6} {100 * row['diff']:+5.1f} [{100 * row['lo']:+5.1f}, {100 * row['hi']:+5.1f}]"
                    f"  {row['verdict']}"
                )
    print(f"\nReport: {folder / 'report.md'}")


def cmd_release_dead_runs(args: argparse.Namespace) -> int:
    import dagster as dg

    from ugdata_pipeline.dead_runs import release_dead_runs

    with dg.DagsterInstance.get() as instance:
        for run in release_dead_runs(instance):
            print(
                f"released run {run.run_id} of {run.job_name}: it was {run.status} with no live process "
                f"(pids {', '.join(map(str, run.pids))}); marked failed, pool slots freed"
            )
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    import click
    import dagster as dg

    from ugdata_pipeline.errors import LaunchError
    from ugdata_pipeline.launch import WORKSPACE, create_workspace_run, execute_workspace_run, run_config_for

    with dg.DagsterInstance.get() as instance:
        try:
            run = create_workspace_run(
                instance,
                args.job,
                workspace=Path(args.workspace) if args.workspace else WORKSPACE,
                partition=args.partition,
                run_config=run_config_for(args.config, in_process=args.in_process),
            )
        except (LaunchError, click.UsageError) as error:  # bad input: say what, start nothing
            print(f"ugdata launch: {error}", file=sys.stderr)
            return 2
        origin = run.remote_job_origin.repository_origin
        print(f"run {run.run_id} of {args.job} in code location {origin.code_location_origin.location_name}")
        if not execute_workspace_run(instance, run):
            print(f"run {run.run_id} of {args.job} failed; its events are in the UI (make dev) under Runs")
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ugdata", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    cities = sub.add_parser("cities", help="list registry cities (one slug per line)")
    cities.add_argument("--offline", action="store_true", help="only cities that build without network")
    cities.set_defaults(func=cmd_cities)
    summary = sub.add_parser("summary", help="print what has been built under UGDATA_ROOT")
    summary.add_argument("--root", default=None, help="data root (default UGDATA_ROOT or data/)")
    summary.set_defaults(func=cmd_summary)
    release = sub.add_parser(
        "release-dead-runs",
        help="mark runs whose process was killed as failed and free their pool slots (DAGSTER_HOME's instance)",
    )
    release.set_defaults(func=cmd_release_dead_runs)
    launch = sub.add_parser(
        "launch",
        help="run a job through workspace.yaml's code location (seen by the UI and sensors) and wait for it",
    )
    launch.add_argument("job", help="job name, e.g. city_dataset_job")
    launch.add_argument("--partition", default=None, help="city partition of a partitioned job")
    launch.add_argument("-c", "--config", action="append", default=[], help="run config YAML file (repeatable)")
    launch.add_argument("--in-process", action="store_true", help="execute every step in this one process")
    launch.add_argument("--workspace", default=None, help="workspace file (default the project's workspace.yaml)")
    launch.set_defaults(func=cmd_launch)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
