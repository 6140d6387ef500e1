"""Spiral sampling of the unit disc and the ribbon around it (thesis Section 7.3.1-7.3.2).

The spiral is the Archimedean spiral parametrised so that the sampling density is uniform in area (Eq. 7.4-7.7)::

    r(t) = sqrt(t / pi),   theta(t) = 2 * n_wind * sqrt(pi * t),   t_i = i * pi / n_spls,  i = 0 .. n_spls - 1

so ``t`` is the area enclosed by radius ``r`` and ``n_spls`` equally spaced values of ``t`` put the same number of points
in every ring of equal area. Successive windings are ``1 / n_wind`` apart radially and successive points are about
``pi * n_wind / n_spls`` apart along the spiral; both spacings agree when ``n_spls = pi * n_wind**2``
(:func:`isotropic_n_spls`), the default of :class:`SpiralGeometry`.

The *ribbon* (Section 7.3.2) has ``k`` rows (``k = 3`` or ``5``): row ``j`` holds, for each spiral point, the point at
the same angle and radius ``r_i + (j - k // 2) / n_wind``, i.e. on the centre line of the neighbouring windings
(the thesis' footnote 4). A radius below zero continues through the centre, as the spiral itself does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def isotropic_n_spls(n_wind: int) -> int:
    """The number of spiral samples that makes the spacing along the spiral equal the winding spacing ``1/n_wind``."""
    n_wind = _check_int("n_wind", n_wind, 1)
    return round(math.pi * n_wind ** 2)


def spiral_parameters(n_spls: int, n_wind: int) -> tuple[np.ndarray, np.ndarray]:
    """Polar coordinates ``(r, theta)`` of the spiral samples, each of shape ``(n_spls,)`` (Eq. 7.5-7.7).

    ``r`` rises from 0 to ``sqrt(1 - 1/n_spls)``; ``theta`` is unwrapped and rises from 0 to about ``2*pi*n_wind``.
    """
    n_spls = _check_int("n_spls", n_spls, 2)
    n_wind = _check_int("n_wind", n_wind, 1)
    t = np.arange(n_spls, dtype=np.float64) * math.pi / n_spls
    r = np.sqrt(t / math.pi)
    theta = 2.0 * n_wind * np.sqrt(math.pi * t)
    return r, theta


def spiral_points(n_spls: int, n_wind: int) -> np.ndarray:
    """Cartesian coordinates of the spiral samples on the unit disc, shape ``(n_spls, 2)`` as ``(x, y)``."""
    r, theta = spiral_parameters(n_spls, n_wind)
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)


def ribbon_points(n_spls: int, n_wind: int, rows: int = 3) -> np.ndarray:
    """The ribbon around the spiral, shape ``(rows, n_spls, 2)``: row ``j`` is offset radially by ``(j - rows//2)/n_wind``.

    The middle row is the spiral itself. ``rows`` must be odd (3 or 5 in the thesis).
    """
    rows = _check_int("rows", rows, 1)
    if rows % 2 == 0:
        raise ValueError(f"rows must be odd (the middle row is the spiral), got {rows}")
    r, theta = spiral_parameters(n_spls, n_wind)
    offsets = (np.arange(rows) - rows // 2) / n_wind
    rr = r[None, :] + offsets[:, None]                               # (rows, n_spls), may dip below 0 at the centre
    return np.stack([rr * np.cos(theta)[None, :], rr * np.sin(theta)[None, :]], axis=-1)


def pixel_points(size: int) -> np.ndarray:
    """Pixel centres of a ``size x size`` image in disc coordinates, shape ``(size*size, 2)`` as ``(x, y)``, row-major.

    The unit disc is inscribed in the image: pixel ``(row, col)`` has ``x = (col + 0.5 - size/2) / (size/2)`` and
    ``y = (size/2 - row - 0.5) / (size/2)`` (y points up, so a positive angle turns counter-clockwise on screen).
    """
    size = _check_int("size", size, 2)
    c = (np.arange(size) + 0.5 - size / 2) / (size / 2)
    x = np.broadcast_to(c[None, :], (size, size))
    y = np.broadcast_to(-c[:, None], (size, size))
    return np.stack([x.ravel(), y.ravel()], axis=1).astype(np.float64)


def disc_mask(size: int, radius: float = 1.0) -> np.ndarray:
    """Boolean ``(size, size)`` mask of the pixels whose centres lie in the disc of ``radius`` (1 = inscribed disc)."""
    p = pixel_points(size)
    return (np.hypot(p[:, 0], p[:, 1]) <= radius).reshape(size, size)


@dataclass(frozen=True)
class SpiralGeometry:
    """The sampling geometry shared by all layers of a spiral network.

    ``image_size`` is the side of the cartesian images the network reads and writes. ``n_wind`` defaults to
    ``image_size // 2`` (one winding per pixel of radius, so the spiral is as dense as the pixel grid) and ``n_spls``
    to :func:`isotropic_n_spls` of it. ``rows`` is the ribbon height, equal to the convolution kernel size.
    """

    image_size: int
    n_wind: int | None = None
    n_spls: int | None = None
    rows: int = 3

    def __post_init__(self) -> None:
        _check_int("image_size", self.image_size, 4)
        n_wind = self.image_size // 2 if self.n_wind is None else _check_int("n_wind", self.n_wind, 1)
        object.__setattr__(self, "n_wind", n_wind)
        n_spls = isotropic_n_spls(n_wind) if self.n_spls is None else _check_int("n_spls", self.n_spls, 2)
        object.__setattr__(self, "n_spls", n_spls)
        _check_int("rows", self.rows, 1)
        if self.rows % 2 == 0:
            raise ValueError(f"rows must be odd, got {self.rows}")

    def spiral(self) -> np.ndarray:
        """``(n_spls, 2)`` spiral points."""
        return spiral_points(self.n_spls, self.n_wind)

    def ribbon(self) -> np.ndarray:
        """``(rows, n_spls, 2)`` ribbon points."""
        return ribbon_points(self.n_spls, self.n_wind, self.rows)

    def pixels(self) -> np.ndarray:
        """``(image_size**2, 2)`` pixel centres."""
        return pixel_points(self.image_size)
