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

The faster ``"coarse_to_fine"`` schedule of :class:`~pathxai.methods.ablation_path.AblationPath` reuses this step
unchanged and adds three things around it, all model-free and here:

* :func:`schedule_levels` / :func:`refine_path` -- optimise first on a coarse grid in space *and* time (an
  iteration costs one model pass per time slice, so fewer slices make it cheaper), then carry the path over to the
  full grid (bilinear in space, linear in time, then the projections);
* :func:`heavy_ball_step` -- Polyak momentum on the projected iteration: the step starts from the state
  extrapolated along its last move, ``phi + beta (phi - phi_prev)``. The move includes what the saturation did, so
  the momentum speeds up the saturation as well as the ascent (the thesis' saturation rule is what makes Algorithm 2
  need ~40 iterations);
* :func:`score_stalled` -- the score-tolerance part of the stopping rule.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .paths import resample_path, saturation_level
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


# ---------------------------------------------------------------------------------------------- faster schedule
SCHEDULES = ("thesis", "coarse_to_fine")
"""``"thesis"``: Algorithm 2 as published (and as this package ran it before the faster schedule existed, bit for
bit). ``"coarse_to_fine"``: coarse grid first, heavy-ball momentum, saturation plus score-tolerance stopping."""


def schedule_levels(n_steps: int, mask_shape: tuple[int, int], coarse_factor: int, coarse_steps: int | None
                    ) -> list[tuple[int, int, int]]:
    """The grids ``[(n, h, w), ...]`` of the coarse-to-fine schedule, coarse first; the last is ``(n_steps, *mask)``.

    The coarse level has ``ceil(h / coarse_factor) x ceil(w / coarse_factor)`` masks and ``coarse_steps`` time slices
    (``None``: ``(n_steps + 1) // 3 - 1``, at least 1 -- 4 for the default 14, whose times k/5 are among the fine
    times j/15). It is left out when it is no coarser than the full grid, or when the spatial factor would leave a
    side below 4 mask pixels (too coarse to carry a saliency map).
    """
    h, w = int(mask_shape[0]), int(mask_shape[1])
    n_c = max(1, (n_steps + 1) // 3 - 1) if coarse_steps is None else min(int(coarse_steps), n_steps)
    h_c, w_c = -(-h // coarse_factor), -(-w // coarse_factor)
    if min(h_c, w_c) < 4:
        h_c, w_c = h, w
    fine = (n_steps, h, w)
    coarse = (n_c, h_c, w_c)
    return [fine] if coarse == fine else [coarse, fine]


def refine_path(state: torch.Tensor, n_steps: int, size: tuple[int, int]) -> torch.Tensor:
    """Carry ``(B, P, n, h, w)`` paths over to a finer grid ``(B, P, n_steps, *size)``: :func:`.paths.resample_path`,
    then the projections (monotone and in [0, 1] already; the reparametrisation restores the masses t_k exactly)."""
    return project_to_ablation_paths(resample_path(state, n_steps, size))


def heavy_ball_step(state: torch.Tensor, previous: torch.Tensor, grad: torch.Tensor, config: AscentConfig,
                    momentum: float | torch.Tensor) -> torch.Tensor:
    """Algorithm 2's step (:func:`ascent_step`) from the extrapolated state ``phi + momentum (phi - phi_prev)``.

    Both iterates have the masses t_k, so the extrapolation keeps them; it may leave [0, 1] or break monotonicity,
    which the step's projections repair. ``momentum = 0`` is exactly :func:`ascent_step` (also per image: adding
    ``0 * (phi - phi_prev)`` changes no bit). The gradient is the score's at ``state`` (Polyak's heavy ball, not
    Nesterov's look-ahead: the model is only ever evaluated on ablation paths). Shapes as :func:`ascent_step`;
    ``momentum`` a number or a ``(B,)`` tensor, one per image.
    """
    if previous.shape != state.shape:
        raise ValueError(f"previous must have the shape of state {tuple(state.shape)}, got {tuple(previous.shape)}")
    if not isinstance(momentum, torch.Tensor):
        if momentum == 0:
            return ascent_step(state, grad, config)
        return ascent_step(state + momentum * (state - previous), grad, config)
    beta = momentum.to(state.dtype).reshape(-1, *([1] * (state.ndim - 1)))
    if beta.shape[0] != state.shape[0]:
        raise ValueError(f"momentum must be a number or have one entry per image ({state.shape[0]}), got "
                         f"{tuple(momentum.shape)}")
    return ascent_step(state + beta * (state - previous), grad, config)


def score_stalled(scores: torch.Tensor, patience: int, tolerance: torch.Tensor) -> torch.Tensor:
    """Whether the best score rose by at most ``tolerance`` over the last ``patience`` iterations.

    Args:
        scores: ``(B, K)`` the scores of each image's iterates in order, NaN after its last one.
        patience: how many iterations back to compare (>= 1); an image with ``patience`` or fewer scores has not
            stalled.
        tolerance: ``(B,)`` or a number, in the score's units.
    Returns:
        ``(B,)`` bool: ``max(s_0..s_k) - max(s_0..s_{k-patience}) <= tolerance`` with ``s_k`` the last score.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape (B, K), got {tuple(scores.shape)}")
    if patience < 1:
        raise ValueError(f"patience must be >= 1, got {patience}")
    valid = ~torch.isnan(scores)
    count = valid.sum(1)
    best = torch.cummax(torch.where(valid, scores, float("-inf")), dim=1).values
    rows = torch.arange(scores.shape[0])
    now = (count - 1).clamp_min(0)
    then = (count - 1 - patience).clamp_min(0)
    gain = best[rows, now] - best[rows, then]
    return (count > patience) & (gain <= torch.as_tensor(tolerance, dtype=scores.dtype))
