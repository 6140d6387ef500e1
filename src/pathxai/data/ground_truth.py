"""Ground truth helpers shared by the data generators: object boxes and masks drawn from shapes.

Boxes are ``(x0, y0, x1, y1)`` pixel coordinates, half-open (``mask[y0:y1, x0:x1]`` is the box region).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

Box = tuple[int, int, int, int]

# a digit's ink: pixels brighter than this (images in [0, 1]) are its mask, their bounding box its box
INK_THRESHOLD = 0.2


def box_of(mask: np.ndarray) -> Box:
    """Half-open bounding box ``(x0, y0, x1, y1)`` of the True pixels of an (H, W) mask."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise ValueError("mask is empty: no bounding box")
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def polygon_mask(shape: tuple[int, int], points: Sequence[tuple[float, float]]) -> np.ndarray:
    """(H, W) bool mask of the polygon with vertices ``points`` given as (x, y) pixel coordinates."""
    from skimage.draw import polygon

    pts = np.asarray(points, dtype=float)
    m = np.zeros(shape, dtype=bool)
    rr, cc = polygon(pts[:, 1], pts[:, 0], shape)
    m[rr, cc] = True
    return m


def ellipse_mask(shape: tuple[int, int], cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    """(H, W) bool mask of the axis-aligned ellipse centred at (cx, cy) with half-axes ax (x) and ay (y)."""
    from skimage.draw import ellipse

    m = np.zeros(shape, dtype=bool)
    rr, cc = ellipse(cy, cx, ay, ax, shape)
    m[rr, cc] = True
    return m


__all__ = ["Box", "INK_THRESHOLD", "box_of", "ellipse_mask", "polygon_mask"]
