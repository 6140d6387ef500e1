"""Relevance mass and relevance rank accuracy against ground-truth masks (Arras, Osman & Samek, "CLEVR-XAI: A
benchmark dataset for the ground truth evaluation of neural network explanations", Information Fusion 2022).

With a pixel map R (N, H, W) and a ground-truth mask GT of K pixels:

- :func:`relevance_mass`: ``sum_{p in GT} R_p / sum_p R_p``, the share of the relevance that lies on the object.
- :func:`relevance_rank`: the fraction of the K highest-ranked pixels that lie on the object (ties: stable sort by
  pixel index, highest first). It is the same score as :func:`pathxai.metrics.relevance_rank_accuracy` (the RELAX
  paper's name for it), here with channel pooling and Quantus' handling of empty masks.

**Pooling.** An (N, C, H, W) attribution becomes one value per pixel first, by ``pooling``: ``"sum"`` (default: the
signed sum over channels, which leaves an (N, H, W) or (N, 1, H, W) map as it is -- Quantus' definition, which scores
the map as given), or one of CLEVR-XAI's poolings, which give non-negative maps and so a mass in [0, 1]: ``"sum,abs"``
(|sum|), ``"sum,pos"`` (the positive part of the sum), ``"max-norm"`` (max |.|), ``"l1-norm"``, ``"l2-norm"`` and
``"l2-norm,sq"`` (over channels). With a signed map (``"sum"``) the mass can leave [0, 1], as in Quantus.

Quantus' ``RelevanceMassAccuracy`` / ``RelevanceRankAccuracy`` (``abs=False, normalise=True``) give the same numbers
on single-channel maps (tests/test_metrics_quantus.py); on multi-channel attributions Quantus counts every channel
value as a feature (with a mask of the attribution's shape), pathxai pools channels first, as CLEVR-XAI does. A mask
that covers no pixel gives NaN (as Quantus), with a RuntimeWarning naming the samples; so does a map whose total
relevance is 0 (mass).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ._common import MetricInfo, MetricResult, as_saliency, register_metric, warn_nan
from .pointing import _as_masks

POOLINGS = ("sum", "sum,abs", "sum,pos", "max-norm", "l1-norm", "l2-norm", "l2-norm,sq")


def pool_channels(attribution: torch.Tensor, pooling: str = "sum") -> torch.Tensor:
    """(N, H, W), (N, 1, H, W) or (N, C, H, W) -> (N, H, W) float64 pixel map by ``pooling`` (see the module doc)."""
    if not isinstance(pooling, str) or pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(map(repr, POOLINGS))}, got {pooling!r}")
    a = attribution.double()
    if a.ndim == 3:
        a = a.unsqueeze(1)
    if pooling == "sum":
        return a.sum(1)
    if pooling == "sum,abs":
        return a.sum(1).abs()
    if pooling == "sum,pos":
        return a.sum(1).clamp_min(0)
    if pooling == "max-norm":
        return a.abs().amax(1)
    if pooling == "l1-norm":
        return a.abs().sum(1)
    if pooling == "l2-norm":
        return a.pow(2).sum(1).sqrt()
    return a.pow(2).sum(1)


def _map_and_masks(attribution: Any, masks: Any, pooling: str) -> tuple[torch.Tensor, torch.Tensor]:
    a = as_saliency(attribution)
    if not isinstance(a, torch.Tensor):
        raise TypeError(f"attribution must be a torch.Tensor (N, H, W) or (N, C, H, W), got {type(a).__name__}")
    if a.ndim not in (3, 4) or a.shape[0] == 0 or a.numel() == 0:
        raise ValueError(f"attribution must have shape (N, H, W) or (N, C, H, W) with N >= 1, got {tuple(a.shape)}")
    if not torch.is_floating_point(a):
        raise TypeError(f"attribution must be floating point, got dtype {a.dtype}")
    if not torch.isfinite(a).all():
        raise ValueError(f"attribution contains NaN/Inf values (shape {tuple(a.shape)})")
    r = pool_channels(a.detach().cpu(), pooling)
    n, h, w = r.shape
    m = _as_masks(masks, n, h, w)
    return r, m


@dataclass(kw_only=True)
class GroundTruthResult(MetricResult):
    """Result of :func:`relevance_mass` / :func:`relevance_rank`.

    Attributes:
        score: (N,) (NaN for an empty mask). mask_size: (N,) object pixels K. object_fraction: (N,) K / (H·W), the
        expected score of a random map (rank) or of a uniform one (mass).
    """

    mask_size: torch.Tensor
    object_fraction: torch.Tensor


@register_metric(MetricInfo(
    name="relevance_mass", category="localisation", score_direction="higher", needs_model=False,
    input="saliency (N, H, W) or attribution (N, C, H, W) + ground-truth masks",
    score_range="[0, 1] for non-negative maps (a pooling other than 'sum'); unbounded for signed maps",
    reference="Arras, Osman & Samek, CLEVR-XAI, Information Fusion 2022; Quantus RelevanceMassAccuracy",
    description="Share of the total relevance that lies inside the ground-truth mask."))
def relevance_mass(attribution: Any, masks: Any, *, pooling: str = "sum") -> GroundTruthResult:
    """Relevance mass accuracy (see the module doc).

    Args:
        attribution: (N, H, W), (N, 1, H, W) or (N, C, H, W) map (an Explanation gives its ``.saliency()``).
        masks: (N, H, W) bool ground truth, or boxes as :func:`pathxai.metrics.pointing_game` accepts.
        pooling: how channels become one value per pixel (``"sum"``, ``"sum,abs"``, ``"sum,pos"``, ``"max-norm"``,
            ``"l1-norm"``, ``"l2-norm"``, ``"l2-norm,sq"``).
    Returns:
        :class:`GroundTruthResult` with ``score`` (N,).
    """
    r, m = _map_and_masks(attribution, masks, pooling)
    flat, fm = r.flatten(1), m.flatten(1)
    inside = (flat * fm).sum(1)
    total = flat.sum(1)
    sizes = fm.sum(1)
    empty = sizes == 0
    warn_nan("relevance_mass: the ground-truth mask is empty", empty)
    warn_nan("relevance_mass: the total relevance is 0", (total == 0) & ~empty)
    score = torch.where(empty | (total == 0), torch.full_like(total, float("nan")),
                        inside / torch.where(total == 0, torch.ones_like(total), total))
    return GroundTruthResult(score=score, curve=None, meta={"metric": "relevance_mass", "pooling": pooling},
                             mask_size=sizes, object_fraction=fm.double().mean(1))


@register_metric(MetricInfo(
    name="relevance_rank", category="localisation", score_direction="higher", needs_model=False,
    input="saliency (N, H, W) or attribution (N, C, H, W) + ground-truth masks", score_range="[0, 1]",
    reference="Arras, Osman & Samek, CLEVR-XAI, Information Fusion 2022; Quantus RelevanceRankAccuracy",
    description="Fraction of the K highest-ranked pixels inside the ground-truth mask, K = mask size."))
def relevance_rank(attribution: Any, masks: Any, *, pooling: str = "sum") -> GroundTruthResult:
    """Relevance rank accuracy (see the module doc).

    Args:
        attribution: (N, H, W), (N, 1, H, W) or (N, C, H, W) map (an Explanation gives its ``.saliency()``).
        masks: (N, H, W) bool ground truth, or boxes as :func:`pathxai.metrics.pointing_game` accepts.
        pooling: as :func:`relevance_mass`.
    Returns:
        :class:`GroundTruthResult` with ``score`` (N,) in [0, 1].
    """
    r, m = _map_and_masks(attribution, masks, pooling)
    flat, fm = r.flatten(1), m.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    sizes = fm.sum(1)
    on_object = fm.gather(1, order).double()                      # (N, H*W) in rank order
    top = torch.arange(flat.shape[1]).unsqueeze(0) < sizes.unsqueeze(1)
    hits = (on_object * top).sum(1)
    empty = sizes == 0
    warn_nan("relevance_rank: the ground-truth mask is empty", empty)
    score = torch.where(empty, torch.full_like(hits, float("nan")), hits / sizes.clamp_min(1))
    return GroundTruthResult(score=score, curve=None, meta={"metric": "relevance_rank", "pooling": pooling},
                             mask_size=sizes, object_fraction=fm.double().mean(1))


__all__ = ["GroundTruthResult", "POOLINGS", "pool_channels", "relevance_mass", "relevance_rank"]
