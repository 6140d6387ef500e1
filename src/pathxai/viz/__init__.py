"""Plots: heatmap overlays (more to come: curves, path strips, HTML report)."""
from .heatmap import save_overlay, to_display_image

__all__ = ["save_overlay", "to_display_image"]
