"""The L2 feature-weight metric on the gain space R^K (thesis Sec. 4.3.3, Eq. 4.45), for the path ascent.

With weights W_j = ||D(e_j)|| (normalised to mean 1) the metric <u, v>_W = sum_j W_j u_j v_j / K changes two things
of the ablation-path ascent (Sec. 4.3.3): the gradient obtained from the differential (Riesz map: g_j = dP_j / W_j)
and the time normalisation (mass of a slice = sum_j W_j phi_j / sum_j W_j). Everything else -- saturation,
pinching, pointwise monotonisation, clamping -- is pointwise and reused from :mod:`..ablation_path.projections`.
With W = 1 :func:`weighted_ascent_step` is the pixel method's :func:`..ablation_path.ascent_step` (tested).
"""
from __future__ import annotations

import torch

from ..ablation_path.optimiser import AscentConfig
from ..ablation_path.paths import time_grid
from ..ablation_path.projections import clamp_path, monotonise_path, normalise_step_linf, pinch_paths, saturate


def weighted_masses(path: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mass of every slice under the weights: ``(..., n, 1, K), (K,) -> (..., n)``."""
    return (path * weights).sum((-2, -1)) / (weights.sum() * path.shape[-2])


def reparametrise_constant_speed_weighted(path: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Lemma 7 with the weighted mass: slice k gets mass t_k by interpolating between the bracketing slices.

    Args:
        path: ``(..., n, 1, K)`` monotone slices in [0, 1]. weights: (K,) positive.
    """
    n, h, k = path.shape[-3:]
    lead = path.shape[:-3]
    flat = path.reshape(-1, n, h, k)
    b = flat.shape[0]
    zeros = torch.zeros(b, 1, h, k, dtype=path.dtype)
    full = torch.cat([zeros, flat, torch.ones_like(zeros)], 1)
    m = weighted_masses(full, weights.to(path.dtype))
    m[:, 0], m[:, -1] = 0.0, 1.0
    m = torch.cummax(m.clamp(0.0, 1.0), dim=1).values
    targets = time_grid(n, path.dtype).unsqueeze(0).expand(b, n).contiguous()
    j = (torch.searchsorted(m, targets, right=True) - 1).clamp(0, n)
    ml, mr = m.gather(1, j), m.gather(1, j + 1)
    eta = ((targets - ml) / (mr - ml)).clamp(0.0, 1.0)
    idx = torch.arange(b).unsqueeze(1)
    out = full[idx, j] + eta.view(b, n, 1, 1) * (full[idx, j + 1] - full[idx, j])
    return torch.cummax(out.clamp(0.0, 1.0), dim=1).values.reshape(*lead, n, h, k)


def weighted_ascent_step(state: torch.Tensor, grad: torch.Tensor, weights: torch.Tensor,
                         config: AscentConfig) -> torch.Tensor:
    """Algorithm 2 in the metric of Eq. 4.45: ``(B, P, n, 1, K)`` state and differential -> next state."""
    w = (weights / weights.mean()).to(state.dtype)
    g = grad / w  # Riesz map of the differential
    g = g - (g * w).sum((-2, -1), keepdim=True) / (w.sum() * g.shape[-2])  # keep every slice's weighted mass
    phi = state + normalise_step_linf(g, config.step_size, dims=4)
    phi = saturate(phi, config.saturation)
    if phi.shape[1] == 2:
        phi = torch.stack([phi[:, 0], pinch_paths(phi[:, 0], phi[:, 1], config.pinch)], dim=1)
    return reparametrise_constant_speed_weighted(clamp_path(monotonise_path(phi)), w)
