"""Scale space with exact reconstruction (thesis Part III, Sec. 4.1.1, 4.2.1, 4.2.2).

The sigma axis is cut into intervals Sigma_l (Eq. 4.29-4.31) on the logarithmic grid of Eq. 4.36,

    sigma_0 = 0,  sigma_l = sigma_min * 2^((l - 1) / rho)  (l = 1..M),                 (our indexing)

and every layer is a difference of Gaussians T_l = Gamma(sigma_l) - Gamma(sigma_{l+1}) (Lemma 9: the discrete
form of the integral of Delta / sigma over Sigma_l), with Gamma(0) = x and the last layer T_M = Gamma(sigma_M) the
coarsest blur. Sum_l T_l = x telescopes, so the reconstruction is exact to rounding whatever the blur.

Nonuniform grid (Sec. 4.2.2, Table 4.1): layers whose sigma_l is at least 2.25 pixels *of a coarser resolution*
are stored at that resolution -- level 0 = h x w, level 1 = floor(h/2) x floor(w/2) (sigma >= 4.5 input px),
level 2 = floor(h/4) x floor(w/4) (sigma >= 9 input px). To keep the reconstruction exact despite the resampling,
the blurs of level rho are stored as G^rho_l = down_rho(Gamma(sigma_l)) and the *last* layer of each level is the
difference to the next level's first blur brought up one level (bilinear ``up``), so that

    x = L_0 + up(L_1 + up(L_2)),   L_rho = sum of the layers stored at level rho,

telescopes exactly (the upsampling is linear and applied level by level).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ...core.baselines import gaussian_blur

# Sec. 4.2.2: "the minimum sigma for each sub-resolution level corresponds to 2.25 pixel sizes in that resolution"
LEVEL_SIGMA_PX = 2.25


@dataclass(frozen=True)
class SigmaGrid:
    """The discretised sigma axis.

    Attributes:
        edges: (M + 1,) float64: sigma_0 = 0 < sigma_1 < ... < sigma_M, layer l covers [sigma_l, sigma_{l+1}]
            (the last one [sigma_M, inf)).
        centres: (M + 1,) representative sigma of each layer (geometric mean of its interval; sigma_1 / 2^(1/(2rho))
            for the first, sigma_M * 2^(1/(2rho)) for the last) -- used as the layer's coordinate in scale space.
        levels: (M + 1,) int64 resolution level (0, 1, 2) at which each layer is stored.
        octave_steps: rho_8ve of Eq. 4.36.
    """

    edges: torch.Tensor
    centres: torch.Tensor
    levels: torch.Tensor
    octave_steps: int


def sigma_grid(image_shape: tuple[int, int], *, sigma_min: float = 0.8, octave_steps: int = 3,
               sigma_max: float | None = None, n_levels: int = 3) -> SigmaGrid:
    """The sigma discretisation of Sec. 4.2.1-4.2.2 for an (H, W) image.

    Args:
        image_shape: (H, W).
        sigma_min: sigma_1, the smallest blur (pixels); layer 0 = x - Gamma(sigma_1) holds everything finer.
        octave_steps: layers per doubling of sigma (rho_8ve, Eq. 4.36).
        sigma_max: the coarsest blur R (Lemma 8 / Eq. 4.31); ``None`` = min(H, W) / 4.
        n_levels: number of resolutions (1 = everything at full resolution; thesis Table 4.1: 3).
    """
    h, w = int(image_shape[0]), int(image_shape[1])
    if sigma_min <= 0 or octave_steps < 1 or n_levels < 1:
        raise ValueError(f"need sigma_min > 0, octave_steps >= 1, n_levels >= 1; got {sigma_min}, {octave_steps}, "
                         f"{n_levels}")
    r = float(sigma_max) if sigma_max is not None else min(h, w) / 4.0
    r = max(r, sigma_min)
    m = int(math.floor(octave_steps * math.log2(r / sigma_min) + 1e-9))  # sigma_M <= R
    sig = sigma_min * 2.0 ** (torch.arange(m + 1, dtype=torch.float64) / octave_steps)
    edges = torch.cat([torch.zeros(1, dtype=torch.float64), sig])
    step = 2.0 ** (1.0 / (2 * octave_steps))
    centres = torch.empty_like(edges)
    centres[:-1] = torch.sqrt(edges[:-1] * edges[1:])
    centres[0] = edges[1] / step
    centres[-1] = edges[-1] * step
    levels = torch.zeros(edges.numel(), dtype=torch.long)
    for lvl in range(1, n_levels):
        factor = 2 ** lvl
        if min(h, w) // factor < 2:
            break
        levels[edges >= LEVEL_SIGMA_PX * factor] = lvl
    return SigmaGrid(edges, centres, levels, octave_steps)


def level_shape(image_shape: tuple[int, int], level: int) -> tuple[int, int]:
    """(h, w) of resolution ``level``: floor(H / 2^level) x floor(W / 2^level) (Table 4.1)."""
    f = 2 ** level
    return max(1, int(image_shape[0]) // f), max(1, int(image_shape[1]) // f)


def resample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resampling of (..., h, w) to ``size`` (antialiased when shrinking; Sec. 4.2.2, Eq. 4.41)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, *x.shape[-2:])
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    return out.reshape(*lead, *size)


@dataclass
class ScaleSpace:
    """The layers T_l of one image, each at its level's resolution.

    Attributes:
        grid: the :class:`SigmaGrid`.
        image_shape: (H, W) of the input.
        layers: list of M + 1 tensors (C, h_l, w_l), T_l stored at level ``grid.levels[l]``.
    """

    grid: SigmaGrid
    image_shape: tuple[int, int]
    layers: list[torch.Tensor] = field(default_factory=list)

    @property
    def n_levels(self) -> int:
        return int(self.grid.levels.max()) + 1

    def level_sum(self, level: int, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Sum of the layers stored at ``level`` (optionally weighted per layer): (C, h_rho, w_rho)."""
        idx = (self.grid.levels == level).nonzero().flatten().tolist()
        c = self.layers[0].shape[0]
        total = self.layers[0].new_zeros((c,) + level_shape(self.image_shape, level))
        for l in idx:
            total = total + (self.layers[l] if weights is None else weights[l] * self.layers[l])
        return total


