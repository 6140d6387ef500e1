"""Plots: heatmap overlays, deletion/insertion curves, heatmap grids."""
from .curves import save_curves, save_heatmap_grid
from .heatmap import save_overlay, to_display_image

__all__ = ["save_curves", "save_heatmap_grid", "save_overlay", "to_display_image"]
