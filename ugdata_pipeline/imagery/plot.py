"""A PNG map of image positions coloured by split, for asset metadata and the README."""

from __future__ import annotations

import io

import matplotlib as mpl
import pandas as pd

mpl.use("Agg")  # no display on servers and in CI
import matplotlib.pyplot as plt

SPLIT_COLOURS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#d62728", "excluded": "#bbbbbb"}


def split_map_png(images: pd.DataFrame, *, title: str, dpi: int = 110) -> bytes:
    """
    Scatter image positions (lon/lat) coloured by ``split``, with a legend counting each split.

    Parameters
    ----------
    images
        Rows with ``lon``, ``lat`` and ``split``.
    title
        Title above the map.
    """
    fig, ax = plt.subplots(figsize=(7, 7))
    try:
        for split, colour in SPLIT_COLOURS.items():
            rows = images[images["split"] == split]
            if len(rows):
                ax.scatter(rows["lon"], rows["lat"], s=4, c=colour, label=f"{split} ({len(rows)})", linewidths=0)
        ax.set_title(title)
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
        ax.set_aspect("equal", adjustable="datalim")
        if len(images):
            ax.legend(loc="best", markerscale=3, fontsize=8)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        return buffer.getvalue()
    finally:
        plt.close(fig)
