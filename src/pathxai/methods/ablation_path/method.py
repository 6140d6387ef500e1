"""Optimised ablation paths (Sagemüller, thesis Part II ch. 2) as a pathxai method.

For each image, a path of ``n_steps`` masks phi(t) (0 = keep the image, 1 = use the baseline) is optimised by
projected gradient ascent of a path score (Algorithm 2), starting from the affine path (whose first gradient is
Integrated Gradients, Theorem 5). Every iteration evaluates the model with gradients at the n (or 2n) images along
the path(s) of every still-running image, streamed through the shared evaluator in chunks of at most ``batch_size``;
the gradient w.r.t. the low-resolution masks comes by the chain rule through the bilinear upsampling.

Two schedules drive that ascent (``schedule=``): ``"thesis"`` is Algorithm 2 as published -- full grid throughout,
stop once the path is saturated (Eq. 2.31) -- and reproduces this package's earlier results bit for bit;
``"coarse_to_fine"`` (the default; benchmarks/ablation_speed.py compares the two) runs the same step and projections
first on a coarse grid in space and time, with heavy-ball momentum, until the path is saturated, carries the path
over to the full grid and continues there until it is saturated *and* its score has stopped rising by more than a
tolerance (:mod:`.optimiser`).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ...core import Method, Target, limits, register_method
from ...core.baselines import check_baseline, describe_baseline
from ...core.evaluator import evaluation_mode
from ...core.limits import Cost
from ...core.validation import check_bool, check_choice, check_fraction, check_positive_int
from .baselines import ablation_baseline
from .optimiser import (SCHEDULES, AscentConfig, ascent_step, heavy_ball_step, refine_path, schedule_levels,
                        score_stalled, should_stop, state_saturation)
from .paths import affine_path, blend, time_grid, time_weights, upsample_masks
from .reductions import (REDUCTIONS, average_heatmap, class_transition_heatmap, class_transition_index,
                         contrastive_heatmap, influence_weighted_heatmap, window)
from .scores import SCORE_VARIANTS, assemble_score, canonical_score, n_paths, path_distance

# Sec. 2.8.3 / Table 2.2: sigma_reguBlur = 7 px was best on 224 px ImageNet-size inputs; scaled with the image size.
_SMOOTHING_PX_AT_224 = 7.0


def _check_number(value: Any, name: str, *, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be a finite number in [{low}, {high}], got {value}")
    return value


@register_method
class AblationPath(Method):
    """Optimised ablation paths: a monotone, constant-speed path of masks from the image to a baseline that keeps (or
    removes) the class as long (or as early) as possible.

    Args:
        score: the path score to maximise (Sec. 2.3): ``"retaining"`` P_up (Eq. 2.13, default), ``"dissipating"``
            P_down (2.14), ``"contrastive"`` P_updown (2.15; 2n evaluations per iteration) or
            ``"boundary_straddling"`` P_up_down (2.16; a pair of paths kept close by pinching; 2n evaluations).
        n_steps: interior time slices n (Sec. 2.6.1: 14; times k/(n+1), Eq. 2.30).
        mask_size: mask resolution, int or (h, w) (Sec. 2.6.1: 64 x 64); capped at the image size.
        baseline: ``"blur"`` (Eq. 2.32, default), ``"zero"``, ``"mean"``, ``"uniform"``/``"random"``,
            ``"gaussian"``, a number, a tensor or a callable (see :func:`.baselines.ablation_baseline`).
        blur_sigma: ``"auto"`` (smallest class-changing sigma in ``blur_range`` px by bisection to ``blur_tol`` px)
            or a fixed std in input pixels.
        step_size: L-infinity norm of each update (Sec. 2.8.2: "on the order of 1").
        smoothing_sigma: std of the Gaussian filter of the state (Eq. 2.24) in *input* pixels; ``None`` = 7 px per
            224 px of image side (Table 2.2; 0.875 px on 28 x 28 digits); 0 disables it.
        saturation: zeta_sat of Eq. 2.26 (Sec. 2.5.2: < 1; Tables 2.2-2.3 use 0.8); 0 disables it.
        pinch: zeta_pinch of Eq. 2.29 (boundary straddling only).
        distance_penalty: -lambda of Eq. 2.16 (boundary straddling only; 0 = the thesis' pinching-only variant).
        saturation_target: stop once the path's saturation (Eq. 2.31) reaches this (Sec. 2.6.3: 0.8) ...
        min_iterations, max_iterations: ... after at least / at most this many updates (Sec. 2.6.3-2.6.4).
        schedule: ``"coarse_to_fine"`` (default) or ``"thesis"`` (Algorithm 2 exactly as published: every iteration
            on the full grid, stop on saturation; this package's results before the faster schedule, bit for bit).
            ``"coarse_to_fine"``: (1) the same ascent step and projections on a coarse grid -- ``coarse_steps`` time
            slices of ``mask / coarse_factor`` masks -- until the path is saturated (``saturation_target``) or has
            used half of ``max_iterations``; (2) the path carried over to the full grid (bilinear in space, linear in
            time, projected); (3) the ascent there until the path is saturated *and* its best score rose by at most
            ``tolerance`` (relative) over the last ``patience`` iterations, after at least ``min_iterations`` updates
            in all; it returns the best-scoring saturated iterate of (3). Heavy-ball ``momentum`` in (1) and in (3)
            while the path is not yet saturated (then the plain step). On the first three test digits (digits CNN, the defaults otherwise) it used 35 % of the
            thesis schedule's gradient evaluations (436 vs 1260) and ended 1e-4 to 5e-4 higher in P-up;
            benchmarks/ablation_speed.py measures evaluations, scores, pointing and deletion on the suites.
        coarse_factor: spatial coarsening of the first level (``"coarse_to_fine"``); 1 = no spatial coarsening.
        coarse_steps: time slices of the first level; ``None`` = ``(n_steps + 1) // 3 - 1`` (4 for 14: the coarse
            times k/5 are fine times j/15). A level equal to the full grid is skipped.
        momentum: heavy-ball coefficient beta in [0, 1) while the path is unsaturated: each step starts from
            ``phi + beta (phi - phi_prev)`` (Polyak). 0 = the thesis' step.
        tolerance: score tolerance of the stopping rule, relative to the score's scale ``max(|F(x)|, |F(b)|,
            |F(x) - F(b)|)`` at the path ends (``"coarse_to_fine"``).
        patience: iterations over which the best score must rise by more than the tolerance to go on.
        reduction: heatmap reduction for the attribution (Sec. 2.7.2): ``"class_transition"``, ``"average"``,
            ``"influence_weighted"``, ``"contrastive"`` (boundary straddling only) or ``"auto"`` =
            ``"contrastive"`` for boundary straddling, else ``"class_transition"`` (the pairs of Table 2.3).
        window: multiply the heatmap by the border-suppressing window of Eq. 2.37.
        score_kind: what F is: ``"softmax"`` (Eq. 1.3, default for class targets), ``"log_softmax"`` or
            ``"output"`` (default, and the only choice, for callable targets).

    Attribution: (N, 1, H, W) -- the selected heatmap, high = salient, bilinearly upsampled from the mask grid as the
    masks are. ``extras``: ``path`` (N, n, h, w) float64 interior slices of the optimised path (``path_down`` too
    for boundary straddling), ``times`` (n,), ``score`` (N,), ``score_history`` (N, I + 1) (entry 0 = affine path,
    NaN after an image stopped; with ``"coarse_to_fine"`` one entry per gradient pass over all levels, a coarse
    level's scores being those of its coarse path, then the final score), ``iterations`` (updates),
    ``gradient_passes`` (N,) (passes along the path(s); n_level x V model evaluations each), ``schedule``,
    ``levels`` [(n, h, w), ...], ``level_passes`` and ``level_iterations`` (N, L), ``saturation``, ``saturated``, ``baseline`` (N, C, H, W),
    ``baseline_sigma`` (NaN unless blurred), ``baseline_changes_class``, ``t_transition``, ``transition_index``,
    ``transition_found``, ``curve`` (N, V, n + 2) F along every evaluated path ends included, ``probabilities``
    (N, n + 2) F along the main path, ``predicted_class`` (N, n + 2), ``heatmap_<reduction>`` (N, h, w) for every
    applicable reduction, and the settings used.

    Cost (``"thesis"``): iterations * n * V forward+backward passes per image (V = 2 for contrastive/straddling),
    plus n * V forward passes for the final curve and about 12 for the blur search; EfficientNet-Lite0 at ~50 ms
    per pass: ~0.7 s per iteration. ``"coarse_to_fine"``: the sum over levels of passes * n_level * V.
    """

    name = "ablation_path"
    description = ("Optimised ablation paths: projected gradient ascent of a monotone, constant-speed path of masks "
                   "from the image to a baseline (Sagemüller).")

    def __init__(self, model: Any, *, score: str = "retaining", n_steps: int = 14, mask_size: int | tuple = 64,
                 baseline: Any = "blur", blur_sigma: Any = "auto", blur_range: tuple[float, float] = (4.0, 100.0),
                 blur_tol: float = 0.5, step_size: float = 0.5, smoothing_sigma: float | None = None,
                 saturation: float = 0.8, pinch: float = 0.1, distance_penalty: float = 0.0,
                 saturation_target: float = 0.8, min_iterations: int = 6, max_iterations: int = 100,
                 reduction: str = "auto", window: bool = False, score_kind: str | None = None,
                 schedule: str = "coarse_to_fine", coarse_factor: int = 4, coarse_steps: int | None = None,
                 momentum: float = 0.7, tolerance: float = 3e-4, patience: int = 2,
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.score = canonical_score(score)
        self.n_steps = check_positive_int(n_steps, "n_steps")
        if isinstance(mask_size, int) and not isinstance(mask_size, bool):
            mask_size = (mask_size, mask_size)
        if not (isinstance(mask_size, (tuple, list)) and len(mask_size) == 2):
            raise TypeError(f"mask_size must be an int or a pair (h, w), got {mask_size!r}")
        self.mask_size = (check_positive_int(mask_size[0], "mask_size"), check_positive_int(mask_size[1], "mask_size"))
        self.baseline = check_baseline(baseline)
        if isinstance(blur_sigma, str):
            if blur_sigma != "auto":
                raise ValueError(f"blur_sigma must be 'auto' or a number of pixels > 0, got {blur_sigma!r}")
        elif isinstance(blur_sigma, bool) or not isinstance(blur_sigma, (int, float)) \
                or not math.isfinite(blur_sigma) or blur_sigma <= 0:
            # sigma 0 makes the baseline the image itself: a path from x to x and a constant heatmap
            raise ValueError(f"blur_sigma must be 'auto' or a number of pixels > 0, got {blur_sigma!r}")
        self.blur_sigma = blur_sigma
        if not (isinstance(blur_range, (tuple, list)) and len(blur_range) == 2
                and 0 < _check_number(blur_range[0], "blur_range") <= _check_number(blur_range[1], "blur_range")):
            raise ValueError(f"blur_range must be (low, high) pixels with 0 < low <= high, got {blur_range!r}")
        self.blur_range = (float(blur_range[0]), float(blur_range[1]))
        self.blur_tol = _check_number(blur_tol, "blur_tol", low=1e-6)
        self.step_size = _check_number(step_size, "step_size", low=0.0)
        if self.step_size == 0:  # a zero step never moves the path: the affine start would be returned as optimised
            raise ValueError(f"step_size must be a finite number > 0, got {step_size}")
        self.smoothing_sigma = None if smoothing_sigma is None else _check_number(smoothing_sigma, "smoothing_sigma",
                                                                                  low=0.0)
        self.saturation = _check_number(saturation, "saturation", low=0.0)
        self.pinch = _check_number(pinch, "pinch", low=0.0, high=1.0)
        self.distance_penalty = _check_number(distance_penalty, "distance_penalty", low=0.0)
        self.saturation_target = _check_number(saturation_target, "saturation_target", low=0.0, high=1.0)
        self.min_iterations = check_positive_int(min_iterations, "min_iterations", minimum=0)
        self.max_iterations = check_positive_int(max_iterations, "max_iterations", minimum=0)
        if self.min_iterations > self.max_iterations:
            raise ValueError(f"min_iterations ({self.min_iterations}) must not exceed max_iterations "
                             f"({self.max_iterations})")
        self.n_paths = n_paths(self.score)
        if reduction == "auto":
            reduction = "contrastive" if self.n_paths == 2 else "class_transition"
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be 'auto' or one of {', '.join(REDUCTIONS)}, got {reduction!r}")
        if reduction == "contrastive" and self.n_paths != 2:
            raise ValueError("reduction='contrastive' (Eq. 2.36) needs the pair of paths of "
                             "score='boundary_straddling'")
        self.reduction = reduction
        self.window = check_bool(window, "window")
        if score_kind not in (None, "softmax", "log_softmax", "output"):
            raise ValueError(f"score_kind must be None, 'softmax', 'log_softmax' or 'output', got {score_kind!r}")
        self.score_kind = score_kind
        self.schedule = check_choice(schedule, "schedule", SCHEDULES)
        self.coarse_factor = check_positive_int(coarse_factor, "coarse_factor")
        self.coarse_steps = None if coarse_steps is None else check_positive_int(coarse_steps, "coarse_steps")
        self.momentum = check_fraction(momentum, "momentum", low=0.0, high=1.0)
        if self.momentum >= 1.0:  # beta = 1 never forgets a move: the iteration does not settle
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        self.tolerance = _check_number(tolerance, "tolerance", low=0.0)
        self.patience = check_positive_int(patience, "patience")

    def params(self) -> dict[str, Any]:
        return {"score": self.score, "n_steps": self.n_steps, "mask_size": self.mask_size,
                "baseline": describe_baseline(self.baseline), "blur_sigma": self.blur_sigma,
                "blur_range": self.blur_range, "step_size": self.step_size, "smoothing_sigma": self.smoothing_sigma,
                "saturation": self.saturation, "pinch": self.pinch, "distance_penalty": self.distance_penalty,
                "saturation_target": self.saturation_target, "min_iterations": self.min_iterations,
                "max_iterations": self.max_iterations, "reduction": self.reduction, "window": self.window,
                "score_kind": self.score_kind, "schedule": self.schedule, "coarse_factor": self.coarse_factor,
                "coarse_steps": self.coarse_steps, "momentum": self.momentum, "tolerance": self.tolerance,
                "patience": self.patience}

    def cost(self, input_shape: Sequence[int] | None) -> Cost:
        """An upper bound: N x paths x n_steps gradient evaluations per iteration for 1 + max_iterations iterations,
        plus the final curves, the path ends and the blur search; memory: the (N, max_iterations + 1) score history
        and float64 copies of the (N, P, n, h, w) path state (seven with ``"coarse_to_fine"``: also the previous,
        the best and the extrapolated iterate). Coarse passes are cheaper than full ones, so the bound holds for both schedules."""
        n = 1 if input_shape is None else int(input_shape[0])
        per_iteration = n * self.n_paths * self.n_steps
        # "coarse_to_fine": up to one extra (scoring) pass per level, at most two levels
        extra = 1 if self.schedule == "coarse_to_fine" else 0
        evaluations = (per_iteration * (self.max_iterations + 2 + extra) + 2 * n
                       + (12 * n if self.baseline == "blur" else 0))
        memory = 8.0 * n * (self.max_iterations + 1)
        if self.schedule == "coarse_to_fine":  # its history has up to 2 more columns, plus a level's own scores
            memory += 8.0 * n * (self.max_iterations + 3)
        if input_shape is not None and len(input_shape) == 4:
            h, w = self.mask_shape((int(input_shape[2]), int(input_shape[3])))
            # "coarse_to_fine" keeps three more: the previous iterate, the best one and the extrapolated state
            copies = 7 if self.schedule == "coarse_to_fine" else 4
            memory += 8.0 * copies * n * self.n_paths * self.n_steps * h * w
        return Cost(evaluations=evaluations, bytes=memory, param="max_iterations", value=self.max_iterations,
                    detail=f"{n} input(s) x {self.n_paths} path(s) x {self.n_steps} steps x "
                           f"{self.max_iterations + 1} iterations")

    # ------------------------------------------------------------------ geometry and settings
    def mask_shape(self, image_shape: tuple[int, int]) -> tuple[int, int]:
        """Mask grid (h, w) for images (H, W): ``mask_size`` capped at the image size."""
        return min(self.mask_size[0], int(image_shape[0])), min(self.mask_size[1], int(image_shape[1]))

    def smoothing_sigma_mask(self, image_shape: tuple[int, int], mask_shape: tuple[int, int] | None = None) -> float:
        """Std of the state filter in mask pixels (``smoothing_sigma`` is in input pixels) of the mask grid
        ``mask_shape`` (default: :meth:`mask_shape`; the coarse level of ``"coarse_to_fine"`` passes its own)."""
        h_img, w_img = int(image_shape[0]), int(image_shape[1])
        sigma_px = (_SMOOTHING_PX_AT_224 * min(h_img, w_img) / 224.0 if self.smoothing_sigma is None
                    else self.smoothing_sigma)
        h, w = self.mask_shape(image_shape) if mask_shape is None else mask_shape
        return sigma_px * math.sqrt(h * w / (h_img * w_img))

    def levels(self, image_shape: tuple[int, int]) -> list[tuple[int, int, int]]:
        """The grids ``[(n, h, w), ...]`` the schedule optimises on, coarse first (one level for ``"thesis"``)."""
        fine = (self.n_steps, *self.mask_shape(image_shape))
        if self.schedule == "thesis":
            return [fine]
        return schedule_levels(self.n_steps, fine[1:], self.coarse_factor, self.coarse_steps)

    def _kind(self, target: Target) -> str:
        return self.score_kind or ("softmax" if target.fn is None else "output")

    def _predict(self, images: torch.Tensor) -> torch.Tensor:
        """Arg-max classes (N,) on the host, where the sigma search keeps its brackets."""
        out = self.evaluator.forward(images, desc="blur baseline")
        if out.ndim != 2:
            raise ValueError(f"baseline='blur' with blur_sigma='auto' compares arg-max classes and needs a model "
                             f"output of shape (N, num_classes), got {tuple(out.shape)}; pass a fixed blur_sigma or "
                             "another baseline")
        return out.argmax(1).cpu()

    def _baseline(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, sigma, changed = ablation_baseline(x, self.baseline, predict=self._predict, blur_sigma=self.blur_sigma,
                                              blur_range=self.blur_range, blur_tol=self.blur_tol, seed=self.seed)
        return b.to(x.dtype), sigma, changed

    # ------------------------------------------------------------------ model evaluations
    def _end_values(self, x: torch.Tensor, b: torch.Tensor, target: Target, kind: str
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """F and the arg-max class at the path ends: ``((N, 2) float64, (N, 2) int64 or -1)``."""
        n = x.shape[0]
        out = self.evaluator.forward(torch.cat([x, b]), desc="path ends")
        idx = torch.cat([torch.arange(n), torch.arange(n)])
        f = target.score(out, idx, kind=kind).detach().double().cpu()  # type: ignore[arg-type]
        pred = out.argmax(1).cpu() if out.ndim == 2 else torch.full((2 * n,), -1, dtype=torch.long)
        return torch.stack([f[:n], f[n:]], 1), torch.stack([pred[:n], pred[n:]], 1)

    def _layout(self, active: torch.Tensor, n_steps: int | None = None):
        variants = SCORE_VARIANTS[self.score]
        v_count, n = len(variants), self.n_steps if n_steps is None else n_steps
        v_path = torch.tensor([v.path for v in variants])
        v_comp = torch.tensor([v.complement for v in variants])
        v_sign = torch.tensor([v.sign for v in variants], dtype=torch.float64)

        def items(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            j = torch.arange(start, stop)
            return j // (v_count * n), (j // n) % v_count, j % n

        return v_count, v_path, v_comp, v_sign, items, active.numel() * v_count * n

    def _masks(self, state: torch.Tensor, img: torch.Tensor, v: torch.Tensor, k: torch.Tensor,
               v_path: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Path slices (m, h, w) of the host state, on the device and in the dtype of ``like`` (the images)."""
        return state[img, v_path[v], k].to(device=like.device, dtype=like.dtype)

    def _gradient_pass(self, x: torch.Tensor, b: torch.Tensor, target: Target, kind: str, state: torch.Tensor,
                       active: torch.Tensor, ends: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Score (A,) and its gradient (A, P, n, h, w) w.r.t. the path array for the images ``active`` (A,); n and
        (h, w) are the state's (a coarse level's grid, or the full one)."""
        n = state.shape[2]
        v_count, v_path, v_comp, v_sign, items, total = self._layout(active, n)
        w, _ = time_weights(n)
        values = torch.zeros(active.numel(), v_count, n, dtype=torch.float64)
        grads = torch.zeros((active.numel(),) + tuple(state.shape[1:]), dtype=torch.float64)

        def make(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
            a, v, k = items(start, stop)
            img = active[a]
            leaf = self._masks(state, img, v, k, v_path, x).requires_grad_(True)
            masks = torch.where(v_comp[v].view(-1, 1, 1).to(x.device), 1.0 - leaf, leaf)
            return blend(x[img], b[img], masks), leaf

        def score(out: torch.Tensor, start: int, stop: int) -> torch.Tensor:
            return target.score(out, active[items(start, stop)[0]], kind=kind)  # type: ignore[arg-type]

        for start, stop, s, g in self.evaluator.gradient_chunks(total, make, score, sample_shape=x.shape[1:],
                                                                desc="ablation path"):
            a, v, k = items(start, stop)
            # the optimisation state is small and stays on the host; only the model's inputs go to the device
            values[a, v, k] = s.double().cpu()
            coef = v_sign[v] * w[k]
            g = g.double().cpu()
            for row in range(stop - start):  # in item order: bit-identical for any chunking
                grads[a[row], v_path[v[row]], k[row]] += coef[row] * g[row]
        scores = assemble_score(self.score, values, ends[active])
        if self.n_paths == 2 and self.distance_penalty:
            up, down = state[active, 0], state[active, 1]
            scores = scores - self.distance_penalty * path_distance(up, down)
            h, wd = up.shape[-2:]
            d = self.distance_penalty * torch.sign(up - down) * (w.view(-1, 1, 1) / (h * wd))
            grads[:, 0] -= d
            grads[:, 1] += d
        return scores, grads

    def _forward_pass(self, x: torch.Tensor, b: torch.Tensor, target: Target, kind: str, state: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """F (N, V, n), arg-max class (N, V, n) and target dominance (N, V, n) (or None) along the final paths."""
        active = torch.arange(x.shape[0])
        v_count, v_path, v_comp, _, items, total = self._layout(active)
        n = self.n_steps
        values = torch.zeros(x.shape[0], v_count, n, dtype=torch.float64)
        pred = torch.full((x.shape[0], v_count, n), -1, dtype=torch.long)

        def make(start: int, stop: int) -> torch.Tensor:
            a, v, k = items(start, stop)
            masks = self._masks(state, a, v, k, v_path, x)
            masks = torch.where(v_comp[v].view(-1, 1, 1).to(x.device), 1.0 - masks, masks)
            return blend(x[a], b[a], masks)

        for start, stop, out in self.evaluator.forward_chunks(total, make, sample_shape=x.shape[1:],
                                                              desc="ablation path curve"):
            a, v, k = items(start, stop)
            values[a, v, k] = target.score(out, a, kind=kind).double().cpu()  # type: ignore[arg-type]
            if out.ndim == 2:
                pred[a, v, k] = out.argmax(1).cpu()
        dominant = None if target.classes is None else pred == target.classes.view(-1, 1, 1)
        return values, pred, dominant

    # ------------------------------------------------------------------ public helpers
    def initial_state(self, n_images: int, image_shape: tuple[int, int]) -> torch.Tensor:
        """The affine start path (Eq. 2.17) for every image and path: (N, P, n, h, w) float64."""
        phi = affine_path(self.n_steps, self.mask_shape(image_shape))
        return phi.expand(n_images, self.n_paths, *phi.shape).clone()

    def path_gradient(self, x: torch.Tensor, target: Any = None, path: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Score and gradient of the discretised score w.r.t. the path array, for a given path (default: affine).

        With the affine path and ``score="retaining"``, ``grad[:, 0].sum(1)`` -- the time integral of the L2 gradient
        -- is Integrated Gradients with the Riemann nodes t_k = k/(n+1) (Theorem 5), up to the sign convention: the
        thesis' IG (Eq. 1.6) multiplies by (baseline - x), Captum's by (x - baseline); and summed over channels,
        since a mask acts on all channels of a pixel.

        Args:
            x: (N, C, H, W) images. target: as in :meth:`explain`.
            path: (n, h, w), (N, n, h, w) or (N, P, n, h, w) interior slices; ``None`` = the affine path.
        Returns:
            ``(score (N,) float64, grad (N, P, n, h, w) float64)``.
        """
        x = self.evaluator.work_input(self.validate_input(x))
        limits.check(Cost(evaluations=x.shape[0] * self.n_paths * self.n_steps + 2 * x.shape[0]),
                     f"method {self.name!r} (path_gradient)")
        self.evaluator.reset_counts()
        with evaluation_mode(self.model):
            resolved = self.resolve_target(x, target)
            kind = self._kind(resolved)
            b, _, _ = self._baseline(x)
            ends, _ = self._end_values(x, b, resolved, kind)
            state = self.initial_state(x.shape[0], x.shape[-2:])
            if path is not None:
                p = path.detach().to(torch.float64)
                if p.ndim == 3:
                    p = p.expand(x.shape[0], self.n_paths, *p.shape)
                elif p.ndim == 4:
                    p = p.unsqueeze(1).expand(-1, self.n_paths, -1, -1, -1)
                if tuple(p.shape) != tuple(state.shape):
                    raise ValueError(f"path must have shape (n, h, w), (N, n, h, w) or (N, P, n, h, w) matching "
                                     f"{tuple(state.shape)}, got {tuple(path.shape)}")
                state = p.clone()
            return self._gradient_pass(x, b, resolved, kind, state, torch.arange(x.shape[0]), ends)

    # ------------------------------------------------------------------ the schedules
    def _ascend_thesis(self, x: torch.Tensor, b: torch.Tensor, target: Target, kind: str, ends: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Algorithm 2 as published: ``(state (N, P, n, h, w), history (N, max_iterations + 1), iterations (N,),
        gradient passes (N, 1), updates (N, 1))``. Kept exactly as it was before the faster schedule."""
        n_img, _, height, width = x.shape
        config = AscentConfig(step_size=self.step_size, smoothing_sigma=self.smoothing_sigma_mask((height, width)),
                              saturation=self.saturation, pinch=self.pinch)

        state = self.initial_state(n_img, (height, width))
        history = torch.full((n_img, self.max_iterations + 1), float("nan"), dtype=torch.float64)
        iterations = torch.zeros(n_img, dtype=torch.long)
        done = torch.zeros(n_img, dtype=torch.bool)
        while True:
            stop = should_stop(iterations, state_saturation(state), min_iterations=self.min_iterations,
                               max_iterations=self.max_iterations, saturation_target=self.saturation_target)
            done |= stop
            active = (~done).nonzero().flatten()
            if active.numel() == 0:
                break
            scores, grads = self._gradient_pass(x, b, target, kind, state, active, ends)
            history[active, iterations[active]] = scores
            state[active] = ascent_step(state[active], grads, config)
            iterations[active] += 1
        return state, history, iterations, iterations.view(-1, 1).clone(), iterations.view(-1, 1).clone()

    def _ascend_coarse_to_fine(self, x: torch.Tensor, b: torch.Tensor, target: Target, kind: str,
                               ends: torch.Tensor
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The faster schedule (see the class docstring): ``(state (N, P, n, h, w), history (N, max_iterations + L + 1),
        iterations (N,), gradient passes per level (N, L), updates per level (N, L))``.

        Every level runs Algorithm 2's step (:func:`.optimiser.heavy_ball_step`, i.e. :func:`.optimiser.ascent_step`
        from the momentum-extrapolated state), so every iterate is an ablation path. Images advance independently
        (a batch of any size or chunking gives the same result per image); they change level together, which only
        makes finished images wait.
        """
        n_img, _, height, width = x.shape
        image_shape = (height, width)
        levels = self.levels(image_shape)
        cap = self.max_iterations
        coarse_cap = cap // 2  # the full grid always keeps at least half of the iteration budget
        # a level's passes are its updates plus at most one that only scores (the stopping decision): at most
        # cap + L passes, then the final score
        history = torch.full((n_img, cap + len(levels) + 1), float("nan"), dtype=torch.float64)
        passes = torch.zeros(n_img, dtype=torch.long)
        level_passes = torch.zeros(n_img, len(levels), dtype=torch.long)
        iterations = torch.zeros(n_img, dtype=torch.long)
        level_iterations = torch.zeros(n_img, len(levels), dtype=torch.long)
        # a relative tolerance: F is a probability, a log-probability or a logit, on the scale of the path ends
        scale = torch.maximum(ends.abs().amax(1), (ends[:, 0] - ends[:, 1]).abs())
        tolerance = self.tolerance * scale
        state: torch.Tensor | None = None
        for li, (n, h, w) in enumerate(levels):
            full_grid = li == len(levels) - 1
            if state is None:
                state = affine_path(n, (h, w)).expand(n_img, self.n_paths, n, h, w).clone()
            else:
                state = refine_path(state, n, (h, w))
            previous = state.clone()
            config = AscentConfig(step_size=self.step_size, smoothing_sigma=self.smoothing_sigma_mask(image_shape,
                                                                                                      (h, w)),
                                  saturation=self.saturation, pinch=self.pinch)
            level_scores = torch.full((n_img, cap + 1), float("nan"), dtype=torch.float64)
            count = torch.zeros(n_img, dtype=torch.long)
            best_score = torch.full((n_img,), float("-inf"), dtype=torch.float64)
            best_saturated = torch.zeros(n_img, dtype=torch.bool)
            best_state = state.clone()
            done = torch.zeros(n_img, dtype=torch.bool)
            while True:
                saturated = state_saturation(state) >= self.saturation_target
                if full_grid:
                    done |= iterations >= cap          # at the cap the last iterate is the result, as in the thesis
                else:
                    done |= saturated | (iterations >= coarse_cap)
                active = (~done).nonzero().flatten()
                if active.numel() == 0:
                    break
                scores, grads = self._gradient_pass(x, b, target, kind, state, active, ends)
                history[active, passes[active]] = scores
                passes[active] += 1
                level_passes[active, li] += 1
                level_scores[active, count[active]] = scores
                count[active] += 1
                stalled = score_stalled(level_scores[active], self.patience, tolerance[active])
                if not full_grid:
                    # the coarse level also ends when its score stalls short of saturation: the classifier may
                    # hold the saturation below the target there (it did on a photo), and the full grid goes on
                    stop = stalled
                else:
                    sat = saturated[active]
                    # the best iterate so far: saturated ones first, then the higher score
                    better = (sat & ~best_saturated[active]) | ((sat == best_saturated[active])
                                                               & (scores > best_score[active]))
                    upd = active[better]
                    best_score[upd] = scores[better]
                    best_saturated[upd] = sat[better]
                    best_state[upd] = state[upd]
                    stop = sat & stalled & (iterations[active] >= self.min_iterations)
                    state[active[stop]] = best_state[active[stop]]
                done[active[stop]] = True
                go, grads = active[~stop], grads[~stop]
                if go.numel():
                    # momentum while the path is not saturated yet, where it speeds up the saturation; once it is
                    # (on the full grid), the plain step of Algorithm 2 polishes the score, so that the end phase is
                    # the thesis' own iteration
                    beta = torch.full((go.numel(),), self.momentum, dtype=torch.float64)
                    if full_grid:
                        beta[saturated[go]] = 0.0
                    new = heavy_ball_step(state[go], previous[go], grads, config, beta)
                    previous[go] = state[go]
                    state[go] = new
                    iterations[go] += 1
                    level_iterations[go, li] += 1
        assert state is not None
        return state, history, iterations, level_passes, level_iterations

    # ------------------------------------------------------------------ the method
    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        n_img, _, height, width = x.shape
        kind = self._kind(target)
        b, sigma, changed = self._baseline(x)
        ends, end_pred = self._end_values(x, b, target, kind)
        ascend = self._ascend_thesis if self.schedule == "thesis" else self._ascend_coarse_to_fine
        state, history, iterations, level_passes, level_iterations = ascend(x, b, target, kind, ends)
        passes = level_passes.sum(1)

        values, pred, dominant = self._forward_pass(x, b, target, kind, state)
        final = assemble_score(self.score, values, ends)
        if self.n_paths == 2 and self.distance_penalty:
            final = final - self.distance_penalty * path_distance(state[:, 0], state[:, 1])
        history[torch.arange(n_img), passes] = final
        history = history[:, : int(passes.max()) + 1]

        # curves along every evaluated path, ends included (a complementary path starts at the baseline)
        variants = SCORE_VARIANTS[self.score]
        curve = torch.empty(n_img, len(variants), self.n_steps + 2, dtype=torch.float64)
        pred_curve = torch.empty(n_img, len(variants), self.n_steps + 2, dtype=torch.long)
        for j, v in enumerate(variants):
            first, last = (1, 0) if v.complement else (0, 1)
            curve[:, j] = torch.cat([ends[:, first:first + 1], values[:, j], ends[:, last:last + 1]], 1)
            pred_curve[:, j] = torch.cat([end_pred[:, first:first + 1], pred[:, j], end_pred[:, last:last + 1]], 1)

        main = state[:, 0]
        kept = self.score != "dissipating"
        index, found = class_transition_index(values[:, 0], None if dominant is None else dominant[:, 0])
        heatmaps = {"average": average_heatmap(main, kept),
                    "class_transition": class_transition_heatmap(main, index, kept),
                    "influence_weighted": influence_weighted_heatmap(main, curve[:, 0])}
        if self.n_paths == 2:
            heatmaps["contrastive"] = contrastive_heatmap(state[:, 0], state[:, 1])
        heat = upsample_masks(heatmaps[self.reduction], (height, width))
        if self.window:
            heat = window(heat)

        times = time_grid(self.n_steps)
        extras: dict[str, Any] = {
            "path": main.clone(),
            "times": times,
            "score": final,
            "score_history": history,
            "iterations": iterations,
            "saturation": state_saturation(state),
            "saturated": state_saturation(state) >= self.saturation_target,
            "baseline": b,
            "baseline_sigma": sigma,
            "baseline_changes_class": changed,
            "t_transition": times[index],
            "transition_index": index,
            "transition_found": found,
            "curve": curve,
            "probabilities": curve[:, 0],
            "predicted_class": pred_curve[:, 0],
            "score_name": self.score,
            "score_kind": kind,
            "reduction": self.reduction,
            "mask_shape": tuple(main.shape[-2:]),
            "smoothing_sigma_mask_px": self.smoothing_sigma_mask((height, width)),
            "schedule": self.schedule,
            "levels": self.levels((height, width)),
            "level_iterations": level_iterations,
            "level_passes": level_passes,
            "gradient_passes": passes,
        }
        if self.n_paths == 2:
            extras["path_down"] = state[:, 1].clone()
        for name, hm in heatmaps.items():
            extras[f"heatmap_{name}"] = hm
        return heat.to(x.dtype), extras
