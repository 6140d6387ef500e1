"""Heatmap reductions of optimised paths (thesis Part II, Sec. 2.7.2) and the window post-processing (Eq. 2.37).

Orientation. The thesis writes the reductions on masks, where 1 means "replaced by the baseline" (Eq. 2.33, 2.34,
2.36), but reads heatmaps as "high = salient" (pointing game, Eq. 2.35). Here every heatmap is oriented so that high
means salient, which is what metrics consume:

* on a retaining-type path (P_up, P_updown, the phi_up of P_up_down) the salient pixels are the ones *kept* longest,
  so the mask reductions use the kept part ``1 - phi``;
* on a dissipating path (P_down) the salient pixels are the ones *removed* first, so they use ``phi`` itself.

============================  ===================================================  =====================
reduction                     heatmap (high = salient)                             thesis
============================  ===================================================  =====================
``"average"``                 int_0^1 (1 - phi(t)) dt   (or int phi dt)            Eq. 2.33, Sec. 2.7.2A
``"class_transition"``        1 - phi(t_clt)            (or phi(t_clt))             Eq. 2.34, Sec. 2.7.2B
``"influence_weighted"``      -int_0^1 d_t phi(t) * d_t F(phi(t)) dt               Eq. 2.35, Sec. 2.7.2C
``"contrastive"``             int_0^1 (phi_down(t) - phi_up(t)) dt  (P_up_down)     Eq. 2.36, Sec. 2.7.2D
============================  ===================================================  =====================

t_clt (Sec. 2.7.2B): the largest t at which the target class ranks first among all classes; if there is none, the t
of the highest F. It is searched over the stored (interior) slices t_1..t_n.
"""
from __future__ import annotations

import torch

from .paths import time_weights

REDUCTIONS = ("average", "class_transition", "influence_weighted", "contrastive")


def average_heatmap(path: torch.Tensor, kept: bool = True) -> torch.Tensor:
    """Eq. 2.33 (trapezoid on {0, t_1..t_n, 1}): ``(..., n, h, w) -> (..., h, w)``; ``kept`` orients it (see above)."""
    n = path.shape[-3]
    w, w_end = time_weights(n, path.dtype)
    removed = (path * w.view(-1, 1, 1)).sum(-3) + w_end * 1.0  # phi(0) = 0, phi(1) = 1
    return 1.0 - removed if kept else removed


def class_transition_index(values: torch.Tensor, dominant: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Slice index of the class transition (Sec. 2.7.2B).

    Args:
        values: ``(N, n)`` F at the interior slices.
        dominant: ``(N, n)`` bool, whether the target class ranks first there (``None`` for callable targets).
    Returns:
        ``(index (N,) int64 into the n slices, found (N,) bool -- whether some slice is dominated by the target)``.
    """
    n = values.shape[-1]
    fallback = values.argmax(-1)
    if dominant is None:
        return fallback, torch.zeros_like(fallback, dtype=torch.bool)
    found = dominant.any(-1)
    last = n - 1 - dominant.flip(-1).long().argmax(-1)
    return torch.where(found, last, fallback), found


def class_transition_heatmap(path: torch.Tensor, index: torch.Tensor, kept: bool = True) -> torch.Tensor:
    """Eq. 2.34: the mask at the transition, ``(N, n, h, w), (N,) -> (N, h, w)``; ``kept`` orients it."""
    mask = path[torch.arange(path.shape[0]), index]
    return 1.0 - mask if kept else mask


def influence_weighted_heatmap(path: torch.Tensor, curve: torch.Tensor) -> torch.Tensor:
    """Eq. 2.35, -int d_t phi * d_t F dt, by finite differences over {0, t_1..t_n, 1}.

    Args:
        path: ``(N, n, h, w)``.
        curve: ``(N, n + 2)`` F along the path including the ends t = 0 (the image) and t = 1 (the baseline).
    Returns:
        ``(N, h, w)``: positive where removing a pixel lowered F. Orientation-free (same for every score).
    """
    n = path.shape[-3]
    zeros = torch.zeros_like(path[:, :1])
    full = torch.cat([zeros, path, torch.ones_like(zeros)], dim=1)
    d_phi = full[:, 1:] - full[:, :-1]  # (N, n+1, h, w)
    d_f = (curve[:, 1:] - curve[:, :-1]).to(path.dtype)  # (N, n+1)
    return -(n + 1) * (d_phi * d_f.view(*d_f.shape, 1, 1)).sum(1)


def contrastive_heatmap(up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """Eq. 2.36 with high = salient: int (phi_down - phi_up) dt -- what phi_up keeps while phi_down removes it."""
    n = up.shape[-3]
    w, _ = time_weights(n, up.dtype)
    return ((down - up) * w.view(-1, 1, 1)).sum(-3)


def window(heatmap: torch.Tensor) -> torch.Tensor:
    """Eq. 2.37: multiply by sqrt(sin(pi x) sin(pi y)) over pixel centres in [0, 1]^2 (suppresses the border)."""
    h, w = heatmap.shape[-2:]
    ys = (torch.arange(h, dtype=heatmap.dtype) + 0.5) / h
    xs = (torch.arange(w, dtype=heatmap.dtype) + 0.5) / w
    win = torch.sqrt(torch.sin(torch.pi * ys).view(-1, 1) * torch.sin(torch.pi * xs).view(1, -1))
    return heatmap * win
