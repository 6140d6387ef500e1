"""Energy occlusion: the perturbation view of SOInter (the seed's "energy recalculation" step).

For each input feature group i (a feature of a vector, a patch of an image, a token of a sequence), x^(i) is x with
group i replaced by a baseline (0, the masking value of :mod:`pathxai.structured`), and the attribution is how much
that raises the energy of the black box's own structure ŷ:

- target = output index t (a part of the structure):  a_i = m(x) − m(x^(i)) with the energy margin
  m(x') = E(x', ŷ^{¬t}) − E(x', ŷ) of ŷ's value of t against the flipped value (the other variables held at ŷ);
- ``region=[...]`` (several output variables, e.g. a region of a map): the same margin against ŷ with the region's
  positive variables cleared (ŷ^{R→0}: the region's foreground pixels / tag-1 tokens set to 0). Our choice: flipping
  the whole region turns its background into foreground, a structure far from anything the energy net saw, and on
  the segmentation task its margin followed the background noise (median rank of the object patches 21.7 of 64,
  random 32); clearing measures the evidence for what ŷ detects in the region (rank 5, see
  benchmarks/results/sointer.md);
- ``whole_structure=True`` (the whole structure):     a_i = E(x^(i), ŷ) − E(x, ŷ).

All (sample, group) pairs are streamed through the energy net in chunks of ``batch_size``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ..core import Method, Target, register_method
from ..core.limits import Cost
from ..core.validation import check_bool, check_finite, check_finite_float, check_input, check_positive_int
from ..structured.energy import BaseEnergy, harden
from ..structured.groups import check_groups, n_groups


@register_method
class EnergyOcclusion(Method):
    """Per-group energy change under occlusion.

    Args:
        model: the structured black box ``(N, *S) -> (N, L)`` output probabilities.
        energy: a trained energy net for that black box (:class:`pathxai.structured.EnergyNet` for vectors,
            :class:`pathxai.structured.GridEnergyNet` for images / token sequences).
        groups: (*S) group index tensor (:mod:`pathxai.structured.groups`); default: every feature of a vector.
        baseline: value an occluded group takes (default 0).
        region: output indices explained together (margin against clearing their positives); then ``target`` may
            be ``None``.
        whole_structure: explain the energy of the whole ŷ instead of a margin; then ``target`` may be ``None``.
    Target: an output index t (int or N ints), or ``None`` with ``region`` / ``whole_structure``.
    Attribution: (N, G), higher = occluding the group makes ŷ (its target part) less compatible with the input.
    """

    name = "energy_occlusion"
    description = "Energy occlusion: rise in E(x, ŷ) of a structured black box when each feature group is occluded."
    # rank 4 (images) is accepted by validate_input but not advertised: the generic image contract cannot build an
    # energy net for its digits classifier
    input_ndim = (2, 3)
    input_expected = "(N, D), (N, L, V) or (N, C, H, W)"

    def __init__(self, model: Any, *, energy: BaseEnergy, groups: torch.Tensor | None = None, baseline: float = 0.0,
                 region: Sequence[int] | None = None, whole_structure: bool = False, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if not isinstance(energy, BaseEnergy):
            raise TypeError(f"energy must be a trained pathxai.structured.EnergyNet, got {type(energy).__name__}")
        if isinstance(baseline, bool) or not isinstance(baseline, (int, float)):
            raise TypeError(f"baseline must be a number, got {baseline!r}")
        check_finite_float(baseline, "baseline")
        if region is not None and whole_structure:
            raise ValueError("pass either region or whole_structure=True, not both")
        self.energy = energy.eval()
        self.groups = groups
        self.baseline = float(baseline)
        if region is not None and (isinstance(region, (str, bytes)) or not hasattr(region, "__iter__")):
            raise TypeError(f"region must be a sequence of output indices, got {region!r}")
        # int(1.5) would silently explain output 1: indices must be integers
        self.region = None if region is None else [check_positive_int(r, "region entries", minimum=0) for r in region]
        if self.region is not None and not self.region:
            raise ValueError("region selects no output variable (got an empty selection); select at least one")
        self.whole_structure = check_bool(whole_structure, "whole_structure")
        if groups is not None and not isinstance(groups, torch.Tensor):
            raise TypeError(f"groups must be None or an integer tensor of the per-sample input shape, got "
                            f"{type(groups).__name__}")

    def cost(self, input_shape: Sequence[int] | None) -> Cost:
        """N black-box forward passes plus N x (G + 1) energy evaluations (two per item for a margin)."""
        n = 1 if input_shape is None else int(input_shape[0])
        if input_shape is None:
            g = 1
        elif self.groups is not None:
            g = int(self.groups.max()) + 1 if self.groups.numel() else 1
        else:
            g = math.prod(input_shape[1:])
        per = 1 if self.whole_structure else 2
        return Cost(evaluations=n + per * n * (g + 1), detail=f"{n} input(s) x {g} groups")

    def params(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "whole_structure": self.whole_structure,
                "region": None if self.region is None else len(self.region),
                "grouped": self.groups is not None}

    def validate_input(self, x: Any) -> torch.Tensor:
        return check_input(x, "x", ndim=(2, 3, 4), expected=self.input_expected)

    def resolve_target(self, x: torch.Tensor, target: Any) -> Target:
        if target is None and (self.whole_structure or self.region is not None):
            return Target(None, None)
        return super().resolve_target(x, target)

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        n = x.shape[0]
        groups = check_groups(self.groups, x.shape[1:])
        g = n_groups(groups)
        y_hat = harden(self.evaluator.forward(x, desc="predict"))
        if y_hat.ndim != 2:
            raise ValueError(f"the black box must return (N, L) output probabilities, got shape {tuple(y_hat.shape)}")
        self.energy.check(x, y_hat)  # clear error when the energy net does not fit the black box's structure
        if target.fn is not None:
            raise ValueError("energy_occlusion needs target as an output index (int or N ints), not a callable")
        y_alt = y_hat.clone()
        if self.region is not None:
            bad = [r for r in self.region if not 0 <= r < y_hat.shape[1]]
            if bad:
                raise ValueError(f"region index {bad[0]} out of range for a structure of {y_hat.shape[1]} outputs")
            y_alt[:, self.region] = 0.0
        elif not self.whole_structure:
            if target.classes is None:
                raise ValueError("energy_occlusion needs target as an output index (int or N ints), or region / "
                                 "whole_structure=True")
            rows = torch.arange(n)
            y_alt[rows, target.classes] = 1 - y_alt[rows, target.classes]

        def score(xs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            e = self.energy(xs, y_hat[rows])
            out = e if self.whole_structure else self.energy(xs, y_alt[rows]) - e
            check_finite(out, "energy", ids=rows, noun="explained sample",
                         cause="the energy network returned NaN/Inf; likely causes: NaN/Inf in its weights or an "
                               "overflow; retrain or reload it")
            return out

        bs = self.batch_size if isinstance(self.batch_size, int) else 256
        total = n * g
        scores = torch.empty(total)
        flat_groups = groups.flatten()
        with torch.inference_mode():
            base = torch.cat([score(x[i:i + bs], torch.arange(i, min(i + bs, n))) for i in range(0, n, bs)])
            for start in range(0, total, bs):
                items = torch.arange(start, min(start + bs, total))
                rows, grps = items // g, items % g
                xs = x[rows].reshape(len(items), -1)
                occluded = flat_groups.unsqueeze(0) == grps.unsqueeze(1)          # (b, numel): group i of row b
                xs = torch.where(occluded, torch.full_like(xs, self.baseline), xs).view(len(items), *x.shape[1:])
                scores[start:start + len(items)] = score(xs, rows)
        perturbed = scores.view(n, g)
        attribution = perturbed - base[:, None] if self.whole_structure else base[:, None] - perturbed
        return attribution, {"energy_evaluations": total + n, "reference": base, "groups": groups}
