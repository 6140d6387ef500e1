"""Integrated Gradients (Sundararajan et al., 2017) on the shared batched evaluator.

attribution = (x - b) * sum_k w_k * grad f(b + alpha_k (x - b)), with the quadrature (alpha_k, w_k) of Captum's
``method`` options, so the result agrees with ``captum.attr.IntegratedGradients`` to float32 rounding; the evaluator
streams the N x steps gradient evaluations in chunks of ``batch_size`` across images and steps together.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import numpy as np
import scipy.special
import torch

from ..core import Method, Target, accumulate_rows, item_gradients, limits, register_method
from ..core.baselines import BaselineLike, check_baseline, describe_baseline, make_baseline
from ..core.limits import Cost
from ..core.validation import check_bool, check_choice, check_positive_float, check_positive_int

QUADRATURES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
SCORES = ("output", "softmax", "log_softmax")
# Gauss-Legendre rules up to this size come from NumPy's leggauss (the values Captum uses, bit for bit); larger ones
# from SciPy's roots_legendre, which needs O(n) memory instead of leggauss' dense n x n companion matrix (6000 nodes:
# 0.6 s and ~100 KB instead of 11 s and 0.86 GB).
_NUMPY_GAUSS_LEGENDRE = 256
# The rule still costs O(n^2) time (8192 nodes: ~1.2 s); beyond a few hundred nodes it is no more accurate for IG than
# a Riemann rule of the same size, whose cost is O(n).
MAX_GAUSS_LEGENDRE = 8192


def check_quadrature(n_steps: Any, method: Any) -> int:
    """Validate a quadrature request without building it; returns ``n_steps`` as an int.

    Raises:
        ValueError: unknown ``method``, ``n_steps < 1``, ``riemann_trapezoid`` with one step, or a Gauss-Legendre rule
            of more than :data:`MAX_GAUSS_LEGENDRE` nodes.
    """
    n = check_positive_int(n_steps, "n_steps")
    check_choice(method, "method", QUADRATURES)
    if method == "riemann_trapezoid" and n < 2:
        raise ValueError("riemann_trapezoid needs n_steps >= 2")
    if method == "gausslegendre" and n > MAX_GAUSS_LEGENDRE:
        raise ValueError(f"n_steps={n} with method='gausslegendre' exceeds {MAX_GAUSS_LEGENDRE} nodes: building the "
                         "rule costs O(n^2) time and adds no accuracy at this size; use method='riemann_trapezoid' "
                         f"(O(n)) or n_steps <= {MAX_GAUSS_LEGENDRE}")
    return n


@functools.lru_cache(maxsize=8)
def _rule(n: int, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    if method == "gausslegendre":
        if n <= _NUMPY_GAUSS_LEGENDRE:
            nodes, weights = np.polynomial.legendre.leggauss(n)
        else:
            nodes, weights = scipy.special.roots_legendre(n)
        return torch.from_numpy(0.5 * (nodes + 1.0)), torch.from_numpy(0.5 * weights)
    if method == "riemann_trapezoid":
        alphas = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
        w = torch.full((n,), 1.0 / (n - 1), dtype=torch.float64)
        w[0] = w[-1] = 0.5 / (n - 1)
        return alphas, w
    offsets = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}
    alphas = (torch.arange(n, dtype=torch.float64) + offsets[method]) / n
    return alphas, torch.full((n,), 1.0 / n, dtype=torch.float64)


def quadrature(n_steps: int, method: str = "gausslegendre") -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes ``alpha`` in [0, 1] and weights ``w`` (both (n_steps,), float64) approximating integrals over [0, 1].

    ``gausslegendre`` maps the Legendre nodes from [-1, 1] (at most :data:`MAX_GAUSS_LEGENDRE` nodes); the Riemann
    rules use ``n_steps`` equal cells. ``riemann_trapezoid`` is the textbook rule (weights 1/(n-1), halved at the
    ends, summing to 1); Captum's weights are 1/n with halved ends and sum to (n-1)/n, so its trapezoid attributions
    are smaller by (n-1)/n. The tables (16 bytes per step) are checked against :mod:`pathxai.core.limits` first.
    """
    n = check_quadrature(n_steps, method)
    limits.check(Cost(bytes=16.0 * n, param="n_steps", value=n, detail=f"a {n}-node quadrature rule"),
                 "quadrature", warn=False)
    alphas, weights = _rule(n, method)
    return alphas.clone(), weights.clone()  # callers may modify their copy; the cached rule stays intact


