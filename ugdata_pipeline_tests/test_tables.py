"""The one required-columns check: its message names the table, the city, every missing column and the fix."""

from __future__ import annotations

import pandas as pd
import pytest

from ugdata_pipeline.context.subgraph_tables import SubgraphTables
from ugdata_pipeline.errors import ImageryInputError, TableInputError
from ugdata_pipeline.imagery.anchor import validate_images
from ugdata_pipeline.tables import missing_columns, require_columns
from ugdata_pipeline.uge.data import build_graphs

FRAME = pd.DataFrame({"image_id": ["a"], "lon": [24.9]})


def test_missing_columns_keeps_the_order_asked():
    assert missing_columns(FRAME, ["split", "lon", "lat"]) == ["split", "lat"]
    assert missing_columns(FRAME, ["image_id", "lon"]) == []


def test_require_columns_names_table_city_columns_and_fix():
    require_columns(FRAME, ["image_id", "lon"], table="images")  # complete: no error
    with pytest.raises(TableInputError) as info:
        require_columns(FRAME, ["image_id", "lat", "split"], table="images", city="karhula", fix="Run the splits.")
    assert str(info.value) == (
        "images of 'karhula' is missing column(s) ['lat', 'split']; it has ['image_id', 'lon']. Run the splits."
    )
    assert isinstance(info.value, ValueError)


def test_require_columns_raises_the_stage_error_and_refuses_non_frames():
    with pytest.raises(ImageryInputError, match=r"^nodes must be a pandas DataFrame, got list\. Pass graph\.nodes\.$"):
        require_columns([1], ["node_id"], table="nodes", fix="Pass graph.nodes.", error=ImageryInputError)


def test_stages_report_missing_columns_through_the_helper():
    with pytest.raises(
        ImageryInputError, match=r"^images is missing column\(s\) \['source', 'lat', 'compass_angle'\]; it has"
    ):
        validate_images(FRAME)
    nodes = pd.DataFrame(columns=["image_id", "node_id", "kind", "node_text", "dx_m", "dy_m", "rank"])
    edges = pd.DataFrame({"image_id": [], "src": [], "dst": []})
    with pytest.raises(ValueError, match=r"subgraph_edges is missing column\(s\) \['distance_m', 'bearing_deg'\]"):
        build_graphs(SubgraphTables(nodes, edges), lambda texts: None)
