"""Spatial context: radius subgraphs around images, their text descriptions, and captioners."""
