"""PNG figures of the subgraphs, for asset metadata."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = ["size_histogram_png"]


def size_histogram_png(summary: pd.DataFrame, *, dpi: int = 100) -> bytes:
    """
    Histogram of nodes per subgraph (truncated subgraphs stacked in another colour), as a PNG.

    Parameters
    ----------
    summary
        The ``subgraphs`` table (``n_nodes``, ``truncated``).
    """
    fig = Figure(figsize=(6.0, 3.6))
    ax = fig.subplots()
    n_nodes = summary["n_nodes"].to_numpy(dtype=float)
    if len(n_nodes):
        truncated = summary["truncated"].to_numpy(dtype=bool)
        bins = np.linspace(0, max(n_nodes.max(), 1.0) + 1, min(40, int(n_nodes.max()) + 2))
        ax.hist(
            [n_nodes[~truncated], n_nodes[truncated]],
            bins=bins,
            stacked=True,
            color=["#4c72b0", "#dd8452"],
            label=["complete", "truncated at the cap"],
        )
        ax.legend(loc="upper left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no subgraphs", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("nodes per subgraph (image node included)")
    ax.set_ylabel("images")
    ax.set_title(f"Subgraph sizes ({len(n_nodes):,} images)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
