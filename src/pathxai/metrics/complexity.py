"""Complexity of an attribution map, as Quantus computes it (no model needed).

- :func:`sparseness` (Chalasani et al., "Concise explanations of neural networks using adversarial training",
  ICML 2020): the Gini index of |attribution|. With the n values a_(1) <= ... <= a_(n) of one sample (sorted),
  ``G = sum_k (2k - n - 1) a_(k) / (n sum_k a_(k))``: 0 when all features are equally important, (n - 1) / n when one
  feature holds everything. Higher is better (a concise explanation).
- :func:`complexity` (Bhatt, Weller & Moura, "Evaluating and aggregating feature-based model explanations", IJCAI
  2020): the entropy (natural log) of the fractional contributions p_i = |a_i| / sum_j |a_j|, from 0 (one feature)
  to log(n) (uniform). Lower is better.

Quantus' definitions, reproduced: ``abs=True, normalise=True`` -- each map is divided by its max |value|
(``normalise_by_max``) and its absolute value taken; every value of the attribution is one feature (an (N, C, H, W)
attribution has C·H·W of them, an (N, H, W) saliency H·W: pass what you want scored); Gini adds 1e-7 to every value
before sorting, the entropy uses log(p + 1e-12). One difference in scope: Quantus divides by the max over the whole
batch it is given, pathxai by each map's own max (a sample's score does not depend on its batch mates); the two
differ only through the 1e-7 and 1e-12 offsets, by far less than 1e-4 (tests/test_metrics_quantus.py). An all-zero
map has no defined sparseness or complexity: its score is NaN (Quantus returns 0 and NaN respectively) and a
RuntimeWarning names it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ._common import MetricInfo, MetricResult, as_attribution, register_metric, warn_nan

GINI_EPS = 1e-7
ENTROPY_EPS = 1e-12


def _normalised_abs(attribution: Any) -> tuple[torch.Tensor, torch.Tensor]:
    a = as_attribution(attribution)
    if a.ndim < 2 or a.shape[0] == 0 or a[0].numel() == 0:
        raise ValueError(f"attribution must have shape (N, ...) with N >= 1 and at least one feature per sample, "
                         f"got {tuple(a.shape)}")
    flat = a.reshape(a.shape[0], -1).double().abs()
    peak = flat.max(dim=1, keepdim=True).values
    zero = peak.squeeze(1) == 0
    return flat / torch.where(peak > 0, peak, torch.ones_like(peak)), zero


@dataclass(kw_only=True)
class ComplexityResult(MetricResult):
    """Result of :func:`sparseness` / :func:`complexity`: ``score`` (N,); ``curve`` is ``None``.

    Attributes:
        n_features: number of values per sample that were scored.
    """

    n_features: int


@register_metric(MetricInfo(
    name="sparseness", category="complexity", score_direction="higher", needs_model=False,
    input="attribution (N, ...) or saliency (N, H, W)", score_range="[0, (n - 1) / n]",
    reference="Chalasani et al., Concise explanations of neural networks using adversarial training, ICML 2020; "
              "Quantus Sparseness",
    description="Gini index of |attribution| (max-normalised): high when few features hold the attribution."))
def sparseness(attribution: Any) -> ComplexityResult:
    """Gini index of each sample's |attribution| (see the module doc).

    Args:
        attribution: (N, ...) tensor or an Explanation (its ``.attribution``); every value is one feature.
    Returns:
        :class:`ComplexityResult` with ``score`` (N,) in [0, 1).
    """
    a, zero = _normalised_abs(attribution)
    n_feat = a.shape[1]
    a = torch.sort(a + GINI_EPS, dim=1).values
    k = torch.arange(1, n_feat + 1, dtype=torch.float64)
    gini = ((2 * k - n_feat - 1) * a).sum(1) / (n_feat * a.sum(1))
    warn_nan("sparseness is undefined for an all-zero attribution", zero)
    gini = torch.where(zero, torch.full_like(gini, float("nan")), gini)
    return ComplexityResult(score=gini, curve=None, meta={"metric": "sparseness", "n_features": n_feat},
                            n_features=n_feat)


@register_metric(MetricInfo(
    name="complexity", category="complexity", score_direction="lower", needs_model=False,
    input="attribution (N, ...) or saliency (N, H, W)", score_range="[0, log(n)]",
    reference="Bhatt, Weller & Moura, Evaluating and aggregating feature-based model explanations, IJCAI 2020; "
              "Quantus Complexity",
    description="Entropy of the fractional contributions |a_i| / sum |a|: low when few features matter."))
def complexity(attribution: Any) -> ComplexityResult:
    """Entropy (natural log) of each sample's normalised |attribution| (see the module doc).

    Args:
        attribution: (N, ...) tensor or an Explanation (its ``.attribution``); every value is one feature.
    Returns:
        :class:`ComplexityResult` with ``score`` (N,) in [0, log(n)].
    """
    a, zero = _normalised_abs(attribution)
    total = a.sum(1, keepdim=True)
    p = a / torch.where(total > 0, total, torch.ones_like(total))
    entropy = -(p * torch.log(p + ENTROPY_EPS)).sum(1)
    warn_nan("complexity is undefined for an all-zero attribution", zero)
    entropy = torch.where(zero, torch.full_like(entropy, float("nan")), entropy)
    return ComplexityResult(score=entropy, curve=None, meta={"metric": "complexity", "n_features": a.shape[1]},
                            n_features=int(a.shape[1]))


__all__ = ["ComplexityResult", "complexity", "sparseness"]
