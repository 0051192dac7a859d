"""Command line: ``python -m ugdata_pipeline.cli {cities,summary}`` (used by ``make run``)."""

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
    from ugdata_pipeline.io_managers import read_table, table_path

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
    node_kinds = ["street", "crossing", "poi", "aoi", "image"]
    edge_kinds = ["crossing", "along_street", "nearest", "bounds", "within", "image_street"]
    header = ["city", "split", "nodes", "edges", *node_kinds, *edge_kinds]
    table = [[slug, split, n, e, *(int(bn.get(k, 0)) for k in node_kinds), *(int(be.get(k, 0)) for k in edge_kinds)]
             for slug, split, n, e, bn, be in rows]  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table, strict=True)]
    print("Urban graphs (nodes and edges by kind):")
    for line in [header, *table]:
        print("  ".join(str(x).rjust(w) for x, w in zip(line, widths, strict=True)))
    print(f"\nTables: {root}/<city>/{{osm_streets,osm_pois,osm_aois,nodes,edges}}.parquet; "
          f"maps: {root}/<city>/previews/graph_map.png")  # fmt: skip
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
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