def collapse_levels(level_images: list[torch.Tensor], image_shape: tuple[int, int]) -> torch.Tensor:
    """x = L_0 + up(L_1 + up(L_2 + ...)): combine per-level images (..., h_rho, w_rho) into (..., H, W)."""
    acc = level_images[-1]
    for lvl in range(len(level_images) - 2, -1, -1):
        acc = level_images[lvl] + resample(acc, tuple(level_images[lvl].shape[-2:]))
    return resample(acc, tuple(image_shape)) if tuple(acc.shape[-2:]) != tuple(image_shape) else acc


def decompose(x: torch.Tensor, grid: SigmaGrid) -> ScaleSpace:
    """DoG layers of one image ``x`` (C, H, W) on ``grid`` (Eq. 4.29-4.31, nonuniform grid of Sec. 4.2.2).

    Returns a :class:`ScaleSpace` with ``sum`` over levels (:func:`reconstruct`) equal to ``x`` to rounding.
    """
    if x.ndim != 3:
        raise ValueError(f"x must have shape (C, H, W), got {tuple(x.shape)}")
    shape = (int(x.shape[-2]), int(x.shape[-1]))
    edges, levels = grid.edges.tolist(), grid.levels.tolist()
    n = len(edges)
    blurs: list[torch.Tensor] = []  # G_l = down_{level(l)}(Gamma(sigma_l)) at the layer's level
    for l in range(n):
        g = x if edges[l] == 0 else gaussian_blur(x, edges[l])
        blurs.append(resample(g, level_shape(shape, levels[l])))
    layers = []
    for l in range(n):
        if l == n - 1:
            layers.append(blurs[l])
        elif levels[l + 1] == levels[l]:
            layers.append(blurs[l] - blurs[l + 1])
        else:  # last layer of a level: difference to the next level's first blur brought up one level
            nxt = blurs[l + 1]
            up = nxt
            # bring up level by level (the same order collapse_levels uses)
            for lvl in range(levels[l + 1] - 1, levels[l] - 1, -1):
                up = resample(up, level_shape(shape, lvl))
            layers.append(blurs[l] - up)
    return ScaleSpace(grid, shape, layers)


def reconstruct(space: ScaleSpace) -> torch.Tensor:
    """Lemma 8 / Eq. 4.30 on the nonuniform grid: the image (C, H, W) from its layers."""
    return collapse_levels([space.level_sum(lvl) for lvl in range(space.n_levels)], space.image_shape)


def luma(x: torch.Tensor) -> torch.Tensor:
    """Greyscale reduction used for the keypoints (Sec. 4.1.2): Rec. 601 luma for 3 channels, else the channel
    mean. (C, H, W) -> (H, W)."""
    if x.shape[0] == 3:
        return 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    return x.mean(0)
