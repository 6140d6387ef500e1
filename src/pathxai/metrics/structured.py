"""Metrics of the SOInter paper for structured black boxes: post-hoc accuracy / F1 of the black box on the input
masked to the selected features (vs on the full input), the relative accuracy of the masked prediction (the
segmentation metric: the fraction of target output variables, e.g. pixels, that agree), and the median rank of the
truly relevant features. Masked features are set to ``baseline`` (0, the convention of :mod:`pathxai.structured`).

Inputs are feature vectors (N, D) with attributions (N, D), or any input (N, *S) with feature ``groups`` (a (*S)
group index tensor, :mod:`pathxai.structured.groups`) and attributions (N, G) over the groups; the top k groups are
kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..core.validation import MODEL_OUTPUT_CAUSE, check_finite, check_finite_float, check_model_output
from ..structured.energy import harden
from ..structured.groups import apply_mask, check_groups, n_groups
from ..structured.interpreter import check_k, check_target_outputs
from ._common import MetricInfo, register_metric


@dataclass
class StructuredMetricResult:
    """``score``: (N,) per-sample score; ``summary``: the data-set level number the paper reports."""

    score: torch.Tensor
    summary: float


def top_k_mask(attribution: torch.Tensor, k: int) -> torch.Tensor:
    """(N, D) attribution -> (N, D) 0/1 mask of the k largest entries per row."""
    check_k(k, attribution.shape[1])
    return torch.zeros_like(attribution).scatter_(1, attribution.topk(k, dim=1).indices, 1.0)


def _check(attribution: torch.Tensor, x: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
    """Validate the attribution against x (and groups); returns the (*S) group index tensor."""
    got = tuple(attribution.shape) if isinstance(attribution, torch.Tensor) else type(attribution).__name__
    if groups is None:
        if not isinstance(attribution, torch.Tensor) or attribution.shape != x.shape or x.ndim != 2:
            raise ValueError(f"attribution must have the shape of x, (N, D) = {tuple(x.shape)}, got {got} (pass "
                             "groups= for inputs that are not feature vectors)")
        return check_groups(None, x.shape[1:])
    gi = check_groups(groups, x.shape[1:])
    want = (x.shape[0], n_groups(gi))
    if not isinstance(attribution, torch.Tensor) or tuple(attribution.shape) != want:
        raise ValueError(f"attribution must have shape (N, G) = {want} (one value per feature group), got {got}")
    return gi


def _full_and_masked(black_box: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, attribution: torch.Tensor,
                     target: int | Sequence[int], k: int, baseline: float, groups: torch.Tensor | None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Hardened target outputs (N, |T|) of the black box on x and on x masked to the k top-attributed groups."""
    gi = _check(attribution, x, groups)
    check_finite_float(baseline, "baseline")  # NaN would mask every input to NaN
    if not bool(torch.isfinite(attribution).all()):
        raise ValueError(f"attribution contains NaN/Inf values (shape {tuple(attribution.shape)})")
    with torch.no_grad():
        raw = check_model_output(black_box(x), x.shape[0])
        check_finite(raw, "model output", cause=MODEL_OUTPUT_CAUSE)
        full = harden(raw)
        tgt = list(check_target_outputs(target, full.shape[1]))
        raw = check_model_output(black_box(apply_mask(x, top_k_mask(attribution, k), gi, baseline)), x.shape[0])
        check_finite(raw, "model output", cause=MODEL_OUTPUT_CAUSE, context=" (on the masked inputs)")
        masked = harden(raw)
    return full[:, tgt], masked[:, tgt]


@register_metric(MetricInfo("posthoc_accuracy", "faithfulness", "higher", True, "attribution (N, D) or (N, G)",
                            "[0, 1]", "Chen et al. 2018 (L2X); Seyyedsalehi et al. 2022 (SOInter)",
                            "black box on x masked to the top-k features agrees with it on x, on the target outputs"))
