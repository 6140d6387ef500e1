"""Plots: heatmap overlays, deletion/insertion curves, heatmap grids."""
from .curves import save_curves, save_heatmap_grid
from .heatmap import display_map, save_overlay, to_display_image
from .path import save_path_strip
from .sanity import save_randomisation_grid

__all__ = ["display_map", "save_curves", "save_heatmap_grid", "save_overlay", "save_path_strip",
           "save_randomisation_grid", "to_display_image"]
