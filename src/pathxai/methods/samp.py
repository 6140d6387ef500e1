"""SAMP and SAMP++: salient manipulation paths (Zhang, Zheng, Zhou & Lu, "Path Choice Matters for Clear
Attributions in Path Methods", ICLR 2024).

A path method attributes ``f(x_E) - f(x_S)`` along a path from a start ``x_S`` to an end ``x_E``: feature j gets its
own line integral ``a_j = int_path d_j f(x) dx_j``, and the a_j add up to ``f(x_E) - f(x_S)`` (completeness). The
path decides what the attributions mean. SAMP picks the path greedily so that attributions *concentrate* on few
features (the paper's Concentration Principle: maximal variance of the attributions for their fixed sum). From the
current point ``x_k`` it scores every feature j that has not reached its end value by the first-order change of
moving it there,

    alpha_j = (grad f(x_k))_j * (x^E_j - x^k_j)                                            (paper, Eq. 11)

and moves the top-``s`` features towards their end values (a step). The path is a polygon; its vertices
``x_0 = x_S, x_1, ..., x_K = x_E`` are returned with ``return_path=True``.

- **SAMP** (the paper's first version) moves the top-``s`` features *all the way* to their end values and credits a
  step with ``grad f(x_k) * dx_k``: one gradient per step, the left Riemann sum of the line integral, exact only in
  the limit of small steps. Its credits are *not* the line integral along its own (large) steps; the completeness
  residual ``extras["residual"]`` and the free per-feature indicator ``extras["credit_error"]`` (left rule minus
  trapezoid rule from the gradients SAMP has anyway, summed with signs over the path; exact for an integrand linear
  in the step) say by how much.
- **SAMP++** adds the paper's two modules.

  *Infinitesimal constraint (IC)*: an upper bound ``eta`` on the l1 norm of every step, ``||x_{k+1} - x_k||_1 <=
  eta``. It changes the path: when the selected features would move further, all of them move the same fraction of
  their remaining way, ``x_{k+1} = x_k + min(1, eta / ||m_k (x^E - x_k)||_1) m_k (x^E - x_k)`` (the direction of Eq. 11,
  shortened), and features that did not arrive stay candidates for the next selection with their remaining
  displacement. Many more, smaller steps. ``eta`` is given in input units (``eta=``) or, by default, relative to the
  path: ``eta = eta_fraction * ||x_E - x_S||_1 / K_s`` with ``K_s = ceil(movable features / s)`` the number of
  SAMP's steps, i.e. a step may carry at most ``eta_fraction`` of SAMP's mean step (default 0.5: at most
  ``K_s (1 + 1 / eta_fraction)`` steps).

  *Momentum strategy (MS)*: features are chosen with an exponential moving average of gradients
  ``v_k = lambda v_{k-1} + (1 - lambda) grad f(x_k)`` (``momentum=0.5``). Momentum steers the *selection only*; the
  credits are always line integrals of the true gradient (a reviewer reads the paper as also crediting ``v_k``,
  which would break completeness).

  *Credits: each feature's own line integral, to a stated tolerance.* On every step (segment ``x_k -> x_{k+1}``,
  parameter t in [0, 1]) the integrand ``G_j(t) = d_j f(x_k + t dx) dx_j`` of every moved feature is integrated by
  the composite trapezoid rule on adaptive sub-intervals. For a sub-interval of length h with end and midpoint
  values ``G_a, G_m, G_b`` the reported credit is the trapezoid rule on its two halves ``T2 = h/4 (G_a + 2 G_m +
  G_b)``, and the a-posteriori estimate compares it with the coarser rule on the same sub-interval,
  ``T1 - T2 = h/4 (G_a + G_b - 2 G_m)`` (Richardson's comparison of two step sizes). The per-feature estimate is the
  *signed* sum of these differences over the feature's sub-intervals and steps (the credit by the coarse rule minus
  the credit reported), in absolute value. For a smooth integrand it is about 3x the error of T2; for a ReLU network
  (``G_j`` piecewise constant along a line) a sub-interval with one change of linear region has ``|T1 - T2| =
  |jump| h/4 >= |error of T2|``, and over many region changes the signed sums are of the size of the error
  (measured 1.2-2x the true error on the MLP and digits tests). It is an estimate, not a bound: a region change
  that the three nodes of a sub-interval cannot see is invisible to any finite rule.

  Refinement runs once the path is known, step by step (bounded memory). Feature j's allowance on a step is
  ``rtol/2 (|c_j| + floor / n_j)`` (``c_j`` its credit on the step, ``n_j`` the number of steps it moves in,
  ``floor`` the mean |credit| of the path's features after the first pass); sub-intervals are bisected (at most
  ``max_refinements`` times) until the step's estimated l1 error (the sum of its features' |estimates|) is within
  the sum of their allowances, and until the step's residual ``sum_j c_j - (f(x_{k+1}) - f(x_k))`` -- measured
  exactly -- is too (it catches errors that cancel in the per-feature comparison). Over the path the estimated l1
  error is then at most ``rtol/2 (sum_steps ||c_step||_1 + ||a_first_pass||_1)``, about ``rtol ||a||_1``
  (default rtol = 0.02; measured: 0.4-0.6 % true l1 error on the digits CNN and the MLP of the tests). The stopping
  rule is on the step's *sum* of per-feature estimates, not on each one: with every one of the 10^4 features of an
  EfficientNet step held to its own allowance (rtol 0.05), one 224 x 224 photo had not finished after 11 minutes
  and 3.7 GB when we stopped it (the l1 rule at rtol 0.02: 14 minutes, 7.6k evaluations). Extras: ``credit_error``
  the per-feature estimates (shape of the attribution), ``max_credit_error`` and ``relative_credit_error`` (their
  sum over ``sum |attribution|``) per image, ``unresolved_intervals`` the sub-intervals still over their share at
  ``max_refinements``.

What is exact and what is estimated. The path (its vertices) is exact. The credits are each feature's line integral
along it up to the quadrature error, which is *estimated* a posteriori as above; the tests hold the credits to 1 %
(l1) of a Gauss-Legendre integration (256-2000 points per segment) along ``extras["path"]`` on a ReLU MLP and on
the digits CNN at the defaults. Completeness is *not* built in: it holds to the quadrature tolerance (every step's
residual within its budget, so ``|sum_j a_j - (f(x_E) - f(x_S))| <~ rtol ||a||_1``), and ``extras["residual"]``
reports it. (The previous SAMP++ fitted one weight per sub-step to the output change; that closed the sum to 1e-15
whatever the per-feature split, which was 17-25 % (l1) off the line integral on a ReLU MLP.)

Cost (gradient evaluations = forward + backward passes of one input): SAMP, ``K_s + 1`` per path. SAMP++: one per
vertex (its gradient serves the next selection and both neighbouring steps), ``2 substeps - 1`` more per step for
the first pass, and two per bisection: at least ``2 K + 1`` per path for K steps of the IC path, in practice set
by how rough gradient x displacement is along the steps. Measured at the defaults (both paths): digits CNN 1601
per image (16 test digits; the previous implementation 184, SAMP 138); EfficientNet-Lite0 on a 224 x 224 photo
about 7.6k per image (1 photo; previous 35), because a step moves 3584 pixels at once. ``rtol`` trades cost for
accuracy (on one digit: rtol 0.1: 742 evaluations, 1.5 % l1 error; 0.05: 924, 1.1 %; 0.02: 1848, 0.5 %;
``rtol=None``: 704, 1.6 % -- the first pass only, still with its estimate); see benchmarks/results/samp.md.

Directions. The deletion path goes from the input to a baseline (``x_S = x``, ``x_E = b``); the insertion path from a
baseline to the input. The paper's setting "B+G" runs both -- deletion towards black, insertion from a Gaussian blur,
the baselines of the RISE deletion/insertion metrics -- and that is our default (``direction="both"``, averaging the
two attributions). Attributions are always oriented to explain ``f(x) - f(baseline)``: the deletion path's line
integral (which sums to ``f(b) - f(x)``) is negated.

Choices where the paper is vague, or could not be read here (the paper's full text was not retrievable in this
environment and the authors' repository, github.com/zbr17/SAMP, holds only a README; the IC rule above is our reading
of "each manipulation step is constrained below an upper bound with l1-norm"):

- *Sign of the selection score.* Eq. 11 takes the top-s of alpha as written; the paper's algorithm box ranks by
  ``|m^T g|``. We rank, by default (``selection="signed"``), by the change *towards the path's purpose*: features
  whose removal lowers the score most on the deletion path (``-alpha``), whose insertion raises it most on the
  insertion path (``+alpha``) -- greedy maximisation of the attributions' variance for a positive
  ``f(x) - f(b)``, the usual case for the explained class. ``selection="abs"`` ranks by ``|alpha|``.
- *Step size.* The paper moves ``s = 10`` pixels per step on MNIST (28 x 28) and ``224 x 16`` on ImageNet
  (224 x 224). Our default (:func:`default_step_size`) is the power law through both settings,
  ``s = 10 (HW / 784)^p`` with ``p = log(358.4) / log(64) = 1.414``: 10 px at 28 x 28, 67 px at 64 x 64, 3584 px at
  224 x 224 (14 SAMP steps per path).
- *IC bound and momentum coefficient.* Not retrievable here; ``eta_fraction=0.5`` and ``momentum=0.5`` are our
  untuned choices (see benchmarks/results/samp.md for their cost).
- *Features with nothing to move* (``x_S = x_E`` there, e.g. black background on a black baseline) never move and
  get exactly 0; ``extras["feature_step"]`` marks them with -1.

Batched: the greedy loop runs all paths of the batch together (deletion and insertion paths of all images); each
round of gradient evaluations streams through the shared evaluator in chunks of ``batch_size``. Memory holds the
current point, the end point, momentum, credits and estimates per path, plus, per step, the moved elements and the
integrand at the first pass's nodes (3 x (moved elements) floats per step and path: 0.1 MB for a 224 x 224 SAMP++
step); the refinement replays the path from its start (bit-identical points) and frees each group of steps once
refined. ``return_path=True`` keeps every vertex.
"""
from __future__ import annotations