@register_method
class IntegratedGradients(Method):
    """Integrated Gradients.

    Args:
        n_steps: quadrature points along the straight path (Captum's default 50).
        method: quadrature rule, one of :data:`QUADRATURES`.
        baseline: reference input (see :func:`pathxai.core.make_baseline`), default zeros (black in [0, 1] inputs).
        score: explain the raw output (``"output"``, Captum's convention), ``"softmax"`` or ``"log_softmax"``.
        return_delta: also compute the completeness residual sum(a) - (f(x) - f(b)) (2N more forward passes).
    Attribution: (N, C, H, W) (or the input's shape).
    """

    name = "ig"
    description = "Integrated Gradients: path integral of gradients along the straight line from a baseline."
    input_ndim = (2, 3, 4)
    input_expected = "(N, C, H, W) or (N, L, D) or (N, D)"
    cost_param = "n_steps"

    def __init__(self, model: Any, *, n_steps: int = 50, method: str = "gausslegendre",
                 baseline: BaselineLike = "zero", blur_sigma: float = 10.0, score: str = "output",
                 return_delta: bool = False, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.n_steps = check_quadrature(n_steps, method)  # validates the rule early, without building it
        self.method = method
        self.baseline = check_baseline(baseline)
        self.blur_sigma = check_positive_float(blur_sigma, "blur_sigma")
        self.score = check_choice(score, "score", SCORES)
        self.return_delta = check_bool(return_delta, "return_delta")

    def cost(self, input_shape: Sequence[int] | None) -> Cost:
        """N x n_steps gradient evaluations (+ 2N forward with ``return_delta``); memory: the quadrature rule, the
        (N, n_steps) path scores and four copies of the batch (baseline, difference, accumulator, attribution)."""
        n = 1 if input_shape is None else int(input_shape[0])
        d = 0 if input_shape is None else math.prod(input_shape[1:])
        evaluations = n * self.n_steps + (2 * n if self.return_delta else 0)
        memory = 24.0 * self.n_steps + 4.0 * n * self.n_steps + 16.0 * n * d
        return Cost(evaluations=evaluations, bytes=memory, param="n_steps", value=self.n_steps,
                    detail=f"{n} input(s) x {self.n_steps} steps")

    def params(self) -> dict[str, Any]:
        return {"n_steps": self.n_steps, "method": self.method, "baseline": describe_baseline(self.baseline),
                "score": self.score}

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        b = make_baseline(x, self.baseline, blur_sigma=self.blur_sigma, seed=self.seed)
        alphas, weights = quadrature(self.n_steps, self.method)
        alphas, weights = alphas.to(x), weights.to(x)   # x's device and dtype
        diff = x - b
        total = torch.zeros_like(x)
        path_scores = torch.zeros(x.shape[0], self.n_steps, dtype=x.dtype, device=x.device)

        def build(s: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            shape = (-1,) + (1,) * (x.ndim - 1)
            return b[s] + alphas[k].view(shape) * diff[s]

        for s, k, scores, grads in item_gradients(self.evaluator, target, x.shape[0], self.n_steps, build,
                                                  sample_shape=x.shape[1:], score_kind=self.score,
                                                  desc="integrated gradients"):
            accumulate_rows(total, s, grads, weights[k])
            path_scores[s, k] = scores
        attribution = diff * total
        extras: dict[str, Any] = {"baseline": b, "alphas": alphas, "path_scores": path_scores}
        if self.return_delta:
            ends = self.evaluator.forward(torch.cat([x, b]), desc="completeness")
            f = target.score(ends, torch.cat([torch.arange(x.shape[0])] * 2), kind=self.score)  # type: ignore[arg-type]
            delta = attribution.flatten(1).sum(1) - (f[: x.shape[0]] - f[x.shape[0]:])
            extras["delta"] = delta
        return attribution, extras
