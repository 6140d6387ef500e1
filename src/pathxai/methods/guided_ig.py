"""Guided Integrated Gradients (Kapishnikov, Venugopalan, Avci, Wedin, Terry, Bolukbasi, "Guided Integrated
Gradients: an Adaptive Path Method for Removing Noise", CVPR 2021).

An adaptive path from the baseline to the input: at each of ``n_steps`` steps the features whose gradient is
*smallest* in absolute value (the ``fraction`` quantile of those that can still move) are moved towards the input
first, until the path has covered 1/n_steps more of the l1 distance; features with large gradients -- often noise
-- are moved later, when the output has saturated. ``max_dist`` bounds how far any feature may run ahead of or lag
behind the straight line (alpha +- max_dist of its way; 1 = unbounded, the paper's plain Guided IG; small values
give the "anchored" variant). Attribution: the gradient at the start of each sub-move times the sub-move, summed
along the path, so ``sum(a) ~ f(x) - f(baseline)``.

Written here from the paper's algorithm; defaults are those of the authors' reference implementation (25 steps,
``fraction=0.25``, ``max_dist=1.0``). The gradient evaluations of one step run for all images of the batch together
through the shared evaluator; the moves between gradients need no model evaluation.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ..core import Method, Target, item_gradients, register_method
from ..core.baselines import BaselineLike, check_baseline, describe_baseline, make_baseline
from ..core.limits import Cost
from ..core.validation import check_choice, check_fraction, check_positive_float, check_positive_int

_EPS = 1e-9


@register_method
class GuidedIG(Method):
    """Guided IG.

    Args:
        n_steps: gradient evaluations along the path (reference: 25).
        fraction: share of the movable features moved in one sub-move, those with the smallest |gradient| (0.25).
        max_dist: how far (in alpha) a feature may deviate from the straight line, in (0, 1] (1.0 = unbounded).
        baseline: start of the path (see ``make_baseline``), default zeros (black).
        score: ``"output"`` (raw output), ``"softmax"`` or ``"log_softmax"``.
    Attribution: (N, C, H, W), sum ~ f(x) - f(baseline); saliency = sum over channels.
    Extras: ``baseline``, ``path_scores`` (N, n_steps) f at the point of each step's gradient.
    """

    name = "guided_ig"
    description = "Guided IG: adaptive path moving low-gradient features first (Kapishnikov et al. 2021)."
    saliency_reduction = "sum"

    def __init__(self, model: Any, *, n_steps: int = 25, fraction: float = 0.25, max_dist: float = 1.0,
                 baseline: BaselineLike = "zero", blur_sigma: float = 5.0, score: str = "output",
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.n_steps = check_positive_int(n_steps, "n_steps")
        self.fraction = check_fraction(fraction, "fraction")
        if self.fraction <= 0:
            raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
        self.max_dist = check_fraction(max_dist, "max_dist")
        if self.max_dist <= 0:
            raise ValueError(f"max_dist must lie in (0, 1], got {max_dist}")
        self.baseline = check_baseline(baseline)
        self.blur_sigma = check_positive_float(blur_sigma, "blur_sigma")
        self.score = check_choice(score, "score", ("output", "softmax", "log_softmax"))

    def cost(self, input_shape: Sequence[int] | None) -> Cost:
        """N x n_steps gradient evaluations; memory: float64 copies of the path state (x, baseline, difference,
        current point, attribution, gradients) and the (N, n_steps) path scores."""
        n = 1 if input_shape is None else int(input_shape[0])
        d = 0 if input_shape is None else math.prod(input_shape[1:])
        return Cost(evaluations=n * self.n_steps, bytes=48.0 * n * d + 4.0 * n * self.n_steps, param="n_steps",
                    value=self.n_steps, detail=f"{n} input(s) x {self.n_steps} steps")

    def params(self) -> dict[str, Any]:
        return {"n_steps": self.n_steps, "fraction": self.fraction, "max_dist": self.max_dist,
                "baseline": describe_baseline(self.baseline), "score": self.score}

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        n = x.shape[0]
        b = make_baseline(x, self.baseline, blur_sigma=self.blur_sigma, seed=self.seed)
        x_in = x.reshape(n, -1).double()
        x_base = b.reshape(n, -1).double()
        diff = x_in - x_base
        current = x_base.clone()
        attribution = torch.zeros_like(x_in)
        l1_total = diff.abs().sum(1)
        scores = torch.zeros(n, self.n_steps, dtype=x.dtype, device=x.device)
        with_alpha = diff != 0
        for step in range(self.n_steps):
            grads = torch.empty_like(x_in)
            for s, _, sc, g in item_gradients(self.evaluator, target, n, 1,
                                              lambda s, _k: current[s].to(x.dtype).view(-1, *x.shape[1:]),
                                              sample_shape=x.shape[1:], score_kind=self.score,
                                              desc=f"{self.name} step {step + 1}"):
                grads[s] = g.reshape(s.numel(), -1).double()
                scores[s, step] = sc
            alpha = (step + 1) / self.n_steps
            alpha_min, alpha_max = max(alpha - self.max_dist, 0.0), min(alpha + self.max_dist, 1.0)
            for i in range(n):
                attribution[i] += self._move(current[i], x_in[i], x_base[i], diff[i], with_alpha[i], grads[i],
                                             float(l1_total[i]), alpha, alpha_min, alpha_max)
        return attribution.to(x.dtype).view_as(x), {"baseline": b, "path_scores": scores}

    def _move(self, cur: torch.Tensor, x_in: torch.Tensor, x_base: torch.Tensor, diff: torch.Tensor,
              with_alpha: torch.Tensor, grad_actual: torch.Tensor, l1_total: float, alpha: float,
              alpha_min: float, alpha_max: float) -> torch.Tensor:
        """Advance one image's point ``cur`` (D,) in place by one step; returns that step's attribution (D,)."""
        x_min = x_base + alpha_min * diff
        x_max = x_base + alpha_max * diff
        l1_target = l1_total * (1.0 - alpha)
        grad = grad_actual.clone()
        gained = torch.zeros_like(cur)
        for _ in range(cur.numel() + 2):  # every pass moves at least one feature to x_max, or ends the step
            old = cur.clone()
            x_alpha = torch.where(with_alpha, (cur - x_base) / torch.where(with_alpha, diff, torch.ones_like(diff)),
                                  torch.full_like(cur, alpha_max))
            lagging = x_alpha < alpha_min
            cur[lagging] = x_min[lagging]                      # features far behind the line catch up first
            l1_current = float((cur - x_in).abs().sum())
            if math.isclose(l1_target, l1_current, rel_tol=_EPS, abs_tol=_EPS):
                gained += (cur - old) * grad_actual
                break
            grad[cur == x_max] = math.inf                      # features that reached their bound stay put
            threshold = torch.quantile(grad.abs(), self.fraction, interpolation="lower")
            chosen = (grad.abs() <= threshold) & torch.isfinite(grad)
            l1_chosen = float(((cur - x_max).abs() * chosen).sum())
            gamma = (l1_current - l1_target) / l1_chosen if l1_chosen > 0 else math.inf
            if gamma > 1:
                cur[chosen] = x_max[chosen]
            else:
                cur[chosen] = cur[chosen] + gamma * (x_max[chosen] - cur[chosen])
            gained += (cur - old) * grad_actual
            if gamma <= 1 or not bool(chosen.any()):
                break
        return gained
