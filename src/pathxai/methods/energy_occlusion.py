"""Energy occlusion: the perturbation view of SOInter (the seed's "energy recalculation" step).

For each input feature i, x^(i) is x with feature i replaced by a baseline (0, the masking value of
:mod:`pathxai.structured`), and the attribution is how much that raises the energy of the black box's own structure ŷ:

- target = output index t (a part of the structure):  a_i = m(x) − m(x^(i)) with the energy margin
  m(x') = E(x', ŷ^{¬t}) − E(x', ŷ) of ŷ's value of t against the flipped value (the other variables held at ŷ);
- ``whole_structure=True`` (the whole structure):     a_i = E(x^(i), ŷ) − E(x, ŷ).

All (sample, feature) pairs are streamed through the energy net in chunks of ``batch_size``.
"""
from __future__ import annotations

from typing import Any

import torch

from ..core import Method, Target, register_method
from ..structured.energy import EnergyNet, harden


@register_method
class EnergyOcclusion(Method):
    """Per-feature energy change under occlusion, for feature vectors (N, D).

    Args:
        model: the structured black box ``(N, D) -> (N, L)`` output probabilities.
        energy: a trained :class:`pathxai.structured.EnergyNet` for that black box (D features, L outputs).
        baseline: value an occluded feature takes (default 0).
        whole_structure: explain the energy of the whole ŷ instead of the target variable's margin.
    Target: an output index t (int or N ints).
    Attribution: (N, D), higher = occluding the feature makes ŷ (its target part) less compatible with the input.
    """

    name = "energy_occlusion"
    description = "Energy occlusion: rise in E(x, ŷ) of a structured black box when each feature is occluded."
    input_ndim = (2,)
    input_expected = "(N, D)"

    def __init__(self, model: Any, *, energy: EnergyNet, baseline: float = 0.0, whole_structure: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if not isinstance(energy, EnergyNet):
            raise TypeError(f"energy must be a trained pathxai.structured.EnergyNet, got {type(energy).__name__}")
        if isinstance(baseline, bool) or not isinstance(baseline, (int, float)):
            raise TypeError(f"baseline must be a number, got {baseline!r}")
        self.energy = energy.eval()
        self.baseline = float(baseline)
        self.whole_structure = bool(whole_structure)

    def params(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "whole_structure": self.whole_structure}

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        n, d = x.shape
        y_hat = harden(self.evaluator.forward(x, desc="predict"))
        if y_hat.ndim != 2:
            raise ValueError(f"the black box must return (N, L) output probabilities, got shape {tuple(y_hat.shape)}")
        self.energy.check(x, y_hat)  # clear error when the energy net does not fit the black box's structure
        if target.classes is None:
            raise ValueError("energy_occlusion needs target as an output index (int or N ints), not a callable")
        classes = target.classes
        y_alt = y_hat.clone()
        y_alt[torch.arange(n), classes] = 1 - y_alt[torch.arange(n), classes]

        def score(xs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            e = self.energy(xs, y_hat[rows])
            return e if self.whole_structure else self.energy(xs, y_alt[rows]) - e

        bs = self.batch_size if isinstance(self.batch_size, int) else 256
        total = n * d
        scores = torch.empty(total)
        with torch.inference_mode():
            base = torch.cat([score(x[i:i + bs], torch.arange(i, min(i + bs, n))) for i in range(0, n, bs)])
            for start in range(0, total, bs):
                items = torch.arange(start, min(start + bs, total))
                rows, feats = items // d, items % d
                xs = x[rows].clone()
                xs[torch.arange(len(items)), feats] = self.baseline
                scores[start:start + len(items)] = score(xs, rows)
        perturbed = scores.view(n, d)
        attribution = perturbed - base[:, None] if self.whole_structure else base[:, None] - perturbed
        return attribution, {"energy_evaluations": total + n, "reference": base}
