"""PNG histograms of the reasoning paths, for asset metadata."""

from __future__ import annotations

import io

import matplotlib as mpl
import numpy as np
import pandas as pd

mpl.use("Agg")  # no display on servers and in CI
import matplotlib.pyplot as plt


def _png(fig: plt.Figure, dpi: int) -> bytes:
    buffer = io.BytesIO()
    try:
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def hop_histogram_png(paths: pd.DataFrame, *, dpi: int = 100) -> bytes:
    """Bar chart of paths per hop count, split by ``path_type``; returns PNG bytes."""
    fig, ax = plt.subplots(figsize=(5, 3))
    if len(paths):
        table = paths.groupby(["hops", "path_type"]).size().unstack(fill_value=0).sort_index()
        table.plot.bar(ax=ax, stacked=True, width=0.8, rot=0)
    ax.set_xlabel("hops (image step included)")
    ax.set_ylabel("paths")
    ax.set_title(f"{len(paths):,} reasoning paths by hop count")
    return _png(fig, dpi)


def distance_histogram_png(paths: pd.DataFrame, *, bins: int = 30, dpi: int = 100) -> bytes:
    """Histogram of straight-line image -> target distances (m) and route lengths (m); returns PNG bytes."""
    fig, ax = plt.subplots(figsize=(5, 3))
    if len(paths):
        upper = float(max(paths["distance_m"].max(), paths["route_m"].max(), 1.0))
        edges = np.linspace(0.0, upper, bins + 1)
        ax.hist(paths["distance_m"], bins=edges, alpha=0.7, label="straight line")
        ax.hist(paths["route_m"], bins=edges, alpha=0.5, label="route")
        ax.legend()
    ax.set_xlabel("metres")
    ax.set_ylabel("paths")
    ax.set_title("distance from the image to the target")
    return _png(fig, dpi)
