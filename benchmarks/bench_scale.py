"""Scale benchmark: a tiled city with ~10k -> 100k images and ~0.1M -> 1M graph nodes through the dataset stage.

Run from the repository root::

    .venv/bin/python benchmarks/bench_scale.py                          # streamed at 10k, 30k, 100k; oneshot to 30k
    .venv/bin/python benchmarks/bench_scale.py --sizes 10000,30000      # quick run
    .venv/bin/python benchmarks/bench_scale.py --sizes 100000 --modes streamed

What is measured
    The dataset stage's core functions in the order of the assets, on one city: anchoring (``anchor_images``),
    splits (``assign_splits``), paths (``build_paths``), subgraphs (written to Parquet as the IO manager stores
    them), descriptions (``describe_subgraphs``), template captions (``build_caption_requests`` +
    ``TemplateCaptioner``), training records (the three builds of the ``training_records`` asset) and benchmark
    tasks (``build_tasks`` with the run's 300 records per task; no OSM areas, so no perception records). Images
    are SYNTHETIC records (points on the streets, no pixels are rendered): rendering is per image and is timed by
    ``bench_imagery.py``. Each (size, mode) runs in a fresh subprocess, so its peak RSS (``ru_maxrss``) is its own;
    the table gives the wall seconds of every step, the peak RSS after each step (where the peak was reached), the
    paths step's own peak (Linux's VmHWM, reset at each step start),
    the total, and the growth 30k/10k and 100k/30k.

Modes (side by side)
    ``oneshot``: the tables as the assets built them before issue 16: ``build_subgraphs`` returns the whole long
    tables, each is encoded whole (``frame_to_parquet_bytes``) and every later step reads them whole.
    ``streamed``: paths are built a 2 km shard at a time on each shard's hop halo (``build_paths_by_shard``, the
    same table); ``write_subgraphs`` writes the subgraph tables in bounded chunks of images (the same bytes), and
    descriptions, captions and benchmark tasks read only the rows they need (1024 images' rows at a time, the test
    images' rows) with polars.

Inputs
    The bundled Helsinki extract built with ``build_urban_graph`` (~1.9k place nodes), tiled as in
    ``bench_reasoning.py`` (shifted copies joined by one street edge): one tile per 200 images, so 100k images
    lie on ~1M graph nodes, then images drawn on the tiled streets (length-weighted) and anchored at full size.

Target (issue 16)
    100k images in <= 60 minutes and <= 8 GB peak RSS on this 2-core machine; growth close to linear.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

TARGET_IMAGES = 100_000
TARGET_S = 3600.0
TARGET_RSS_GB = 8.0
IMAGES_PER_TILE = 200
#: Side of the shards paths are built in (streamed mode), the registry's default (cities.DEFAULT_SHARD_SIZE_M).
SHARD_SIZE_M = 2000.0
STEPS = ("anchor", "splits", "paths", "subgraphs", "descriptions", "captions", "records", "tasks")


def _rss_gb() -> float:
    """Peak RSS of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _reset_step_peak() -> None:
    """Start a step's own peak: Linux resets the high-water mark VmHWM when 5 is written to clear_refs."""
    with contextlib.suppress(OSError):  # not Linux, or not allowed: the step's peak is then the peak so far
        Path("/proc/self/clear_refs").write_text("5")


