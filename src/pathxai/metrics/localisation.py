"""The scores of the RELAX paper (Wickstrøm et al., IJCV 2023, Sec. 4.1), computed there with Quantus:

- :func:`pointing_game_unified`: the pointing game against *one* object mask per image, the union of all its
  objects' boxes or masks ("collected into one unified bounding box/segmentation mask", since a representation
  explanation has no class). Hit when the map's maximum lies on the unified mask (tolerance 0, as Quantus'
  ``PointingGame``); delegates to :func:`pathxai.metrics.pointing_game`.
- :func:`top_k_intersection` (Theodorus et al. 2020; Quantus ``TopKIntersection``): the fraction of the k
  highest-ranked pixels that lie on the object, k = 1000 pixels at 224 x 224 (Quantus' default) and the same 2 % of
  the pixels at other sizes.
- :func:`relevance_rank_accuracy` (Arras et al., CLEVR-XAI, 2022; Quantus ``RelevanceRankAccuracy``): with K the
  number of object pixels, the fraction of the K highest-ranked pixels that lie on the object.
- :func:`monotonicity_correlation` (Nguyen & Martinez 2020, "monotonicity"; Quantus ``MonotonicityCorrelation``):
  the Spearman correlation, over groups of pixels, between the group's total |attribution| and how much the
  classifier's probability for the target moves when that group is replaced by noise, E[(f(x) - f(x̃))²]. A faithful
  map gives large attributions to the pixels whose perturbation moves the prediction most (higher is better).

Ranking ties are broken by pixel index (stable sort), highest attribution first. All maps are (N, H, W) (or an
:class:`~pathxai.core.Explanation`, whose ``saliency()`` is used); object masks are (N, H, W) bools or boxes as
accepted by :func:`pathxai.metrics.pointing_game` (every box of an image is united).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from ..core import limits
from ..core.evaluator import AUTO, BatchedEvaluator, evaluation_mode
from ..core.limits import Cost
from ..core.method import item_outputs
from ..core.seeding import item_generator
from ..core.targets import TargetLike
from ..core.validation import check_input, check_positive_int, check_saliency, check_seed
from ._common import (MetricInfo, MetricResult, as_saliency, check_score_name, metric_target, register_metric,
                      score_kind, target_meta)
from .pointing import PointingGameResult, _as_masks, pointing_game

QUANTUS_TOP_K = 1000
QUANTUS_TOP_K_FRACTION = QUANTUS_TOP_K / (224 * 224)


def _saliency_and_masks(saliency: Any, boxes_or_masks: Any) -> tuple[torch.Tensor, torch.Tensor]:
    s = as_saliency(saliency)
    if not isinstance(s, torch.Tensor):
        raise TypeError(f"saliency must be a torch.Tensor of shape (N, H, W), got {type(s).__name__}")
    if s.ndim == 4 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim != 3 or s.shape[0] == 0 or s.numel() == 0:
        raise ValueError(f"saliency must have shape (N, H, W) with N >= 1, got {tuple(s.shape)}")
    if not torch.is_floating_point(s):
        raise TypeError(f"saliency must be floating point, got dtype {s.dtype}")
    if not torch.isfinite(s).all():
        raise ValueError(f"saliency contains NaN/Inf values (shape {tuple(s.shape)})")
    s = s.detach().cpu()
    n, h, w = s.shape
    masks = _as_masks(boxes_or_masks, n, h, w)
    empty = (~masks.flatten(1).any(1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"boxes_or_masks: the object of sample(s) {empty[:10]} covers no pixel of the ({h}, {w}) "
                         "map; localisation needs an object in every sample")
    return s, masks


def _ranked(s: torch.Tensor) -> torch.Tensor:
    """(N, H*W) pixel indices, highest value first, ties by pixel index."""
    return torch.sort(s.flatten(1).double(), dim=1, descending=True, stable=True).indices


@dataclass(kw_only=True)
class LocalisationResult(MetricResult):
    """Result of :func:`top_k_intersection` / :func:`relevance_rank_accuracy`.

    Attributes:
        score: (N,) fraction in [0, 1]. k: (N,) pixels ranked per sample. object_fraction: (N,) object pixels / all
        pixels (the score of a random map, in expectation).
    """

    k: torch.Tensor
    object_fraction: torch.Tensor


@register_metric(MetricInfo(
    name="pointing_game_unified", category="localisation", score_direction="higher", needs_model=False,
    input="saliency (N, H, W) + object masks or boxes (united per image)", score_range="{0, 1}; accuracy in [0, 1]",
    reference="Zhang et al. 2018; unified-box protocol of Wickstrøm et al., RELAX, IJCV 2023",
    description="Hit when the map's maximum lies on the union of the image's objects."))
def pointing_game_unified(saliency: Any, boxes_or_masks: Any, *, tolerance: float = 0) -> PointingGameResult:
    """Pointing game against the union of each image's objects (see the module doc).

    Args:
        saliency: (N, H, W) maps. boxes_or_masks: as :func:`pathxai.metrics.pointing_game` (all boxes of an image
            are united). tolerance: px (0 = on the object, as in Quantus).
    """
    s, masks = _saliency_and_masks(saliency, boxes_or_masks)
    r = pointing_game(s, masks, tolerance=tolerance)
    r.meta["metric"] = "pointing_game_unified"
    return r


@register_metric(MetricInfo(
    name="top_k_intersection", category="localisation", score_direction="higher", needs_model=False,
    input="saliency (N, H, W) + object masks or boxes", score_range="[0, 1]",
    reference="Theodorus et al. 2020; Quantus TopKIntersection (k = 1000 at 224x224)",
    description="Fraction of the k highest-ranked pixels that lie on the object."))
def top_k_intersection(saliency: Any, boxes_or_masks: Any, *, k: int | float | None = None) -> LocalisationResult:
    """|top-k pixels ∩ object| / k.

    Args:
        k: pixels (int >= 1) or a fraction of the pixels (float in (0, 1)); default 1000/(224·224) of the pixels
            (= 1000 at 224 x 224, Quantus' default).
    """
    s, masks = _saliency_and_masks(saliency, boxes_or_masks)
    n, h, w = s.shape
    if k is None:
        kk = max(1, round(QUANTUS_TOP_K_FRACTION * h * w))
    elif isinstance(k, float) and not isinstance(k, bool):
        if not 0 < k < 1:
            raise ValueError(f"k as a fraction must lie in (0, 1), got {k}")
        kk = max(1, round(k * h * w))
    else:
        kk = check_positive_int(k, "k")
    if kk > h * w:
        raise ValueError(f"k = {kk} exceeds the {h * w} pixels of a ({h}, {w}) map")
    top = _ranked(s)[:, :kk]
    hits = masks.flatten(1).gather(1, top).double().sum(1)
    frac = masks.flatten(1).double().mean(1)
    return LocalisationResult(score=hits / kk, curve=None, meta={"metric": "top_k_intersection", "k": kk},
                              k=torch.full((n,), kk), object_fraction=frac)


@register_metric(MetricInfo(
    name="relevance_rank_accuracy", category="localisation", score_direction="higher", needs_model=False,
    input="saliency (N, H, W) + object masks or boxes", score_range="[0, 1]",
    reference="Arras et al., CLEVR-XAI, Information Fusion 2022; Quantus RelevanceRankAccuracy",
    description="Fraction of the K highest-ranked pixels on the object, K = object size."))
def relevance_rank_accuracy(saliency: Any, boxes_or_masks: Any) -> LocalisationResult:
    """|top-K pixels ∩ object| / K with K = the number of object pixels of each image."""
    s, masks = _saliency_and_masks(saliency, boxes_or_masks)
    n = s.shape[0]
    ranked = _ranked(s)
    flat = masks.flatten(1)
    sizes = flat.sum(1)
    scores = torch.empty(n, dtype=torch.float64)
    for i in range(n):
        kk = int(sizes[i])
        scores[i] = flat[i, ranked[i, :kk]].double().sum() / kk
    return LocalisationResult(score=scores, curve=None, meta={"metric": "relevance_rank_accuracy"}, k=sizes,
                              object_fraction=flat.double().mean(1))


# ---------------------------------------------------------------------------------------------------------------
# monotonicity


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation along the last axis (average ranks for ties), float64; NaN for a constant side."""
    from scipy.stats import rankdata

    ra = torch.from_numpy(rankdata(a.detach().double().cpu().numpy(), axis=-1))
    rb = torch.from_numpy(rankdata(b.detach().double().cpu().numpy(), axis=-1))
    ra = ra - ra.mean(-1, keepdim=True)
    rb = rb - rb.mean(-1, keepdim=True)
    den = (ra.pow(2).sum(-1) * rb.pow(2).sum(-1)).sqrt()
    out = (ra * rb).sum(-1) / den
    return torch.where(den > 0, out, torch.full_like(out, float("nan")))


@dataclass(kw_only=True)
class MonotonicityResult(MetricResult):
    """Result of :func:`monotonicity_correlation`.

    Attributes:
        score: (N,) Spearman correlation in [-1, 1] (higher is better).
        curve: (N, n_groups) E[(f(x) - f(x̃))²] per pixel group, groups in increasing |attribution| order.
        attribution_sums: (N, n_groups) Σ |attribution| per group, same order.
        base_scores: (N,) f(x) for the target.
    """

    attribution_sums: torch.Tensor
    base_scores: torch.Tensor


@register_metric(MetricInfo(
    name="monotonicity_correlation", category="faithfulness", score_direction="higher", needs_model=True,
    input="saliency (N, H, W)", score_range="[-1, 1]",
    reference="Nguyen & Martinez 2020 (monotonicity); Quantus MonotonicityCorrelation",
    description="Spearman correlation between |attribution| of pixel groups and the squared output change when "
                "the group is replaced by uniform noise."))
def monotonicity_correlation(model: Any, x: torch.Tensor, saliency: Any, target: TargetLike = None, *,
                             n_groups: int = 64, n_samples: int = 8, score: str = "softmax",
                             batch_size: int | str = AUTO, seed: int = 0) -> MonotonicityResult:
    """Monotonicity (Nguyen & Martinez 2020) as Quantus computes it, with pixels grouped for tractability.

    Pixels are sorted by |saliency| (ascending, ties by index) and cut into ``n_groups`` consecutive groups of equal
    size (Quantus' ``features_in_step`` = H·W / n_groups). For each group, ``n_samples`` copies of x have that
    group's pixels (all channels) replaced by uniform noise in [0, 1] (Quantus' default ``"uniform"`` baseline; each
    copy seeded by (seed, image, group, sample)). The score is the Spearman correlation between the group sums of
    |saliency| and the mean squared change of the target's ``score`` (softmax probability by default: "the
    uncertainty in the probability estimation").

    Args:
        model: a classifier (N, C, H, W) -> (N, K). x: (N, C, H, W) in [0, 1]. saliency: (N, H, W).
        target: class(es), ``None`` (predicted class) or a callable (then ``score="logit"``).
    Cost: N · n_groups · n_samples model evaluations (+ N for the base scores), batched by ``batch_size``.
    """
    start = time.perf_counter()
    x = check_input(x, "x", ndim=4)
    saliency = check_saliency(as_saliency(saliency), x)
    n_groups = check_positive_int(n_groups, "n_groups", minimum=2)
    n_samples = check_positive_int(n_samples, "n_samples")
    seed = check_seed(seed)
    check_score_name(score)
    n, c, h, w = x.shape
    if n_groups > h * w:
        raise ValueError(f"n_groups = {n_groups} exceeds the {h * w} pixels of x")
    limits.check(Cost(evaluations=n * (n_groups * n_samples + 1), param="n_samples", value=n_samples,
                      detail=f"{n} input(s) x {n_groups} groups x {n_samples} samples"),
                 "metric 'monotonicity_correlation'")
    ev = BatchedEvaluator(model, batch_size=batch_size, progress=False)
    x = ev.work_input(x)   # the model's device; the group bookkeeping stays on the host
    with evaluation_mode(model):
        tgt = metric_target(ev, x, target)
        kind = score_kind(score, tgt)
        order = torch.sort(saliency.detach().abs().flatten(1).double(), dim=1, stable=True).indices  # ascending
        bounds = torch.linspace(0, h * w, n_groups + 1).round().long()
        att = saliency.detach().abs().flatten(1).double()
        group_of = torch.empty(n, h * w, dtype=torch.long)
        for g in range(n_groups):
            group_of.scatter_(1, order[:, bounds[g]:bounds[g + 1]], g)
        sums = torch.zeros(n, n_groups, dtype=torch.float64).scatter_add_(1, group_of, att)
        base = torch.cat([tgt.score(out, idx, kind=kind) for idx, out in
                          item_outputs(ev, n, lambda idx: x[idx], sample_shape=x.shape[1:])]).double().cpu()
        per = n_groups * n_samples

        def build(items: torch.Tensor) -> torch.Tensor:
            img, rest = items // per, items % per
            grp = rest // n_samples
            xs = x[img].clone()
            for j in range(len(items)):
                noise = torch.rand(c, h, w, generator=item_generator(seed, "monotonicity", int(items[j]), x.device),
                                   device=x.device, dtype=x.dtype)
                sel = (group_of[img[j]] == grp[j]).view(1, h, w).to(x.device)
                xs[j] = torch.where(sel, noise, xs[j])
            return xs

        change = torch.zeros(n, n_groups, dtype=torch.float64)
        for items, out in item_outputs(ev, n * per, build, sample_shape=x.shape[1:]):
            img = items // per
            sc = tgt.score(out, img, kind=kind).double().cpu()
            for j in range(len(items)):   # item order: independent of the chunking
                change[img[j], (items[j] % per) // n_samples] += (sc[j] - base[img[j]]) ** 2
        change /= n_samples
    scores = spearman(sums, change)
    meta = {"metric": "monotonicity_correlation", "n_groups": n_groups, "n_samples": n_samples, "score": score,
            "seed": seed, "target": target_meta(tgt), "model_evaluations": ev.n_evaluations,
            "wall_time_s": time.perf_counter() - start}
    return MonotonicityResult(score=scores, curve=change, meta=meta, attribution_sums=sums, base_scores=base)


__all__ = ["LocalisationResult", "MonotonicityResult", "monotonicity_correlation", "pointing_game_unified",
           "relevance_rank_accuracy", "spearman", "top_k_intersection"]
