"""Shared pieces of the metrics: metadata and registry, result base class, target and score helpers."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import torch

from ..core.evaluator import BatchedEvaluator
from ..core.explanation import Explanation
from ..core.targets import Target, TargetLike, resolve_target
from ..core.validation import MODEL_OUTPUT_CAUSE, check_finite, check_model_output

F = TypeVar("F", bound=Callable[..., Any])

SCORE_KINDS = {"softmax": "softmax", "logit": "output", "output": "output", "log_softmax": "log_softmax"}


@dataclass(frozen=True)
class MetricInfo:
    """What a metric measures and how to read it (Quantus-style metadata).

    Attributes:
        name: registry name (``px.metrics.get_metric(name)``).
        category: ``"faithfulness"``, ``"localisation"``, ``"robustness"`` or ``"axiomatic"``.
        score_direction: ``"higher"`` or ``"lower"`` is better, or ``"closer_to_zero"``.
        needs_model: whether the metric evaluates the model (else it only compares maps with ground truth).
        input: what the explanation argument is (``"saliency (N, H, W)"``, ``"attribution"``, ``"method"``).
        score_range: the range of the per-sample score, as text.
        reference: the paper the metric comes from.
    """

    name: str
    category: str
    score_direction: str
    needs_model: bool
    input: str
    score_range: str
    reference: str
    description: str

    @property
    def higher_is_better(self) -> bool | None:
        return {"higher": True, "lower": False}.get(self.score_direction)


_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_metric(info: MetricInfo) -> Callable[[F], F]:
    """Decorator: attach ``info`` to the metric function as ``fn.info`` and register it under ``info.name``."""

    def wrap(fn: F) -> F:
        fn.info = info  # type: ignore[attr-defined]
        _REGISTRY[info.name] = fn
        return fn

    return wrap


def get_metric(name: str) -> Callable[..., Any]:
    """The metric function registered under ``name`` (case-insensitive, '-' and '_' alike)."""
    if not isinstance(name, str):
        raise TypeError(f"metric name must be a string, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    if key not in _REGISTRY:
        raise ValueError(f"unknown metric {name!r}; available: {', '.join(list_metrics())}")
    return _REGISTRY[key]


def list_metrics() -> list[str]:
    """Names of all registered metrics, sorted."""
    return sorted(_REGISTRY)


def describe_metrics() -> dict[str, MetricInfo]:
    """``{name: MetricInfo}`` for every registered metric."""
    return {name: _REGISTRY[name].info for name in list_metrics()}  # type: ignore[attr-defined]


@dataclass
class MetricResult:
    """What every metric returns.

    Attributes:
        score: (N,) per-sample score (see the metric's ``info.score_direction``).
        curve: the per-sample curve behind the score (shape documented per metric), or ``None``.
        meta: metric name, parameters, model evaluations used, wall time.
    """

    score: torch.Tensor
    curve: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def mean(self) -> float:
        """Mean score over the samples (NaN if any sample's score is NaN)."""
        return float(self.score.double().mean())


def check_score_name(score: Any, name: str = "score") -> str:
    """Validate a user ``score`` ("softmax", "logit", "log_softmax", any case) before any model call."""
    if not isinstance(score, str) or score.lower() not in SCORE_KINDS:
        raise ValueError(f"{name} must be 'softmax', 'logit' or 'log_softmax', got {score!r}")
    return score


def score_kind(score: str, target: Target, name: str = "score") -> str:
    """Map a user ``score`` ("softmax", "logit", "log_softmax") to a :meth:`Target.score` kind."""
    if not isinstance(score, str) or score.lower() not in SCORE_KINDS:
        raise ValueError(f"{name} must be 'softmax', 'logit' or 'log_softmax', got {score!r}")
    kind = SCORE_KINDS[score.lower()]
    if target.fn is not None and kind != "output":
        raise ValueError(f"a callable target scores the raw model output: use {name}='logit', not {score!r}")
    return kind


def metric_target(evaluator: BatchedEvaluator, x: torch.Tensor, target: TargetLike) -> Target:
    """Resolve ``target`` for the batch ``x`` like :meth:`Method.resolve_target` (class range checked up front).

    ``None`` (the predicted class) costs one forward pass per sample; a class target costs one probe evaluation.
    """
    if callable(target) and not isinstance(target, torch.Tensor):
        return resolve_target(target, x.shape[0])
    with torch.inference_mode():
        # through call_model: the probe meets the model on its device and dtype, its output unwrapped
        out = check_model_output(evaluator.call_model(x[:1]), 1)
    check_finite(out, "model output", cause=MODEL_OUTPUT_CAUSE, context=" (probing the number of classes)")
    evaluator.n_probe += 1
    if out.ndim != 2:
        raise ValueError(f"the model output for inputs of shape {tuple(x.shape)} is {tuple(out.shape)}, not "
                         "(N, num_classes); pass a callable target mapping the output to (N,) scores")
    return resolve_target(target, x.shape[0], predict=lambda: evaluator.forward(x, desc="predict"),
                          num_classes=int(out.shape[1]))


def target_meta(target: Target) -> Any:
    return target.classes.tolist() if target.classes is not None else "callable"


def as_attribution(attribution: Any, name: str = "attribution") -> torch.Tensor:
    """Accept a tensor or an :class:`Explanation` (its ``.attribution``)."""
    if isinstance(attribution, Explanation):
        attribution = attribution.attribution
    if not isinstance(attribution, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or a pathxai Explanation, got {type(attribution).__name__}")
    if not torch.is_floating_point(attribution):
        raise TypeError(f"{name} must be floating point, got dtype {attribution.dtype}")
    if not torch.isfinite(attribution).all():
        raise ValueError(f"{name} contains NaN/Inf values (shape {tuple(attribution.shape)})")
    return attribution.detach().cpu()


def as_saliency(saliency: Any) -> Any:
    """Accept an :class:`Explanation` where a saliency map is expected (its ``.saliency()``)."""
    return saliency.saliency() if isinstance(saliency, Explanation) else saliency


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation along the last axis (float64); NaN where either side has zero variance."""
    a = a.double() - a.double().mean(-1, keepdim=True)
    b = b.double() - b.double().mean(-1, keepdim=True)
    num = (a * b).sum(-1)
    den = (a.pow(2).sum(-1) * b.pow(2).sum(-1)).sqrt()
    out = num / den
    return torch.where(den > 0, out, torch.full_like(out, float("nan")))


def warn_nan(what: str, mask: torch.Tensor) -> None:
    if bool(mask.any()):
        idx = mask.nonzero().flatten().tolist()
        warnings.warn(f"{what} for sample(s) {idx[:10]}{'...' if len(idx) > 10 else ''}; their score is NaN",
                      RuntimeWarning, stacklevel=3)
