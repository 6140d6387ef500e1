"""Single-gradient and noise-averaged gradient methods: saliency, gradient x input, SmoothGrad."""
from __future__ import annotations

from typing import Any

import torch

from ..core import Method, Target, accumulate_rows, item_generator, item_gradients, register_method
from ..core.streaming import RunningMoments
from ..core.validation import check_choice, check_fraction, check_positive_int

SCORES = ("output", "softmax", "log_softmax")
AGGREGATES = ("mean", "mean_square", "variance")


@register_method
class Saliency(Method):
    """Vanilla gradient (Simonyan et al., 2014). Attribution: (N, C, H, W) gradient; saliency = max |grad| over C."""

    name = "saliency"
    description = "Gradient of the target score w.r.t. the input (vanilla saliency)."
    saliency_reduction = "max_abs"
    input_ndim = (2, 3, 4)
    input_expected = "(N, C, H, W) or (N, L, D) or (N, D)"

    def __init__(self, model: Any, *, score: str = "output", **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.score = check_choice(score, "score", SCORES)

    def params(self) -> dict[str, Any]:
        return {"score": self.score}

    def gradient(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, torch.Tensor]:
        """(grad (N, ...), score (N,)) of the target score at ``x``."""
        grad = torch.empty_like(x)
        scores = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
        for s, _, sc, g in item_gradients(self.evaluator, target, x.shape[0], 1, lambda s, k: x[s],
                                          sample_shape=x.shape[1:], score_kind=self.score, desc=self.name):
            grad[s] = g
            scores[s] = sc
        return grad, scores

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        grad, scores = self.gradient(x, target)
        return grad, {"score": scores}


@register_method
class GradientXInput(Saliency):
    """Gradient x input (Shrikumar et al., 2016). Attribution: (N, C, H, W) = x * grad f(x); saliency = sum over C."""

    name = "gradient_x_input"
    description = "Input times gradient: first-order Taylor contribution of each feature."
    saliency_reduction = "sum"

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        grad, scores = self.gradient(x, target)
        return x * grad, {"score": scores, "gradient": grad}


@register_method
class SmoothGrad(Method):
    """SmoothGrad (Smilkov et al., 2017): the gradient averaged over noisy copies of the input.

    Args:
        n_samples: noisy copies per input (paper: 50).
        noise_level: noise std as a fraction of each input's value range (max - min), the paper's 10-20%.
        aggregate: ``"mean"`` (SmoothGrad), ``"mean_square"`` (SmoothGrad-Squared, Hooker et al.) or
            ``"variance"`` (VarGrad, Adebayo et al.).
    Attribution: (N, C, H, W); saliency = max |.| over channels.
    """

    name = "smoothgrad"
    description = "SmoothGrad: gradients averaged over Gaussian-noised copies of the input."
    stochastic = True
    cost_param = "n_samples"
    saliency_reduction = "max_abs"
    input_ndim = (2, 3, 4)
    input_expected = "(N, C, H, W) or (N, L, D) or (N, D)"
    aggregate_default = "mean"

    def __init__(self, model: Any, *, n_samples: int = 50, noise_level: float = 0.15, score: str = "output",
                 aggregate: str | None = None, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.n_samples = check_positive_int(n_samples, "n_samples")
        # noise 0 would silently turn SmoothGrad into the plain gradient computed n_samples times
        self.noise_level = check_fraction(noise_level, "noise_level", high=10.0)
        if self.noise_level == 0:
            raise ValueError(f"noise_level must lie in (0.0, 10.0], got {noise_level}")
        self.score = check_choice(score, "score", SCORES)
        self.aggregate = check_choice(self.aggregate_default if aggregate is None else aggregate, "aggregate",
                                      AGGREGATES)

    def params(self) -> dict[str, Any]:
        return {"n_samples": self.n_samples, "noise_level": self.noise_level, "score": self.score,
                "aggregate": self.aggregate}

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        n = x.shape[0]
        flat = x.flatten(1)
        sigma = (flat.amax(1) - flat.amin(1)) * self.noise_level  # (N,)
        sample_shape = x.shape[1:]

        def build(s: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            # drawn in float32 whatever x's dtype: the same noise, so the same explanation, for a float64 input
            noise = torch.stack([torch.randn(sample_shape, device=x.device,
                                             generator=item_generator(self.seed, "smoothgrad",
                                                                      int(i) * self.n_samples + int(j), x.device))
                                 for i, j in zip(s, k)]).to(x.dtype)
            return x[s] + sigma[s].view((-1,) + (1,) * (x.ndim - 1)) * noise

        if self.aggregate == "variance":
            moments = RunningMoments(tuple(x.shape), x.dtype, x.device)  # Welford: no cancellation, O(N) memory
            for s, _, _, g in item_gradients(self.evaluator, target, n, self.n_samples, build,
                                             sample_shape=sample_shape, score_kind=self.score, desc=self.name):
                moments.add(s, g)
            return moments.variance(), {"noise_std": sigma, "mean_gradient": moments.mean}
        total = torch.zeros_like(x)
        for s, _, _, g in item_gradients(self.evaluator, target, n, self.n_samples, build,
                                         sample_shape=sample_shape, score_kind=self.score, desc=self.name):
            accumulate_rows(total, s, g * g if self.aggregate == "mean_square" else g)
        return total / self.n_samples, {"noise_std": sigma}


@register_method
class SmoothGradSquared(SmoothGrad):
    """SmoothGrad-Squared (Hooker et al., 2019): mean of squared gradients over noisy copies. Attribution >= 0."""

    name = "smoothgrad_sq"
    description = "SmoothGrad-Squared: mean squared gradient over noisy copies of the input."
    saliency_reduction = "sum"
    aggregate_default = "mean_square"


@register_method
class VarGrad(SmoothGrad):
    """VarGrad (Adebayo et al., 2018): variance of gradients over noisy copies. Attribution >= 0."""

    name = "vargrad"
    description = "VarGrad: variance of gradients over noisy copies of the input."
    saliency_reduction = "sum"
    aggregate_default = "variance"
