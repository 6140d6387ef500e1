"""SAMP and SAMP++: salient manipulation paths (Zhang, Zheng, Zhou & Lu, "Path Choice Matters for Clear
Attributions in Path Methods", ICLR 2024).

A path method attributes ``f(x_E) - f(x_S)`` along a path from a start ``x_S`` to an end ``x_E``; the path decides
what the attributions mean. SAMP picks the path greedily so that attributions *concentrate* on few features (the
paper's Concentration Principle: maximal variance of the attributions for their fixed sum). From the current point
``x_k`` it scores every feature j that has not moved yet by the first-order change of moving it to its end value,

    alpha_j = (grad f(x_k))_j * (x^E_j - x^k_j)                                            (paper, Eq. 11)

moves the top-``s`` features *all the way* to their end values (a "macro step") and credits each moved feature with
its part of the line integral along that step. Every feature moves exactly once and the path ends exactly at ``x_E``,
so the attributions add up to ``f(x_E) - f(x_S)`` up to the quadrature error of the steps (completeness).

- **SAMP** credits a step with ``grad f(x_k) * dx_k`` (the paper's first-order rule: one gradient per step, the
  left Riemann sum of the line integral). Its completeness residual is what the second-order terms of the large
  steps leave; it is reported, not hidden (``extras["residual"]``).
- **SAMP++** adds the paper's two modules. The *infinitesimal constraint* (IC) asks each step to be small enough
  for the first-order credit to be exact; we meet it by subdividing every macro step (the selection stays the same)
  and integrating gradient x displacement along each segment from gradients at the sub-step ends, bisecting
  sub-steps until each one's credit is consistent with its exactly known output change (see "How a sub-step is
  integrated" below; where the end slopes agree, the trapezoid rule must match the change within
  ``completeness_rtol * |f(x_E) - f(x_S)| / K``, K = number of macro steps). The *momentum strategy* (MS) chooses
  features with an exponential moving average of gradients ``v_k = lambda v_{k-1} + (1 - lambda) grad f(x_k)``
  instead of the current gradient alone, which lets the path escape short-sighted greedy choices.

Directions. The deletion path goes from the input to a baseline (``x_S = x``, ``x_E = b``); the insertion path from a
baseline to the input. The paper's setting "B+G" runs both -- deletion towards black, insertion from a Gaussian blur,
the baselines of the RISE deletion/insertion metrics -- and that is our default (``direction="both"``, averaging the
two attributions). Attributions are always oriented to explain ``f(x) - f(baseline)``: the deletion path's line
integral (which sums to ``f(b) - f(x)``) is negated.

Choices where the paper is vague (see also the README):

- *Sign of the selection score.* Eq. 11 takes the top-s of alpha as written; the paper's algorithm box ranks by
  ``|m^T g|``. We rank, by default (``selection="signed"``), by the change *towards the path's purpose*: features
  whose removal lowers the score most on the deletion path (``-alpha``), whose insertion raises it most on the
  insertion path (``+alpha``) -- this is greedy maximisation of the attributions' variance for a positive
  ``f(x) - f(b)``, the usual case for the explained class. ``selection="abs"`` ranks by ``|alpha|``.
- *Momentum and completeness.* A reviewer reads the paper as also crediting the momentum gradient, which breaks
  completeness; we use momentum only to *choose* features and always credit the true gradients along the path, so
  SAMP++ keeps completeness.
- *Step size.* The paper moves ``s = 10`` pixels per step on MNIST (28 x 28) and ``224 x 16`` on ImageNet
  (224 x 224). Our default (:func:`default_step_size`) is the power law through both settings,
  ``s = 10 (HW / 784)^p`` with ``p = log(358.4) / log(64) = 1.414``: 10 px at 28 x 28, 67 px at 64 x 64, 3584 px at
  224 x 224 (14 macro steps per path).
- *Momentum coefficient and IC bound.* The slides give no values and the paper's text could not be retrieved here;
  ``momentum=0.5`` (an even blend of the running direction and the new gradient) is our untuned choice, and the IC
  is expressed as resolved sub-steps (below) rather than as an l1 bound ``eta`` on each step, because exactness of
  the line integral is what the infinitesimal constraint is for and a tolerance adapts to the model.
- *How a sub-step is integrated.* Along a line a ReLU network is piecewise linear. A sub-step whose measured output
  change is explained by one change of linear region gets the exact line integral (the two end gradients weighted
  by the lengths on either side of the change, see :func:`_interval_weights`); otherwise it is bisected (at most
  ``max_refinements`` times). For piecewise-linear models this is the exact line integral whenever no sub-step
  crosses more than one region boundary; for smooth models the weights tend to the trapezoid rule. Completeness of
  SAMP++ is therefore largely built in: the residual left is that of unresolved sub-steps and float32 rounding.
- *Features with nothing to move* (``x_S = x_E`` there, e.g. black background on a black baseline) never move and
  get exactly 0; ``extras["feature_step"]`` marks them with -1.

Batched: the greedy loop runs all paths of the batch together (deletion and insertion paths of all images); each
round of gradient evaluations streams through the shared evaluator in chunks of ``batch_size``, and memory holds the
current point, the end point, momentum and attributions per path, plus the gradients restricted to the moved
features for the nodes of one segment -- it does not grow with the number of steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..core import Method, Target, register_method
from ..core.baselines import BaselineLike, check_baseline, describe_baseline, make_baseline
from ..core.limits import Cost
from ..core.validation import check_choice, check_fraction, check_positive_float, check_positive_int

DIRECTIONS = ("deletion", "insertion", "both")
FEATURES = ("pixel", "channel")
SELECTIONS = ("signed", "abs")
QUADRATURES = ("left", "trapezoid")
SCORES = ("output", "softmax", "log_softmax")
# bisection depth: sub-steps of 2**-52 of a macro step are below float64 resolution, deeper ones cannot be resolved
MAX_REFINEMENTS = 52

# The paper's two settings: 10 pixels per step at 28 x 28 (MNIST), 224 * 16 pixels per step at 224 x 224 (ImageNet).
_SMALL_PIXELS, _SMALL_STEP = 28 * 28, 10
_LARGE_PIXELS, _LARGE_STEP = 224 * 224, 224 * 16
_STEP_EXPONENT = math.log(_LARGE_STEP / _SMALL_STEP) / math.log(_LARGE_PIXELS / _SMALL_PIXELS)
_EPS32 = float(torch.finfo(torch.float32).eps)


def default_step_size(n_pixels: int) -> int:
    """Pixels moved per macro step for an image of ``n_pixels`` = H * W pixels.

    The power law through the paper's settings: 10 at 28 x 28 (MNIST) and 224 * 16 = 3584 at 224 x 224 (ImageNet),
    ``s = 10 (n_pixels / 784) ** 1.414``, at least 1 and at most ``n_pixels``.
    """
    n = check_positive_int(n_pixels, "n_pixels")
    return int(min(n, max(1, round(_SMALL_STEP * (n / _SMALL_PIXELS) ** _STEP_EXPONENT))))


@dataclass
class _Paths:
    """P paths (rows) advanced together; flat views of shape (P, D) with D = C * H * W."""

    sample: torch.Tensor      # (P,) index of the explained sample each path belongs to
    start: torch.Tensor       # (P, D) x_S
    end: torch.Tensor         # (P, D) x_E
    sign: torch.Tensor        # (P,) +1 insertion, -1 deletion: orientation of the selection score


class SAMP(Method):
    """SAMP: the salient manipulation path (plain greedy version, first-order credit per step).

    Args:
        step_size: features moved per macro step: an int (pixels in ``features="pixel"`` mode, single channel values
            in ``"channel"`` mode), a float in (0, 1] (that fraction of the features), or ``None`` =
            :func:`default_step_size` (times C in channel mode).
        features: ``"pixel"`` (all channels of a pixel move together; the paper's pixels) or ``"channel"``.
        direction: ``"deletion"`` (input -> baseline), ``"insertion"`` (baseline -> input) or ``"both"`` (the mean of
            the two attributions; the paper's "B+G" setting with the default baselines).
        baseline: end of the deletion path (and start of the insertion path unless ``insertion_baseline`` is given):
            ``"zero"`` (black), ``"blur"``, ``"mean"``, a number, a tensor or a callable (see ``make_baseline``).
        insertion_baseline: start of the insertion path; ``None`` = ``"blur"`` when ``direction="both"`` (the
            paper's B+G), else ``baseline``.
        blur_sigma: std in pixels of the ``"blur"`` baseline (5, as the insertion metric's default).
        selection: ``"signed"`` or ``"abs"`` ranking of alpha (see the module docstring).
        momentum: lambda of the momentum strategy (0 = plain gradient).
        quadrature: ``"left"`` (gradient at the start of each step, SAMP) or ``"trapezoid"`` (SAMP++).
        substeps: initial equal sub-steps per macro step (trapezoid only).
        completeness_rtol: adaptive bisection of sub-steps until each segment's integral matches its output change
            within ``completeness_rtol * |f(x_E) - f(x_S)| / K``; ``None`` = no refinement.
        max_refinements: deepest bisection of a macro step (sub-steps of at least 1 / 2**max_refinements of it).
        score: ``"output"`` (raw output, e.g. logits), ``"softmax"`` or ``"log_softmax"``.
    Attribution: (N, C, H, W), oriented so that its sum is ``f(x) - f(baseline)`` (mean over the directions' baselines)
    up to ``extras["residual"]``; saliency = sum over channels.
    Extras (per direction, prefixed ``deletion_`` / ``insertion_`` when ``direction="both"``): ``trajectory``
    (N, K+1) f along the path at the macro-step ends (padded with f(x_E) after a path's last step), ``path_steps`` (N,),
    ``order`` (N, G) feature indices in the order they moved (unmoved ones last), ``feature_step`` (N, G) macro step at
    which each feature moved (-1: nothing to move), ``path_residual`` (N,) sum of the path's credits minus
    ``f(x_E) - f(x_S)``, ``start_score``, ``end_score`` (N,), ``gradient_evaluations`` (N,); plus ``residual`` (N,),
    ``relative_residual`` (N,) of the final attribution and ``baseline`` / ``insertion_baseline``.
    """

    name = "samp"
    description = "SAMP: greedy salient manipulation path, top-s features moved per step (Zhang et al., ICLR 2024)."
    saliency_reduction = "sum"
    default_momentum = 0.0
    default_quadrature = "left"
    default_rtol: float | None = None

    def __init__(self, model: Any, *, step_size: int | float | None = None, features: str = "pixel",
                 direction: str = "both", baseline: BaselineLike = "zero",
                 insertion_baseline: BaselineLike = None, blur_sigma: float = 5.0, selection: str = "signed",
                 momentum: float | None = None, quadrature: str | None = None, substeps: int = 1,
                 completeness_rtol: float | None | str = "default", max_refinements: int = 8,
                 score: str = "output", **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if step_size is not None:
            if isinstance(step_size, bool) or not isinstance(step_size, (int, float)):
                raise TypeError(f"step_size must be an int (features per step), a float in (0, 1] (a fraction of "
                                f"the features) or None, got {step_size!r}")
            if isinstance(step_size, int):
                check_positive_int(step_size, "step_size")
            else:  # NaN and Inf fail check_fraction's finiteness test
                check_fraction(step_size, "step_size")
                if step_size <= 0:
                    raise ValueError(f"step_size as a fraction must lie in (0, 1], got {step_size}")
        self.step_size = step_size
        self.features = _choice(features, FEATURES, "features")
        self.direction = _choice(direction, DIRECTIONS, "direction")
        self.selection = _choice(selection, SELECTIONS, "selection")
        self.quadrature = _choice(quadrature if quadrature is not None else self.default_quadrature, QUADRATURES,
                                  "quadrature")
        self.momentum = check_fraction(self.default_momentum if momentum is None else momentum, "momentum",
                                       high=1.0)
        if self.momentum >= 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
        self.substeps = check_positive_int(substeps, "substeps")
        if completeness_rtol == "default":
            completeness_rtol = self.default_rtol
        if completeness_rtol is not None:
            if isinstance(completeness_rtol, bool) or not isinstance(completeness_rtol, (int, float)) \
                    or not completeness_rtol > 0 or not math.isfinite(completeness_rtol):
                raise ValueError(f"completeness_rtol must be a positive number or None, got {completeness_rtol!r}")
            completeness_rtol = float(completeness_rtol)
        self.completeness_rtol = completeness_rtol
        self.max_refinements = check_positive_int(max_refinements, "max_refinements", minimum=0,
                                                  maximum=MAX_REFINEMENTS)
        if self.quadrature == "left" and (self.substeps > 1 or self.completeness_rtol is not None):
            raise ValueError("substeps > 1 and completeness_rtol need quadrature='trapezoid' (the left rule credits "
                             "each macro step with the gradient at its start only)")
        # sigma 0 would make the "blur" baseline the input itself: an empty path and all-zero attributions
        self.blur_sigma = check_positive_float(blur_sigma, "blur_sigma")
        self.baseline = check_baseline(baseline, "baseline")
        self.insertion_baseline = check_baseline(insertion_baseline, "insertion_baseline")
        self.score = check_choice(score, "score", SCORES)

    def cost(self, input_shape: Sequence[int] | None) -> Cost:
        """A lower bound: per path (N per direction) one gradient per macro step and sub-step, plus the ends
        (adaptive bisection adds more); memory: a few float copies of every path's state."""
        n = 1 if input_shape is None else int(input_shape[0])
        paths = n * (2 if self.direction == "both" else 1)
        if input_shape is None or len(input_shape) < 2:
            return Cost(evaluations=paths * (self.substeps + 2), param="step_size", value=self.step_size)
        shape = tuple(int(v) for v in input_shape[1:])
        channels = shape[0] if len(shape) >= 2 else 1
        n_pixels = math.prod(shape[1:]) if len(shape) >= 2 else shape[0]
        n_features = n_pixels if self.features == "pixel" else n_pixels * channels
        macro = math.ceil(n_features / self.resolved_step_size(shape))
        d = math.prod(shape)
        memory = 4.0 * 10 * paths * d + 16.0 * paths * n_features  # ~10 float copies per path, 2 int64 orders
        return Cost(evaluations=paths * (macro * self.substeps + 2), bytes=memory, param="step_size",
                    value=self.step_size,
                    detail=f"{paths} path(s) x {macro} macro steps x {self.substeps} sub-step(s)")

    def params(self) -> dict[str, Any]:
        return {"step_size": self.step_size, "features": self.features, "direction": self.direction,
                "baseline": describe_baseline(self.baseline),
                "insertion_baseline": describe_baseline(self._insertion_baseline_spec()),
                "blur_sigma": self.blur_sigma, "selection": self.selection, "momentum": self.momentum,
                "quadrature": self.quadrature, "substeps": self.substeps,
                "completeness_rtol": self.completeness_rtol, "max_refinements": self.max_refinements,
                "score": self.score}

    # ------------------------------------------------------------------ set-up
    def _insertion_baseline_spec(self) -> BaselineLike:
        if self.insertion_baseline is not None:
            return self.insertion_baseline
        return "blur" if self.direction == "both" else self.baseline

    def resolved_step_size(self, shape: tuple[int, ...]) -> int:
        """Features per macro step for one sample of ``shape`` (C, H, W) (or any (C, ...))."""
        channels = int(shape[0]) if len(shape) >= 2 else 1
        n_pixels = int(math.prod(shape[1:])) if len(shape) >= 2 else int(shape[0])
        n_features = n_pixels if self.features == "pixel" else n_pixels * channels
        if self.step_size is None:
            s = default_step_size(n_pixels) * (1 if self.features == "pixel" else channels)
        elif isinstance(self.step_size, float):
            s = max(1, math.ceil(self.step_size * n_features))
        else:
            s = int(self.step_size)
        return min(s, n_features)

    # ------------------------------------------------------------------ main
    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        n = x.shape[0]
        sample_shape = tuple(x.shape[1:])
        groups_c = sample_shape[0]
        b_del = make_baseline(x, self.baseline, blur_sigma=self.blur_sigma, seed=self.seed, name="baseline")
        b_ins = make_baseline(x, self._insertion_baseline_spec(), blur_sigma=self.blur_sigma, seed=self.seed,
                              name="insertion_baseline")
        directions = ["deletion", "insertion"] if self.direction == "both" else [self.direction]
        starts, ends, signs = [], [], []
        for d in directions:
            if d == "deletion":
                starts.append(x), ends.append(b_del), signs.append(-1.0)
            else:
                starts.append(b_ins), ends.append(x), signs.append(1.0)
        dev = x.device
        paths = _Paths(sample=torch.arange(n, device=dev).repeat(len(directions)),
                       start=torch.cat(starts).reshape(len(directions) * n, -1),
                       end=torch.cat(ends).reshape(len(directions) * n, -1),
                       sign=torch.tensor(signs, dtype=x.dtype, device=dev).repeat_interleave(n))
        result = self._run_paths(paths, target, sample_shape, groups_c)

        # orient every path to explain f(x) - f(baseline) and combine the directions
        extras: dict[str, Any] = {}
        attribution = torch.zeros_like(x)
        expected = torch.zeros(n, dtype=torch.float64, device=dev)
        for i, d in enumerate(directions):
            rows = slice(i * n, (i + 1) * n)
            credit = result["credit"][rows].view_as(x)
            oriented = credit if d == "insertion" else -credit
            attribution += oriented / len(directions)
            f_start, f_end = result["start_score"][rows], result["end_score"][rows]
            expected += ((f_end - f_start) if d == "insertion" else (f_start - f_end)) / len(directions)
            prefix = "" if len(directions) == 1 else f"{d}_"
            for key in ("trajectory", "path_steps", "order", "feature_step", "path_residual", "start_score",
                        "end_score", "gradient_evaluations"):
                extras[prefix + key] = result[key][rows]
        residual = attribution.reshape(n, -1).double().sum(1) - expected
        extras["residual"] = residual
        extras["relative_residual"] = residual.abs() / expected.abs().clamp_min(1e-12)
        extras["baseline"] = b_del if "deletion" in directions else b_ins
        if len(directions) == 2:
            extras["insertion_baseline"] = b_ins
        extras["step_size"] = result["step_size"]
        return attribution, extras

    # ------------------------------------------------------------------ the greedy loop
    def _run_paths(self, paths: _Paths, target: Target, sample_shape: tuple[int, ...],
                   groups_c: int) -> dict[str, Any]:
        p_count, d = paths.start.shape
        dev = paths.start.device
        per_group = groups_c if self.features == "pixel" else 1
        n_groups = d // per_group
        s = min(self.resolved_step_size(sample_shape), n_groups)
        dtype = paths.start.dtype

        def group_view(t: torch.Tensor) -> torch.Tensor:  # (P, D) -> (P, per_group, G)
            return t.view(t.shape[0], per_group, n_groups)

        displacement = paths.end - paths.start
        movable = (group_view(displacement) != 0).any(1)                        # (P, G)
        n_movable = movable.sum(1)
        n_macro = (n_movable + s - 1) // s                                       # (P,)
        k_max = int(n_macro.max()) if p_count else 0

        current = paths.start.clone()
        credit = torch.zeros(p_count, d, dtype=dtype, device=dev)
        remaining = movable.clone()
        feature_step = torch.full((p_count, n_groups), -1, dtype=torch.long, device=dev)
        rank_in_order = torch.full((p_count, n_groups), -1, dtype=torch.long, device=dev)
        moved_so_far = torch.zeros(p_count, dtype=torch.long, device=dev)
        trajectory = torch.empty(p_count, k_max + 1, dtype=torch.float64, device=dev)
        evaluations = torch.zeros(p_count, dtype=torch.long, device=dev)

        # f and gradient at the start of every path; f at the end (for the completeness budget of SAMP++)
        everyone = torch.arange(p_count, device=dev)
        f_now, grad_now = self._gradients(target, paths, everyone, lambda rows, _t: current[rows], sample_shape,
                                          torch.ones(p_count, dtype=dtype, device=dev), full=True)
        evaluations += 1
        trajectory[:, 0] = f_now
        velocity = grad_now.clone()
        f_end = self._end_scores(target, paths, sample_shape)

        for k in range(k_max):
            active = torch.nonzero(remaining.any(1)).flatten()
            if active.numel() == 0:
                break
            # --- choose the features of this macro step (momentum only steers the choice)
            if self.momentum > 0 and k > 0:
                velocity[active] = self.momentum * velocity[active] + (1 - self.momentum) * grad_now[active]
            steer = velocity[active] if self.momentum > 0 else grad_now[active]
            alpha = group_view(steer * (paths.end[active] - current[active])).sum(1)   # (A, G)
            if self.selection == "signed":
                alpha = alpha * paths.sign[active].unsqueeze(1)
            else:
                alpha = alpha.abs()
            alpha = torch.where(remaining[active], alpha, torch.full_like(alpha, -math.inf))
            order = torch.argsort(-alpha.double(), dim=1, stable=True)[:, :s]          # (A, s) best first
            valid = torch.gather(remaining[active], 1, order)                         # last step may be short
            n_valid = valid.sum(1)
            # element indices of the moved groups (padded entries point at element 0 with zero displacement)
            offsets = (torch.arange(per_group, device=dev) * n_groups).view(1, per_group, 1)
            elem = (order.unsqueeze(1) + offsets).reshape(order.shape[0], -1)          # (A, per_group * s)
            elem_valid = valid.unsqueeze(1).expand(-1, per_group, -1).reshape(order.shape[0], -1)
            elem = torch.where(elem_valid, elem, torch.zeros_like(elem))
            moved = torch.zeros(active.numel(), d, dtype=torch.long, device=dev).scatter_add_(1, elem,
                                                                               elem_valid.long()) > 0
            x_k = current[active]
            x_next = torch.where(moved, paths.end[active], x_k)
            dx = x_next - x_k                                                          # (A, D), zero off `moved`
            dx_sub = torch.gather(dx, 1, elem) * elem_valid                            # (A, E), 0 on padding

            # --- bookkeeping of the order
            # (valid entries are a prefix of each row of `order`: the -inf of moved groups sort last)
            rows = active.unsqueeze(1).expand_as(order)[valid]
            cols = order[valid]
            feature_step[rows, cols] = k
            rank_in_order[rows, cols] = (moved_so_far[active].unsqueeze(1)
                                         + torch.arange(order.shape[1], device=dev).unsqueeze(0))[valid]
            moved_so_far[active] += n_valid
            remaining[rows, cols] = False

            # --- credit the macro step
            f_next, grad_next, extra_evals = self._credit_segment(
                target, paths, active, x_k, x_next, dx, elem, dx_sub, elem_valid, grad_now[active], f_now[active],
                f_end[active] - trajectory[active, 0], n_macro[active], sample_shape, credit)
            evaluations[active] += extra_evals
            current[active] = x_next
            f_now[active] = f_next
            grad_now[active] = grad_next
            trajectory[active, k + 1] = f_next
            done = torch.ones(p_count, dtype=torch.bool, device=dev)
            done[active] = False
            trajectory[done, k + 1] = f_now[done]

        # unmoved features (nothing to move) go last, in index order
        order_out = torch.argsort(torch.where(rank_in_order >= 0, rank_in_order,
                                              n_groups + torch.arange(n_groups, device=dev).expand(p_count, -1)),
                                  dim=1,
                                  stable=True)
        path_residual = credit.double().sum(1) - (trajectory[:, -1] - trajectory[:, 0])
        return {"credit": credit, "trajectory": trajectory.to(dtype), "path_steps": n_macro, "order": order_out,
                "feature_step": feature_step, "path_residual": path_residual,
                "start_score": trajectory[:, 0], "end_score": trajectory[:, -1], "gradient_evaluations": evaluations,
                "step_size": s}

    def _credit_segment(self, target: Target, paths: _Paths, active: torch.Tensor, x_k: torch.Tensor,
                        x_next: torch.Tensor, dx: torch.Tensor, elem: torch.Tensor, dx_sub: torch.Tensor,
                        elem_valid: torch.Tensor, grad_k: torch.Tensor, f_k: torch.Tensor, total_change: torch.Tensor,
                        n_macro: torch.Tensor, sample_shape: tuple[int, ...], credit: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Credit one macro step of every active path to ``credit`` (in place).

        Returns ``(f(x_next) (A,), grad f(x_next) (A, D), gradient evaluations spent per path (A,))``.
        """
        a_count = active.numel()
        dtype = x_k.dtype
        dev = x_k.device
        ones = torch.ones(a_count, dtype=dtype, device=dev)

        def point(rows: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            inside = (t < 1).view(-1, 1)
            return torch.where(inside, x_k[rows] + t.view(-1, 1) * dx[rows], x_next[rows])

        local = torch.arange(a_count, device=dev)
        f_next, grad_next = self._gradients(target, paths, active, lambda rows, t: point(rows, t), sample_shape,
                                            ones, full=True, local=local)
        spent = torch.ones(a_count, dtype=torch.long, device=dev)
        if self.quadrature == "left":
            credit[active] += grad_k * dx
            return f_next, grad_next, spent

        # sub-steps: per path a sorted set of nodes t in [0, 1] with f, D = grad . dx and G = (grad * dx)[moved]
        g0 = torch.gather(grad_k, 1, elem) * dx_sub
        g1 = torch.gather(grad_next, 1, elem) * dx_sub
        nodes: list[dict[float, tuple[float, float, torch.Tensor]]] = []
        for r in range(a_count):
            nodes.append({0.0: (float(f_k[r]), float(g0[r].double().sum()), g0[r]),
                          1.0: (float(f_next[r]), float(g1[r].double().sum()), g1[r])})
        pending = [(r, j / self.substeps) for r in range(a_count) for j in range(1, self.substeps)]
        tol = [0.0] * a_count
        if self.completeness_rtol is not None:
            tol = (self.completeness_rtol * total_change.abs() / n_macro.clamp_min(1).double()).tolist()
        # float32 rounding of the model output, relative to the scale of the path's scores
        scale = (1e-5 * torch.maximum(f_k.abs(), f_next.abs()).maximum(total_change.abs())).tolist()
        depth = 0
        while True:
            if pending:
                rows = torch.tensor([r for r, _ in pending], dtype=torch.long, device=dev)
                ts = torch.tensor([t for _, t in pending], dtype=dtype, device=dev)
                f_new, g_new = self._gradients(target, paths, active[rows], point, sample_shape, ts, full=False,
                                               local=rows, elem=elem, dx_sub=dx_sub)
                for i, (r, t) in enumerate(pending):
                    nodes[r][t] = (float(f_new[i]), float(g_new[i].double().sum()), g_new[i])
                    spent[r] += 1
            if self.completeness_rtol is None or depth >= self.max_refinements:
                break
            depth += 1
            pending = [(r, 0.5 * (a + b)) for r in range(a_count) for a, b in _intervals(nodes[r])
                       if not _interval_weights(nodes[r][a], nodes[r][b], b - a, tol[r], scale[r])[2]]
            if not pending:
                break
        adaptive = self.completeness_rtol is not None
        for r in range(a_count):
            total = torch.zeros_like(g0[r])
            for a, b in _intervals(nodes[r]):
                if adaptive:
                    w_a, w_b, _ = _interval_weights(nodes[r][a], nodes[r][b], b - a, tol[r], scale[r])
                else:
                    w_a = w_b = 0.5 * (b - a)
                total += w_a * nodes[r][a][2] + w_b * nodes[r][b][2]
            row = int(active[r])
            credit[row].index_add_(0, elem[r][elem_valid[r]], total[elem_valid[r]])
        return f_next, grad_next, spent

    # ------------------------------------------------------------------ model evaluations
    def _gradients(self, target: Target, paths: _Paths, rows: torch.Tensor, build: Any,
                   sample_shape: tuple[int, ...], ts: torch.Tensor, *, full: bool,
                   local: torch.Tensor | None = None, elem: torch.Tensor | None = None,
                   dx_sub: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores (float64) and gradients at ``len(rows)`` points ``build(local_rows, t)`` of paths ``rows``.

        ``full``: gradients (n, D); else ``(grad * dx)[elem]`` per point, (n, E).
        """
        n_items = rows.numel()
        dev = paths.start.device
        loc = local if local is not None else rows
        scores = torch.empty(n_items, dtype=torch.float64, device=dev)
        out_grads: torch.Tensor | None = None
        samples = paths.sample[rows]

        def make(a: int, b: int) -> torch.Tensor:
            return build(loc[a:b], ts[a:b]).view(b - a, *sample_shape)

        def score(out: torch.Tensor, a: int, b: int) -> torch.Tensor:
            return target.score(out, samples[a:b], kind=self.score)  # type: ignore[arg-type]

        for a, b, sc, g in self.evaluator.gradient_chunks(n_items, make, score, sample_shape=sample_shape,
                                                          desc=self.name):
            scores[a:b] = sc.double()
            flat = g.reshape(b - a, -1)
            if full:
                if out_grads is None:
                    out_grads = torch.empty(n_items, flat.shape[1], dtype=flat.dtype, device=dev)
                out_grads[a:b] = flat
            else:
                assert elem is not None and dx_sub is not None
                part = torch.gather(flat, 1, elem[loc[a:b]]) * dx_sub[loc[a:b]]
                if out_grads is None:
                    out_grads = torch.empty(n_items, part.shape[1], dtype=part.dtype, device=dev)
                out_grads[a:b] = part
        assert out_grads is not None
        return scores, out_grads

    def _end_scores(self, target: Target, paths: _Paths, sample_shape: tuple[int, ...]) -> torch.Tensor:
        """f(x_E) of every path (forward only): the scale of the completeness budget."""
        p_count = paths.end.shape[0]
        dev = paths.end.device
        out = torch.empty(p_count, dtype=torch.float64, device=dev)
        if self.completeness_rtol is None:
            return out.fill_(0.0)
        for a, b, o in self.evaluator.forward_chunks(p_count, lambda a, b: paths.end[a:b].view(b - a, *sample_shape),
                                                     sample_shape=sample_shape, desc=f"{self.name} ends"):
            out[a:b] = target.score(o, paths.sample[a:b], kind=self.score).double()  # type: ignore[arg-type]
        return out


def _intervals(nodes: dict[float, Any]) -> list[tuple[float, float]]:
    ts = sorted(nodes)
    return list(zip(ts[:-1], ts[1:]))


def _interval_weights(node_a: tuple[float, float, Any], node_b: tuple[float, float, Any], h: float,
                      tol: float, noise: float = 0.0) -> tuple[float, float, bool]:
    """Weights of the gradients at the two ends of a sub-step of length ``h`` and whether the sub-step is resolved.

    Along a line a ReLU network is piecewise linear, so gradient x displacement is piecewise constant. If the sub-step
    crosses one change of linear region at ``a + w_a``, its exact line integral is ``w_a G_a + (h - w_a) G_b``, and
    ``w_a`` follows from the measured change ``f_b - f_a = w_a D_a + (h - w_a) D_b``. The sub-step is resolved when
    that ``w_a`` lies in [0, h] (else more than one change happened: bisect), or when the end slopes agree and the
    trapezoid rule matches the measured change within ``tol * h`` (or within ``noise``, the float32 rounding of the
    scores). Smooth models: w_a -> h/2 (the trapezoid rule)
    as h -> 0. Unresolved sub-steps (bisection depth exhausted) keep the clamped weights.
    """
    f_a, d_a, _ = node_a
    f_b, d_b, _ = node_b
    change = f_b - f_a
    noise = max(noise, 8 * _EPS32 * (abs(f_a) + abs(f_b))) + 1e-300
    if abs(d_a - d_b) * h <= noise or abs(d_a - d_b) <= 1e-6 * (abs(d_a) + abs(d_b)):
        return 0.5 * h, 0.5 * h, abs(0.5 * (d_a + d_b) * h - change) <= max(tol * h, noise)
    w_a = (change - d_b * h) / (d_a - d_b)
    resolved = -1e-6 * h <= w_a <= (1 + 1e-6) * h
    w_a = min(max(w_a, 0.0), h)
    return w_a, h - w_a, resolved


def _choice(value: Any, allowed: tuple[str, ...], name: str) -> str:
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value.lower()


register_method(SAMP)


@register_method
class SAMPPlusPlus(SAMP):
    """SAMP++: SAMP with the infinitesimal constraint (adaptive trapezoid sub-steps, completeness within
    ``completeness_rtol``) and the momentum strategy (``momentum=0.5``). Same arguments, attribution and extras as
    :class:`SAMP`."""

    name = "samp++"
    description = "SAMP++: SAMP with the infinitesimal constraint (exact line integral per step) and momentum."
    default_momentum = 0.5
    default_quadrature = "trapezoid"
    default_rtol = 1e-4
