"""Deletion and insertion (Petsiuk et al., RISE, BMVC 2018), with the score conventions papers actually use.

Pixels are ranked by the saliency map, highest first (ties keep pixel-index order: a stable sort of the flattened
(H, W) map). With ``steps`` = K, after step k the first ``n_k = floor(k * H * W / K)`` ranked pixels (all channels)
have been changed, so the curve has K + 1 points at fractions k / K, from the untouched start (k = 0) to the end
(k = K):

- **deletion** starts at the input x and replaces the ranked pixels by the baseline (default ``"zero"``, black, as in
  RISE): a good map makes the score fall fast, so *lower is better*;
- **insertion** starts at the baseline (default ``"blur"``, a Gaussian blur of x, as in RISE) and puts the ranked
  pixels of x back: a good map makes the score rise fast, so *higher is better*.

The score is the area under the curve on [0, 1] by the trapezoid rule: ``(sum(c) - (c_0 + c_K) / 2) / K``.

What is plotted on the curve (``score`` and ``normalisation``), side by side, with s_k = score of the target at
step k, s_x = at the full input, s_b = at the all-baseline input (for deletion s_x = s_0 and s_b = s_K; for insertion
s_b = s_0 and s_x = s_K; both ends are taken from the curve itself, so the normalised curve meets 1 and 0 exactly):

==================  ====================================  ====================  ===================================
``normalisation``   curve c_k                             range of the AUC      convention of
==================  ====================================  ====================  ===================================
``"none"``          s_k (softmax probability by default)  [0, 1] for softmax    RISE (Petsiuk et al. 2018); Captum,
                                                                                Quantus, TorchRay with softmax
``"input"``         s_k / s_x                             unbounded             "relative to the original score"
``"samp"``          (s_k - s_b) / (s_x - s_b)             unbounded: deletion   SAMP (Zhang et al., ICLR 2024),
                                                          < 0, insertion > 1    Table 1 (see below)
                                                          possible
==================  ====================================  ====================  ===================================

Why ``"samp"`` is that formula. Table 1 of the SAMP paper (slides in shared/seeds/samp_path_choice.txt) reports,
for example, "SAMP (ours) -0.093 (±0.142) 1.074 (±0.176)" (MNIST deletion / insertion), "IG -0.372 (±0.535)
1.452 (±0.400)" on CIFAR-10 and "SAMP++ ... 1.116" insertion on ImageNet. A deletion AUC below 0 is impossible with
raw probabilities (>= 0) and an insertion AUC above 1 is impossible with raw probabilities (<= 1); raw logits would
give AUCs of the size of the logits (~10 for a confident ImageNet model), not values of order 1 on all three data sets
and models. So the curve is rescaled per sample. The seed does not write the formula down and we could not retrieve
the paper's text here, so the choice rests on these numbers: the affine rescaling that maps the score at the baseline
to 0 and at the full input to 1 is the simplest convention consistent with all of them, and it is what
``"samp"`` implements. The curve then leaves [0, 1] exactly when removing the top-ranked pixels pushes the class
score *below* its value on the all-baseline image (deletion < 0) or inserting them pushes it *above* its value on the
full image (insertion > 1) -- both typical of sparse, concentrated attributions such as SAMP's. Honest caveat: the
ratio ``normalisation="input"`` with ``score="logit"`` (s_k / s_x on logits) can also produce negative deletion and
insertion above 1, and the seed's numbers cannot tell the two apart; if the paper's text says otherwise, the ratio
is available under its own name. The paper's settings otherwise follow RISE: deletion towards black, insertion from
a blurred image (an ICLR reviewer quotes its appendix A.5.3: "the setting of Deletion/Insertion is consistent with
'B+G'", B being the black end of the x -> baseline path, G presumably the Gaussian blur). Where s_x == s_b the
normalised curve is undefined: the score is NaN and a RuntimeWarning names the samples.

Every (image, step) evaluation goes through :class:`~pathxai.core.BatchedEvaluator`: items are laid out sample-major
(item j is step j % (K+1) of sample j // (K+1)) and each chunk's inputs are built on the fly, so memory is bounded by
``batch_size`` and does not grow with ``steps``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..core import limits
from ..core.baselines import BaselineLike, check_baseline, describe_baseline, make_baseline
from ..core.evaluator import AUTO, BatchedEvaluator, evaluation_mode
from ..core.limits import Cost
from ..core.method import item_outputs
from ..core.targets import TargetLike
from ..core.validation import check_input, check_positive_float, check_positive_int, check_saliency
from ._common import (MetricInfo, MetricResult, as_saliency, check_score_name, metric_target, register_metric,
                      score_kind, target_meta, warn_nan)

NORMALISATIONS = ("none", "input", "samp")


@dataclass(kw_only=True)
class PerturbationCurve(MetricResult):
    """Result of :func:`deletion` / :func:`insertion`.

    Attributes:
        score: (N,) area under ``curve`` on [0, 1] (trapezoid rule).
        curve: (N, steps+1) the (normalised) curve.
        raw_curve: (N, steps+1) the target's score before normalisation.
        fractions: (steps+1,) fraction of pixels changed at each point, k / steps.
        n_pixels: (steps+1,) number of pixels changed at each point.
        input_score: (N,) score at the full input; baseline_score: (N,) at the all-baseline input.
        kind: ``"deletion"`` or ``"insertion"``; normalisation: as passed.
    """

    raw_curve: torch.Tensor
    fractions: torch.Tensor
    n_pixels: torch.Tensor
    input_score: torch.Tensor
    baseline_score: torch.Tensor
    kind: str
    normalisation: str


def trapezoid_auc(curve: torch.Tensor) -> torch.Tensor:
    """Area under (N, K+1) curves sampled at k / K on [0, 1], trapezoid rule, computed in float64."""
    c = curve.double()
    k = c.shape[1] - 1
    if k < 1:
        raise ValueError(f"a curve needs at least 2 points, got shape {tuple(curve.shape)}")
    return (c.sum(1) - 0.5 * (c[:, 0] + c[:, -1])) / k


def pixel_ranks(saliency: torch.Tensor) -> torch.Tensor:
    """(N, H, W) rank of every pixel, 0 = most salient; ties broken by flattened pixel index (stable sort)."""
    n = saliency.shape[0]
    flat = saliency.reshape(n, -1)
    order = torch.argsort(-flat.double(), dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1]).expand(n, -1).contiguous())
    return ranks.view_as(saliency)


def _normalise(raw: torch.Tensor, kind: str, normalisation: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    s_x, s_b = (raw[:, 0], raw[:, -1]) if kind == "deletion" else (raw[:, -1], raw[:, 0])
    if normalisation == "none":
        return raw, s_x, s_b
    if normalisation == "input":
        den = s_x
        warn_nan("normalisation='input' divides by the score at the full input, which is 0", den == 0)
        return raw / den.unsqueeze(1), s_x, s_b
    den = s_x - s_b
    warn_nan("normalisation='samp' divides by f(x) - f(baseline), which is 0", den == 0)
    return (raw - s_b.unsqueeze(1)) / den.unsqueeze(1), s_x, s_b


def _curve_metric(kind: str, model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, saliency: Any,
                  target: TargetLike, *, steps: int, baseline: BaselineLike, score: str, normalisation: str,
                  blur_sigma: float, batch_size: int | str, progress: bool | None) -> PerturbationCurve:
    start_time = time.perf_counter()
    x = check_input(x, "x", ndim=4, expected="(N, C, H, W)").detach().cpu()
    saliency = check_saliency(as_saliency(saliency), x).detach().cpu()
    steps = check_positive_int(steps, "steps")
    if not isinstance(normalisation, str) or normalisation.lower() not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {', '.join(map(repr, NORMALISATIONS))}, got {normalisation!r}")
    normalisation = normalisation.lower()
    check_score_name(score)
    check_baseline(baseline, "baseline")
    check_positive_float(blur_sigma, "blur_sigma")
    evaluator = BatchedEvaluator(model, batch_size=batch_size, progress=progress)
    dtype = x.dtype
    x = evaluator.work_input(x)   # the model's device, float32 or wider; results come back on the host
    n, _, h, w = x.shape
    cost = Cost(evaluations=n * (steps + 1), bytes=8.0 * n * (steps + 1) * 3 + 8.0 * (steps + 1), param="steps",
                value=steps, detail=f"{n} input(s) x {steps + 1} curve points")
    limits.check(cost, f"metric {kind!r}")
    hw = h * w
    per_sample = steps + 1
    with evaluation_mode(model):
        b = make_baseline(x, baseline, blur_sigma=blur_sigma, name="baseline")
        resolved = metric_target(evaluator, x, target)
        kind_score = score_kind(score, resolved)
        ranks = pixel_ranks(saliency).to(x.device)  # (N, H, W): memory independent of steps
        n_changed = (torch.arange(per_sample) * hw) // steps  # (K+1,) pixels changed after each step
        n_changed_dev = n_changed.to(x.device)

        def build(items: torch.Tensor) -> torch.Tensor:
            s, k = items // per_sample, items % per_sample
            changed = (ranks[s] < n_changed_dev[k].view(-1, 1, 1)).unsqueeze(1)  # (n, 1, H, W)
            if kind == "deletion":
                return torch.where(changed, b[s], x[s])
            return torch.where(changed, x[s], b[s])

        raw = torch.empty(n * per_sample, dtype=torch.float64)
        for items, out in item_outputs(evaluator, n * per_sample, build, sample_shape=x.shape[1:], desc=kind):
            raw[items] = resolved.score(out, items // per_sample, kind=kind_score).double().cpu()
    raw = raw.view(n, per_sample)
    curve, s_x, s_b = _normalise(raw, kind, normalisation)
    auc = trapezoid_auc(curve)
    meta = {
        "metric": kind, "steps": steps, "baseline": describe_baseline(baseline), "blur_sigma": blur_sigma,
        "score": score, "normalisation": normalisation, "batch_size": evaluator.batch_size,
        "chunk_sizes": sorted(evaluator.chunk_sizes_used), "model_evaluations": evaluator.n_evaluations,
        "probe_evaluations": evaluator.n_probe, "target": target_meta(resolved),
        "wall_time_s": time.perf_counter() - start_time,
    }
    return PerturbationCurve(score=auc.to(dtype), curve=curve.to(dtype), meta=meta, raw_curve=raw.to(dtype),
                             fractions=torch.arange(per_sample, dtype=torch.float64).div(steps).to(dtype),
                             n_pixels=n_changed, input_score=s_x.to(dtype), baseline_score=s_b.to(dtype),
                             kind=kind, normalisation=normalisation)


_CONVENTIONS = """
    Args:
        model: callable ``(N, C, H, W) -> (N, K)`` (or any output with a callable target).
        x: (N, C, H, W) inputs.
        saliency: (N, H, W) or (N, 1, H, W) map (or an Explanation: its ``.saliency()``); higher = more important.
        target: int class, N ints, ``None`` (predicted class) or callable ``output -> (N,)``.
        steps: number of equal chunks of pixels (the curve has steps + 1 points).
        baseline: what removed pixels become / what the image starts from: ``"zero"``, ``"blur"`` (Gaussian,
            std ``blur_sigma`` px), ``"mean"``, a number, a tensor or a callable (see ``make_baseline``).
        score: the target's ``"softmax"`` probability (RISE, default), ``"logit"`` (raw output) or ``"log_softmax"``.
        normalisation: ``"none"`` (default), ``"input"`` or ``"samp"`` (see the module docstring).
        batch_size: most model evaluations in flight (positive int or ``"auto"``).
    Returns:
        :class:`PerturbationCurve` with ``score`` (N,) and ``curve`` (N, steps+1).
