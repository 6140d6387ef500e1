"""Do the metrics agree? Rank correlation between the method rankings that pairs of metrics induce.

Given per-(method, metric) scores over a suite (a :class:`pathxai.evaluation.EvaluationResult`, or a mapping
``{(method, metric): score}`` whose values are numbers or per-item tensors, averaged), each metric ranks the methods
from best to worst in its own direction (``MetricInfo.score_direction``: higher is better, lower is better, or closer
to zero is better, looked up with :func:`pathxai.metrics.get_metric`; ``"pointing"`` of ``pathxai evaluate`` is
``pointing_game``; ``directions`` overrides or supplies it). For every pair of metrics the agreement of the two
rankings is Kendall's tau-b and Spearman's rho (SciPy, with their two-sided p-values; Kendall's is exact for small
samples without ties), over the methods that have a finite score under both. +1: the metrics order the methods the
same way; -1: in reverse.

Few methods say little: with 2 methods a rank correlation is +-1 by construction, so it is not reported (NaN); with
fewer than 5 no correlation can reach p < 0.05 (Kendall's exact test: the smallest two-sided p with 4 methods is
2/4! = 0.083). ``note`` says so.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from ._common import get_metric

ALIASES = {"pointing": "pointing_game"}
MIN_METHODS = 3
MIN_METHODS_SIGNIFICANT = 5


def metric_direction(metric: str, directions: Mapping[str, str] | None = None) -> str:
    """``"higher"``, ``"lower"`` or ``"closer_to_zero"``: which scores of ``metric`` are better."""
    if directions and metric in directions:
        value = directions[metric]
    else:
        try:
            value = get_metric(ALIASES.get(metric, metric)).info.score_direction
        except ValueError:
            raise ValueError(f"metric {metric!r} is not registered: pass its direction, e.g. "
                             f"directions={{{metric!r}: 'higher'}}") from None
    if value not in ("higher", "lower", "closer_to_zero"):
        raise ValueError(f"the direction of {metric!r} must be 'higher', 'lower' or 'closer_to_zero', got {value!r}")
    return value


def _table(table: Any) -> tuple[list[str], list[str], dict[tuple[str, str], float]]:
    if hasattr(table, "summary") and hasattr(table, "methods") and hasattr(table, "metrics"):
        rows = table.summary()
        values = {(r["method"], r["metric"]): float(r["mean"]) for r in rows}
        return list(table.methods), list(table.metrics), values
    if not isinstance(table, Mapping):
        raise TypeError("table must be an EvaluationResult or a mapping {(method, metric): score}, got "
                        f"{type(table).__name__}")
    values, methods, metrics = {}, [], []
    for key, v in table.items():
        if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key)):
            raise ValueError(f"table keys must be (method, metric) string pairs, got {key!r}")
        if isinstance(v, torch.Tensor):
            v = v.detach().double()
            v = v[torch.isfinite(v)]
            v = float(v.mean()) if v.numel() else math.nan
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            v = float(v)
        else:
            raise TypeError(f"table[{key!r}] must be a number or a tensor of per-item scores, got {type(v).__name__}")
        values[key] = v
        if key[0] not in methods:
            methods.append(key[0])
        if key[1] not in metrics:
            metrics.append(key[1])
    missing = [(a, b) for a in methods for b in metrics if (a, b) not in values]
    if missing:
        raise ValueError(f"table has no score for {missing[:5]}: every (method, metric) pair needs one")
    return methods, metrics, values


@dataclass
class MetricAgreement:
    """Result of :func:`metric_agreement`.

    Attributes:
        methods, metrics: the rows and columns of ``values``.
        values: (n_methods, n_metrics) mean score of each method under each metric.
        goodness: ``values`` signed so that higher is better (``-value`` for lower-is-better, ``-|value|`` for
            closer-to-zero).
        directions: {metric: direction}.
        kendall, spearman: (n_metrics, n_metrics) rank correlations (NaN where fewer than 3 methods are comparable
            or a metric ties every method); kendall_p, spearman_p: their two-sided p-values.
        n_methods: (n_metrics, n_metrics) methods with a finite score under both metrics.
        note: what the number of methods allows to conclude.
    """

    methods: list[str]
    metrics: list[str]
    values: torch.Tensor
    goodness: torch.Tensor
    directions: dict[str, str]
    kendall: torch.Tensor
    spearman: torch.Tensor
    kendall_p: torch.Tensor
    spearman_p: torch.Tensor
    n_methods: torch.Tensor
    note: str = ""
    rankings: dict[str, list[str]] = field(default_factory=dict)

    def pairs(self) -> list[dict[str, Any]]:
        """One row per unordered pair of metrics: kendall, spearman, their p-values, n_methods."""
        rows = []
        for i, a in enumerate(self.metrics):
            for j in range(i + 1, len(self.metrics)):
                rows.append({"metric_a": a, "metric_b": self.metrics[j], "kendall": float(self.kendall[i, j]),
                             "kendall_p": float(self.kendall_p[i, j]), "spearman": float(self.spearman[i, j]),
                             "spearman_p": float(self.spearman_p[i, j]), "n_methods": int(self.n_methods[i, j])})
        return rows

    def format_table(self, which: str = "kendall") -> str:
        """Markdown matrix of ``which`` ("kendall" or "spearman") followed by the note."""
        mat = {"kendall": self.kendall, "spearman": self.spearman}[which]
        lines = [f"| {which} | " + " | ".join(self.metrics) + " |", "|---|" + "---:|" * len(self.metrics)]
        for i, a in enumerate(self.metrics):
            cells = ["—" if math.isnan(float(v)) else f"{float(v):+.2f}" for v in mat[i]]
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + (f"\n\n{self.note}" if self.note else "")


def metric_agreement(table: Any, *, metrics: list[str] | None = None,
                     directions: Mapping[str, str] | None = None) -> MetricAgreement:
    """Kendall's tau and Spearman's rho between the method rankings of every pair of metrics.

    Args:
        table: an ``EvaluationResult`` (its ``summary()`` means, the per-class pointing accuracy for ``pointing``)
            or a mapping ``{(method, metric): number or (n,) tensor}``.
        metrics: the metrics to compare (default: all in the table).
        directions: ``{metric: "higher" | "lower" | "closer_to_zero"}`` for metrics that are not registered, or to
            override the registry.
    Returns:
        :class:`MetricAgreement` with (M, M) ``kendall`` / ``spearman`` matrices and a ``note``.
    """
    from scipy.stats import kendalltau, spearmanr

    methods, all_metrics, values = _table(table)
    if metrics is None:
        metrics = all_metrics
    unknown = [m for m in metrics if m not in all_metrics]
    if unknown:
        raise ValueError(f"metrics {unknown} are not in the table; it has {all_metrics}")
    if len(metrics) < 2:
        raise ValueError(f"agreement needs at least 2 metrics, got {list(metrics)}")
    dirs = {m: metric_direction(m, directions) for m in metrics}
    vals = torch.tensor([[values[(a, b)] for b in metrics] for a in methods], dtype=torch.float64)
    good = vals.clone()
    for j, m in enumerate(metrics):
        if dirs[m] == "lower":
            good[:, j] = -vals[:, j]
        elif dirs[m] == "closer_to_zero":
            good[:, j] = -vals[:, j].abs()
    k = len(metrics)
    tau, rho, tau_p, rho_p = (torch.full((k, k), math.nan, dtype=torch.float64) for _ in range(4))
    count = torch.zeros(k, k, dtype=torch.int64)
    for i in range(k):
        for j in range(k):
            ok = torch.isfinite(good[:, i]) & torch.isfinite(good[:, j])
            count[i, j] = int(ok.sum())
            if count[i, j] < MIN_METHODS:
                continue
            a, b = good[ok, i].numpy(), good[ok, j].numpy()
            with warnings.catch_warnings():   # a constant ranking gives NaN, which is the answer
                warnings.simplefilter("ignore")
                t = kendalltau(a, b)
                r = spearmanr(a, b)
            tau[i, j], tau_p[i, j] = float(t.statistic), float(t.pvalue)
            rho[i, j], rho_p[i, j] = float(r.statistic), float(r.pvalue)
    n = len(methods)
    if n < MIN_METHODS:
        note = (f"only {n} method(s): a ranking of {n} methods is a single comparison, so no rank correlation is "
                "reported; compare at least 3 methods (5 or more for a correlation that can be significant)")
    elif n < MIN_METHODS_SIGNIFICANT:
        note = (f"{n} methods: the correlations describe these methods only; with fewer than "
                f"{MIN_METHODS_SIGNIFICANT} methods none can reach p < 0.05")
    else:
        note = f"{n} methods"
    rankings = {m: [methods[i] for i in torch.argsort(-good[:, j].nan_to_num(-math.inf), stable=True).tolist()]
                for j, m in enumerate(metrics)}
    return MetricAgreement(methods=methods, metrics=list(metrics), values=vals, goodness=good, directions=dirs,
                           kendall=tau, spearman=rho, kendall_p=tau_p, spearman_p=rho_p, n_methods=count,
                           note=note, rankings=rankings)


__all__ = ["MetricAgreement", "metric_agreement", "metric_direction"]