import bisect
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..core import Method, Target, limits, register_method
from ..core.baselines import BaselineLike, check_baseline, describe_baseline, make_baseline
from ..core.limits import Cost
from ..core.validation import (check_bool, check_choice, check_fraction, check_positive_float,
                               check_positive_int)

DIRECTIONS = ("deletion", "insertion", "both")
FEATURES = ("pixel", "channel")
SELECTIONS = ("signed", "abs")
QUADRATURES = ("left", "adaptive")
# the previous SAMP++ rule was called "trapezoid"; it now means the adaptive per-feature trapezoid rule
_QUADRATURE_ALIASES = {"trapezoid": "adaptive"}
SCORES = ("output", "softmax", "log_softmax")
# bisection depth: sub-intervals of 2**-40 of a step are far below what float32 inputs resolve
MAX_REFINEMENTS = 40
# rounding floor of the error tests, in units of the gradient dtype's epsilon (backprop sums many terms)
_ROUNDING = 64.0
_DEFAULT = "default"  # sentinel: the class default
# moved elements (paths x elements per step) refined together: bounds the sub-interval tables' memory
_GROUP_ELEMENTS = 1 << 16

# The paper's two settings: 10 pixels per step at 28 x 28 (MNIST), 224 * 16 pixels per step at 224 x 224 (ImageNet).
_SMALL_PIXELS, _SMALL_STEP = 28 * 28, 10
_LARGE_PIXELS, _LARGE_STEP = 224 * 224, 224 * 16
_STEP_EXPONENT = math.log(_LARGE_STEP / _SMALL_STEP) / math.log(_LARGE_PIXELS / _SMALL_PIXELS)


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


