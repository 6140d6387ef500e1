"""Numbers you can trust in evaluation tables: bootstrap confidence intervals and paired tests between methods.

Used by :func:`pathxai.evaluate` (``EvaluationResult.summary`` / ``comparisons``) and by the summary of
:func:`pathxai.run`. Every score here is one number per *item* (image); items are the unit of resampling.

    from pathxai import stats
    ci = stats.mean_ci(scores)                       # MeanCI(mean, low, high, n, method)
    table = stats.compare_methods({"ig": a, "gradcam": b}, higher_is_better=True)
    table.best, table.pairs[0]["p_holm"]

Conventions (also written into every ``summary.json`` as ``statistics``):

- **Confidence interval of a mean**: 95 % BCa bootstrap over items (:func:`scipy.stats.bootstrap`, ``method="BCa"``,
  9999 resamples, a generator seeded from the evaluation's seed and the (method, metric) name, so a table is
  reproducible bit for bit). BCa (bias-corrected and accelerated) is SciPy's default and corrects the percentile
  interval for the skew and bias of the bootstrap distribution, which matters for bounded scores such as AUCs near
  0 or 1 and hit rates. Above 5000 items (large batch runs) the percentile interval is used: BCa's jackknife costs
  O(n^2) and its correction shrinks like 1/sqrt(n). Where BCa is undefined (SciPy reports a degenerate bootstrap distribution) the percentile
  interval is used instead; constant scores give ``[v, v]``; fewer than two items give ``[NaN, NaN]``. Each row
  records the method used (``ci95_method``).
- **Class-balanced means** (the pointing game's TorchRay convention, ``groups=`` the class of each item): the
  statistic is the mean over classes of the per-class mean; the bootstrap resamples items with their classes, and
  a class absent from a resample is left out of that resample's mean.
- **Missing scores** (NaN, e.g. a metric undefined on an item): dropped; a comparison keeps the items where both
  methods have a score (pairwise deletion) and reports that ``n``.
- **Paired comparison** of methods A and B on one metric, over the same items: the differences ``d = A - B``;
  their mean (class-balanced where the metric is) with a 95 % BCa bootstrap CI (the differences are resampled, so
  the pairing is kept); and a two-sided **Wilcoxon signed-rank** p-value (:func:`scipy.stats.wilcoxon`,
  ``zero_method="wilcox"``: zero differences are dropped, SciPy's default; no continuity correction). Wilcoxon rather
  than a paired t-test because per-item scores are bounded and skewed, and rather than a sign-flip permutation test
  of the mean because it is the standard test for comparing methods over items (Demšar, JMLR 2006), deterministic,
  and robust to a few extreme items; it tests whether the differences are symmetric about zero, so in rare cases
  it can disagree with the sign of the mean difference (``better`` is then left empty). The way the p-value is
  computed is fixed here rather than left to SciPy's ``method="auto"`` (whose rules changed between releases):
  ``exact`` when there are at most 50 differences, none zero and no ties among their absolute values (the exact
  null distribution is valid only then); otherwise, with at most 13 differences, the ``permutation`` distribution
  over all 2**n sign flips (SciPy's own choice for small samples with ties or zeros; exact, not random); otherwise
  the ``normal`` approximation with SciPy's tie and zero corrections of the variance. All differences zero gives
  p = 1 (no evidence of a difference).
- **Holm correction** across all pairs of methods of one metric (``p_holm``; Holm 1979: controls the family-wise
  error rate at ``alpha`` without assuming independence). ``significant`` = ``p_holm < alpha`` (0.05).
- **Best method** of a metric: the method with the best mean, reported only when its comparison with the runner-up
  (the second-best mean) is significant after Holm's correction and the mean difference points the same way;
  otherwise the metric is ``"tied"``: the data do not separate the top two methods.
"""
from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Mapping, Sequence

import numpy as np

from .core.seeding import numpy_rng
from .core.validation import check_seed

CONFIDENCE = 0.95
N_RESAMPLES = 9999
ALPHA = 0.05
EXACT_MAX_N = 50          # exact Wilcoxon null distribution up to this many differences (no ties, no zeros)
PERMUTATION_MAX_N = 13    # all 2**n sign flips (8192) up to this many differences when there are ties or zeros
BCA_MAX_N = 5000          # BCa's jackknife is O(n^2); above this many items the percentile interval is used
BATCH_ELEMENTS = 1 << 22  # resampled values held at once (32 MiB of float64): memory does not grow with n

