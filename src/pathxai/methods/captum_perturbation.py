"""LIME and Kernel SHAP through Captum (``captum.attr.Lime`` / ``captum.attr.KernelShap``), under pathxai's contract.

Interpretable features: square patches of a ``grid`` x ``grid`` partition spanning all channels for images
(N, C, H, W), every token for sequences (N, L, D), every feature for vectors (N, D); or any feature groups given as a
``groups`` index tensor of the per-sample input shape (:mod:`pathxai.structured.groups`), in which case the
attribution is one value per group, (N, G). Each sample draws its perturbations from its own seeded generator
(Captum samples from torch's global RNG, so each sample runs inside ``torch.random.fork_rng()`` seeded from
``item_seed(seed, name, sample)``); the perturbations of one sample go to the model through the shared evaluator, so
``batch_size`` bounds memory and the result does not depend on it.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ..core import Method, Target, register_method
from ..core.limits import Cost
from ..core.seeding import item_seed
from ..core.validation import check_positive_int


def grid_feature_mask(h: int, w: int, grid: int) -> torch.Tensor:
    """(1, 1, H, W) int64 feature ids of a grid x grid patch partition (row-major)."""
    rows = torch.div(torch.arange(h) * grid, h, rounding_mode="floor")
    cols = torch.div(torch.arange(w) * grid, w, rounding_mode="floor")
    return (rows[:, None] * grid + cols[None, :]).view(1, 1, h, w)


class _CaptumPerturbation(Method):
    input_ndim = (2, 3, 4)
    input_expected = "(N, C, H, W), (N, L, D) or (N, D)"
    stochastic = True
    cost_param = "n_samples"
    _captum_cls = ""

    def __init__(self, model: Any, *, n_samples: int = 200, grid: int = 7, groups: torch.Tensor | None = None,
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.n_samples = check_positive_int(n_samples, "n_samples", minimum=2)
        self.grid = check_positive_int(grid, "grid")
        if groups is not None and not isinstance(groups, torch.Tensor):
            raise TypeError(f"groups must be None or an integer tensor of the per-sample input shape, got "
                            f"{type(groups).__name__}")
        self.groups = groups

    def cost(self, input_shape: Sequence[int] | None) -> Cost:
        """N x n_samples forward evaluations; memory: Captum builds all n_samples perturbed copies of one input (and
        their interpretable representations) at once."""
        n = 1 if input_shape is None else int(input_shape[0])
        d = 0 if input_shape is None else math.prod(input_shape[1:])
        return Cost(evaluations=n * self.n_samples, bytes=8.0 * self.n_samples * d, param="n_samples",
                    value=self.n_samples, detail=f"{n} input(s) x {self.n_samples} samples")

    def params(self) -> dict[str, Any]:
        return {"n_samples": self.n_samples, "grid": self.grid, "grouped": self.groups is not None}

    def _make(self, forward: Any) -> Any:
        import captum.attr as ca
        return getattr(ca, self._captum_cls)(forward)

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        if self.groups is not None:
            from ..structured.groups import check_groups
            mask = check_groups(self.groups, x.shape[1:]).unsqueeze(0)
        elif x.ndim == 4:
            h, w = x.shape[2:]
            if self.grid > min(h, w):
                raise ValueError(f"grid={self.grid} exceeds the input's spatial size {h}x{w}")
            mask = grid_feature_mask(h, w, self.grid).expand(1, x.shape[1], h, w)
        elif x.ndim == 3:
            mask = torch.arange(x.shape[1]).view(1, -1, 1).expand(1, *x.shape[1:])
        else:
            mask = torch.arange(x.shape[1]).view(1, -1)
        ev = self.evaluator
        if target.fn is not None:
            fn = target.fn
            forward = lambda inp: fn(ev.forward(inp))  # noqa: E731
        else:
            forward = lambda inp: ev.forward(inp)  # noqa: E731
        explainer = self._make(forward)
        out = []
        for j in range(x.shape[0]):
            tgt = None if target.classes is None else int(target.classes[j])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(item_seed(self.seed, self.name, j))
                a = explainer.attribute(x[j:j + 1], target=tgt, n_samples=self.n_samples, feature_mask=mask,
                                        baselines=0.0, perturbations_per_eval=self.n_samples)
            out.append(a.detach().float())
        attribution = torch.cat(out)
        if self.groups is not None:
            from ..structured.groups import group_mean
            return group_mean(attribution, mask[0]), {"groups": mask[0]}  # every element of a group holds its value
        if x.ndim == 4:
            attribution = attribution[:, :1]  # the same value on every channel of a patch
        return attribution, {}


@register_method
class Lime(_CaptumPerturbation):
    """LIME (Ribeiro et al. 2016) via ``captum.attr.Lime`` (Lasso surrogate, exponential cosine kernel).

    Args:
        n_samples: perturbations per input.  grid: patches per side for images.
        groups: optional (*S) feature-group index tensor (overrides ``grid``).
    Attribution: (N, 1, H, W) for images (one value per patch), (N, L, D) for sequences (one value per token),
    (N, D) for feature vectors; (N, G) with ``groups``.
    """

    name = "lime"
    description = "LIME via Captum: sparse linear surrogate on seeded random patch/feature perturbations."
    _captum_cls = "Lime"


@register_method
class KernelShap(_CaptumPerturbation):
    """Kernel SHAP (Lundberg & Lee 2017) via ``captum.attr.KernelShap``.

    Args:
        n_samples: coalitions per input.  grid: patches per side for images.
        groups: optional (*S) feature-group index tensor (overrides ``grid``).
    Attribution: (N, 1, H, W) for images (one value per patch), (N, L, D) for sequences (one value per token),
    (N, D) for feature vectors; (N, G) with ``groups``.
    """

    name = "kernel_shap"
    description = "Kernel SHAP via Captum: Shapley-kernel weighted regression on seeded coalitions."
    _captum_cls = "KernelShap"