"""


@register_metric(MetricInfo(
    name="deletion", category="faithfulness", score_direction="lower", needs_model=True, input="saliency (N, H, W)",
    score_range="[0, 1] with softmax and normalisation='none'; unbounded otherwise",
    reference="Petsiuk, Das & Saenko, RISE, BMVC 2018",
    description="AUC of the target score while the most salient pixels are replaced by a baseline."))
def deletion(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, saliency: Any,
             target: TargetLike = None, *, steps: int = 100, baseline: BaselineLike = "zero",
             score: str = "softmax", normalisation: str = "none", blur_sigma: float = 5.0,
             batch_size: int | str = AUTO, progress: bool | None = None) -> PerturbationCurve:
    return _curve_metric("deletion", model, x, saliency, target, steps=steps, baseline=baseline, score=score,
                         normalisation=normalisation, blur_sigma=blur_sigma, batch_size=batch_size,
                         progress=progress)


@register_metric(MetricInfo(
    name="insertion", category="faithfulness", score_direction="higher", needs_model=True,
    input="saliency (N, H, W)", score_range="[0, 1] with softmax and normalisation='none'; unbounded otherwise",
    reference="Petsiuk, Das & Saenko, RISE, BMVC 2018",
    description="AUC of the target score while the most salient pixels of x are put back into a baseline."))
def insertion(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, saliency: Any,
              target: TargetLike = None, *, steps: int = 100, baseline: BaselineLike = "blur",
              score: str = "softmax", normalisation: str = "none", blur_sigma: float = 5.0,
              batch_size: int | str = AUTO, progress: bool | None = None) -> PerturbationCurve:
    return _curve_metric("insertion", model, x, saliency, target, steps=steps, baseline=baseline, score=score,
                         normalisation=normalisation, blur_sigma=blur_sigma, batch_size=batch_size,
                         progress=progress)


deletion.__doc__ = ("Deletion metric: replace the most salient pixels by the baseline, steps chunks at a time; "
                    "lower AUC is better.\n" + _CONVENTIONS)
insertion.__doc__ = ("Insertion metric: put the most salient pixels of x back into the baseline, steps chunks at a "
                     "time; higher AUC is better.\n" + _CONVENTIONS)
