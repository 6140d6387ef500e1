"""IROF: Iterative Removal Of Features (Rieger & Hansen, "IROF: a low resource evaluation metric for explanation
methods", ICLR 2020 workshop).

Each image is cut into superpixels by SLIC (scikit-image ``slic`` on the channel-last image in float64, its default
``n_segments=100``, ``compactness=10``, ``start_label=0``: what Quantus' ``IROF`` runs). Segments are ranked by their
mean saliency, highest first (ties: lower segment label first), and removed one after another, cumulatively: a
removed segment takes the ``baseline`` value (default ``"mean"``: each channel's mean over the original image, the
paper's "mean value"; a number replaces by that value). After k of the S segments are gone the target's softmax
probability s_k is divided by the one of the untouched image, c_k = s_k / s_0, and the score is the **area over the
curve** on the fraction of removed segments, ``AOC = 1 - AUC`` with ``AUC = trapezoid(c_0..c_S) / S`` (higher is
better: removing what the map calls important makes the class disappear quickly).

Quantus' ``IROF`` integrates c_1..c_S with unit steps and returns ``S - trapz(c_1..c_S)``, which is
``S * aoc + (1 + c_1) / 2`` in terms of ours: the curves agree point for point (tests/test_metrics_quantus.py), only
the x-axis normalisation differs (ours lies in [0, 1] while the score only falls). Quantus' ``"mean"`` baseline is
recomputed on the whole, already perturbed batch at every step; ours is fixed per image.

The number of segments varies per image, so ``curve`` is (N, S_max + 1), padded with NaN after each image's own
S + 1 points (``n_segments`` holds S per image).
"""
from __future__ import annotations

import numbers
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ..core import limits
from ..core.evaluator import AUTO, BatchedEvaluator, evaluation_mode
from ..core.limits import Cost
from ..core.method import item_outputs
from ..core.targets import TargetLike
from ..core.validation import check_finite_float, check_input, check_positive_float, check_positive_int, check_saliency
from ._common import (
    MetricInfo,
    MetricResult,
    as_saliency,
    check_score_name,
    metric_target,
    register_metric,
    score_kind,
    target_meta,
    warn_nan,
)


def slic_segments(x: torch.Tensor, *, n_segments: int = 100, compactness: float = 10.0) -> torch.Tensor:
    """SLIC superpixels of each image: x (N, C, H, W) -> (N, H, W) int64 labels 0..S-1 (scikit-image ``slic``)."""
    from skimage.segmentation import slic

    out = []
    for img in x.detach().cpu().double().numpy():
        seg = slic(np.moveaxis(img, 0, -1), n_segments=n_segments, compactness=compactness, start_label=0,
                   channel_axis=-1)
        # relabel to 0..S-1 (slic's labels are consecutive in practice; this makes it a guarantee)
        out.append(np.unique(seg, return_inverse=True)[1].reshape(seg.shape))
    return torch.from_numpy(np.stack(out)).long()


@dataclass(kw_only=True)
class IrofResult(MetricResult):
    """Result of :func:`irof`.

    Attributes:
        score: (N,) area over the curve on [0, 1] (higher is better).
        curve: (N, S_max + 1) c_k = s_k / s_0 after k segments removed, NaN-padded per image.
        raw_curve: (N, S_max + 1) s_k, NaN-padded. n_segments: (N,) S per image. segments: (N, H, W) labels.
        segment_order: list of N (S,) tensors, the removal order (segment labels).
    """

    raw_curve: torch.Tensor
    n_segments: torch.Tensor
    segments: torch.Tensor
    segment_order: list


@register_metric(MetricInfo(
    name="irof", category="faithfulness", score_direction="higher", needs_model=True, input="saliency (N, H, W)",
    score_range="<= 1 (in [0, 1] while removing segments only lowers the score)",
    reference="Rieger & Hansen, IROF: a low resource evaluation metric for explanation methods, ICLR 2020 "
              "workshop; Quantus IROF",
    description="Area over the curve of the target probability (relative to the original) while SLIC superpixels "
                "are replaced by their mean, highest mean saliency first."))
