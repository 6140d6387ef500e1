"""Ablation paths as arrays: time grid, masses, the affine start path, images along a path, axiom checks.

Representation (thesis Part II, Sec. 2.6.1 and 2.6.2A): a path of ``n`` masks is stored as an array ``(..., n, h, w)``
holding only the *interior* time slices

    t_k = k / (n + 1),  k = 1..n                                   (Eq. 2.30)

because the boundary masks phi(0) = 0 and phi(1) = 1 are fixed by Definition 1 and never stored; every step that
needs them treats them as read-only slices (:func:`with_boundaries`).

Convention (Sec. 2.1, Eq. 2.2 and 1.12): mask value 0 keeps the target image, 1 replaces it by the baseline,

    image(phi(t)) = x + up(phi(t)) * (baseline - x),

with ``up`` the bilinear upsampling of the (h, w) mask to the image's (H, W), shared by all channels. The mass of a
mask (Eq. 2.6, unit-area measure) is its mean over the (h, w) grid, so an ablation path has mean(phi(t_k)) = t_k.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def time_grid(n_steps: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The interior times t_k = k / (n + 1), k = 1..n (Eq. 2.30), shape (n,)."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    return torch.arange(1, n_steps + 1, dtype=dtype) / (n_steps + 1)


def time_weights(n_steps: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, float]:
    """Trapezoid weights of the grid {0, t_1..t_n, 1} for integrals over t in [0, 1].

    Returns ``(w (n,), w_end)``: every interior slice has weight 1/(n+1), each fixed end slice 1/(2(n+1)), so
    ``sum(w * g(t_k)) + w_end * (g(0) + g(1))`` approximates the integral of g (exactly for linear g).
    """
    h = 1.0 / (n_steps + 1)
    return torch.full((n_steps,), h, dtype=dtype), 0.5 * h


def affine_path(n_steps: int, mask_shape: Sequence[int], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The affine (straight) path phi(t, r) = t of Eq. 2.17 -- the start state and Integrated Gradients' path.

    Returns (n, h, w).
    """
    h, w = (int(s) for s in mask_shape)
    return time_grid(n_steps, dtype).view(-1, 1, 1).expand(n_steps, h, w).clone()


def with_boundaries(path: torch.Tensor) -> torch.Tensor:
    """``(..., n, h, w)`` interior slices -> ``(..., n + 2, h, w)`` with phi(0) = 0 and phi(1) = 1 added."""
    zeros = torch.zeros_like(path[..., :1, :, :])
    return torch.cat([zeros, path, torch.ones_like(zeros)], dim=-3)


def masses(path: torch.Tensor) -> torch.Tensor:
    """Mass (Eq. 2.6: mean over the mask grid) of every slice: ``(..., n, h, w) -> (..., n)``."""
    return path.mean(dim=(-2, -1))


def saturation_level(path: torch.Tensor) -> torch.Tensor:
    """Saturation of a path, Eq. 2.31: integral over t and r of 2 |phi - 1/2|, in [0, 1].

    The time integral uses the trapezoid rule on {0, t_1..t_n, 1}; the fixed end slices are fully saturated.
    ``(..., n, h, w) -> (...)``.
    """
    n = path.shape[-3]
    w, w_end = time_weights(n, path.dtype)
    per_slice = (2.0 * (path - 0.5).abs()).mean(dim=(-2, -1))
    return (per_slice * w).sum(-1) + 2.0 * w_end


def upsample_masks(masks: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Masks ``(m, h, w)`` -> ``(m, 1, H, W)`` by bilinear interpolation (identity when the sizes agree)."""
    size = (int(size[0]), int(size[1]))
    m = masks.unsqueeze(1)
    if tuple(masks.shape[-2:]) == size:
        return m
    return F.interpolate(m, size=size, mode="bilinear", align_corners=False)


def resample_path(path: torch.Tensor, n_steps: int, size: Sequence[int]) -> torch.Tensor:
    """A path on another grid: ``(..., n, h, w) -> (..., n_steps, H', W')``, bilinear in space, linear in time.

    Space: every slice is resampled bilinearly (``align_corners=False``, as :func:`upsample_masks` lifts masks to the
    image). Time: the slice at t'_j = j / (n_steps + 1) interpolates linearly between the neighbouring slices of the
    old grid t_k = k / (n + 1), the fixed ends phi(0) = 0 and phi(1) = 1 included (when (n + 1) divides
    (n_steps + 1) the old slices are kept as they are). Both are averages with non-negative weights, so values stay in
    [0, 1] and monotone in t; masses are preserved up to the border effects of the bilinear filter, which
    :func:`.projections.reparametrise_constant_speed` removes (see :func:`.optimiser.refine_path`).
    """
    n, h, w = path.shape[-3:]
    lead = path.shape[:-3]
    out = path.reshape(-1, n, h, w)
    size = (int(size[0]), int(size[1]))
    if (h, w) != size:
        out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
    if n_steps != n:
        full = with_boundaries(out)                                        # (b, n + 2, H', W') at k / (n + 1)
        # t'_j (n + 1) = j (n + 1) / (n_steps + 1) in units of the old spacing, split in integer arithmetic so
        # that nested grids keep their old slices exactly
        num = torch.arange(1, n_steps + 1) * (n + 1)
        left = num // (n_steps + 1)
        frac = ((num % (n_steps + 1)).to(out.dtype) / (n_steps + 1)).view(1, -1, 1, 1)
        out = full[:, left] * (1.0 - frac) + full[:, left + 1] * frac
    return out.reshape(*lead, n_steps, *size)


def blend(x: torch.Tensor, baseline: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Images along a path: ``x + up(mask) * (baseline - x)`` (Eq. 1.12 with bilinear mask resampling).

    Args:
        x, baseline: (C, H, W) or (m, C, H, W) (broadcast against the masks).
        masks: (m, h, w) masks in the path's resolution.
    Returns:
        (m, C, H, W) images; differentiable w.r.t. ``masks``.
    """
    up = upsample_masks(masks.to(x.dtype), x.shape[-2:])
    return x + up * (baseline - x)


def path_violations(path: torch.Tensor) -> dict[str, float]:
    """How far ``(..., n, h, w)`` interior slices are from an ablation path (Definition 1); 0.0 = satisfied.

    Returns the largest violation of each axiom over the whole array: ``range`` (values outside [0, 1], which with
    the fixed ends phi(0) = 0, phi(1) = 1 is where the boundary conditions bite), ``monotonicity`` (largest pointwise
    decrease along t, ends included) and ``speed`` (largest |mass(phi(t_k)) - t_k|).
    """
    full = with_boundaries(path)
    n = path.shape[-3]
    rng = max(float((-path).clamp_min(0).max()), float((path - 1).clamp_min(0).max()))
    mono = float((full[..., :-1, :, :] - full[..., 1:, :, :]).clamp_min(0).max())
    speed = float((masses(path) - time_grid(n, path.dtype).to(path.device)).abs().max())
    return {"range": rng, "monotonicity": mono, "speed": speed}


def is_ablation_path(path: torch.Tensor, atol: float = 1e-9) -> bool:
    """Whether ``(..., n, h, w)`` satisfies Definition 1 (boundary conditions, monotonicity, constant speed)."""
    return all(v <= atol for v in path_violations(path).values())
