"""One iteration of projected gradient ascent (thesis Algorithm 2) and its stopping rule, model-free.

The model-dependent part -- the score gradient of every path slice -- is computed by the method
(:class:`pathxai.methods.ablation_path.AblationPath`); this module turns a gradient into the next ablation path by
composing the projections of :mod:`.projections` in the order of Algorithm 2:

    line 6   remove_mean_gradient           the update keeps every slice's mass
    line 7   normalise_step_linf, ascend    phi += h * g / ||g||_inf  (ascent: Remark 8 / Eq. 2.19;
                                            Alg. 2 writes "phi - h g" but maximises P)
    line 8   smooth_state                   Gaussian filter of the state (Eq. 2.24)
    line 10  saturate                       Eq. 2.26
    line 11  pinch_paths                    Eq. 2.27 (boundary-straddling pair only)
    line 13  monotonise_path                Algorithm 1
    line 14  clamp_path
    line 15  reparametrise_constant_speed   Lemma 7

(Line 9, the optional step-size adaptation, is not used: the step is L-infinity-normalised every iteration.)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .paths import saturation_level
from .projections import (normalise_step_linf, pinch_paths, project_to_ablation_paths, remove_mean_gradient,
                          saturate, smooth_state)


@dataclass(frozen=True)
class AscentConfig:
    """Parameters of one ascent step.

    Attributes:
        step_size: L-infinity norm of the update (Sec. 2.8.2).
        smoothing_sigma: Gaussian filter std in *mask* pixels (Eq. 2.24); 0 disables it.
        saturation: zeta_sat of Eq. 2.26; 0 disables it.
        pinch: zeta_pinch of Eq. 2.29, used when the state holds a pair of paths.
    """

    step_size: float = 0.5
    smoothing_sigma: float = 2.0
    saturation: float = 0.8
    pinch: float = 0.1


def ascent_step(state: torch.Tensor, grad: torch.Tensor, config: AscentConfig) -> torch.Tensor:
    """The next iterate of Algorithm 2 from ``state`` and the score gradient ``grad``.

    Args:
        state: ``(B, P, n, h, w)`` ablation paths of B images, P = 1 path or P = 2 (phi_up, phi_down).
        grad: same shape, gradient of the score w.r.t. ``state``.
    Returns:
        ``(B, P, n, h, w)`` ablation paths (Definition 1 holds for each).
    """
    if state.ndim != 5 or grad.shape != state.shape:
        raise ValueError(f"state and grad must both have shape (B, P, n, h, w), got {tuple(state.shape)} and "
                         f"{tuple(grad.shape)}")
    step = normalise_step_linf(remove_mean_gradient(grad), config.step_size, dims=4)  # jointly over an image's paths
    phi = state + step
    phi = smooth_state(phi, config.smoothing_sigma)
    phi = saturate(phi, config.saturation)
    if phi.shape[1] == 2:
        phi = torch.stack([phi[:, 0], pinch_paths(phi[:, 0], phi[:, 1], config.pinch)], dim=1)
    return project_to_ablation_paths(phi)


def state_saturation(state: torch.Tensor) -> torch.Tensor:
    """Saturation (Eq. 2.31) of each image's state ``(B, P, n, h, w) -> (B,)``: the least saturated of its paths."""
    return saturation_level(state).amin(dim=1)


def should_stop(iterations: torch.Tensor, saturation: torch.Tensor, *, min_iterations: int, max_iterations: int,
                saturation_target: float) -> torch.Tensor:
    """Alg. 2 line 2 and Sec. 2.6.3: stop once saturated beyond ``saturation_target`` (after at least
    ``min_iterations`` updates), or after ``max_iterations`` updates. ``(B,), (B,) -> (B,) bool``."""
    return ((iterations >= min_iterations) & (saturation >= saturation_target)) | (iterations >= max_iterations)
