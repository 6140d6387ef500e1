"""Deletion and insertion (Petsiuk et al., RISE, BMVC 2018), with the score conventions papers actually use.

Pixels are ranked by the saliency map, highest first (ties keep pixel-index order: a stable sort of the flattened
(H, W) map). The curve has K + 1 points, from the untouched start (k = 0) to the end (k = K); after step k the first
``n_k`` ranked pixels (all channels) have been changed. Two step rules:

- ``steps`` = K equal chunks (default, K = 100): ``n_k = floor(k * H * W / K)``, plotted at fractions k / K;
- ``step_pixels`` = s pixels per step (the SAMP authors' rule): ``K = ceil(H * W / s)``, ``n_k = min(k s, H W)``,
  plotted at fractions n_k / (H W).

- **deletion** starts at the input x and replaces the ranked pixels by the baseline (default ``"zero"``, black, as in
  RISE): a good map makes the score fall fast, so *lower is better*;
- **insertion** starts at the baseline (default ``"blur"``, a Gaussian blur of x, as in RISE) and puts the ranked
  pixels of x back: a good map makes the score rise fast, so *higher is better*. ``baseline="uniform"`` (seeded
  uniform noise in each image's value range) and ``"zero"`` start elsewhere than a blur, e.g. to score a method
  that itself optimises insertion from a blur without circularity.

The score is the area under the curve on [0, 1] by the trapezoid rule, ``(sum(c) - (c_0 + c_K) / 2) / K``, except
for ``normalisation="samp_authors"``, whose score is the plain mean of the K + 1 points, ``sum(c) / (K + 1)``
(what the SAMP authors' code computes; ``PerturbationCurve.averaging`` says which).

What is plotted on the curve (``score`` and ``normalisation``), side by side, with s_k = score of the target at
step k, s_x = at the full input, s_b = at the all-baseline input (for deletion s_x = s_0 and s_b = s_K; for insertion
s_b = s_0 and s_x = s_K; both ends are taken from the curve itself, so the normalised curve meets 1 and 0 exactly):

===================  ====================================  ====================  ==================================
``normalisation``    curve c_k                             range of the score    convention of
===================  ====================================  ====================  ==================================
``"none"``           s_k (softmax probability by default)  [0, 1] for softmax    RISE (Petsiuk et al. 2018); Captum,
                                                                                 Quantus, TorchRay with softmax
``"input"``          s_k / s_x                             unbounded             "relative to the original score"
``"samp"``           (s_k - s_b) / (s_x - s_b)             unbounded: deletion   ours (affine: 0 at the baseline, 1
                                                           < 0, insertion > 1    at x); *not* the SAMP authors'
                                                           possible              convention, see below
``"samp_authors"``   s_k / s_x on the **logit**, score =   unbounded             the SAMP authors' released metric
                     **mean** of the points, 10-px steps                         code (Zhang et al., ICLR 2024)
                     on 28x28, predicted class
===================  ====================================  ====================  ==================================

``normalisation="samp_authors"`` reproduces, detail by detail, the metric of the SAMP authors' public code
(github.com/zbr17/ExplainAttr, ``src/benchmark/metric.py`` and ``examples/run_benchmark.py``, read to understand; no
code copied). Each choice and where it comes from:

- *curve*: the raw score divided by the score at the full input -- ``auc()`` divides deletion curves by their first
  point and insertion curves by their last, both f(x); there is no affine shift by f(baseline).
- *score*: the model's raw output, the logit (``Metric(use_softmax=False)``, ``CONFIG.use_softmax = False``). With
  ``normalisation="samp_authors"``, ``score=None`` (the default) means ``"logit"``; an explicit score is honoured.
- *average*: ``data.sum(-1) / data.size(-1)``, the mean of the K + 1 points, not a trapezoid.
- *step*: ``metric_step`` pixels per step, 10 on MNIST and CIFAR-10 (28x28, 32x32) and 224 * 8 = 1792 (eight rows) on
  ImageNet; ``nsteps = ceil(H W / step)``, so 79 steps (80 points) on 28x28, the last step changing the 4 pixels
  left. With neither ``steps`` nor ``step_pixels`` given, :func:`samp_authors_step_pixels` applies that rule (other
  sizes are our extrapolation: <= 32x32 images 10 px, larger ones eight rows); an explicit ``steps`` or
  ``step_pixels`` overrides it (the ratio and the mean are kept).
- *baselines*: deletion towards ``torch.zeros_like(img)`` (black for their MNIST pixels in [0, 1]; 0 in the model's
  input space in general), our ``"zero"``; insertion from ``gaussian_blur(img, klen, ksig)``, RISE's kernel (a delta
  on a klen x klen grid through SciPy's ``gaussian_filter``, reflect mode) convolved with *zero* padding, klen 11 and
  sigma 5 on MNIST / CIFAR-10 (klen 31 on ImageNet): :func:`samp_authors_blur`, the default insertion baseline of
  this normalisation (``blur_sigma`` is its sigma; an explicit ``baseline`` is honoured).
- *target*: the class the explainer predicted (``pred = argmax`` of the logits in their SAMP and IG explainers);
  the metric ignores the label. Pass ``target=None`` here (the predicted class) and explain the same class.
- *ranking*: ``torch.sort(descending=True)`` of the (signed) map; ties are broken by pixel index here.
- *statistics*: mean and ``np.std`` (ddof 0) over 100 random test images.

Under this convention the curve leaves [0, 1] whenever the class logit at the baseline has the opposite sign of
f(x) or exceeds it: deletion is negative when removing the ranked pixels drives the logit below 0 (typical of
digit models, whose class logit on a black image is strongly negative), and insertion exceeds 1 when inserting the
top pixels into the blur pushes the logit above f(x). Where f(x) = 0 the curve is undefined (NaN, RuntimeWarning).

Why ``"samp"`` exists. Before the authors' code was read, the affine rescaling (s_k - s_b) / (s_x - s_b) was inferred
from Table 1 of the SAMP paper (slides in shared/seeds/samp_path_choice.txt: "SAMP (ours) -0.093 (+-0.142) 1.074
(+-0.176)" on MNIST, "IG -0.372 (+-0.535) 1.452 (+-0.400)" on CIFAR-10), whose deletion < 0 and insertion > 1 are
impossible with raw probabilities. The authors' code shows the numbers come from the logit ratio instead
(``"samp_authors"``); ``"samp"`` is kept, under its old name, as our own normalisation (it maps every curve to 0 at
the baseline and 1 at x, so curves of different images are on one scale) -- it is not the paper's. Where s_x ==
s_b its curve is undefined: the score is NaN and a RuntimeWarning names the samples.

Every (image, step) evaluation goes through :class:`~pathxai.core.BatchedEvaluator`: items are laid out sample-major
(item j is step j % (K+1) of sample j // (K+1)) and each chunk's inputs are built on the fly, so memory is bounded by
``batch_size`` and does not grow with ``steps``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..core import limits
from ..core.baselines import BaselineLike, check_baseline, describe_baseline, make_baseline
from ..core.evaluator import AUTO, BatchedEvaluator, evaluation_mode
from ..core.limits import Cost
from ..core.method import item_outputs
from ..core.targets import TargetLike
from ..core.validation import check_input, check_positive_float, check_positive_int, check_saliency
from ._common import (MetricInfo, MetricResult, as_saliency, check_score_name, metric_target, register_metric,
                      score_kind, target_meta, warn_nan)

NORMALISATIONS = ("none", "input", "samp", "samp_authors")
DEFAULT_STEPS = 100


@dataclass(kw_only=True)
class PerturbationCurve(MetricResult):
    """Result of :func:`deletion` / :func:`insertion`.

    Attributes:
        score: (N,) area under ``curve`` on [0, 1] (trapezoid rule), or the mean of its points with
            ``normalisation="samp_authors"`` (see ``averaging``).
        curve: (N, K+1) the (normalised) curve (K = ``steps``, or ``ceil(H W / step_pixels)``).
        raw_curve: (N, K+1) the target's score before normalisation.
        fractions: (K+1,) fraction of pixels changed at each point: k / K for equal steps, n_k / (H W) for
            ``step_pixels``.
        n_pixels: (K+1,) number of pixels changed at each point.
        input_score: (N,) score at the full input; baseline_score: (N,) at the all-baseline input.
        kind: ``"deletion"`` or ``"insertion"``; normalisation: as passed.
        averaging: ``"trapezoid"`` (area by the trapezoid rule) or ``"mean"`` (mean of the K+1 points).
    """

    raw_curve: torch.Tensor
    fractions: torch.Tensor
    n_pixels: torch.Tensor
    input_score: torch.Tensor
    baseline_score: torch.Tensor
    kind: str
    normalisation: str
    averaging: str = "trapezoid"


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


def samp_authors_step_pixels(height: int, width: int) -> int:
    """Pixels changed per curve step in the SAMP authors' metric for an (H, W) image.

    Their ``metric_step``: 10 px on MNIST / CIFAR-10 (28x28, 32x32) and 224 * 8 px (eight rows) on ImageNet. Sizes
    they did not use follow our extrapolation: images of at most 32 x 32 pixels 10 px, larger ones ``8 * width``.
    """
    height = check_positive_int(height, "height")
    width = check_positive_int(width, "width")
    return 10 if height * width <= 32 * 32 else 8 * width


def samp_authors_blur(x: torch.Tensor, sigma: float = 5.0, klen: int | None = None) -> torch.Tensor:
    """The SAMP authors' insertion start: RISE's Gaussian kernel, convolved per channel with zero padding.

    The kernel is a delta at the centre of a ``klen x klen`` grid filtered by SciPy's ``gaussian_filter`` (std
    ``sigma``, its default reflect mode, so the kernel's tails fold back into the grid and it sums to 1); the image
    is convolved with it channel by channel with ``klen // 2`` pixels of zero padding, so its border darkens (towards
    0). Their values: ``klen`` 11 on 28x28 / 32x32 images, 31 on 224x224, ``sigma`` 5 on both; ``klen=None`` picks 11
    for images of at most 32 x 32 pixels and 31 otherwise.

    Args:
        x: (N, C, H, W) images. sigma: kernel std in pixels (> 0). klen: odd kernel size or None.
    Returns:
        (N, C, H, W) blurred images, x's dtype and device.
    """
    x = check_input(x, "x", ndim=4, expected="(N, C, H, W)")
    sigma = check_positive_float(sigma, "sigma")
    h, w = x.shape[-2:]
    if klen is None:
        klen = 11 if h * w <= 32 * 32 else 31
    klen = check_positive_int(klen, "klen")
    if klen % 2 == 0:
        raise ValueError(f"klen must be odd (the kernel is centred on its middle tap), got {klen}")
    from scipy.ndimage import gaussian_filter1d

    delta = np.zeros(klen)
    delta[klen // 2] = 1.0
    k1 = gaussian_filter1d(delta, sigma, mode="reflect")   # the separable factor of gaussian_filter(2-D delta)
    kernel = torch.from_numpy(np.outer(k1, k1)).to(device=x.device, dtype=x.dtype)
    c = x.shape[1]
    weight = kernel.expand(c, 1, klen, klen).contiguous()   # per channel (their C x C kernel is diagonal)
    return F.conv2d(x, weight, padding=klen // 2, groups=c)


def _normalise(raw: torch.Tensor, kind: str, normalisation: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    s_x, s_b = (raw[:, 0], raw[:, -1]) if kind == "deletion" else (raw[:, -1], raw[:, 0])
    if normalisation == "none":
        return raw, s_x, s_b
    if normalisation in ("input", "samp_authors"):
        den = s_x
        warn_nan(f"normalisation={normalisation!r} divides by the score at the full input, which is 0", den == 0)
        return raw / den.unsqueeze(1), s_x, s_b
    den = s_x - s_b
    warn_nan("normalisation='samp' divides by f(x) - f(baseline), which is 0", den == 0)
    return (raw - s_b.unsqueeze(1)) / den.unsqueeze(1), s_x, s_b


def _curve_metric(kind: str, model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, saliency: Any,
                  target: TargetLike, *, steps: int | None, step_pixels: int | None, baseline: BaselineLike,
                  score: str | None, normalisation: str, blur_sigma: float, batch_size: int | str,
                  progress: bool | None) -> PerturbationCurve:
    start_time = time.perf_counter()
    x = check_input(x, "x", ndim=4, expected="(N, C, H, W)").detach().cpu()
    saliency = check_saliency(as_saliency(saliency), x).detach().cpu()
    if not isinstance(normalisation, str) or normalisation.lower() not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {', '.join(map(repr, NORMALISATIONS))}, got {normalisation!r}")
    normalisation = normalisation.lower()
    authors = normalisation == "samp_authors"
    if steps is not None and step_pixels is not None:
        raise ValueError(f"give either steps (equal chunks) or step_pixels (pixels per step), not both; got "
                         f"steps={steps!r}, step_pixels={step_pixels!r}")
    hw = x.shape[-2] * x.shape[-1]
    if step_pixels is not None:
        step_pixels = check_positive_int(step_pixels, "step_pixels")
    elif steps is None and authors:
        step_pixels = samp_authors_step_pixels(x.shape[-2], x.shape[-1])
    if step_pixels is not None:
        steps = math.ceil(hw / step_pixels)
    else:
        steps = check_positive_int(DEFAULT_STEPS if steps is None else steps, "steps")
    if score is None:
        score = "logit" if authors else "softmax"   # the authors' metric scores the raw output
    check_score_name(score)
    blur_sigma = check_positive_float(blur_sigma, "blur_sigma")
    if baseline is None:
        if kind == "deletion":
            baseline = "zero"
        elif authors:
            def baseline(t: torch.Tensor) -> torch.Tensor:
                return samp_authors_blur(t, blur_sigma)
            baseline.__name__ = f"samp_authors_blur(sigma={blur_sigma:g})"
        else:
            baseline = "blur"
    check_baseline(baseline, "baseline")
    evaluator = BatchedEvaluator(model, batch_size=batch_size, progress=progress)
    dtype = x.dtype
    x = evaluator.work_input(x)   # the model's device, float32 or wider; results come back on the host
    n = x.shape[0]
    cost = Cost(evaluations=n * (steps + 1), bytes=8.0 * n * (steps + 1) * 3 + 8.0 * (steps + 1), param="steps",
                value=steps, detail=f"{n} input(s) x {steps + 1} curve points")
    limits.check(cost, f"metric {kind!r}")
    per_sample = steps + 1
    if step_pixels is not None:
        n_changed = (torch.arange(per_sample) * step_pixels).clamp(max=hw)  # (K+1,) the last step takes the rest
        fractions = n_changed.double() / hw
    else:
        n_changed = (torch.arange(per_sample) * hw) // steps  # (K+1,) pixels changed after each step
        fractions = torch.arange(per_sample, dtype=torch.float64).div(steps)
    with evaluation_mode(model):
        b = make_baseline(x, baseline, blur_sigma=blur_sigma, name="baseline")
        resolved = metric_target(evaluator, x, target)
        kind_score = score_kind(score, resolved)
        ranks = pixel_ranks(saliency).to(x.device)  # (N, H, W): memory independent of steps
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
    averaging = "mean" if authors else "trapezoid"
    # the authors' "auc" is the mean of the K+1 points (sum / (K+1)); everything else the trapezoid area
    auc = curve.double().mean(1) if averaging == "mean" else trapezoid_auc(curve)
    meta = {
        "metric": kind, "steps": steps, "step_pixels": step_pixels, "baseline": describe_baseline(baseline),
        "blur_sigma": blur_sigma, "score": score, "normalisation": normalisation, "averaging": averaging,
        "batch_size": evaluator.batch_size,
        "chunk_sizes": sorted(evaluator.chunk_sizes_used), "model_evaluations": evaluator.n_evaluations,
        "probe_evaluations": evaluator.n_probe, "target": target_meta(resolved),
        "wall_time_s": time.perf_counter() - start_time,
    }
    return PerturbationCurve(score=auc.to(dtype), curve=curve.to(dtype), meta=meta, raw_curve=raw.to(dtype),
                             fractions=fractions.to(dtype), n_pixels=n_changed, input_score=s_x.to(dtype),
                             baseline_score=s_b.to(dtype), kind=kind, normalisation=normalisation,
                             averaging=averaging)


_CONVENTIONS = """
    Args:
        model: callable ``(N, C, H, W) -> (N, K)`` (or any output with a callable target).
        x: (N, C, H, W) inputs.
        saliency: (N, H, W) or (N, 1, H, W) map (or an Explanation: its ``.saliency()``); higher = more important.
        target: int class, N ints, ``None`` (predicted class) or callable ``output -> (N,)``.
        steps: number of equal chunks of pixels (the curve has steps + 1 points); ``None`` = 100, or the SAMP
            authors' pixel step with ``normalisation="samp_authors"``.
        step_pixels: pixels changed per step instead (``ceil(H W / step_pixels)`` steps, the last one takes what
            is left); give ``steps`` or ``step_pixels``, not both.
        baseline: what removed pixels become / what the image starts from: ``"zero"``, ``"blur"`` (Gaussian,
            std ``blur_sigma`` px), ``"mean"``, ``"uniform"`` (seeded noise in each image's value range), a number,
            a tensor or a callable (see ``make_baseline``). ``None``: ``"zero"`` for deletion; for insertion
            ``"blur"``, or :func:`samp_authors_blur` with ``normalisation="samp_authors"``.
        score: the target's ``"softmax"`` probability, ``"logit"`` (raw output) or ``"log_softmax"``; ``None`` =
            softmax (RISE), or logit with ``normalisation="samp_authors"``.
        normalisation: ``"none"`` (default), ``"input"``, ``"samp"`` or ``"samp_authors"`` (module docstring).
        blur_sigma: std in pixels of the ``"blur"`` baseline and of :func:`samp_authors_blur`.
        batch_size: most model evaluations in flight (positive int or ``"auto"``).
    Returns:
        :class:`PerturbationCurve` with ``score`` (N,) and ``curve`` (N, steps+1).
"""


@register_metric(MetricInfo(
    name="deletion", category="faithfulness", score_direction="lower", needs_model=True, input="saliency (N, H, W)",
    score_range="[0, 1] with softmax and normalisation='none'; unbounded otherwise",
    reference="Petsiuk, Das & Saenko, RISE, BMVC 2018 (normalisation='samp_authors': Zhang et al., ICLR 2024, code)",
    description="AUC of the target score while the most salient pixels are replaced by a baseline."))
def deletion(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, saliency: Any,
             target: TargetLike = None, *, steps: int | None = None, step_pixels: int | None = None,
             baseline: BaselineLike = None, score: str | None = None, normalisation: str = "none",
             blur_sigma: float = 5.0,
             batch_size: int | str = AUTO, progress: bool | None = None) -> PerturbationCurve:
    return _curve_metric("deletion", model, x, saliency, target, steps=steps, step_pixels=step_pixels,
                         baseline=baseline, score=score,
                         normalisation=normalisation, blur_sigma=blur_sigma, batch_size=batch_size,
                         progress=progress)


@register_metric(MetricInfo(
    name="insertion", category="faithfulness", score_direction="higher", needs_model=True,
    input="saliency (N, H, W)", score_range="[0, 1] with softmax and normalisation='none'; unbounded otherwise",
    reference="Petsiuk, Das & Saenko, RISE, BMVC 2018 (normalisation='samp_authors': Zhang et al., ICLR 2024, code)",
    description="AUC of the target score while the most salient pixels of x are put back into a baseline."))
def insertion(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, saliency: Any,
              target: TargetLike = None, *, steps: int | None = None, step_pixels: int | None = None,
              baseline: BaselineLike = None, score: str | None = None, normalisation: str = "none",
              blur_sigma: float = 5.0,
              batch_size: int | str = AUTO, progress: bool | None = None) -> PerturbationCurve:
    return _curve_metric("insertion", model, x, saliency, target, steps=steps, step_pixels=step_pixels,
                         baseline=baseline, score=score,
                         normalisation=normalisation, blur_sigma=blur_sigma, batch_size=batch_size,
                         progress=progress)


deletion.__doc__ = ("Deletion metric: replace the most salient pixels by the baseline, steps chunks at a time; "
                    "lower AUC is better.\n" + _CONVENTIONS)
insertion.__doc__ = ("Insertion metric: put the most salient pixels of x back into the baseline, steps chunks at a "
                     "time; higher AUC is better.\n" + _CONVENTIONS)
