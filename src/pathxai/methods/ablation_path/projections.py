"""The steps of projected gradient ascent on ablation paths (thesis Part II, Sec. 2.4.2C, 2.5 and 2.6.2).

Each function is one step of Algorithm 2, pure (returns a new tensor), and works on path arrays ``(..., n, h, w)``
of interior time slices (see :mod:`.paths`); leading axes (images, paths) are independent.

=============================  ==========================================================================
step                           thesis
=============================  ==========================================================================
:func:`remove_mean_gradient`   Alg. 2 line 6: the update must not change the mass of a slice
:func:`normalise_step_linf`    Sec. 2.8.2: step of L-infinity norm ``step_size`` (order 1, range of masks)
:func:`smooth_state`           Eq. 2.24-2.25: Gaussian filter of the optimisation state (not the gradient)
:func:`saturate`               Eq. 2.26: artificial saturation, 0 and 1 attractive, 1/2 repulsive
:func:`pinch_paths`            Eq. 2.27-2.29: boundary pinching of the straddling pair
:func:`monotonise_path`        Alg. 1 / Lemma 6: pixel-wise L-infinity-optimal monotonisation
:func:`clamp_path`             Alg. 2 line 14: clamp to [0, 1]
:func:`reparametrise_constant_speed`  Lemma 7: constant speed, mass(phi(t_k)) = t_k
=============================  ==========================================================================
"""
from __future__ import annotations

import math

import torch

from ...core.baselines import gaussian_blur
from .paths import masses, time_grid


# ---------------------------------------------------------------------------------------------- gradient step
def remove_mean_gradient(grad: torch.Tensor) -> torch.Tensor:
    """Subtract each slice's spatial mean (Alg. 2 line 6), so that a step along it keeps every slice's mass."""
    return grad - grad.mean(dim=(-2, -1), keepdim=True)


def normalise_step_linf(grad: torch.Tensor, step_size: float, dims: int = 3) -> torch.Tensor:
    """Scale ``grad`` so its L-infinity norm over the last ``dims`` axes is ``step_size`` (Sec. 2.8.2).

    A zero gradient gives a zero step. ``dims=3`` normalises each path ``(n, h, w)`` on its own; ``dims=4``
    normalises a pair of paths ``(2, n, h, w)`` jointly.
    """
    axes = tuple(range(-dims, 0))
    norm = grad.abs().amax(dim=axes, keepdim=True)
    return torch.where(norm > 0, grad * (step_size / norm.clamp_min(torch.finfo(grad.dtype).tiny)),
                       torch.zeros_like(grad))