STATISTICS_NOTE = {
    "ci95": f"{CONFIDENCE:.0%} BCa bootstrap over items (scipy.stats.bootstrap, {N_RESAMPLES} resamples, seeded); "
            f"percentile where BCa is undefined or above {BCA_MAX_N} items; class-balanced for class-balanced "
            "metrics",
    "comparisons": "paired by item (pairwise deletion of missing scores); mean difference a - b with a BCa bootstrap "
                   "CI; two-sided Wilcoxon signed-rank p-value (zero differences dropped; exact for n <= 50 without "
                   f"ties or zeros, all sign flips for n <= {PERMUTATION_MAX_N} with them, else the normal "
                   "approximation with tie correction); Holm-corrected over all pairs of methods of a metric",
    "alpha": ALPHA,
    "best": "the best mean, only when significantly better than the runner-up after Holm's correction; else 'tied'",
}


@dataclass(frozen=True)
class MeanCI:
    """A mean over items with its bootstrap confidence interval.

    Attributes:
        mean: the mean of the finite scores (class-balanced with ``groups``); NaN without any.
        low, high: the confidence interval's bounds. n: finite scores used.
        method: ``"BCa"``, ``"percentile"`` (BCa undefined), ``"constant"`` (all scores equal) or ``"undefined"``
            (fewer than two scores).
    """

    mean: float
    low: float
    high: float
    n: int
    method: str

    @property
    def interval(self) -> list[float]:
        """``[low, high]``."""
        return [self.low, self.high]


@dataclass(frozen=True)
class PairedComparison:
    """Methods A and B on the same items: the mean difference A - B, its CI and the Wilcoxon p-value.

    Attributes:
        n: items where both scores are finite. mean_difference / low / high: the mean of A - B and its bootstrap
        interval (``ci_method`` as in :class:`MeanCI`). p_value: two-sided Wilcoxon signed-rank p-value (NaN
        without any item). test: how it was computed (``exact``, ``permutation``, ``normal``, ``all zero``,
        ``undefined``).
    """

    n: int
    mean_difference: float
    low: float
    high: float
    ci_method: str
    p_value: float
    test: str


@dataclass
class MethodComparison:
    """All pairwise comparisons of several methods on one metric, Holm-corrected, and the best method.

    Attributes:
        pairs: one dict per pair (in the order of the methods given): ``method_a, method_b, n, mean_difference``
            (a - b), ``ci95`` ([low, high]), ``ci95_method``, ``p_value`` (uncorrected), ``p_holm``, ``test``,
            ``significant`` (p_holm < alpha) and ``better`` (the better method when significant and the mean
            difference agrees, else None).
        means: ``{method: MeanCI}``. best: the best method when it is significantly better than the runner-up,
        ``"tied"`` when not, None with fewer than two methods that have scores. runner_up: the second-best mean.
    """

    metric: str
    higher_is_better: bool
    alpha: float
    means: dict[str, MeanCI]
    pairs: list[dict[str, Any]] = field(default_factory=list)
    best: str | None = None
    leader: str | None = None
    runner_up: str | None = None

    def verdict(self) -> dict[str, Any]:
        """``{"best", "leader", "runner_up", "p_holm"}``: the JSON record of the best-method decision."""
        pair = self.pair(self.leader, self.runner_up) if self.leader and self.runner_up else None
        return {"best": self.best, "leader": self.leader, "runner_up": self.runner_up,
                "p_holm": None if pair is None else pair["p_holm"]}

    def pair(self, a: str, b: str) -> dict[str, Any] | None:
        """The comparison of methods ``a`` and ``b`` in whichever order it was computed, or None."""
        for p in self.pairs:
            if {p["method_a"], p["method_b"]} == {a, b}:
                return p
        return None


# ---------------------------------------------------------------------------------------------------------------
# input checks


def _as_scores(values: Any, name: str) -> np.ndarray:
    if hasattr(values, "detach"):   # torch tensor, without importing torch here
        values = values.detach().cpu().double().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a 1-D sequence of numbers (one score per item), got "
                        f"{type(values).__name__}") from err
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one score per item), got shape {arr.shape}")
    return arr


