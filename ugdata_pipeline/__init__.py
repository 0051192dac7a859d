"""UrbanGraphEmbeddings as a runnable pipeline: UGData, UGE and UGBench.

The domain packages (``osm``, ``graph``, and the stages after them) are plain Python and never import
Dagster; the orchestration shell lives in ``assets``, ``resources``, ``io_managers`` and ``definitions``.
"""

__version__ = "0.1.0"