def irof(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, saliency: Any, target: TargetLike = None,
         *, n_segments: int = 100, compactness: float = 10.0, segments: torch.Tensor | None = None,
         baseline: str | float = "mean", score: str = "softmax", batch_size: int | str = AUTO,
         progress: bool | None = None) -> IrofResult:
    """IROF (see the module doc).

    Args:
        model: classifier ``(N, C, H, W) -> (N, K)``.
        x: (N, C, H, W) inputs.
        saliency: (N, H, W) or (N, 1, H, W) map (or an Explanation: its ``.saliency()``).
        target: int class, N ints, ``None`` (predicted class) or a callable ``output -> (N,)`` (with ``score="logit"``).
        n_segments, compactness: SLIC's parameters (scikit-image defaults 100 and 10).
        segments: (N, H, W) integer superpixel labels to use instead of SLIC.
        baseline: ``"mean"`` (each channel's mean over the image) or a number.
        score: ``"softmax"`` (default, as the paper and Quantus), ``"logit"`` or ``"log_softmax"``.
    Returns:
        :class:`IrofResult` with ``score`` (N,) and ``curve`` (N, S_max + 1).
    Cost: sum over images of (S + 1) model evaluations.
    """
    start_time = time.perf_counter()
    x = check_input(x, "x", ndim=4, expected="(N, C, H, W)").detach()
    saliency = check_saliency(as_saliency(saliency), x).detach().cpu().double()
    n_segments = check_positive_int(n_segments, "n_segments", minimum=2)
    compactness = check_positive_float(compactness, "compactness")
    check_score_name(score)
    if isinstance(baseline, str):
        if baseline != "mean":
            raise ValueError(f"baseline must be 'mean' or a number, got {baseline!r}")
    elif isinstance(baseline, numbers.Real) and not isinstance(baseline, bool):
        baseline = check_finite_float(baseline, "baseline")
    else:
        raise TypeError(f"baseline must be 'mean' or a number, got {baseline!r}")
    n, _, h, w = x.shape
    if segments is None:
        seg = slic_segments(x, n_segments=n_segments, compactness=compactness)
    else:
        if not isinstance(segments, torch.Tensor) or segments.dtype.is_floating_point or segments.dtype == torch.bool:
            raise TypeError("segments must be an integer torch.Tensor of shape (N, H, W)")
        if tuple(segments.shape) != (n, h, w):
            raise ValueError(f"segments must have shape (N, H, W) = ({n}, {h}, {w}), got {tuple(segments.shape)}")
        seg = torch.stack([torch.unique(s, return_inverse=True)[1] for s in segments.detach().cpu().long()])
    counts = (seg.flatten(1).max(1).values + 1).tolist()                  # S per image
    if min(counts) < 2:
        bad = [i for i, s in enumerate(counts) if s < 2]
        raise ValueError(f"IROF needs >= 2 segments per image; image(s) {bad[:10]} have 1")
    orders, rank_maps = [], []
    for i in range(n):
        flat = seg[i].flatten()
        sums = torch.zeros(counts[i], dtype=torch.float64).index_add_(0, flat, saliency[i].flatten())
        means = sums / torch.bincount(flat, minlength=counts[i]).double()
        order = torch.argsort(-means, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(counts[i])
        orders.append(order)
        rank_maps.append(rank[seg[i]])                                    # (H, W) removal step of each pixel
    rank_maps = torch.stack(rank_maps)
    offsets = torch.cumsum(torch.tensor([0] + [s + 1 for s in counts]), 0)   # first item of each image
    total = int(offsets[-1])
    limits.check(Cost(evaluations=total, param="n_segments", value=n_segments,
                      detail=f"{n} input(s) x (segments + 1) curve points"), "metric 'irof'")
    evaluator = BatchedEvaluator(model, batch_size=batch_size, progress=progress)
    dtype = x.dtype
    x = evaluator.work_input(x)
    if baseline == "mean":
        base = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    else:
        base = torch.full_like(x, float(baseline))
    item_image = torch.repeat_interleave(torch.arange(n), torch.tensor([s + 1 for s in counts]))
    item_step = torch.arange(total) - offsets[item_image]
    ranks_dev = rank_maps.to(x.device)
    with evaluation_mode(model):
        resolved = metric_target(evaluator, x, target)
        kind = score_kind(score, resolved)

        def build(items: torch.Tensor) -> torch.Tensor:
            img, step = item_image[items], item_step[items]
            removed = (ranks_dev[img] < step.to(x.device).view(-1, 1, 1)).unsqueeze(1)
            return torch.where(removed, base[img], x[img])

        raw = torch.empty(total, dtype=torch.float64)
        for items, out in item_outputs(evaluator, total, build, sample_shape=x.shape[1:], desc="irof"):
            raw[items] = resolved.score(out, item_image[items], kind=kind).double().cpu()
    width = max(counts) + 1
    raw_curve = torch.full((n, width), float("nan"), dtype=torch.float64)
    for i in range(n):
        raw_curve[i, :counts[i] + 1] = raw[offsets[i]:offsets[i + 1]]
    s0 = raw_curve[:, 0]
    warn_nan("IROF divides by the score of the untouched image, which is 0", s0 == 0)
    curve = raw_curve / s0.unsqueeze(1)
    aoc = torch.empty(n, dtype=torch.float64)
    for i in range(n):
        cv = curve[i, :counts[i] + 1]
        aoc[i] = 1 - (cv.sum() - 0.5 * (cv[0] + cv[-1])) / counts[i]
    meta = {"metric": "irof", "n_segments": n_segments, "compactness": compactness,
            "segments": "given" if segments is not None else "slic", "baseline": baseline, "score": score,
            "batch_size": evaluator.batch_size, "model_evaluations": evaluator.n_evaluations,
            "probe_evaluations": evaluator.n_probe, "target": target_meta(resolved),
            "wall_time_s": time.perf_counter() - start_time}
    return IrofResult(score=aoc.to(dtype), curve=curve.to(dtype), meta=meta, raw_curve=raw_curve.to(dtype),
                      n_segments=torch.tensor(counts), segments=seg, segment_order=orders)


__all__ = ["IrofResult", "irof", "slic_segments"]
