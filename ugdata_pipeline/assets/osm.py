"""OSM extract assets: the normalized street, POI and AOI tables of each city."""

from collections.abc import Iterator

import dagster as dg

from ugdata_pipeline.assets._metadata import preview
from ugdata_pipeline.assets.partitions import city_partitions
from ugdata_pipeline.resources import CityRegistryResource, OsmSourceResource

_TABLES = {
    "osm_streets": "Street ways (highway=*) with names, categories, OSM node ids and LineStrings (EPSG:4326).",
    "osm_pois": "Point places (amenities, shops, stops, trees, ...) with categories from the tag mapping.",
    "osm_aois": "Areas (buildings, parks, land use, ...) with categories, heights and polygons.",
    "osm_trees": "Single trees (natural=tree nodes) that the street-view renderer draws.",
}


@dg.multi_asset(
    outs={
        name: dg.AssetOut(description=text, io_manager_key="table_io_manager", kinds={"geopandas"})
        for name, text in _TABLES.items()
    },
    partitions_def=city_partitions,
    group_name="osm",
)
def osm_extract(
    context: dg.AssetExecutionContext, cities: CityRegistryResource, osm: OsmSourceResource
) -> Iterator[dg.Output]:
    """Read (offline) or download (online) one city's OSM data into the normalized tables."""
    city = cities.city(context.partition_key)
    extract = osm.load(city)
    summary = extract.summary()
    context.log.info(f"{city.slug}: {summary}")
    shared = {"source": summary["source"], "osm_snapshot": summary["snapshot"], "city": city.name}
    tables = {
        "osm_streets": extract.streets,
        "osm_pois": extract.pois,
        "osm_aois": extract.aois,
        "osm_trees": extract.trees,
    }
    for name, frame in tables.items():
        if name == "osm_trees":
            yield dg.Output(frame, name, metadata=shared)
            continue
        counts = frame["category"].value_counts().head(12)
        yield dg.Output(
            frame,
            name,
            metadata={
                **shared,
                "named": int(frame["name"].notna().sum()),
                "by_category": dg.MetadataValue.json({str(k): int(v) for k, v in counts.items()}),
                "preview": preview(frame),
                **(
                    {k: v for k, v in summary.items() if k.startswith(("skipped", "repaired"))}
                    if name != "osm_pois"
                    else {}
                ),
            },
        )
