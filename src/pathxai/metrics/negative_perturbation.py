"""Negative perturbations (Gat et al., ICML 2022, Sec. 5.2): post-hoc accuracy and post-hoc consistency.

For each sample the features are ranked by the saliency, *least* important first (ties: a stable sort, lower feature
index first), and the first ``round(p * F)`` features are replaced by ``baseline`` for p = 10%, 20%, ..., 90%
(black pixels for images, the unknown/pad token's embedding for text, zero for audio). At each step:

- **post-hoc accuracy**: is the prediction on the masked input the ground-truth label (``labels``)?
- **post-hoc consistency**: is it the prediction on the unmasked input?

Curves are 0/1 per sample; the score is the area under the curve over the masking fraction by the trapezoid rule,
normalised by the width of the fraction range (0.8 for 10%..90%), so it lies in [0, 1] and the data-set AUC is the
mean over samples (x100 gives the paper's Table 1 units). Higher is better: a good explanation keeps the features the
prediction depends on until last.

Features: the saliency's shape decides what one feature is. Images ``x`` (N, C, H, W) with saliency (N, H, W) mask a
pixel in all channels; text ``x`` (N, L, D) with saliency (N, L) mask a token (all embedding coordinates); audio
``x`` (N, 1, T) with saliency (N, T) mask one time step. A saliency of the shape of ``x`` masks single coordinates.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..core import limits
from ..core.evaluator import AUTO, BatchedEvaluator
from ..core.limits import Cost
from ..core.validation import check_input
from ._common import MetricInfo, MetricResult, as_saliency, register_metric

DEFAULT_FRACTIONS = tuple(round(0.1 * k, 1) for k in range(1, 10))


@dataclass
class NegativePerturbationResult(MetricResult):
    """``score`` (N,) post-hoc accuracy AUC (or consistency AUC if no labels); ``curve`` (N, K) 0/1 accuracy.

    Attributes:
        accuracy: (N, K) masked prediction == label, or ``None`` without labels.
        consistency: (N, K) masked prediction == unmasked prediction.
        accuracy_auc, consistency_auc: (N,) normalised trapezoid AUCs.
        fractions: (K,) masking fractions.
    """

    accuracy: torch.Tensor | None = None
    consistency: torch.Tensor | None = None
    accuracy_auc: torch.Tensor | None = None
    consistency_auc: torch.Tensor | None = None
    fractions: torch.Tensor | None = None


def _feature_view(x: torch.Tensor, saliency: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The shape the 0/1 feature mask must take to broadcast against ``x``, and the saliency flattened (N, F)."""
    n = x.shape[0]
    s = tuple(saliency.shape)
    if s == tuple(x.shape):
        return saliency.reshape(n, -1), s
    if x.ndim == 4 and s == (n,) + tuple(x.shape[2:]):
        return saliency.reshape(n, -1), (n, 1) + s[1:]
    if x.ndim == 3 and s == tuple(x.shape[:2]):
        return saliency.reshape(n, -1), s + (1,)
    if x.ndim == 3 and s == (n, x.shape[2]):
        return saliency.reshape(n, -1), (n, 1, x.shape[2])
    raise ValueError(f"saliency of shape {s} does not match x of shape {tuple(x.shape)}: expected {tuple(x.shape)}, "
                     f"(N, H, W) for images, (N, L) for (N, L, D) text or (N, T) for (N, 1, T) audio")


@register_metric(MetricInfo(
    name="negative_perturbation", category="faithfulness", score_direction="higher", needs_model=True,
    input="saliency (N, H, W) / (N, L) / (N, T)", score_range="[0, 1]",
    reference="Gat, Calderon, Reichart & Hazan, ICML 2022 (post-hoc accuracy: Gur et al. 2021)",
    description="AUC of post-hoc accuracy / consistency while the least salient 10%..90% of features are masked."))
