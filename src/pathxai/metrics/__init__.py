"""Faithfulness, localisation and axiomatic metrics: each is a function returning a result with a per-sample
``score`` (N,) and the ``curve`` or data behind it.

    import pathxai as px
    r = px.metrics.insertion(model, x, e.saliency(), target, steps=100, baseline="blur")
    r.score    # (N,) AUC          r.curve    # (N, steps + 1)

Every metric carries Quantus-style metadata as ``fn.info`` (:class:`MetricInfo`: category, which direction is
better, what it needs); :func:`list_metrics` / :func:`get_metric` / :func:`describe_metrics` enumerate them. Model
evaluations go through the shared batched evaluator, so ``batch_size`` bounds memory on every metric.

- :func:`deletion`, :func:`insertion`: RISE curves; ``normalisation="samp_authors"`` is the SAMP authors' own
  metric code (logit / f(x), mean of the points, 10 px per step), ``"samp"`` our affine rescaling (see
  :mod:`pathxai.metrics.perturbation` for the conventions side by side).
- :func:`pointing_game`: TorchRay protocol, boxes or masks, per-class mean, difficult subset.
- :func:`sensitivity_n`: Ancona et al. 2018.
- :func:`negative_perturbation`: post-hoc accuracy / consistency AUCs (Gat et al. 2022).
- :func:`completeness`: sum of attributions vs f(x) - f(baseline).
- :func:`pointing_game_unified`, :func:`top_k_intersection`, :func:`relevance_rank_accuracy`,
  :func:`monotonicity_correlation`: the scores of the RELAX paper (see :mod:`pathxai.metrics.localisation`).
- :func:`infidelity`, :func:`sensitivity_max`: Captum's, driven by pathxai methods and targets.
- :func:`road`: ROAD (Rong et al. 2022), MoRF/LeRF curves with noisy linear imputation
  (:func:`noisy_linear_imputation`); :func:`irof`: IROF (Rieger & Hansen 2020), SLIC superpixels, area over the curve.
- :func:`sparseness` (Gini, Chalasani et al. 2020), :func:`complexity` (entropy, Bhatt et al. 2020), as Quantus.
- :func:`relative_input_stability`, :func:`relative_representation_stability`, :func:`relative_output_stability`:
  Agarwal et al. 2022, driven by pathxai methods over class-preserving perturbations.
- :func:`relevance_mass`, :func:`relevance_rank`: CLEVR-XAI (Arras et al. 2022) against ground-truth masks.
- :func:`metric_agreement`: Kendall / Spearman agreement of the method rankings that pairs of metrics induce.
"""
from ._common import MetricInfo, MetricResult, describe_metrics, get_metric, list_metrics
from .captum_adapter import CaptumMetricResult, infidelity, sensitivity_max
from .completeness import CompletenessResult, completeness
from .localisation import (LocalisationResult, MonotonicityResult, monotonicity_correlation, pointing_game_unified,
                           relevance_rank_accuracy, spearman, top_k_intersection)
from .negative_perturbation import NegativePerturbationResult, negative_perturbation
from .perturbation import NORMALISATIONS, PerturbationCurve, deletion, insertion, pixel_ranks, trapezoid_auc
from .pointing import PointingGameResult, boxes_to_mask, pointing_game
from .sensitivity import SensitivityNResult, default_ns, sensitivity_n
from .agreement import MetricAgreement, metric_agreement, metric_direction
from .complexity import ComplexityResult, complexity, sparseness
from .ground_truth import GroundTruthResult, pool_channels, relevance_mass, relevance_rank
from .irof import IrofResult, irof, slic_segments
from .road import RoadResult, noisy_linear_imputation, road
from .stability import (StabilityResult, relative_input_stability, relative_output_stability,
                        relative_representation_stability)
from .structured import (StructuredMetricResult, median_rank, posthoc_accuracy, posthoc_f1, relative_accuracy,
                         top_k_mask)

__all__ = [
    "CaptumMetricResult", "CompletenessResult", "MetricInfo", "MetricResult", "NORMALISATIONS", "PerturbationCurve",
    "PointingGameResult", "SensitivityNResult", "boxes_to_mask", "completeness", "default_ns", "deletion",
    "describe_metrics", "get_metric", "infidelity", "insertion", "list_metrics", "pixel_ranks", "pointing_game",
    "sensitivity_max", "sensitivity_n", "trapezoid_auc",
    "LocalisationResult", "MonotonicityResult", "monotonicity_correlation", "pointing_game_unified",
    "relevance_rank_accuracy", "spearman", "top_k_intersection",
    "NegativePerturbationResult", "negative_perturbation",
    "MetricAgreement", "metric_agreement", "metric_direction", "ComplexityResult", "complexity", "sparseness",
    "GroundTruthResult", "pool_channels", "relevance_mass", "relevance_rank", "IrofResult", "irof", "slic_segments",
    "RoadResult", "noisy_linear_imputation", "road", "StabilityResult", "relative_input_stability",
    "relative_output_stability", "relative_representation_stability",
]
