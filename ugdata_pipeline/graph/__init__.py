"""The typed urban graph: schema, build, geodesic and text helpers, CSR adjacency, validators."""

from ugdata_pipeline.graph.build import GraphConfig, UrbanGraph, build_urban_graph
from ugdata_pipeline.graph.csr import CsrGraph, build_csr
from ugdata_pipeline.graph.geodesy import bearing_deg, distance_bearing, distance_m
from ugdata_pipeline.graph.text import compass_word, distance_phrase, render_node_text

__all__ = [
    "CsrGraph",
    "GraphConfig",
    "UrbanGraph",
    "bearing_deg",
    "build_csr",
    "build_urban_graph",
    "compass_word",
    "distance_bearing",
    "distance_m",
    "distance_phrase",
    "render_node_text",
]