@dataclass(eq=False)
class _Step:
    """One step of the SAMP++ loop for its active paths: what moved, and the sub-intervals of its quadrature.

    ``rows`` (A,) the paths; ``elem`` / ``valid`` (A, E) the moved elements (padded); ``after`` (A, E) their values
    after the step; ``dx_sub`` (A, E) their displacement. Sub-interval table (I rows): ``owner`` (I,) row in
    ``rows``, ``lo`` / ``h`` start and length in t, ``depth`` bisections so far, scores ``fa`` / ``fm`` / ``fb`` and
    integrands ``ga`` / ``gm`` / ``gb`` (I, E) (gradient x displacement of the moved elements) at its start, midpoint
    and end.
    """

    rows: torch.Tensor
    elem: torch.Tensor
    valid: torch.Tensor
    after: torch.Tensor
    dx_sub: torch.Tensor
    owner: torch.Tensor = None  # type: ignore[assignment]
    lo: torch.Tensor = None  # type: ignore[assignment]
    h: torch.Tensor = None  # type: ignore[assignment]
    depth: torch.Tensor = None  # type: ignore[assignment]
    fa: torch.Tensor = None  # type: ignore[assignment]
    fm: torch.Tensor = None  # type: ignore[assignment]
    fb: torch.Tensor = None  # type: ignore[assignment]
    ga: torch.Tensor = None  # type: ignore[assignment]
    gm: torch.Tensor = None  # type: ignore[assignment]
    gb: torch.Tensor = None  # type: ignore[assignment]

    def rules(self, eps: float) -> tuple[torch.Tensor, ...]:
        """Per sub-interval: the reported rule (trapezoid on the two halves) (I, E), the difference one-interval
        trapezoid minus it (I, E), the rounding noise of that difference (I, E) (all in the integrand's dtype;
        sums over sub-intervals are taken in float64 by :meth:`per_row`), the residual ``sum_j credit_j -
        (f_b - f_a)`` (I,) and its rounding noise (I,) (float64)."""
        h = self.h.to(self.ga.dtype).unsqueeze(1)
        t2 = 0.25 * h * (self.ga + 2 * self.gm + self.gb)
        diff = 0.25 * h * (self.ga + self.gb - 2 * self.gm)
        noise = 0.25 * h * _ROUNDING * eps * (self.ga.abs() + 2 * self.gm.abs() + self.gb.abs())
        t2_sum = t2.double().sum(1)
        close = t2_sum - (self.fb - self.fa)
        c_noise = _ROUNDING * eps * (self.fa.abs() + self.fb.abs() + t2.abs().double().sum(1))
        return t2, diff, noise, close, c_noise

    def per_row(self, values: torch.Tensor) -> torch.Tensor:
        """Sum (I, X) sub-interval values per row, in float64: (A, X)."""
        out = torch.zeros(self.rows.numel(), values.shape[1], dtype=torch.float64, device=values.device)
        return out.index_add_(0, self.owner, values.double())

    def dense_dx(self, base: torch.Tensor) -> torch.Tensor:
        """The step's displacement (A, D) from its start ``base`` (A, D): exactly ``x_next - x_k``."""
        dx = torch.zeros_like(base)
        r, c = self._index()
        dx[r, c] = self.after[self.valid] - base[r, c]
        return dx

    def advance(self, base: torch.Tensor) -> torch.Tensor:
        """The step's end ``x_next`` (A, D) from its start ``base``."""
        out = base.clone()
        r, c = self._index()
        out[r, c] = self.after[self.valid]
        return out

    def release(self) -> None:
        """Free the sub-interval table (the step's credits have been written)."""
        self.owner = self.lo = self.h = self.depth = None  # type: ignore[assignment]
        self.fa = self.fm = self.fb = self.ga = self.gm = self.gb = None  # type: ignore[assignment]

    def _index(self) -> tuple[torch.Tensor, torch.Tensor]:
        r = torch.arange(self.rows.numel(), device=self.rows.device).unsqueeze(1).expand_as(self.elem)
        return r[self.valid], self.elem[self.valid]

    def split(self, idx: torch.Tensor, f_left: torch.Tensor, f_right: torch.Tensor, g_left: torch.Tensor,
              g_right: torch.Tensor) -> None:
        """Replace sub-intervals ``idx`` by their halves, given f and the integrand at their quarter points."""
        keep = torch.ones(self.owner.numel(), dtype=torch.bool, device=self.owner.device)
        keep[idx] = False
        lo, h = self.lo[idx], self.h[idx]
        self.owner = torch.cat([self.owner[keep], self.owner[idx], self.owner[idx]])
        self.lo = torch.cat([self.lo[keep], lo, lo + 0.5 * h])
        self.h = torch.cat([self.h[keep], 0.5 * h, 0.5 * h])
        self.depth = torch.cat([self.depth[keep], self.depth[idx] + 1, self.depth[idx] + 1])
        fa, fm, fb = self.fa[idx], self.fm[idx], self.fb[idx]
        self.fa = torch.cat([self.fa[keep], fa, fm])
        self.fm = torch.cat([self.fm[keep], f_left, f_right])
        self.fb = torch.cat([self.fb[keep], fm, fb])
        ga, gm, gb = self.ga[idx], self.gm[idx], self.gb[idx]
        self.ga = torch.cat([self.ga[keep], ga, gm])
        self.gm = torch.cat([self.gm[keep], g_left, g_right])
        self.gb = torch.cat([self.gb[keep], gm, gb])


def _scatter_rows(target: torch.Tensor, rows: torch.Tensor, elem: torch.Tensor, values: torch.Tensor) -> None:
    """``target[rows[i], elem[i, j]] += values[i, j]`` (padded entries must carry 0)."""
    target.index_put_((rows.unsqueeze(1).expand_as(elem), elem), values.to(target.dtype), accumulate=True)