def posthoc_accuracy(black_box: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, attribution: torch.Tensor,
                     target: int | Sequence[int], k: int, baseline: float = 0.0,
                     groups: torch.Tensor | None = None) -> StructuredMetricResult:
    """Per sample 1.0 when the hardened black box output on the target variable(s) is unchanged by keeping only the
    k top-attributed features (groups); ``summary`` is the mean."""
    f, p = _full_and_masked(black_box, x, attribution, target, k, baseline, groups)
    score = (f == p).all(1).float()
    return StructuredMetricResult(score, float(score.mean()))


@register_metric(MetricInfo("posthoc_f1", "faithfulness", "higher", True, "attribution (N, D) or (N, G)", "[0, 1]",
                            "Seyyedsalehi et al. 2022 (SOInter)",
                            "F1 of the masked-input predictions against the full-input predictions"))
def posthoc_f1(black_box: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, attribution: torch.Tensor,
               target: int | Sequence[int], k: int, baseline: float = 0.0,
               groups: torch.Tensor | None = None) -> StructuredMetricResult:
    """F1 of the black box's hardened target predictions on the masked inputs, taking its predictions on the full
    inputs as ground truth (positive class 1), pooled over samples and target variables (``summary``); ``score``
    is the per-sample agreement rate."""
    f, p = _full_and_masked(black_box, x, attribution, target, k, baseline, groups)
    tp = float((f * p).sum())
    denom = float(2 * tp + ((1 - f) * p).sum() + (f * (1 - p)).sum())
    f1 = 1.0 if denom == 0 else 2 * tp / denom
    return StructuredMetricResult((f == p).float().mean(1), f1)


@register_metric(MetricInfo("relative_accuracy", "faithfulness", "higher", True, "attribution (N, D) or (N, G)",
                            "[0, 1]", "Seyyedsalehi et al. 2022 (SOInter), segmentation",
                            "fraction of target outputs (pixels) the masked input's prediction gets as the full one"))
def relative_accuracy(black_box: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, attribution: torch.Tensor,
                      target: int | Sequence[int], k: int, baseline: float = 0.0,
                      groups: torch.Tensor | None = None) -> StructuredMetricResult:
    """The segmentation metric: per sample, the pixel accuracy of the black box's hardened prediction on the input
    masked to the k top groups, measured against its prediction on the full input, over the target pixels (the
    whole map or a region); ``summary`` is the mean over samples."""
    f, p = _full_and_masked(black_box, x, attribution, target, k, baseline, groups)
    score = (f == p).float().mean(1)
    return StructuredMetricResult(score, float(score.mean()))


@register_metric(MetricInfo("median_rank", "localisation", "lower", False, "attribution (N, D)", "[1, D]",
                            "Seyyedsalehi et al. 2022 (SOInter)",
                            "median rank of the truly relevant features in the attribution order (1 = top)"))
def median_rank(attribution: torch.Tensor, relevant: torch.Tensor, absolute: bool = False) -> StructuredMetricResult:
    """Per sample, the median rank (1 = most important) of the features (groups) marked in ``relevant`` ((D,) or
    (N, D) bool); ``absolute`` ranks by |attribution|. Random attributions give about (D + 1) / 2."""
    if attribution.ndim != 2:
        raise ValueError(f"attribution must have shape (N, D) (one value per feature or group), got "
                         f"{tuple(attribution.shape)}")
    if relevant.shape[-1] != attribution.shape[1] or relevant.ndim not in (1, 2) or (
            relevant.ndim == 2 and relevant.shape[0] not in (1, attribution.shape[0])):
        raise ValueError(f"relevant must have shape (D,) or (N, D) = {tuple(attribution.shape)}, got "
                         f"{tuple(relevant.shape)}")
    rel = relevant.to(torch.bool).expand_as(attribution)
    if not rel.any(1).all():
        raise ValueError("relevant marks no feature for some sample; expected at least one True per row")
    a = attribution.abs() if absolute else attribution
    ranks = (a.argsort(dim=1, descending=True, stable=True).argsort(dim=1) + 1).float()
    score = torch.stack([ranks[i][rel[i]].quantile(0.5) for i in range(a.shape[0])])  # mean of the middle two
    return StructuredMetricResult(score, float(score.mean()))
