"""Blur Integrated Gradients (Xu, Venugopalan, Sundararajan, "Attribution in Scale and Space", CVPR 2020).

The path runs through Gaussian blurs of the input, from the input itself (sigma = 0) to a heavily blurred copy
(sigma = ``max_sigma``): removing information by blurring rather than by interpolating towards a baseline image, so
no artificial baseline is needed. With ``sigma_i = i * max_sigma / n`` and ``p_i = blur(x, sigma_i)``,

    attribution = sum_{i=0}^{n-1} grad f(p_i) * (p_i - p_{i+1}),

a Riemann sum of the path integral from the most blurred point to x, so ``sum(a) ~ f(x) - f(blur(x, max_sigma))``.
The authors' reference code multiplies the gradient by a finite-difference derivative of the blur w.r.t. sigma
times the sigma step; we take the exact increment ``p_i - p_{i+1}`` of the path (the two differ by O(step^2) and the
increment makes the sum telescope exactly for linear models). Defaults are the reference's: 100 steps and
``max_sigma = 50`` px at 224 px, scaled with the image side (6.25 px at 28 x 28).

Every (image, step) gradient goes through the shared evaluator; each chunk builds its blurred inputs on the fly, so
memory does not grow with the number of steps.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ..core import Method, Target, accumulate_rows, item_gradients, register_method
from ..core.baselines import gaussian_blur
from ..core.limits import Cost
from ..core.validation import check_choice, check_positive_float, check_positive_int


@register_method
class BlurIG(Method):
    """Blur IG.

    Args:
        n_steps: blur levels along the path (reference: 100).
        max_sigma: std in pixels of the most blurred point; ``None`` = 50 * max(H, W) / 224 (reference: 50 at 224).
        score: ``"output"`` (raw output), ``"softmax"`` or ``"log_softmax"``.
    Attribution: (N, C, H, W), sum ~ f(x) - f(blur(x, max_sigma)); saliency = sum over channels.
    Extras: ``sigmas`` (n_steps + 1,), ``path_scores`` (N, n_steps) f at p_0..p_{n-1}, ``end_point`` (N, C, H, W).
    """

    name = "blur_ig"
    description = "Blur IG: integrated gradients along a path of increasingly blurred inputs (Xu et al. 2020)."
    saliency_reduction = "sum"

    def __init__(self, model: Any, *, n_steps: int = 100, max_sigma: float | None = None, score: str = "output",
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.n_steps = check_positive_int(n_steps, "n_steps")
        if max_sigma is not None:
            try:  # sigma 0 (or NaN) would make every point of the path the input itself: all-zero attributions
                check_positive_float(max_sigma, "max_sigma")
            except (TypeError, ValueError):
                raise ValueError(f"max_sigma must be a positive number of pixels or None, got {max_sigma!r}") from None
        self.max_sigma = max_sigma
        self.score = check_choice(score, "score", ("output", "softmax", "log_softmax"))

    def cost(self, input_shape: Sequence[int] | None) -> Cost:
        """N x n_steps gradient evaluations; memory: the (N, n_steps) path scores and a few copies of the batch."""
        n = 1 if input_shape is None else int(input_shape[0])
        d = 0 if input_shape is None else math.prod(input_shape[1:])
        return Cost(evaluations=n * self.n_steps, bytes=8.0 * self.n_steps + 4.0 * n * self.n_steps + 12.0 * n * d,
                    param="n_steps", value=self.n_steps, detail=f"{n} input(s) x {self.n_steps} steps")

    def params(self) -> dict[str, Any]:
        return {"n_steps": self.n_steps, "max_sigma": self.max_sigma, "score": self.score}

    def sigmas(self, height: int, width: int) -> torch.Tensor:
        """(n_steps + 1,) blur levels from 0 to the maximum, float64."""
        top = float(self.max_sigma) if self.max_sigma is not None else 50.0 * max(height, width) / 224.0
        return torch.linspace(0.0, top, self.n_steps + 1, dtype=torch.float64)

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        n = x.shape[0]
        sig = self.sigmas(x.shape[-2], x.shape[-1])
        total = torch.zeros_like(x)
        scores = torch.zeros(n, self.n_steps, dtype=x.dtype, device=x.device)

        cache: dict[tuple[int, int], torch.Tensor] = {}  # blurred points of the current chunk and the next one

        def blur(i: int, k: int) -> torch.Tensor:
            if (i, k) not in cache:
                cache[(i, k)] = gaussian_blur(x[i:i + 1], float(sig[k]))[0]
            return cache[(i, k)]

        def build(s: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            return torch.stack([blur(int(i), int(j)) for i, j in zip(s, k)])

        for s, k, sc, g in item_gradients(self.evaluator, target, n, self.n_steps, build, sample_shape=x.shape[1:],
                                          score_kind=self.score, desc=self.name):
            pairs = [(int(i), int(j)) for i, j in zip(s, k)]
            step = torch.stack([blur(i, j) - blur(i, j + 1) for i, j in pairs])
            for key in pairs:
                cache.pop(key, None)  # only p_{k+1} of the last items is kept for the next chunk
            accumulate_rows(total, s, g * step)
            scores[s, k] = sc
        end = torch.stack([blur(i, self.n_steps) for i in range(n)])
        return total, {"sigmas": sig, "path_scores": scores, "end_point": end}
