"""Completeness (Sundararajan et al., 2017; "summation-to-delta" in Shrikumar et al., 2017).

A path method's attributions add up to the change of the output between the baseline and the input:
``sum_i a_i = f(x) - f(baseline)``. This metric evaluates the model at x and at the baseline (2N evaluations through
the batched evaluator) and reports the residual ``sum(a) - (f(x) - f(b))`` (signed, as Captum's ``delta``), its
absolute value, and the relative residual ``|residual| / |f(x) - f(b)|`` which is ``score``. The baseline and the
score (raw output by default, as Captum's IG) must match the ones the attribution was computed with.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..core.baselines import BaselineLike, check_baseline, describe_baseline, make_baseline
from ..core.evaluator import AUTO, BatchedEvaluator, evaluation_mode
from ..core.method import item_outputs
from ..core.targets import TargetLike
from ..core.validation import check_input, check_positive_float, check_seed
from ._common import (MetricInfo, MetricResult, as_attribution, check_score_name, metric_target, register_metric,
                      score_kind, target_meta)


@dataclass(kw_only=True)
class CompletenessResult(MetricResult):
    """Result of :func:`completeness`.

    Attributes:
        score: (N,) relative residual |sum(a) - (f(x) - f(b))| / |f(x) - f(b)| (0 when both are 0, inf when only
            the output difference is 0).
        attribution_sum: (N,) sum of the attributions.
        output_difference: (N,) f(x) - f(b).
        residual: (N,) attribution_sum - output_difference (Captum's ``delta``).
        absolute: (N,) |residual|; relative: (N,) the score.
        input_score, baseline_score: (N,) f(x), f(b).
    """

    attribution_sum: torch.Tensor
    output_difference: torch.Tensor
    residual: torch.Tensor
    absolute: torch.Tensor
    relative: torch.Tensor
    input_score: torch.Tensor
    baseline_score: torch.Tensor


@register_metric(MetricInfo(
    name="completeness", category="axiomatic", score_direction="lower", needs_model=True,
    input="attribution (N, ...)", score_range="[0, inf) (relative residual)",
    reference="Sundararajan, Taly & Yan, Axiomatic attribution for deep networks, ICML 2017",
    description="How far the attributions' sum is from f(x) - f(baseline)."))
def completeness(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, attribution: Any,
                 target: TargetLike = None, baseline: BaselineLike = "zero", *, score: str = "logit",
                 blur_sigma: float = 10.0, seed: int = 0, batch_size: int | str = AUTO,
                 progress: bool | None = None) -> CompletenessResult:
    """Completeness residual of an attribution: sum(a) vs f(x) - f(baseline).

    Args:
        model: callable ``(N, ...) -> (N, K)``.
        x: (N, ...) inputs.
        attribution: (N, ...) attributions (summed over all non-batch axes), or an Explanation.
        target: int class, N ints, ``None`` (predicted class) or callable ``output -> (N,)``.
        baseline: the baseline the attribution used (see ``make_baseline``), default zeros.
        score: ``"logit"`` (raw output, default), ``"softmax"`` or ``"log_softmax"``: what the attribution explains.
        batch_size: most model evaluations in flight (positive int or ``"auto"``).
    Returns:
        :class:`CompletenessResult`.
    """
    start_time = time.perf_counter()
    x = check_input(x, "x").detach().cpu()
    attribution = as_attribution(attribution)
    n = x.shape[0]
    if attribution.ndim < 1 or attribution.shape[0] != n:
        raise ValueError(f"attribution must have shape (N, ...) with N = {n} to match x of shape {tuple(x.shape)}, "
                         f"got {tuple(attribution.shape)}")
    check_score_name(score)
    check_baseline(baseline, "baseline")
    check_positive_float(blur_sigma, "blur_sigma")
    seed = check_seed(seed)
    evaluator = BatchedEvaluator(model, batch_size=batch_size, progress=progress)
    dtype = x.dtype
    x = evaluator.work_input(x)   # the model's device, float32 or wider; results come back on the host
    with evaluation_mode(model):
        b = make_baseline(x, baseline, blur_sigma=blur_sigma, seed=seed, name="baseline")
        resolved = metric_target(evaluator, x, target)
        kind = score_kind(score, resolved)
        scores = torch.empty(2 * n, dtype=torch.float64)

        def build(items: torch.Tensor) -> torch.Tensor:  # items 0..N-1: x, N..2N-1: baseline
            s = items % n
            return torch.where((items < n).view((-1,) + (1,) * (x.ndim - 1)).to(x.device), x[s], b[s])

        for items, out in item_outputs(evaluator, 2 * n, build, sample_shape=x.shape[1:], desc="completeness"):
            scores[items] = resolved.score(out, items % n, kind=kind).double().cpu()
    f_x, f_b = scores[:n], scores[n:]
    total = attribution.reshape(n, -1).double().sum(1)
    diff = f_x - f_b
    residual = total - diff
    absolute = residual.abs()
    relative = torch.where(diff != 0, absolute / diff.abs().clamp_min(torch.finfo(torch.float64).tiny),
                           torch.where(absolute == 0, torch.zeros_like(absolute), torch.full_like(absolute, torch.inf)))
    meta = {"metric": "completeness", "baseline": describe_baseline(baseline), "score": score,
            "batch_size": evaluator.batch_size, "model_evaluations": evaluator.n_evaluations,
            "target": target_meta(resolved), "wall_time_s": time.perf_counter() - start_time}
    return CompletenessResult(score=relative.to(dtype), curve=None, meta=meta, attribution_sum=total.to(dtype),
                              output_difference=diff.to(dtype), residual=residual.to(dtype),
                              absolute=absolute.to(dtype), relative=relative.to(dtype), input_score=f_x.to(dtype),
                              baseline_score=f_b.to(dtype))
