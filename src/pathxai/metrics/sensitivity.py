"""Sensitivity-N (Ancona, Ceolini, Öztireli & Gross, "Towards better understanding of gradient-based attribution
methods for deep neural networks", ICLR 2018).

An attribution satisfies sensitivity-N when, for every subset S of N features, the attributions over S sum to the
output change caused by removing S: ``sum_{i in S} a_i = f(x) - f(x[S := baseline])``. The metric samples
``n_subsets`` random subsets of each size N in ``ns`` and reports, per sample and per N, the Pearson correlation
between the two sides across subsets (1 = perfect agreement in the linear sense). ``score`` is the mean correlation
over ``ns``; ``curve`` has one correlation per N (the paper plots it against N on a log axis).

Features are pixels over all channels by default (removing feature (h, w) sets all its channels to the baseline, and
its attribution is the sum over channels), or a given grouping (e.g. superpixels). Subsets are drawn with one seeded
generator per (sample, N, subset) item (:func:`pathxai.core.item_generator`), so results do not depend on
``batch_size``. Output scores are the target's raw output (``score="logit"``) by default, as in the paper, which
takes the network output before the softmax.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..core import limits
from ..core.baselines import BaselineLike, check_baseline, describe_baseline, make_baseline
from ..core.evaluator import AUTO, BatchedEvaluator, evaluation_mode
from ..core.limits import Cost
from ..core.method import item_outputs
from ..core.seeding import item_generator
from ..core.targets import TargetLike
from ..core.validation import (check_finite_float, check_input, check_positive_float, check_positive_int,
                               check_seed)
from ._common import (MetricInfo, MetricResult, as_attribution, check_score_name, metric_target, pearson,
                      register_metric, score_kind, target_meta, warn_nan)


@dataclass(kw_only=True)
class SensitivityNResult(MetricResult):
    """Result of :func:`sensitivity_n`.

    Attributes:
        score: (N,) mean over ``ns`` of the correlations (NaN if any is undefined).
        curve: (N, len(ns)) Pearson correlation per sample and subset size.
        ns: (len(ns),) subset sizes.
        attribution_sums: (N, len(ns), n_subsets) sum of attributions over each subset.
        output_changes: (N, len(ns), n_subsets) f(x) - f(x with the subset at the baseline).
        input_score: (N,) f(x).
        n_features: number of features subsets are drawn from.
    """

    ns: torch.Tensor
    attribution_sums: torch.Tensor
    output_changes: torch.Tensor
    input_score: torch.Tensor
    n_features: int


def _groups(features: Any, shape: tuple[int, ...], name: str = "features") -> torch.Tensor:
    """Feature id (0..G-1) of every element of a sample of ``shape``, from a grouping broadcastable to it."""
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name} must be an integer tensor of group ids broadcastable to {tuple(shape)}, "
                        f"got {type(features).__name__}")
    if torch.is_floating_point(features) or features.dtype == torch.bool or torch.is_complex(features):
        raise TypeError(f"{name} must hold integer group ids, got dtype {features.dtype}")
    f = features.detach().cpu()
    while f.ndim > len(shape) and f.shape[0] == 1:
        f = f[0]
    try:
        f = torch.broadcast_to(f, shape)
    except RuntimeError:
        raise ValueError(f"{name} must have a shape broadcastable to one sample's {tuple(shape)} (e.g. (H, W) for "
                         f"pixel groups shared by all channels), got {tuple(features.shape)}") from None
    return torch.unique(f.reshape(-1), return_inverse=True)[1].view(shape)


def default_ns(n_features: int, count: int = 10, max_fraction: float = 0.8) -> list[int]:
    """``count`` log-spaced subset sizes from 1 to ``max_fraction`` of the features (at most n_features - 1)."""
    n_features = check_positive_int(n_features, "n_features", minimum=2)
    count = check_positive_int(count, "count", minimum=2)  # count - 1 divides below
    max_fraction = check_finite_float(max_fraction, "max_fraction", low=0.0, high=1.0, low_open=True)
    top = max(1, min(n_features - 1, int(max_fraction * n_features)))
    if top == 1:
        return [1]
    return sorted({max(1, min(top, round(math.exp(i * math.log(top) / (count - 1))))) for i in range(count)})


@register_metric(MetricInfo(
    name="sensitivity_n", category="faithfulness", score_direction="higher", needs_model=True,
    input="attribution (N, C, H, W) or map (N, H, W)", score_range="[-1, 1] (Pearson correlation)",
    reference="Ancona et al., ICLR 2018",
    description="Correlation between attribution sums over random N-feature subsets and the output drop."))
def sensitivity_n(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, attribution: Any,
                  target: TargetLike = None, *, ns: Sequence[int] | None = None, n_subsets: int = 100,
                  baseline: BaselineLike = "zero", features: torch.Tensor | None = None, score: str = "logit",
                  blur_sigma: float = 10.0, seed: int = 0, batch_size: int | str = AUTO,
                  progress: bool | None = None) -> SensitivityNResult:
    """Sensitivity-N of an attribution.

    Args:
        model: callable ``(N, ...) -> (N, K)``.
        x: (N, C, H, W) inputs (or any (N, ...) with element-wise features).
        attribution: same shape as ``x``, or a per-pixel map (N, H, W) / (N, 1, H, W) for image inputs (or an
            Explanation: its ``.attribution``).
        target: int class, N ints, ``None`` (predicted class) or callable ``output -> (N,)``.
        ns: subset sizes N (each 1 <= N < number of features); default 10 log-spaced sizes up to 80% of them.
        n_subsets: random subsets per size (the paper uses 100).
        baseline: value removed features take (see ``make_baseline``), default zeros.
        features: integer group ids broadcastable to one sample (or to (H, W) for a map attribution); default:
            pixels, all channels together, for image inputs, else every element.
        score: ``"logit"`` (raw output, default), ``"softmax"`` or ``"log_softmax"``.
        seed: seed of the subset draws.
        batch_size: most model evaluations in flight (positive int or ``"auto"``).
    Returns:
        :class:`SensitivityNResult` with ``score`` (N,) and ``curve`` (N, len(ns)).
    """
    start_time = time.perf_counter()
    x = check_input(x, "x").detach().cpu()
    attribution = as_attribution(attribution)
    n_subsets = check_positive_int(n_subsets, "n_subsets", minimum=2)
    seed = check_seed(seed)
    check_score_name(score)
    check_baseline(baseline, "baseline")
    check_positive_float(blur_sigma, "blur_sigma")
    n = x.shape[0]
    sample_shape = tuple(x.shape[1:])
    if tuple(attribution.shape) == tuple(x.shape):
        groups = _groups(features, sample_shape) if features is not None else (
            torch.arange(x.shape[2] * x.shape[3]).view(1, *x.shape[2:]).expand(sample_shape) if x.ndim == 4
            else torch.arange(math.prod(sample_shape)).view(sample_shape))
        elem_groups = groups
        attr_flat, attr_groups = attribution.reshape(n, -1), groups.reshape(-1)
    elif x.ndim == 4 and attribution.ndim in (3, 4) and tuple(attribution.shape[-2:]) == tuple(x.shape[2:]) \
            and attribution.shape[0] == n and (attribution.ndim == 3 or attribution.shape[1] == 1):
        hw = tuple(x.shape[2:])
        groups = _groups(features, hw) if features is not None else torch.arange(hw[0] * hw[1]).view(hw)
        elem_groups = groups.unsqueeze(0).expand(sample_shape)
        attr_flat, attr_groups = attribution.reshape(n, -1), groups.reshape(-1)
    else:
        maps = f" or a map (N, H, W) = ({n}, {x.shape[2]}, {x.shape[3]})" if x.ndim == 4 else ""
        raise ValueError(f"attribution must have the shape of x {tuple(x.shape)}{maps}, got {tuple(attribution.shape)}")
    n_features = int(attr_groups.max()) + 1
    if n_features < 2:
        raise ValueError(f"sensitivity_n needs at least 2 features to draw subsets from, got {n_features}")
    group_attr = torch.zeros(n, n_features, dtype=torch.float64).index_add_(1, attr_groups, attr_flat.double())
    if ns is None:
        ns_list = default_ns(n_features)
    else:
        if isinstance(ns, int) or not isinstance(ns, Sequence) or len(ns) == 0:
            raise TypeError(f"ns must be a non-empty sequence of subset sizes, got {ns!r}")
        ns_list = [check_positive_int(v, "ns entries") for v in ns]
        bad = [v for v in ns_list if v >= n_features]
        if bad:
            raise ValueError(f"ns entries must lie in [1, {n_features - 1}] (subsets of {n_features} features; a "
                             f"subset of all features has no variance), got {bad}")
    n_sizes = len(ns_list)
    ns_t = torch.tensor(ns_list, dtype=torch.long)
    per_sample = n_sizes * n_subsets
    total = n * per_sample
    limits.check(Cost(evaluations=total + n, bytes=16.0 * total, param="n_subsets", value=n_subsets,
                      detail=f"{n} input(s) x {n_sizes} sizes x {n_subsets} subsets"), "metric 'sensitivity_n'")
    elem_groups_flat = elem_groups.reshape(-1)
    sums = torch.empty(total, dtype=torch.float64)
    evaluator = BatchedEvaluator(model, batch_size=batch_size, progress=progress)
    x = evaluator.work_input(x)   # the model's device, float32 or wider; the subset bookkeeping stays on the host
    with evaluation_mode(model):
        b = make_baseline(x, baseline, blur_sigma=blur_sigma, seed=seed, name="baseline")
        resolved = metric_target(evaluator, x, target)
        kind = score_kind(score, resolved)
        s_x = resolved.score(evaluator.forward(x, desc="sensitivity-n input"), kind=kind).double().cpu()

        def build(items: torch.Tensor) -> torch.Tensor:
            s = items // per_sample
            j = (items // n_subsets) % n_sizes
            removed = torch.empty(items.shape[0], n_features, dtype=torch.bool)
            for r, item in enumerate(items.tolist()):
                chosen = torch.randperm(n_features, generator=item_generator(seed, "sensitivity_n", item))
                chosen = chosen[: ns_list[int(j[r])]]
                removed[r] = False
                removed[r, chosen] = True
                sums[item] = group_attr[int(s[r]), chosen].sum()
            mask = removed[:, elem_groups_flat].view(-1, *sample_shape).to(x.device)
            return torch.where(mask, b[s], x[s])

        changes = torch.empty(total, dtype=torch.float64)
        for items, out in item_outputs(evaluator, total, build, sample_shape=sample_shape, desc="sensitivity-n"):
            s = items // per_sample
            changes[items] = s_x[s] - resolved.score(out, s, kind=kind).double().cpu()
    sums = sums.view(n, n_sizes, n_subsets)
    changes = changes.view(n, n_sizes, n_subsets)
    corr = pearson(sums, changes)
    warn_nan("sensitivity-N correlation is undefined (constant attribution sums or output changes)",
             torch.isnan(corr).any(1))
    dtype = x.dtype
    meta = {"metric": "sensitivity_n", "ns": ns_list, "n_subsets": n_subsets, "baseline": describe_baseline(baseline),
            "score": score, "seed": seed, "n_features": n_features, "batch_size": evaluator.batch_size,
            "chunk_sizes": sorted(evaluator.chunk_sizes_used), "model_evaluations": evaluator.n_evaluations,
            "target": target_meta(resolved), "wall_time_s": time.perf_counter() - start_time}
    return SensitivityNResult(score=corr.mean(1).to(dtype), curve=corr.to(dtype), meta=meta, ns=ns_t,
                              attribution_sums=sums.to(dtype), output_changes=changes.to(dtype),
                              input_score=s_x.to(dtype), n_features=n_features)
