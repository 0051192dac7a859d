"""Urban graph assets: typed nodes and edges of each city, with their invariants as asset checks."""

from collections.abc import Iterator

import dagster as dg
import geopandas as gpd

from ugdata_pipeline.assets._config import dagster_config
from ugdata_pipeline.assets._metadata import check_result, png, preview
from ugdata_pipeline.assets.partitions import city_check, city_partitions
from ugdata_pipeline.graph import build, validate
from ugdata_pipeline.graph.build import build_urban_graph
from ugdata_pipeline.graph.plot import graph_map_png
from ugdata_pipeline.osm.schema import OsmExtract
from ugdata_pipeline.resources import CityRegistryResource, StorageResource

GraphConfig = dagster_config(build.GraphConfig)


_CHECKS = (
    ("node_ids_unique", "nodes", True, "Every node_id names one node (checked before anything reads the table)."),
    ("edge_endpoints_exist", "edges", True, "Every edge's src and dst is a node."),
    ("coordinates_valid", "nodes", True, "No node has NaN or out-of-range lon/lat."),
    ("no_self_loops", "edges", True, "No edge joins a node to itself."),
    ("distances_positive", "edges", True, "Every edge distance > 0 m and bearing in [0, 360)."),
    ("pois_attached", "edges", False, ">= 95 % of POIs have a nearest street within 100 m."),
)


@dg.multi_asset(
    outs={
        "nodes": dg.AssetOut(
            description="Typed graph nodes: street, crossing, poi, aoi (EPSG:4326, node_text).",
            io_manager_key="table_io_manager",
            kinds={"geopandas"},
        ),
        "edges": dg.AssetOut(
            description="Typed edges: crossing, along_street, nearest, bounds, within.",
            io_manager_key="table_io_manager",
            kinds={"geopandas"},
        ),
    },
    ins={name: dg.AssetIn(name) for name in ("osm_streets", "osm_pois", "osm_aois")},
    partitions_def=city_partitions,
    group_name="graph",
    check_specs=[
        city_check(name, asset=asset, blocking=blocking, description=text) for name, asset, blocking, text in _CHECKS
    ],
)
def urban_graph(
    context: dg.AssetExecutionContext,
    config: GraphConfig,
    cities: CityRegistryResource,
    storage: StorageResource,
    osm_streets: gpd.GeoDataFrame,
    osm_pois: gpd.GeoDataFrame,
    osm_aois: gpd.GeoDataFrame,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Build the city's urban graph: streets as nodes, consolidated crossings, places and their relations."""
    city = cities.city(context.partition_key)
    extract = OsmExtract(streets=osm_streets, pois=osm_pois, aois=osm_aois, source=city.source.describe())
    graph = build_urban_graph(
        extract, city_name=city.name, country=city.country, config=config.to_core(), where=f"city {city.slug!r}"
    )
    nodes, edges = graph.nodes, graph.edges
    # Previews and every later stage look nodes up by id; a duplicate must fail here, by name, not in a reindex.
    validate.require_unique_node_ids(nodes, where=f"city {city.slug!r}")
    counts = graph.counts()
    image = png(
        storage.city_path(city.slug, "previews", "graph_map.png"),
        graph_map_png(nodes, edges, title=f"{city.name}: urban graph"),
        alt="map",
    )
    yield dg.Output(
        nodes,
        "nodes",
        metadata={
            "crs_metric": graph.crs_metric,
            **{k.split("/")[1]: v for k, v in counts.items() if k.startswith("nodes/")},
            "preview": preview(nodes, columns=["node_id", "kind", "name", "category", "lon", "lat", "node_text"]),
            **image,
        },
    )
    yield dg.Output(
        edges,
        "edges",
        metadata={
            **{k.split("/")[1]: v for k, v in counts.items() if k.startswith("edges/")},
            "preview": preview(edges),
        },
    )
    outcomes = {
        "node_ids_unique": validate.node_ids_unique(nodes),
        "edge_endpoints_exist": validate.endpoints_exist(nodes, edges),
        "coordinates_valid": validate.coordinates_valid(nodes),
        "no_self_loops": validate.no_self_loops(edges),
        "distances_positive": validate.distances_positive(edges),
        "pois_attached": validate.poi_attachment_share(nodes, edges),
    }
    for name, asset, blocking, _ in _CHECKS:
        yield check_result(name, outcomes[name], asset_key=asset, blocking_severity=blocking)