def negative_perturbation(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, saliency: Any,
                          labels: Any = None, *, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                          baseline: float | torch.Tensor = 0.0, valid: torch.Tensor | None = None,
                          batch_size: int | str = AUTO,
                          progress: bool | None = None) -> NegativePerturbationResult:
    """Negative-perturbation curves and AUCs.

    Args:
        model: classifier ``(n, ...) -> (n, K)``.
        x: inputs (N, C, H, W), (N, L, D) or (N, 1, T).
        saliency: (N, H, W), (N, L), (N, T) or x's shape (an :class:`Explanation` gives its ``saliency()``).
        labels: (N,) ground-truth classes for post-hoc accuracy (``None``: consistency only, and ``score`` is it).
        fractions: masking fractions (default 0.1..0.9, the paper's).
        baseline: value a masked feature takes: a scalar (0 = black pixels, silent audio) or a tensor broadcastable
            to one sample (e.g. the (D,) embedding of the unknown/pad token).
        valid: optional bool mask of the saliency's shape: the features that count (e.g. the real tokens of padded
            sentences); others are never masked and the fractions are of each sample's valid features.
    Returns:
        :class:`NegativePerturbationResult`.
    """
    x = check_input(x, "x", ndim=(3, 4), expected="(N, C, H, W), (N, L, D) or (N, 1, T)").detach().cpu()
    saliency = as_saliency(saliency)
    if not isinstance(saliency, torch.Tensor) or not torch.is_floating_point(saliency):
        raise TypeError("saliency must be a floating-point torch.Tensor or an Explanation")
    if not torch.isfinite(saliency).all():
        raise ValueError(f"saliency contains NaN/Inf values (shape {tuple(saliency.shape)})")
    flat, mask_shape = _feature_view(x, saliency.detach().cpu())
    n, n_feat = flat.shape
    fr = torch.tensor([float(f) for f in fractions], dtype=torch.float64)
    # NaN passes every comparison below, so it is refused explicitly
    if fr.numel() < 2 or not bool(torch.isfinite(fr).all()) or (fr <= 0).any() or (fr >= 1).any() \
            or (fr.diff() <= 0).any():
        raise ValueError(f"fractions must be >= 2 increasing values in (0, 1), got {list(fractions)}")
    if isinstance(baseline, bool) or not isinstance(baseline, (numbers.Real, torch.Tensor)):
        raise TypeError(f"baseline must be a number or a tensor broadcastable to one sample, got {baseline!r}")
    base = torch.as_tensor(baseline, dtype=x.dtype)
    if not bool(torch.isfinite(base).all()):
        raise ValueError(f"baseline must be finite (a value a masked feature takes), got NaN/Inf in {baseline!r}")
    if valid is None:
        valid_flat = torch.ones(n, n_feat, dtype=torch.bool)
    else:
        valid = torch.as_tensor(valid, dtype=torch.bool)
        if valid.shape != saliency.shape:
            raise ValueError(f"valid must have the saliency's shape {tuple(saliency.shape)}, got {tuple(valid.shape)}")
        valid_flat = valid.reshape(n, -1)
    keyed = torch.where(valid_flat, flat.double(), torch.full_like(flat, float("inf"), dtype=torch.float64))
    order = torch.argsort(keyed, dim=1, stable=True)  # least important first, invalid features last
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n_feat).expand(n, -1).contiguous())
    counts = (fr.unsqueeze(0) * valid_flat.sum(1, keepdim=True).double()).round().long()  # (N, K)
    k = fr.numel()
    limits.check(Cost(evaluations=n * (k + 1), param="fractions", value=f"{k} values",
                      detail=f"{n} input(s) x {k + 1} masking levels"), "metric 'negative_perturbation'")
    evaluator = BatchedEvaluator(model, batch_size=batch_size, progress=progress)
    x_work = evaluator.work_input(x)   # the model's device; the ranking bookkeeping stays on the host
    base_work = base.to(x_work)

    def build(a: int, b: int) -> torch.Tensor:
        items = torch.arange(a, b)
        i, step = items // k, items % k
        masked = (rank[i] < counts[i, step].unsqueeze(1)).view((len(items),) + mask_shape[1:]).to(x_work)
        return x_work[i] * (1 - masked) + base_work * masked

    with torch.inference_mode():
        pred0 = evaluator.forward(x_work, desc="negative_perturbation").argmax(1).cpu()
        preds = torch.cat([out.argmax(1).cpu() for _, _, out in evaluator.forward_chunks(
            n * k, build, sample_shape=x.shape[1:], desc="negative_perturbation")]).view(n, k)
    width = float(fr[-1] - fr[0])

    def auc(c: torch.Tensor) -> torch.Tensor:
        return torch.trapezoid(c.double(), fr, dim=1) / width

    consistency = (preds == pred0.unsqueeze(1)).float()
    accuracy = None
    if labels is not None:
        labels = torch.as_tensor(labels).long().view(-1).cpu()
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
        accuracy = (preds == labels.unsqueeze(1)).float()
    acc_auc = auc(accuracy) if accuracy is not None else None
    cons_auc = auc(consistency)
    return NegativePerturbationResult(
        score=acc_auc if acc_auc is not None else cons_auc, curve=accuracy if accuracy is not None else consistency,
        meta={"metric": "negative_perturbation", "fractions": fr.tolist(), "model_evaluations": evaluator.n_evaluations},
        accuracy=accuracy, consistency=consistency, accuracy_auc=acc_auc, consistency_auc=cons_auc, fractions=fr)