def _as_groups(groups: Any, n: int) -> np.ndarray | None:
    if groups is None:
        return None
    if hasattr(groups, "detach"):
        groups = groups.detach().cpu().numpy()
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups must have one class per item, shape ({n},), got shape {g.shape}")
    if not np.issubdtype(g.dtype, np.integer):
        raise TypeError(f"groups must hold integer class ids, got dtype {g.dtype}")
    return g.astype(np.int64)


def _check_settings(confidence: float, n_resamples: int, seed: int) -> tuple[float, int, int]:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 100:
        raise ValueError(f"n_resamples must be an int >= 100, got {n_resamples!r}")
    return float(confidence), int(n_resamples), check_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
# means and their intervals


def _class_balanced(values: np.ndarray, groups: np.ndarray, classes: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean over ``classes`` of the per-class mean of ``values`` along ``axis`` (a class absent from a slice is
    skipped); broadcasts over the leading axes the bootstrap adds."""
    values, groups = np.moveaxis(values, axis, -1), np.moveaxis(groups, axis, -1)
    total = np.zeros(values.shape[:-1])
    count = np.zeros(values.shape[:-1])
    for c in classes:
        member = groups == c
        k = member.sum(-1)
        present = k > 0
        total += np.where(present, (values * member).sum(-1) / np.maximum(k, 1), 0.0)
        count += present
    return total / count


def _statistic_of(values: np.ndarray, groups: np.ndarray | None) -> float:
    if len(values) == 0:
        return math.nan
    if groups is None:
        return float(values.mean())
    return float(_class_balanced(values, groups, np.unique(groups)))


def _bootstrap(values: np.ndarray, groups: np.ndarray | None, confidence: float, n_resamples: int, seed: int,
               stream: str) -> tuple[float, float, str]:
    """Bootstrap interval of the (class-balanced) mean of ``values`` (n,), finite, n >= 2."""
    from scipy import stats

    # SciPy >= 1.15 takes the generator as ``rng``; older releases (the project allows >= 1.10) as ``random_state``
    rng_keyword = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    if np.all(values == values[0]):
        return float(values[0]), float(values[0]), "constant"
    if groups is None:
        data: tuple[np.ndarray, ...] = (values,)

        def statistic(v: np.ndarray, axis: int = -1) -> np.ndarray:
            return np.mean(v, axis=axis)
    else:
        classes = np.unique(groups)
        data = (values, groups)

        def statistic(v: np.ndarray, g: np.ndarray, axis: int = -1) -> np.ndarray:
            return _class_balanced(v, g, classes, axis)
    # BCa's acceleration comes from a jackknife (n statistics of n - 1 items: O(n^2)); its correction shrinks like
    # 1/sqrt(n), so on very large runs the percentile interval is used directly
    methods = ("BCa", "percentile") if len(values) <= BCA_MAX_N else ("percentile",)
    batch = max(1, BATCH_ELEMENTS // len(values))
    for method in methods:
        # the same generator state for either method: the resamples do not depend on the fallback
        rng = numpy_rng(seed, f"bootstrap:{stream}")
        with warnings.catch_warnings():
            # SciPy warns (DegenerateDataWarning) and returns NaN where BCa is undefined; we fall back instead
            warnings.simplefilter("ignore")
            res = stats.bootstrap(data, statistic, n_resamples=n_resamples, batch=batch, vectorized=True,
                                  paired=len(data) > 1, confidence_level=confidence, method=method,
                                  **{rng_keyword: rng})
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return low, high, method
    return math.nan, math.nan, "undefined"


def mean_ci(values: Any, *, groups: Any = None, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
            seed: int = 0, stream: str = "mean") -> MeanCI:
    """The mean of the finite ``values`` (n,) and its BCa bootstrap confidence interval over items.

    Args:
        values: (n,) one score per item (NaN = no score: dropped).
        groups: (n,) integer class per item for a class-balanced mean (mean over classes of the per-class mean).
        confidence: the interval's level. n_resamples: bootstrap resamples (>= 100).
        seed, stream: seed the resampling (:func:`pathxai.core.seeding.numpy_rng`); give each quantity its own
            ``stream`` so that intervals do not share resamples.
    Returns:
        :class:`MeanCI`.
    """
    v = _as_scores(values, "values")
    g = _as_groups(groups, len(v))
    confidence, n_resamples, seed = _check_settings(confidence, n_resamples, seed)
    ok = np.isfinite(v)
    v, g = v[ok], (None if g is None else g[ok])
    mean = _statistic_of(v, g)
    if len(v) < 2:
        return MeanCI(mean, math.nan, math.nan, int(len(v)), "undefined")
    low, high, method = _bootstrap(v, g, confidence, n_resamples, seed, stream)
    return MeanCI(mean, low, high, int(len(v)), method)


# ---------------------------------------------------------------------------------------------------------------
# paired tests


def wilcoxon_p(differences: Any) -> tuple[float, str]:
    """Two-sided Wilcoxon signed-rank p-value of paired ``differences`` (n,) (NaN dropped) and how it was computed.

    ``exact`` for n <= 50 without zeros or tied absolute values; with ties or zeros, all 2**n sign flips for
    n <= 13 (SciPy's ``PermutationMethod``, exhaustive) and the tie-corrected ``normal`` approximation above.
    Zero differences are dropped (``zero_method="wilcox"``); all zero gives (1.0, "all zero").
    """
    from scipy import stats

    d = _as_scores(differences, "differences")
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return math.nan, "undefined"
    nonzero = d[d != 0]
    if len(nonzero) == 0:
        return 1.0, "all zero"
    ties = len(np.unique(np.abs(nonzero))) < len(nonzero)
    zeros = len(nonzero) < len(d)
    if not ties and not zeros and len(d) <= EXACT_MAX_N:
        method: Any = "exact"
        name = "exact"
    elif len(d) <= PERMUTATION_MAX_N and hasattr(stats, "PermutationMethod"):
        method = stats.PermutationMethod(n_resamples=np.inf)   # exhaustive: every sign flip, no randomness
        name = "permutation"
    else:
        method = "asymptotic"
        name = "normal"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # SciPy warns about the normal approximation on small samples
        try:
            res = stats.wilcoxon(d, zero_method="wilcox", correction=False, alternative="two-sided", method=method)
        except ValueError:
            if method != "asymptotic":
                raise
            # SciPy < 1.15 names the normal approximation "approx"
            res = stats.wilcoxon(d, zero_method="wilcox", correction=False, alternative="two-sided", method="approx")
    return float(res.pvalue), name


def paired_comparison(a: Any, b: Any, *, groups: Any = None, confidence: float = CONFIDENCE,
                      n_resamples: int = N_RESAMPLES, seed: int = 0, stream: str = "paired") -> PairedComparison:
    """Compare two methods' scores on the same items: mean of ``a - b``, its bootstrap CI and a Wilcoxon p-value.

    Args:
        a, b: (n,) scores of the two methods on the same n items, in the same order. Items where either is NaN
            are dropped (pairwise deletion; ``n`` reports how many remain).
        groups: (n,) integer class per item: the mean difference is then class-balanced (the difference of the
            two class-balanced means over the kept items); the p-value is per item either way.
        confidence, n_resamples, seed, stream: as in :func:`mean_ci`.
    Returns:
        :class:`PairedComparison`.
    """
    x, y = _as_scores(a, "a"), _as_scores(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"a and b must score the same items: shapes {x.shape} and {y.shape} differ")
    g = _as_groups(groups, len(x))
    confidence, n_resamples, seed = _check_settings(confidence, n_resamples, seed)
    ok = np.isfinite(x) & np.isfinite(y)
    d = x[ok] - y[ok]
    g = None if g is None else g[ok]
    mean = _statistic_of(d, g)
    if len(d) < 2:
        low, high, ci_method = math.nan, math.nan, "undefined"
    else:
        low, high, ci_method = _bootstrap(d, g, confidence, n_resamples, seed, stream)
    p, test = wilcoxon_p(d)
    return PairedComparison(int(len(d)), mean, low, high, ci_method, p, test)


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979) of a family of tests, in the input order.

    With the m finite p-values sorted ascending, ``p_adj(i) = max_{j <= i} min(1, (m - j + 1) p(j))``; rejecting
    where ``p_adj < alpha`` controls the family-wise error rate at ``alpha``. NaN p-values stay NaN and do not count
    in m. SciPy offers no Holm correction (``false_discovery_control`` is Benjamini-Hochberg/Yekutieli).
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_values must be 1-D, got shape {p.shape}")
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"p_values must lie in [0, 1], got {p[(p < 0) | (p > 1)][:5].tolist()}")
    out = np.full_like(p, math.nan)
    ok = np.isfinite(p)
    q = p[ok]
    m = len(q)
    if m:
        order = np.argsort(q, kind="stable")
        adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * q[order]))
        back = np.empty(m)
        back[order] = adjusted
        out[ok] = back
    return out


def compare_methods(scores: Mapping[str, Any], *, metric: str = "", higher_is_better: bool = True,
                    groups: Any = None, alpha: float = ALPHA, confidence: float = CONFIDENCE,
                    n_resamples: int = N_RESAMPLES, seed: int = 0,
                    means: Mapping[str, float] | None = None) -> MethodComparison:
    """Every method's mean with its CI, every pair compared on the same items, Holm-corrected, and the best method.

    Args:
        scores: ``{method: (n,) scores}``, all on the same n items in the same order (NaN = no score).
        metric: a name for the record (and the seed streams). higher_is_better: the metric's direction.
        groups: (n,) integer class per item for class-balanced means (see :func:`mean_ci`).
        alpha: the family-wise significance level. confidence, n_resamples, seed: as in :func:`mean_ci`.
        means: the means to rank the methods by, when they are computed elsewhere (default: the class-balanced or
            plain mean of each method's finite scores).
    Returns:
        :class:`MethodComparison`.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}")
    if not isinstance(higher_is_better, (bool, np.bool_)):
        raise TypeError(f"higher_is_better must be True or False, got {higher_is_better!r}")
    names = list(scores)
    arrays = {m: _as_scores(scores[m], f"scores[{m!r}]") for m in names}
    sizes = {a.shape for a in arrays.values()}
    if len(sizes) > 1:
        raise ValueError(f"scores must hold one score per item for the same items, got shapes "
                         f"{ {m: a.shape for m, a in arrays.items()} }")
    cis = {m: mean_ci(arrays[m], groups=groups, confidence=confidence, n_resamples=n_resamples, seed=seed,
                      stream=f"ci:{metric}:{m}") for m in names}
    result = MethodComparison(metric, bool(higher_is_better), float(alpha), cis)
    pairs = []
    for a, b in combinations(names, 2):
        c = paired_comparison(arrays[a], arrays[b], groups=groups, confidence=confidence, n_resamples=n_resamples,
                              seed=seed, stream=f"diff:{metric}:{a}:{b}")
        pairs.append({"metric": metric, "method_a": a, "method_b": b, "n": c.n, "mean_difference": c.mean_difference,
                      "ci95": [c.low, c.high], "ci95_method": c.ci_method, "p_value": c.p_value, "test": c.test})
    for pair, p in zip(pairs, holm([p["p_value"] for p in pairs])):
        pair["p_holm"] = float(p)
        pair["significant"] = bool(p < alpha)   # NaN < alpha is False
        d = pair["mean_difference"]
        better = None
        if pair["significant"] and math.isfinite(d) and d != 0:
            better = pair["method_a"] if (d > 0) == bool(higher_is_better) else pair["method_b"]
        pair["better"] = better
    result.pairs = pairs
    rank = {m: (means[m] if means is not None and m in means else cis[m].mean) for m in names}
    ranked = sorted((m for m in names if math.isfinite(rank[m])),
                    key=lambda m: -rank[m] if higher_is_better else rank[m])   # stable: ties keep input order
    if len(ranked) >= 2:
        result.leader, result.runner_up = ranked[0], ranked[1]
        pair = result.pair(ranked[0], ranked[1])
        result.best = ranked[0] if pair is not None and pair["better"] == ranked[0] else "tied"
    return result


__all__ = ["ALPHA", "CONFIDENCE", "MeanCI", "MethodComparison", "N_RESAMPLES", "PairedComparison",
           "STATISTICS_NOTE", "compare_methods", "holm", "mean_ci", "paired_comparison", "wilcoxon_p"]