def smooth_state(path: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian filter of std ``sigma`` (mask pixels) over the spatial axes of every slice (Eq. 2.24-2.25).

    Reflect padding at the image border; ``sigma <= 0`` returns a copy.
    """
    if sigma <= 0:
        return path.clone()
    return gaussian_blur(path, float(sigma))


def saturate(path: torch.Tensor, zeta: float) -> torch.Tensor:
    """Artificial saturation Pi_sat of Eq. 2.26, pointwise.

    Pi_sat(p) = (tanh((2p - 1) zeta) / tanh(zeta) + 1) / 2: smooth and increasing, fixed points 0 and 1 (attractive,
    slope 2 zeta / sinh(2 zeta) < 1) and 1/2 (repulsive, slope zeta / tanh(zeta) > 1); the identity as zeta -> 0
    (``zeta == 0`` returns a copy).
    """
    if zeta < 0:
        raise ValueError(f"saturation zeta must be >= 0, got {zeta}")
    if zeta == 0:
        return path.clone()
    return 0.5 * (torch.tanh((2.0 * path - 1.0) * zeta) / math.tanh(zeta) + 1.0)


def pinch(delta: torch.Tensor, zeta: float) -> torch.Tensor:
    """The pinching function Pi_pinch of Eq. 2.28-2.29 on differences delta in [-1, 1].

    Pi_pinch(delta) = delta (1 - zeta) + delta^2 zeta: attractive fixed point 0 (slope 1 - zeta), repulsive fixed
    point 1 (slope 1 + zeta); negative differences shrink faster than positive ones. ``delta`` is clipped to the
    domain [-1, 1] first (after a gradient step it may leave it).
    """
    if not 0 <= zeta <= 1:
        raise ValueError(f"pinch zeta must lie in [0, 1], got {zeta}")
    d = delta.clamp(-1.0, 1.0)
    return d * (1.0 - zeta) + d * d * zeta


def pinch_paths(up: torch.Tensor, down: torch.Tensor, zeta: float) -> torch.Tensor:
    """The boundary-pinching tweak of Eq. 2.27: new phi_down = phi_up + Pi_pinch(phi_down - phi_up).

    phi_up is left as it is (the update acts on the difference of the pair). Returns the new ``down``.
    """
    return up + pinch(down - up, zeta)


# ---------------------------------------------------------------------------------------------- hard projections
def monotonise(values: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Make every 1-D sequence along ``dim`` non-decreasing, L-infinity-optimally (Algorithm 1, Lemma 6).

    Algorithm 1 ("descent flattening") replaces each decreasing stretch, grown to where the sequence crosses its
    centre line, by that centre line m = (local max + local min) / 2, and merges overlapping stretches whose centre
    lines are out of order, recomputing the centre. On a discrete sequence this is exactly pool-adjacent-violators
    with the *midrange* as block value: scan left to right, push each value as a block, and while the last block's
    value is below the one before, merge them (value = (max + min) / 2 of the merged block). Hence:

    * the result is monotone; points outside merged blocks are unchanged (the correction is near-local);
    * its L-infinity distance to the input is max_{s < t} (p(s) - p(t)) / 2, the least any monotone sequence can
      achieve (Lemma 6): in every merged block the maximum precedes the minimum;
    * monotone input is returned unchanged, so the projection is idempotent.

    Vectorised over all other axes (every pixel of every slice stack at once); O(n^2) tensor operations worst case.
    """
    v = values.movedim(dim, -1)
    shape = v.shape
    n = shape[-1]
    flat = v.reshape(-1, n)
    rows_total = flat.shape[0]
    if n <= 1 or rows_total == 0:
        return values.clone()
    hi = torch.empty_like(flat)
    lo = torch.empty_like(flat)
    val = torch.empty_like(flat)
    start = torch.zeros(rows_total, n, dtype=torch.long)
    depth = torch.zeros(rows_total, dtype=torch.long)
    rows = torch.arange(rows_total)
    for t in range(n):
        col = flat[:, t]
        hi[rows, depth] = col
        lo[rows, depth] = col
        val[rows, depth] = col
        start[rows, depth] = t
        depth += 1
        while True:
            top = depth - 1
            prev = (top - 1).clamp_min(0)
            violated = (depth >= 2) & (val[rows, top] < val[rows, prev])
            if not bool(violated.any()):
                break
            r = rows[violated]
            tp = top[violated]
            pv = tp - 1
            h = torch.maximum(hi[r, pv], hi[r, tp])
            lw = torch.minimum(lo[r, pv], lo[r, tp])
            hi[r, pv] = h
            lo[r, pv] = lw
            val[r, pv] = 0.5 * (h + lw)
            depth[r] -= 1
    # expand blocks back to the time axis: block id of t = number of block starts <= t, minus one
    valid = torch.arange(n).unsqueeze(0) < depth.unsqueeze(1)
    marks = torch.zeros(rows_total, n, dtype=torch.long)
    marks.scatter_add_(1, start.masked_fill(~valid, 0), valid.long())
    block = marks.cumsum(1) - 1
    out = val.gather(1, block)
    return out.reshape(shape).movedim(-1, dim)


def monotonise_path(path: torch.Tensor) -> torch.Tensor:
    """Pixel-wise monotonisation along the time axis of ``(..., n, h, w)`` (Alg. 2 line 13, Algorithm 1).

    The interior slices are monotonised on their own; the fixed end slices 0 and 1 are restored by
    :func:`clamp_path`, which keeps the result monotone (Alg. 2 runs monotonise, then clamp).
    """
    return monotonise(path, dim=-3)


def clamp_path(path: torch.Tensor) -> torch.Tensor:
    """Clamp every value to [0, 1] (Alg. 2 line 14); keeps monotonicity, and with it the boundary conditions."""
    return path.clamp(0.0, 1.0)


def reparametrise_constant_speed(path: torch.Tensor) -> torch.Tensor:
    """The constant-speed representative Pi_CS of a monotone path (Lemma 7, Alg. 2 line 15).

    For each target mass w_j = t_j, find the neighbouring slices (fixed ends included) whose masses bracket it,
    m_k <= w_j < m_{k+1}, and interpolate phi_k + eta (phi_{k+1} - phi_k), eta = (w_j - m_k) / (m_{k+1} - m_k)
    -- the thesis interpolates unconditionally in the discrete setting. The result has mass exactly t_j (to
    rounding), stays pointwise monotone (a running maximum removes last-bit rounding effects) and in [0, 1].

    Args:
        path: ``(..., n, h, w)`` monotone interior slices with values in [0, 1].
    """
    n, h, w = path.shape[-3:]
    lead = path.shape[:-3]
    flat = path.reshape(-1, n, h, w)
    b = flat.shape[0]
    zeros = torch.zeros(b, 1, h, w, dtype=path.dtype)
    full = torch.cat([zeros, flat, torch.ones_like(zeros)], dim=1)  # (b, n+2, h, w)
    m = masses(full)  # (b, n+2)
    m[:, 0] = 0.0
    m[:, -1] = 1.0
    m = torch.cummax(m.clamp(0.0, 1.0), dim=1).values  # guard against rounding in the means
    targets = time_grid(n, path.dtype).unsqueeze(0).expand(b, n).contiguous()
    k = torch.searchsorted(m, targets, right=True) - 1  # m_k <= w < m_{k+1}
    k = k.clamp(0, n)
    ml = m.gather(1, k)
    mr = m.gather(1, k + 1)
    eta = ((targets - ml) / (mr - ml)).clamp(0.0, 1.0)
    idx = torch.arange(b).unsqueeze(1)
    left = full[idx, k]  # (b, n, h, w)
    right = full[idx, k + 1]
    out = left + eta.view(b, n, 1, 1) * (right - left)
    out = torch.cummax(out.clamp(0.0, 1.0), dim=1).values
    return out.reshape(*lead, n, h, w)


def project_to_ablation_paths(path: torch.Tensor) -> torch.Tensor:
    """Alg. 2 lines 13-15: monotonise, clamp, reparametrise to constant speed -- an ablation path (Definition 1)."""
    return reparametrise_constant_speed(clamp_path(monotonise_path(path)))