def _optional_positive(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive number or None, got {value!r}")
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive number or None, got {value!r}")
    return float(value)


class SAMP(Method):
    """SAMP: the salient manipulation path (plain greedy version, first-order credit per step).

    Args:
        step_size: features selected per step: an int (pixels in ``features="pixel"`` mode, single channel values
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
        momentum: lambda of the momentum strategy (0 = plain gradient); steers the selection only.
        quadrature: ``"left"`` (gradient at the start of each step: SAMP) or ``"adaptive"`` (per-feature adaptive
            trapezoid rule with error estimates: SAMP++; ``"trapezoid"`` is accepted as its old name).
        eta: infinitesimal constraint, absolute: the l1 norm of every step is at most ``eta`` (input units).
        eta_fraction: infinitesimal constraint, relative: ``eta = eta_fraction * ||x_E - x_S||_1 / K_s`` per path,
            ``K_s`` = SAMP's number of steps. ``None`` (SAMP's default) = no constraint. Give ``eta`` or
            ``eta_fraction``, not both.
        rtol: tolerance of the adaptive quadrature: the estimated l1 error of the credits stays within about
            ``rtol ||a||_1`` (see the module docstring); ``None`` = no refinement (the estimates are still
            reported). Only with ``quadrature="adaptive"``.
        substeps: initial equal sub-intervals per step (adaptive only).
        max_refinements: deepest bisection of a step (sub-intervals of at least 1 / 2**max_refinements of it).
        return_path: also return the path's vertices (``extras["path"]``; memory grows with the number of steps).
        score: ``"output"`` (raw output, e.g. logits), ``"softmax"`` or ``"log_softmax"``.
        completeness_rtol: deprecated name of ``rtol``.
    Attribution: (N, C, H, W), oriented so that its sum is ``f(x) - f(baseline)`` (mean over the directions' baselines)
    up to ``extras["residual"]``; saliency = sum over channels.
    Extras (per direction, prefixed ``deletion_`` / ``insertion_`` when ``direction="both"``): ``trajectory``
    (N, K+1) f at the path's vertices (padded with f(x_E) after a path's last step), ``path`` (N, K+1, C, H, W) the
    vertices (only with ``return_path=True``; padded with x_E), ``path_steps`` (N,) steps K of each path, ``order``
    (N, G) feature indices in the order they started moving (unmoved ones last), ``feature_step`` (N, G) step at
    which each feature started moving (-1: nothing to move), ``path_residual`` (N,) sum of the path's credits minus
    ``f(x_E) - f(x_S)``, ``start_score``, ``end_score`` (N,), ``gradient_evaluations`` (N,), ``max_credit_error``,
    ``relative_credit_error``, ``unresolved_intervals`` (N,); plus, for the final attribution, ``credit_error``
    (N, C, H, W) the estimated |error| per feature (the mean of the directions' estimates), ``max_credit_error``,
    ``relative_credit_error`` (N,), ``residual`` (N,), ``relative_residual`` (N,) and ``baseline`` /
    ``insertion_baseline``.
    """

    name = "samp"
    description = "SAMP: greedy salient manipulation path, top-s features moved per step (Zhang et al., ICLR 2024)."
    saliency_reduction = "sum"
    default_momentum = 0.0
    default_quadrature = "left"
    default_rtol: float | None = None
    default_eta_fraction: float | None = None

    def __init__(self, model: Any, *, step_size: int | float | None = None, features: str = "pixel",
                 direction: str = "both", baseline: BaselineLike = "zero",
                 insertion_baseline: BaselineLike = None, blur_sigma: float = 5.0, selection: str = "signed",
                 momentum: float | None = None, quadrature: str | None = None, eta: float | None = None,
                 eta_fraction: float | None | str = _DEFAULT, rtol: float | None | str = _DEFAULT,
                 substeps: int = 1, max_refinements: int = 12, return_path: bool = False, score: str = "output",
                 completeness_rtol: float | None | str = _DEFAULT, **kwargs: Any) -> None:
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
        if isinstance(quadrature, str):
            quadrature = _QUADRATURE_ALIASES.get(quadrature.lower(), quadrature)
        self.quadrature = _choice(quadrature if quadrature is not None else self.default_quadrature, QUADRATURES,
                                  "quadrature")
        self.momentum = check_fraction(self.default_momentum if momentum is None else momentum, "momentum",
                                       high=1.0)
        if self.momentum >= 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
        # --- infinitesimal constraint
        self.eta = _optional_positive(eta, "eta")
        if eta_fraction == _DEFAULT:
            eta_fraction = None if self.eta is not None else self.default_eta_fraction
        elif self.eta is not None and eta_fraction is not None:
            raise ValueError(f"give eta (absolute l1 bound per step) or eta_fraction (relative), not both; got "
                             f"eta={eta!r}, eta_fraction={eta_fraction!r}")
        self.eta_fraction = _optional_positive(eta_fraction, "eta_fraction")
        # --- quadrature tolerance (completeness_rtol: the deprecated name)
        if completeness_rtol != _DEFAULT:
            if rtol != _DEFAULT:
                raise ValueError("give rtol or its deprecated name completeness_rtol, not both")
            warnings.warn("completeness_rtol is deprecated: use rtol (the tolerance of the adaptive "
                          "quadrature)", DeprecationWarning, stacklevel=3)
            rtol, rtol_name = completeness_rtol, "completeness_rtol"
        else:
            rtol_name = "rtol"
        if rtol == _DEFAULT:
            rtol = self.default_rtol if self.quadrature == "adaptive" else None
        self.rtol = _optional_positive(rtol, rtol_name)
        self.substeps = check_positive_int(substeps, "substeps")
        self.max_refinements = check_positive_int(max_refinements, "max_refinements", minimum=0,
                                                  maximum=MAX_REFINEMENTS)
        if self.quadrature == "left" and (self.substeps > 1 or self.rtol is not None):
            raise ValueError(f"substeps > 1 and {rtol_name} need quadrature='adaptive' (the left rule credits each "
                             f"step with the gradient at its start only)")
        self.return_path = check_bool(return_path, "return_path")
        # sigma 0 would make the "blur" baseline the input itself: an empty path and all-zero attributions
        self.blur_sigma = check_positive_float(blur_sigma, "blur_sigma")
        self.baseline = check_baseline(baseline, "baseline")
        self.insertion_baseline = check_baseline(insertion_baseline, "insertion_baseline")
        self.score = check_choice(score, "score", SCORES)

    def cost(self, input_shape: Sequence[int] | None) -> Cost:
        """Per path (N per direction): one gradient per vertex and, for the adaptive rule, one per initial
        sub-interval midpoint; steps: SAMP's ``K_s``, or its bound ``K_s (1 + 1 / eta_fraction)`` under the relative
        IC (an absolute ``eta`` is checked once the path lengths are known). Bisection adds more (a lower bound).
        Memory: a few float copies of every path's state (plus every vertex with ``return_path``)."""
        n = 1 if input_shape is None else int(input_shape[0])
        paths = n * (2 if self.direction == "both" else 1)
        per_step = 1 if self.quadrature == "left" else 2 * self.substeps
        if input_shape is None or len(input_shape) < 2:
            return Cost(evaluations=paths * (per_step + 1), param="step_size", value=self.step_size)
        shape = tuple(int(v) for v in input_shape[1:])
        channels = shape[0] if len(shape) >= 2 else 1
        n_pixels = math.prod(shape[1:]) if len(shape) >= 2 else shape[0]
        n_features = n_pixels if self.features == "pixel" else n_pixels * channels
        macro = math.ceil(n_features / self.resolved_step_size(shape))
        steps = macro if self.eta_fraction is None else math.ceil(macro * (1 + 1 / self.eta_fraction))
        d = math.prod(shape)
        memory = 8.0 * 8 * paths * d + 16.0 * paths * n_features  # ~8 float64 copies per path, 2 int64 orders
        if self.return_path:
            memory += 4.0 * paths * d * (steps + 1)
        return Cost(evaluations=paths * (steps * per_step + 1), bytes=memory, param="step_size",
                    value=self.step_size,
                    detail=f"{paths} path(s) x {steps} steps x {per_step} gradient(s)")

    def params(self) -> dict[str, Any]:
        return {"step_size": self.step_size, "features": self.features, "direction": self.direction,
                "baseline": describe_baseline(self.baseline),
                "insertion_baseline": describe_baseline(self._insertion_baseline_spec()),
                "blur_sigma": self.blur_sigma, "selection": self.selection, "momentum": self.momentum,
                "quadrature": self.quadrature, "eta": self.eta, "eta_fraction": self.eta_fraction,
                "rtol": self.rtol, "substeps": self.substeps, "max_refinements": self.max_refinements,
                "return_path": self.return_path, "score": self.score}

    # ------------------------------------------------------------------ set-up
    def _insertion_baseline_spec(self) -> BaselineLike:
        if self.insertion_baseline is not None:
            return self.insertion_baseline
        return "blur" if self.direction == "both" else self.baseline

    def resolved_step_size(self, shape: tuple[int, ...]) -> int:
        """Features per step for one sample of ``shape`` (C, H, W) (or any (C, ...))."""
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
        attribution = torch.zeros(x.shape, dtype=torch.float64, device=dev)
        error = torch.zeros(x.shape, dtype=torch.float64, device=dev)
        expected = torch.zeros(n, dtype=torch.float64, device=dev)
        for i, d in enumerate(directions):
            rows = slice(i * n, (i + 1) * n)
            credit = result["credit"][rows].view(x.shape)
            attribution += (credit if d == "insertion" else -credit) / len(directions)
            diff = result["difference"][rows].view(x.shape)
            error += (diff if d == "insertion" else -diff) / len(directions)
            f_start, f_end = result["start_score"][rows], result["end_score"][rows]
            expected += ((f_end - f_start) if d == "insertion" else (f_start - f_end)) / len(directions)
            prefix = "" if len(directions) == 1 else f"{d}_"
            for key in ("trajectory", "path_steps", "order", "feature_step", "path_residual", "start_score",
                        "end_score", "gradient_evaluations", "max_credit_error", "relative_credit_error",
                        "unresolved_intervals", "eta"):
                extras[prefix + key] = result[key][rows]
            if self.return_path:
                extras[prefix + "path"] = result["path"][rows].view(n, -1, *sample_shape)
        residual = attribution.reshape(n, -1).sum(1) - expected
        extras["residual"] = residual
        extras["relative_residual"] = residual.abs() / expected.abs().clamp_min(1e-12)
        error = error.abs()
        extras["credit_error"] = error.to(x.dtype)
        extras["max_credit_error"] = error.reshape(n, -1).amax(1)
        extras["relative_credit_error"] = (error.reshape(n, -1).sum(1)
                                           / attribution.reshape(n, -1).abs().sum(1).clamp_min(1e-300))
        extras["baseline"] = b_del if "deletion" in directions else b_ins
        if len(directions) == 2:
            extras["insertion_baseline"] = b_ins
        extras["step_size"] = result["step_size"]
        return attribution.to(x.dtype), extras

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
        remaining = (group_view(displacement) != 0).any(1)                      # (P, G) not yet at the end
        n_macro = (remaining.sum(1) + s - 1) // s                                # (P,) SAMP's number of steps
        length = displacement.abs().double().sum(1)                              # (P,) ||x_E - x_S||_1
        # --- the infinitesimal constraint: an l1 bound per step, per path
        if self.eta is not None:
            cap = torch.full((p_count,), self.eta, dtype=torch.float64, device=dev)
        elif self.eta_fraction is not None:
            cap = self.eta_fraction * length / n_macro.clamp_min(1).double()
        else:
            cap = torch.full((p_count,), math.inf, dtype=torch.float64, device=dev)
        # a step either meets the bound (moves exactly eta) or finishes its s features: this bounds the step count
        capped_steps = torch.where(torch.isfinite(cap), torch.ceil(length / cap.clamp_min(1e-300)),
                                   torch.zeros_like(cap))
        max_steps = n_macro + capped_steps.long() + 1
        per_step = 1 if self.quadrature == "left" else 2 * self.substeps
        if self.eta is not None:   # the cost of an absolute bound is known only now
            limits.check(Cost(evaluations=float((max_steps * per_step).sum()), param="eta", value=self.eta,
                              detail=f"{p_count} path(s), up to {int(max_steps.max())} steps"),
                         f"method {self.name!r}")

        current = paths.start.clone()
        credit = torch.zeros(p_count, d, dtype=torch.float64, device=dev)
        difference = torch.zeros(p_count, d, dtype=torch.float64, device=dev)   # coarse rule - reported rule
        feature_step = torch.full((p_count, n_groups), -1, dtype=torch.long, device=dev)
        rank_in_order = torch.full((p_count, n_groups), -1, dtype=torch.long, device=dev)
        moved_so_far = torch.zeros(p_count, dtype=torch.long, device=dev)
        steps = torch.zeros(p_count, dtype=torch.long, device=dev)
        evaluations = torch.zeros(p_count, dtype=torch.long, device=dev)
        records: list[_Step] = []          # the steps' sub-intervals, refined once the whole path is known

        f_now, grad_now = self._evaluate(target, paths.sample, lambda a, b: current[a:b], sample_shape)
        evaluations += 1
        trajectory = [f_now.clone()]
        vertices = [current.clone()] if self.return_path else []
        velocity = grad_now.clone()
        offsets = (torch.arange(per_group, device=dev) * n_groups).view(1, per_group, 1)
        k = 0
        while True:
            active = torch.nonzero(remaining.any(1)).flatten()
            if active.numel() == 0:
                break
            # --- choose the features of this step (momentum only steers the choice)
            if self.momentum > 0 and k > 0:
                velocity[active] = self.momentum * velocity[active] + (1 - self.momentum) * grad_now[active]
            steer = velocity[active] if self.momentum > 0 else grad_now[active]
            x_k = current[active]
            to_go = paths.end[active] - x_k
            alpha = group_view(steer * to_go).sum(1)                                   # (A, G)
            if self.selection == "signed":
                alpha = alpha * paths.sign[active].unsqueeze(1)
            else:
                alpha = alpha.abs()
            alpha = torch.where(remaining[active], alpha, torch.full_like(alpha, -math.inf))
            order = torch.argsort(-alpha.double(), dim=1, stable=True)[:, :s]          # (A, s) best first
            valid = torch.gather(remaining[active], 1, order)                         # last step may be short
            # element indices of the selected groups (padded entries point at element 0 with zero displacement)
            elem = (order.unsqueeze(1) + offsets).reshape(order.shape[0], -1)          # (A, per_group * s)
            elem_valid = valid.unsqueeze(1).expand(-1, per_group, -1).reshape(order.shape[0], -1)
            elem = torch.where(elem_valid, elem, torch.zeros_like(elem))
            moved = torch.zeros(active.numel(), d, dtype=torch.long, device=dev).scatter_add_(1, elem,
                                                                               elem_valid.long()) > 0
            # --- the infinitesimal constraint: shorten the step to l1 norm eta (same direction)
            full = torch.where(moved, to_go, torch.zeros_like(to_go))
            theta = (cap[active] / full.abs().double().sum(1).clamp_min(1e-300)).clamp(max=1.0)
            theta = torch.where(steps[active] >= max_steps[active] - 1, torch.ones_like(theta), theta)
            arrive = (theta >= 1.0).unsqueeze(1)
            x_next = torch.where(moved, torch.where(arrive, paths.end[active], x_k + theta.to(dtype).unsqueeze(1)
                                                    * full), x_k)
            dx = x_next - x_k                                                          # (A, D), zero off `moved`
            dx_sub = torch.gather(dx, 1, elem) * elem_valid                            # (A, E), 0 on padding

            # --- bookkeeping of the order: features are listed by the step they start moving in
            rows = active.unsqueeze(1).expand_as(order)
            new = valid & (feature_step[rows, order] < 0)
            rank = moved_so_far[active].unsqueeze(1) + new.long().cumsum(1) - 1
            feature_step[rows[new], order[new]] = k
            rank_in_order[rows[new], order[new]] = rank[new]
            moved_so_far[active] += new.sum(1)

            # --- the vertex (its gradient serves the next selection and both neighbouring steps), then the credit
            samples = paths.sample[active]
            f_next, grad_next = self._evaluate(target, samples, lambda a, b: x_next[a:b], sample_shape)
            evaluations[active] += 1
            g0 = torch.gather(grad_now[active], 1, elem) * dx_sub                      # integrand at t = 0, (A, E)
            g1 = torch.gather(grad_next, 1, elem) * dx_sub                             # ... at t = 1
            if self.quadrature == "left":
                _scatter_rows(credit, active, elem, g0.double() * elem_valid)
                # free indicator of the left rule's error (left minus trapezoid): exact for a linear integrand
                _scatter_rows(difference, active, elem, 0.5 * (g0 - g1).double() * elem_valid)
            else:
                record = _Step(rows=active, elem=elem, valid=elem_valid,
                               after=torch.gather(x_next, 1, elem), dx_sub=dx_sub)
                spent = self._initial_intervals(record, target, paths.sample, x_k, dx, dx_sub, g0, g1,
                                                f_now[active], f_next, sample_shape)
                evaluations[active] += spent
                records.append(record)
            current[active] = x_next
            remaining[active] = (group_view(paths.end[active] - x_next) != 0).any(1)
            f_now[active] = f_next
            grad_now[active] = grad_next
            steps[active] += 1
            trajectory.append(f_now.clone())
            if self.return_path:
                vertices.append(current.clone())
            k += 1

        unresolved = torch.zeros(p_count, dtype=torch.long, device=dev)
        if self.quadrature == "adaptive":
            self._refine(records, paths, target, sample_shape, steps, credit, difference, evaluations, unresolved)

        # unmoved features (nothing to move) go last, in index order
        order_out = torch.argsort(torch.where(rank_in_order >= 0, rank_in_order,
                                              n_groups + torch.arange(n_groups, device=dev).expand(p_count, -1)),
                                  dim=1, stable=True)
        traj = torch.stack(trajectory, 1)                                         # (P, K+1) float64
        path_residual = credit.sum(1) - (traj[:, -1] - traj[:, 0])
        out = {"credit": credit, "difference": difference, "trajectory": traj.to(dtype), "path_steps": steps,
               "order": order_out, "feature_step": feature_step, "path_residual": path_residual,
               "start_score": traj[:, 0], "end_score": traj[:, -1], "gradient_evaluations": evaluations,
               "max_credit_error": difference.abs().amax(1),
               "relative_credit_error": difference.abs().sum(1) / credit.abs().sum(1).clamp_min(1e-300),
               "unresolved_intervals": unresolved, "step_size": s, "eta": cap.to(dtype)}
        if self.return_path:
            out["path"] = torch.stack(vertices, 1)                                 # (P, K+1, D)
        return out

    # ------------------------------------------------------------------ the adaptive quadrature (SAMP++)
    def _initial_intervals(self, record: "_Step", target: Target, all_samples: torch.Tensor, x_k: torch.Tensor,
                           dx: torch.Tensor, dx_sub: torch.Tensor, g0: torch.Tensor, g1: torch.Tensor,
                           f_k: torch.Tensor, f_next: torch.Tensor, sample_shape: tuple[int, ...]) -> torch.Tensor:
        """``substeps`` equal sub-intervals per step with their midpoints; fills ``record``'s interval table.
        Returns the gradient evaluations spent per row (A,)."""
        a_count, e_count = g0.shape
        dev = g0.device
        n0 = self.substeps
        owner = torch.arange(a_count, device=dev).repeat_interleave(n0)
        lo = (torch.arange(n0, device=dev, dtype=torch.float64) / n0).repeat(a_count)
        h = torch.full((a_count * n0,), 1.0 / n0, dtype=torch.float64, device=dev)
        # interior boundaries, then midpoints, in one streamed batch
        b_owner = torch.arange(a_count, device=dev).repeat_interleave(n0 - 1)
        b_t = (torch.arange(1, n0, device=dev, dtype=torch.float64) / n0).repeat(a_count)
        who = torch.cat([b_owner, owner])
        ts = torch.cat([b_t, lo + 0.5 * h])

        def make(a: int, b: int) -> torch.Tensor:
            return x_k[who[a:b]] + ts[a:b].to(dx.dtype).unsqueeze(1) * dx[who[a:b]]

        f_nodes, g_nodes = self._evaluate(target, all_samples[record.rows][who], make, sample_shape,
                                          restrict=(record.elem[who], dx_sub[who]))
        n_inner = b_owner.numel()
        f_ends = torch.cat([f_k.unsqueeze(1), f_nodes[:n_inner].view(a_count, n0 - 1), f_next.unsqueeze(1)], 1)
        g_ends = torch.cat([g0.unsqueeze(1), g_nodes[:n_inner].view(a_count, n0 - 1, e_count), g1.unsqueeze(1)], 1)
        record.owner, record.lo, record.h = owner, lo, h
        record.depth = torch.zeros(a_count * n0, dtype=torch.long, device=dev)
        record.fa, record.fb = f_ends[:, :-1].reshape(-1), f_ends[:, 1:].reshape(-1)
        record.fm = f_nodes[n_inner:]
        record.ga, record.gb = g_ends[:, :-1].reshape(-1, e_count), g_ends[:, 1:].reshape(-1, e_count)
        record.gm = g_nodes[n_inner:]
        return torch.bincount(who, minlength=a_count)

    def _refine(self, records: list["_Step"], paths: _Paths, target: Target, sample_shape: tuple[int, ...],
                steps: torch.Tensor, credit: torch.Tensor, difference: torch.Tensor, evaluations: torch.Tensor,
                unresolved: torch.Tensor) -> None:
        """Second pass over the finished path: refine every step until each moved feature's estimated error meets
        its share of the tolerance, then add the credits and the estimates (coarse rule minus reported rule) to
        ``credit`` / ``difference``.

        Feature j's allowance on a step is ``rtol/2 (|c_j| + floor / n_j)``: ``c_j`` its credit on the step, ``n_j``
        the number of steps it moves in, ``floor = mean_i |a_i|`` of the path's first-pass credits (the rule on the
        initial sub-intervals). A step is refined until the sum of its features' |estimates| and its residual are
        each within the sum of their allowances, so over the path the estimated l1 error is at most
        ``rtol/2 (sum_steps ||c_step||_1 + ||a_first||_1)``. Steps are processed in groups (the path is replayed
        from its start: the points are bit-identical to the first pass's); a group's sub-intervals are freed once it
        is done, so memory does not grow with the number of steps.
        """
        p_count, d = credit.shape
        dev = credit.device
        eps = self._eps(paths.start.dtype)
        moves = torch.zeros(p_count, d, dtype=torch.float64, device=dev)
        first = torch.zeros(p_count, d, dtype=torch.float64, device=dev)
        for rec in records:
            _scatter_rows(moves, rec.rows, rec.elem, rec.valid.double())
            _scatter_rows(first, rec.rows, rec.elem, rec.per_row(rec.rules(eps)[0]))
        floor = first.abs().sum(1) / (moves > 0).sum(1).clamp_min(1).double()      # (P,) mean |a_i|, first pass
        del first
        current = paths.start.clone()
        # consecutive steps are refined together until their paths fill a batch or their moved elements reach
        # _GROUP_ELEMENTS: full batches for small models, bounded memory for large steps
        group: list[_Step] = []
        rows = elements = 0
        for i, rec in enumerate(records):
            group.append(rec)
            rows += rec.rows.numel()
            elements += rec.elem.numel()
            if rows >= self._flush_size() or elements >= _GROUP_ELEMENTS or i == len(records) - 1:
                current = self._refine_group(group, current, paths, target, sample_shape, moves, floor, eps,
                                             credit, difference, evaluations, unresolved)
                group, rows, elements = [], 0, 0

    def _flush_size(self) -> int:
        batch = self.evaluator.batch_size
        return batch if isinstance(batch, int) else 64

    def _refine_group(self, group: list["_Step"], current: torch.Tensor, paths: _Paths, target: Target,
                      sample_shape: tuple[int, ...], moves: torch.Tensor, floor: torch.Tensor, eps: float,
                      credit: torch.Tensor, difference: torch.Tensor, evaluations: torch.Tensor,
                      unresolved: torch.Tensor) -> torch.Tensor:
        """Refine consecutive steps ``group`` (starting at ``current`` (P, D)) to their tolerance, write their
        credits and estimates, free their sub-intervals; returns the point after the group's last step."""
        dev = current.device
        rtol = self.rtol
        # start and displacement of every step of the group (A, D) each: the replayed path
        starts, moves_dx = [], []
        for rec in group:
            base = current[rec.rows]
            starts.append(base)
            moves_dx.append(rec.dense_dx(base))
            current[rec.rows] = rec.advance(base)
        share = [moves[rec.rows.unsqueeze(1), rec.elem].clamp_min(1.0) for rec in group]   # (A, E) n_j
        while True:
            wanted = []
            for rec, n_j in zip(group, share):
                t2, diff, g_noise, close, c_noise = rec.rules(eps)
                if rtol is None:
                    wanted.append(torch.zeros(rec.owner.numel(), dtype=torch.bool, device=dev))
                    continue
                c_step = rec.per_row(t2)                                             # (A, E)
                # allowance per moved feature; the step's budget is their sum (an l1 criterion: a maximum over
                # 10^4 features with rough integrands would refine nearly every sub-interval to the bottom)
                tol = 0.5 * rtol * (c_step.abs() + floor[rec.rows].unsqueeze(1) / n_j) * rec.valid
                allowed = tol.sum(1)                                                 # (A,)
                estimate = (rec.per_row(diff).abs() - rec.per_row(g_noise)).clamp_min(0).sum(1)
                failing = estimate > allowed
                residual = rec.per_row(close.unsqueeze(1))[:, 0]
                unclosed = residual.abs() > allowed + rec.per_row(c_noise.unsqueeze(1))[:, 0]
                # bisect the sub-intervals above their length's share of a failing budget (one exists whenever a
                # budget fails: the shares add up to it)
                part = ((diff.abs() - g_noise).clamp_min(0) * rec.valid[rec.owner]).sum(1)      # (I,)
                over = failing[rec.owner] & (part > allowed[rec.owner] * rec.h)
                over_sum = unclosed[rec.owner] & (close.abs() - c_noise > allowed[rec.owner] * rec.h)
                wanted.append(over | over_sum)
            refine = [w & (rec.depth < self.max_refinements) for w, rec in zip(wanted, group)]
            if not any(bool(r.any()) for r in refine):
                break
            self._bisect(group, refine, starts, moves_dx, paths, target, sample_shape, evaluations)
        for rec, w in zip(group, wanted):
            t2, diff = rec.rules(eps)[:2]
            _scatter_rows(credit, rec.rows, rec.elem, rec.per_row(t2))
            _scatter_rows(difference, rec.rows, rec.elem, rec.per_row(diff))
            unresolved.index_add_(0, rec.rows[rec.owner[w]], torch.ones(int(w.sum()), dtype=torch.long, device=dev))
            rec.release()
        return current

    def _bisect(self, group: list["_Step"], refine: list[torch.Tensor], starts: list[torch.Tensor],
                moves_dx: list[torch.Tensor], paths: _Paths, target: Target, sample_shape: tuple[int, ...],
                evaluations: torch.Tensor) -> None:
        """Evaluate the quarter points of the sub-intervals marked in ``refine`` (one streamed batch) and split each
        in two halves."""
        jobs = []
        for rec, want, base, dx in zip(group, refine, starts, moves_dx):
            idx = torch.nonzero(want).flatten()
            if idx.numel():
                jobs.append((rec, idx, base, dx))
        if not jobs:
            return
        owners = [rec.owner[idx].repeat(2) for rec, idx, _, _ in jobs]
        ts = [torch.cat([rec.lo[idx] + 0.25 * rec.h[idx], rec.lo[idx] + 0.75 * rec.h[idx]]) for rec, idx, _, _ in jobs]
        offsets = [0]
        for o in owners:
            offsets.append(offsets[-1] + o.numel())

        def make(a: int, b: int) -> torch.Tensor:
            out = []
            for j in range(bisect.bisect_right(offsets, a) - 1, bisect.bisect_left(offsets, b)):
                lo_, hi_ = max(a, offsets[j]) - offsets[j], min(b, offsets[j + 1]) - offsets[j]
                _, _, base, dx = jobs[j]
                own, t = owners[j][lo_:hi_], ts[j][lo_:hi_]
                out.append(base[own] + t.to(dx.dtype).unsqueeze(1) * dx[own])
            return torch.cat(out)

        samples = torch.cat([paths.sample[rec.rows[o]] for (rec, _, _, _), o in zip(jobs, owners)])
        elem = torch.cat([rec.elem[o] for (rec, _, _, _), o in zip(jobs, owners)])
        dx_sub = torch.cat([rec.dx_sub[o] for (rec, _, _, _), o in zip(jobs, owners)])
        f_new, g_new = self._evaluate(target, samples, make, sample_shape, restrict=(elem, dx_sub))
        for j, (rec, idx, _, _) in enumerate(jobs):
            m = idx.numel()
            a = offsets[j]
            evaluations.index_add_(0, rec.rows[rec.owner[idx]],
                                   torch.full((m,), 2, dtype=torch.long, device=evaluations.device))
            rec.split(idx, f_new[a:a + m], f_new[a + m:a + 2 * m], g_new[a:a + m], g_new[a + m:a + 2 * m])

    def _eps(self, work: torch.dtype) -> float:
        """Rounding unit of the gradients: the coarser of the work dtype's and the model's."""
        eps = float(torch.finfo(work).eps)
        model_dtype = self.evaluator.placement.dtype
        if model_dtype is not None and model_dtype.is_floating_point:
            eps = max(eps, float(torch.finfo(model_dtype).eps))
        return eps

    # ------------------------------------------------------------------ model evaluations
    def _evaluate(self, target: Target, samples: torch.Tensor, make: Callable[[int, int], torch.Tensor],
                  sample_shape: tuple[int, ...], restrict: tuple[torch.Tensor, torch.Tensor] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores (float64, (n,)) and gradients at n points ``make(a, b) -> (b - a, D)`` of samples ``samples``.

        ``restrict=(elem (n, E), dx_sub (n, E))``: return ``(grad * dx)[elem]`` per point, (n, E), instead of the
        full gradient (n, D).
        """
        n_items = samples.numel()
        dev = samples.device
        scores = torch.empty(n_items, dtype=torch.float64, device=dev)
        out: torch.Tensor | None = None

        def batch(a: int, b: int) -> torch.Tensor:
            return make(a, b).view(b - a, *sample_shape)

        def score(o: torch.Tensor, a: int, b: int) -> torch.Tensor:
            return target.score(o, samples[a:b], kind=self.score)  # type: ignore[arg-type]

        for a, b, sc, g in self.evaluator.gradient_chunks(n_items, batch, score, sample_shape=sample_shape,
                                                          desc=self.name):
            scores[a:b] = sc.double()
            flat = g.reshape(b - a, -1)
            if restrict is not None:
                elem, dx_sub = restrict
                flat = torch.gather(flat, 1, elem[a:b]) * dx_sub[a:b]
            if out is None:
                out = torch.empty(n_items, flat.shape[1], dtype=flat.dtype, device=dev)
            out[a:b] = flat
        if out is None:  # no points (nothing to evaluate)
            width = restrict[0].shape[1] if restrict is not None else math.prod(sample_shape)
            out = torch.empty(0, width, dtype=torch.float32, device=dev)
        return scores, out


def _choice(value: Any, allowed: tuple[str, ...], name: str) -> str:
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value.lower()


register_method(SAMP)


@register_method
class SAMPPlusPlus(SAMP):
    """SAMP++: SAMP with the infinitesimal constraint (an l1 bound on every step, ``eta_fraction=0.5``), the momentum
    strategy (``momentum=0.5``, selection only) and per-feature line integrals to ``rtol=0.02`` with a-posteriori
    error estimates. Same arguments, attribution and extras as :class:`SAMP`."""

    name = "samp++"
    description = ("SAMP++: SAMP with the infinitesimal constraint (l1 bound per step), momentum, and per-feature "
                   "line integrals with error estimates.")
    default_momentum = 0.5
    default_quadrature = "adaptive"
    default_rtol = 0.02
    default_eta_fraction = 0.5
