"""Gradient baselines for representations (RELAX paper, Sec. 4.2, Eqs. 14-16).

A gradient explanation needs a scalar; for a representation f(x) in R^D the paper averages the D per-dimension
gradients, which (the gradient being linear) is the gradient of the mean representation component:

    saliency         S    = (1/D) Σ_d ∇f(X)_d = ∇ mean_d f(X)_d                      (Eq. 14)
    smooth saliency  S_SG = (1/M) Σ_m (1/D) Σ_d ∇f(X_m)_d,  X_m = X + noise            (Eq. 16, SmoothGrad)
    guided saliency  S_GB = (1/D) Σ_d ∇_GB f(X)_d                                    (Eq. 15, guided backprop)

so each costs one backward pass per input (per noisy copy), not D. Attributions are the signed (N, C, H, W) gradients
(or (N, L, D) for token embeddings); ``saliency()`` takes max |.| over channels, the usual gradient-saliency view.

Guided backpropagation (Springenberg et al., 2015) zeroes negative gradient signals at every rectifier on the way
back. It is implemented here with forward hooks on ``nn.ReLU`` *and* ``nn.ReLU6`` modules (EfficientNet-Lite's
activation) that route each activation's output through an identity whose backward clamps the incoming gradient at 0;
the rectifier's own backward then applies its usual gate, which together is Captum's ``GuidedBackprop`` rule
(``relu(grad_input)``). Captum hooks only ``nn.ReLU``, so on EfficientNet-Lite it would silently return the plain
gradient; on ReLU networks the two agree (tested). Rectifiers called functionally (``F.relu``) cannot be hooked: a
model without ``nn.ReLU``/``nn.ReLU6`` modules is rejected.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

from ..core import Target, register_method
from .gradients import Saliency, SmoothGrad


def representation_mean(output: torch.Tensor) -> torch.Tensor:
    """(n, ...) representation -> (n,) mean over its components: the scalar whose gradient is Eq. 14."""
    return output.flatten(1).mean(1)


MEAN_TARGET = Target(None, representation_mean)


@register_method
class RepresentationSaliency(Saliency):
    """Eq. 14: gradient of the mean representation component. Attribution (N, C, H, W) (or like x)."""

    name = "rep_saliency"
    description = "Representation saliency (RELAX paper Eq. 14): input gradient averaged over representation dims."
    needs_target = False

    def __init__(self, model: Any, **kwargs: Any) -> None:
        super().__init__(model, score="output", **kwargs)

    def params(self) -> dict[str, Any]:
        return {}

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        grad, scores = self.gradient(x, MEAN_TARGET)
        return grad, {"mean_representation": scores}


@register_method
class RepresentationSmoothSaliency(SmoothGrad):
    """Eq. 16: SmoothGrad of the mean representation component.

    Args:
        n_samples: noisy copies M (SmoothGrad's 50; the RELAX paper does not state M).
        noise_level: noise std as a fraction of each input's value range (SmoothGrad's 10-20%; default 0.15).
    """

    name = "rep_smooth_saliency"
    description = "Smooth representation saliency (RELAX paper Eq. 16): SmoothGrad of the mean representation."
    needs_target = False

    def __init__(self, model: Any, *, n_samples: int = 50, noise_level: float = 0.15, **kwargs: Any) -> None:
        super().__init__(model, n_samples=n_samples, noise_level=noise_level, score="output", aggregate="mean",
                         **kwargs)

    def params(self) -> dict[str, Any]:
        return {"n_samples": self.n_samples, "noise_level": self.noise_level}

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        return super()._explain(x, MEAN_TARGET)


class _ClampNegativeGradient(torch.autograd.Function):
    """Identity forward; backward passes only the positive part of the incoming gradient."""

    @staticmethod
    def forward(ctx: Any, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad.clamp_min(0.0)


RECTIFIERS = (nn.ReLU, nn.ReLU6)


@contextlib.contextmanager
def guided_backprop(model: Any) -> Iterator[int]:
    """Within the context, backward passes through ``model``'s ReLU/ReLU6 modules follow guided backpropagation.

    Yields the number of hooked modules; raises ``ValueError`` if there are none.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"guided backpropagation needs an nn.Module model, got {type(model).__name__}")
    modules = [m for m in model.modules() if isinstance(m, RECTIFIERS)]
    if not modules:
        raise ValueError(f"model {type(model).__name__} has no nn.ReLU / nn.ReLU6 modules: guided backpropagation "
                         "needs its rectifiers as modules (F.relu calls cannot be hooked)")

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return _ClampNegativeGradient.apply(output) if torch.is_grad_enabled() else output

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield len(modules)
    finally:
        for h in handles:
            h.remove()


@register_method
class RepresentationGuidedSaliency(RepresentationSaliency):
    """Eq. 15: guided-backpropagation gradient of the mean representation component (ReLU/ReLU6 modules)."""

    name = "rep_guided_saliency"
    description = "Guided representation saliency (RELAX paper Eq. 15): guided backprop of the mean representation."

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        with guided_backprop(self.model) as n_hooked:
            grad, scores = self.gradient(x, MEAN_TARGET)
        return grad, {"mean_representation": scores, "rectifiers_hooked": n_hooked}


__all__ = ["MEAN_TARGET", "RepresentationGuidedSaliency", "RepresentationSaliency", "RepresentationSmoothSaliency",
           "guided_backprop", "representation_mean"]
