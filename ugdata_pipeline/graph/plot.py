"""A PNG map of the urban graph, for asset metadata and the README."""

from __future__ import annotations

import io

import geopandas as gpd
import matplotlib as mpl
import numpy as np
import pandas as pd

mpl.use("Agg")  # no display on servers and in CI
import matplotlib.pyplot as plt

_KIND_STYLE = {
    "crossing": {"color": "#d62728", "s": 10, "zorder": 4, "label": "crossing"},
    "poi": {"color": "#1f77b4", "s": 3, "zorder": 3, "label": "POI"},
    "image": {"color": "#9467bd", "s": 3, "zorder": 5, "label": "image"},
}


def graph_map_png(nodes: gpd.GeoDataFrame, edges: pd.DataFrame, *, title: str, dpi: int = 110) -> bytes:
    """
    Draw streets, areas, crossings, POIs and the along-street edges as a PNG.

    Parameters
    ----------
    nodes, edges
        The graph tables (EPSG:4326).
    title
        Title above the map.

    Returns
    -------
    png
        The encoded image.
    """
    fig, ax = plt.subplots(figsize=(7, 7))
    try:
        aois = nodes[nodes["kind"] == "aoi"]
        if len(aois):
            aois.plot(ax=ax, color="#c7e9c0", edgecolor="#74c476", linewidth=0.4, zorder=1)
        streets = nodes[nodes["kind"] == "street"]
        if len(streets):
            streets.plot(ax=ax, color="#555555", linewidth=0.9, zorder=2)
        position = pd.DataFrame(
            {"lon": nodes["lon"].to_numpy(), "lat": nodes["lat"].to_numpy()}, index=nodes["node_id"].to_numpy()
        )
        for kind, color in (("along_street", "#ff7f0e"),):
            sub = edges[edges["kind"] == kind]
            if sub.empty:
                continue
            a = position.reindex(sub["src"]).to_numpy()
            b = position.reindex(sub["dst"]).to_numpy()
            segments = np.stack([a, b], axis=1)
            ax.add_collection(
                mpl.collections.LineCollection(segments, colors=color, linewidths=0.6, zorder=2.5, label=kind)
            )
        for kind, style in _KIND_STYLE.items():
            sub = nodes[nodes["kind"] == kind]
            if len(sub):
                ax.scatter(sub["lon"], sub["lat"], **style)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
        ax.set_aspect(1 / np.cos(np.deg2rad(float(nodes["lat"].median()))) if len(nodes) else 1)
        if ax.get_legend_handles_labels()[0]:  # a city of streets alone has nothing to label (matplotlib warns)
            ax.legend(loc="lower right", fontsize=7, markerscale=2)
        ax.autoscale_view()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        return buffer.getvalue()
    finally:
        plt.close(fig)