def _step_peak_gb() -> float:
    """The high-water RSS since :func:`_reset_step_peak` (VmHWM), else the process's peak so far."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return _rss_gb()


def _city(n_images: int, seed: int):
    """Tiled graph (one Helsinki tile per 200 images) and ``n_images`` synthetic image records on its streets."""
    import geopandas as gpd
    import shapely
    from bench_reasoning import City, helsinki_graph, tiled

    from ugdata_pipeline.graph.crs import metric_crs_for

    graph = helsinki_graph()
    no_images = pd.DataFrame({c: pd.Series(dtype=object) for c in ("image_id", "street_node")})
    no_images = no_images.assign(lon=pd.Series(dtype=float), lat=pd.Series(dtype=float))
    city = tiled(City(graph.nodes, graph.edges, no_images, "Helsinki"), math.ceil(n_images / IMAGES_PER_TILE))
    rng = np.random.default_rng(seed)
    streets = city.nodes[city.nodes["kind"] == "street"]
    weight = streets["length_m"].to_numpy(dtype=float)
    pick = rng.choice(len(streets), size=n_images, p=weight / weight.sum())
    points = shapely.line_interpolate_point(streets.geometry.values[pick], rng.random(n_images), normalized=True)
    images = pd.DataFrame(
        {
            "image_id": [f"i{k}" for k in range(n_images)],
            "source": "render",
            "lon": shapely.get_x(points) + rng.normal(0, 8e-5, n_images),
            "lat": shapely.get_y(points) + rng.normal(0, 4e-5, n_images),
            "compass_angle": rng.uniform(0, 360, n_images),
        }
    )
    images["path"] = "images/" + images["image_id"] + ".jpg"
    images["scene_facts"] = json.dumps({"weather": "clear", "time_of_day": "noon", "buildings": 4, "trees": 2})
    crs_metric = metric_crs_for(gpd.GeoSeries(gpd.points_from_xy(images["lon"], images["lat"]), crs="EPSG:4326"))
    return city, images, crs_metric


def run_child(n_images: int, mode: str, chunk: int, out: Path) -> None:
    """One size in one mode: every step timed, peak RSS after each; the figures go to ``out`` as JSON."""
    work = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    try:
        _run_steps(n_images, mode, chunk, out, work)
    finally:  # the tables of 100k images take gigabytes
        shutil.rmtree(work, ignore_errors=True)


def _run_steps(n_images: int, mode: str, chunk: int, out: Path, work: Path) -> None:
    import geopandas as gpd

    from ugdata_pipeline.context.captioners import TemplateCaptioner, build_caption_requests
    from ugdata_pipeline.context.describe import describe_subgraphs
    from ugdata_pipeline.context.subgraph import SubgraphConfig, build_subgraphs
    from ugdata_pipeline.dataset.records import assemble_training_records
    from ugdata_pipeline.graph.shards import image_shards
    from ugdata_pipeline.imagery.anchor import anchor_images
    from ugdata_pipeline.imagery.splits import assign_splits
    from ugdata_pipeline.reasoning.paths import build_paths
    from ugdata_pipeline.reasoning.sharded import build_paths_by_shard
    from ugdata_pipeline.table_files import frame_to_parquet_bytes, write_bytes_atomic
    from ugdata_pipeline.ugbench._records import BenchConfig, CityInputs
    from ugdata_pipeline.ugbench.tasks import build_tasks

    figures: dict[str, object] = {"images": n_images, "mode": mode}
    t0 = time.perf_counter()
    city, raw, crs_metric = _city(n_images, seed=7)
    figures["graph_nodes"] = int((city.nodes["kind"] != "image").sum())
    figures["setup_s"] = time.perf_counter() - t0
    figures["setup_rss_gb"] = _rss_gb()
    steps: dict[str, float] = {}
    rss: dict[str, float] = {}

    step_peak: dict[str, float] = {}

    def mark(name: str, started: float) -> None:
        steps[name] = time.perf_counter() - started
        step_peak[name] = _step_peak_gb()
        # resetting VmHWM resets ru_maxrss too, so the process's peak is the largest step's (or setup's)
        rss[name] = max([figures["setup_rss_gb"], *step_peak.values()])
        print(
            f"  [{n_images:,} {mode}] {name}: {steps[name]:.1f} s, step peak {step_peak[name]:.2f} GB, "
            f"peak so far {rss[name]:.2f} GB",
            flush=True,
        )
        _reset_step_peak()

    _reset_step_peak()

    t = time.perf_counter()
    anchored = anchor_images(raw, city.nodes, city_name="Tiled", country="Finland", crs_metric=crs_metric)
    nodes = gpd.GeoDataFrame(pd.concat([city.nodes, anchored.image_nodes], ignore_index=True), crs="EPSG:4326")
    edges = pd.concat([city.edges, anchored.image_edges], ignore_index=True)
    del city, raw
    mark("anchor", t)

    t = time.perf_counter()
    images = assign_splits(anchored.images, city_split="train", crs_metric=crs_metric)
    del anchored
    mark("splits", t)

    t = time.perf_counter()
    if mode == "oneshot":
        paths = build_paths(nodes, edges, images, city="tiled").paths
    else:  # as the asset builds them: a shard (SHARD_SIZE_M tile) at a time on its hop halo, the same table
        shards = image_shards(images, crs_metric=crs_metric, size_m=SHARD_SIZE_M)
        figures["shards"] = int(shards.nunique())
        paths = build_paths_by_shard(nodes, edges, images, shards, city="tiled").paths
    write_bytes_atomic(work / "srp.parquet", frame_to_parquet_bytes(paths))
    mark("paths", t)

    config = SubgraphConfig(images_per_chunk=chunk)
    t = time.perf_counter()
    if mode == "oneshot":
        tables = build_subgraphs(nodes, edges, images, crs_metric=crs_metric, config=config)
        for name, frame in (("nodes", tables.nodes), ("edges", tables.edges), ("summary", tables.summary)):
            write_bytes_atomic(work / f"subgraph_{name}.parquet", frame_to_parquet_bytes(frame))
        summary = tables.summary
    else:
        from ugdata_pipeline.context.subgraph_stream import write_subgraphs

        summary = write_subgraphs(
            nodes,
            edges,
            images,
            crs_metric=crs_metric,
            config=config,
            nodes_path=work / "subgraph_nodes.parquet",
            edges_path=work / "subgraph_edges.parquet",
        ).summary
    figures["subgraph_node_rows"] = int(summary["n_nodes"].sum())
    mark("subgraphs", t)

    t = time.perf_counter()
    if mode == "oneshot":
        descriptions = describe_subgraphs(tables, images)
    else:
        from ugdata_pipeline.context.subgraph_stream import describe_streamed

        descriptions = describe_streamed(
            work / "subgraph_nodes.parquet", work / "subgraph_edges.parquet", summary, images
        )
    mark("descriptions", t)

    t = time.perf_counter()
    captioner = TemplateCaptioner(seed=0)
    if mode == "oneshot":
        requests = build_caption_requests(images, descriptions, tables.nodes, root=work)
        captions = captioner.caption_all(requests)
    else:
        from ugdata_pipeline.context.subgraph_stream import caption_requests_streamed

        # as the captions asset: requests (and the grounding gate's names) built 1024 images' rows at a time
        streamed = caption_requests_streamed(work / "subgraph_nodes.parquet", summary, images, descriptions, root=work)
        captions = captioner.caption_all(streamed.requests)
        del streamed
    del descriptions
    mark("captions", t)

    t = time.perf_counter()
    options = {"city": "city 'tiled'"}
    builds = [
        assemble_training_records(images, captions, paths, stage=1, variant="ugdata", **options),
        assemble_training_records(images, captions, paths, stage=2, variant="ugdata", subgraphs=summary, **options),
        assemble_training_records(images, captions, None, stage=1, variant="baseline", **options),
    ]
    records = pd.concat([b.records for b in builds], ignore_index=True)
    figures["records"] = len(records)
    write_bytes_atomic(work / "training_records.parquet", frame_to_parquet_bytes(records))
    del builds, records, paths
    mark("records", t)

    t = time.perf_counter()
    sub_ids = None
    if mode == "oneshot":
        sub_nodes, sub_edges = tables.nodes, tables.edges
    else:  # as the benchmark_tasks asset: the test images' rows, every image's id from the summary
        from ugdata_pipeline.ugbench.tasks import read_query_subgraphs

        files = (work / "subgraph_nodes.parquet", work / "subgraph_edges.parquet")
        query = read_query_subgraphs(*files, images, summary)
        sub_nodes, sub_edges, sub_ids = query.nodes, query.edges, query.image_ids
    inputs = CityInputs(
        city="tiled",
        role="train",
        images=images,
        nodes=nodes,
        edges=edges,
        subgraph_nodes=sub_nodes,
        subgraph_edges=sub_edges,
        crs_metric=crs_metric,
        subgraph_image_ids=sub_ids,
    )
    tasks, _ = build_tasks([inputs], config=BenchConfig(max_records_per_task=300))
    figures["tasks"] = len(tasks)
    mark("tasks", t)

    figures["steps_s"] = steps
    figures["rss_gb"] = rss
    figures["step_peak_gb"] = step_peak
    figures["total_s"] = sum(steps.values())
    figures["peak_rss_gb"] = max([figures["setup_rss_gb"], *step_peak.values()])
    out.write_text(json.dumps(figures))


def _child(n_images: int, mode: str, chunk: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        here = Path(__file__).resolve().parent
        # the benchmarks folder (bench_reasoning's city) and this checkout's package, whatever the venv installed
        paths = [str(here), str(here.parent), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        command = [sys.executable, __file__, "--child", str(n_images), "--mode", mode, "--chunk", str(chunk)]
        subprocess.run([*command, "--out", str(out)], check=True, env=env)
        return json.loads(out.read_text())


def _table(results: list[dict]) -> pd.DataFrame:
    rows = []
    for r in results:
        row = {"images": r["images"], "mode": r["mode"], "nodes": r["graph_nodes"], "sub rows": r["subgraph_node_rows"]}
        row |= {f"{s} s": round(r["steps_s"][s], 1) for s in STEPS}
        row |= {"total s": round(r["total_s"], 1), "peak GB": round(r["peak_rss_gb"], 2)}
        row |= {"paths GB": round(r.get("step_peak_gb", {}).get("paths", float("nan")), 2)}
        row |= {"peak at": max(STEPS, key=lambda s, r=r: (r["step_peak_gb"][s], -STEPS.index(s)))}
        rows.append(row)
    return pd.DataFrame(rows)


def _at_target(rows: pd.DataFrame) -> tuple[float, float, str]:
    """Wall seconds and peak GB at 100k images: measured, else the line through the two largest sizes (a fixed
    part, the graph and interpreter, plus a part per image), else proportional to the one size."""
    big = rows.iloc[-1]
    if big["images"] >= TARGET_IMAGES:
        return big["total s"], big["peak GB"], "measured"
    if len(rows) == 1:
        scale = TARGET_IMAGES / big["images"]
        return big["total s"] * scale, big["peak GB"] * scale, "scaled proportionally"
    small = rows.iloc[-2]
    at = (TARGET_IMAGES - big["images"]) / (big["images"] - small["images"])
    line = [big[k] + (big[k] - small[k]) * at for k in ("total s", "peak GB")]
    return line[0], line[1], f"extrapolated linearly from {small['images']:,} and {big['images']:,}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,30000,100000", help="comma-separated image counts")
    parser.add_argument("--modes", default="oneshot,streamed", help="oneshot (the baseline), streamed, or both")
    parser.add_argument(
        "--baseline-max",
        type=int,
        default=30_000,
        help="largest size run oneshot (it needs ~29 GB at 100k images, more than this machine has)",
    )
    parser.add_argument("--chunk", type=int, default=4096, help="images per subgraph chunk (SubgraphConfig default)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child, args.mode, args.chunk, args.out)
        return
    sizes = [int(s) for s in args.sizes.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    print("synthetic image records (no pixels rendered); template captions; one fresh process per size and mode")
    results = []
    for n in sizes:
        for mode in modes:
            if mode == "oneshot" and n > args.baseline_max:
                print(f"oneshot at {n:,} images skipped (--baseline-max {args.baseline_max:,})")
                continue
            results.append(_child(n, mode, args.chunk))
    table = _table(results)
    print("\n" + table.to_string(index=False))
    for mode in modes:
        mine = table[table["mode"] == mode].sort_values("images")
        for (_, a), (_, b) in zip(mine.iloc[:-1].iterrows(), mine.iloc[1:].iterrows(), strict=True):
            ratio = b["images"] / a["images"]
            print(
                f"{mode}: {b['images']:,}/{a['images']:,} images (x{ratio:.1f}): "
                f"time x{b['total s'] / a['total s']:.2f}, peak RSS x{b['peak GB'] / a['peak GB']:.2f}"
            )
        if len(mine):
            wall, peak, how = _at_target(mine)
            print(
                f"{mode}: 100k images {how}: {wall / 60:.1f} min (target <= {TARGET_S / 60:.0f}: "
                f"{'met' if wall <= TARGET_S else 'NOT met'}), peak {peak:.1f} GB (target <= {TARGET_RSS_GB:.0f}: "
                f"{'met' if peak <= TARGET_RSS_GB else 'NOT met'})"
            )
    if len(modes) > 1:
        base, ours = table[table["mode"] == modes[0]], table[table["mode"] == modes[1]]
        pairs = base.merge(ours, on="images", suffixes=("", "_2"))
        for _, row in pairs.iterrows():
            print(
                f"{row['images']:,} images: {modes[0]}/{modes[1]} peak RSS {row['peak GB']:.2f}/{row['peak GB_2']:.2f} "
                f"GB (x{row['peak GB'] / row['peak GB_2']:.2f}), time {row['total s']:.0f}/{row['total s_2']:.0f} s"
            )


if __name__ == "__main__":
    main()
