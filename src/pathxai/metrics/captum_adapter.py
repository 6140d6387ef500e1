"""Captum's ``infidelity`` (Yeh et al., NeurIPS 2019) and ``sensitivity_max`` through a thin adapter.

Both take a pathxai explanation method (a registered name such as ``"ig"``, a :class:`~pathxai.core.Method` class or
instance) and pathxai targets (int, N ints, ``None`` = predicted class, callable), and hand the computation to
``captum.metrics``. Model evaluations of the metric go through :class:`~pathxai.core.BatchedEvaluator` (so
``batch_size`` bounds memory); the method uses its own evaluator with the same ``batch_size``. The default
perturbations are Captum's (Gaussian noise I with perturbed input x - I for infidelity, uniform noise in an L-inf ball
for sensitivity) drawn from a seeded generator, so a call is reproducible for a fixed ``max_examples_per_batch``.
``None`` targets are resolved once on x, so perturbed copies are explained for the same class.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..core import limits
from ..core.evaluator import AUTO, BatchedEvaluator, evaluation_mode
from ..core.explanation import Explanation
from ..core.limits import Cost
from ..core.method import Method, get_method
from ..core.seeding import item_seed
from ..core.targets import Target, TargetLike
from ..core.validation import check_bool, check_input, check_positive_float, check_positive_int, check_seed
from ._common import (MetricInfo, MetricResult, as_attribution, check_score_name, metric_target, register_metric,
                      score_kind, target_meta)


@dataclass(kw_only=True)
class CaptumMetricResult(MetricResult):
    """Result of :func:`infidelity` / :func:`sensitivity_max`: ``score`` (N,), and the explained ``attribution``."""

    attribution: torch.Tensor


def _method(model: Any, method: Any, *, batch_size: int | str, seed: int, progress: bool | None,
            method_kwargs: dict[str, Any], name: str = "method") -> Method:
    if isinstance(method, str):
        return get_method(method)(model, batch_size=batch_size, seed=seed, progress=progress, **method_kwargs)
    if isinstance(method, type) and issubclass(method, Method):
        return method(model, batch_size=batch_size, seed=seed, progress=progress, **method_kwargs)
    if isinstance(method, Method):
        if method_kwargs:
            raise TypeError(f"options {sorted(method_kwargs)} go to a method's constructor; {name} is already an "
                            f"instance ({method!r})")
        if method.model is not model:
            raise ValueError(f"{name} explains a different model than the one passed as model")
        return method
    raise TypeError(f"{name} must be a registered method name, a pathxai Method class or instance, "
                    f"got {type(method).__name__}")


def _method_target(target: Target) -> Any:
    return target.fn if target.fn is not None else target.classes


@register_metric(MetricInfo(
    name="infidelity", category="faithfulness", score_direction="lower", needs_model=True,
    input="method, Explanation or attribution (shape of x)", score_range="[0, inf)",
    reference="Yeh et al., On the (in)fidelity and sensitivity of explanations, NeurIPS 2019 (captum.metrics)",
    description="Expected squared error between attribution . I and f(x) - f(x - I) for random perturbations I."))
def infidelity(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, explanation: Any,
               target: TargetLike = None, *, n_perturb_samples: int = 10, noise_std: float = 0.003,
               perturb_fn: Callable[..., Any] | None = None, normalize: bool = False, score: str = "logit",
               seed: int = 0, batch_size: int | str = AUTO, max_examples_per_batch: int | None = None,
               progress: bool | None = None, **method_kwargs: Any) -> CaptumMetricResult:
    """Captum's infidelity of an explanation.

    Args:
        model: callable ``(N, ...) -> (N, K)``.
        x: (N, ...) inputs.
        explanation: a method (name, class or instance; ``method_kwargs`` go to its constructor), an Explanation
            or an attribution tensor of the shape of x.
        target: int class, N ints, ``None`` (predicted class) or callable ``output -> (N,)``.
        n_perturb_samples: perturbations per sample.
        noise_std: std of the default Gaussian perturbation I (Captum's documented example uses 0.003).
        perturb_fn: Captum ``perturb_func`` ``inputs -> (perturbations, perturbed_inputs)`` instead of the default.
        normalize: Captum's ``normalize`` (scale the attribution optimally before the error).
        score: ``"logit"`` (raw output, default), ``"softmax"`` or ``"log_softmax"``.
    Returns:
        :class:`CaptumMetricResult` with ``score`` (N,) (lower is better).
    """
    from captum.metrics import infidelity as captum_infidelity

    start_time = time.perf_counter()
    x = check_input(x, "x").detach().cpu()
    n_perturb_samples = check_positive_int(n_perturb_samples, "n_perturb_samples")
    noise_std = check_positive_float(noise_std, "noise_std")
    normalize = check_bool(normalize, "normalize")
    seed = check_seed(seed)
    check_score_name(score)
    if max_examples_per_batch is not None:
        max_examples_per_batch = check_positive_int(max_examples_per_batch, "max_examples_per_batch")
    if perturb_fn is not None and not callable(perturb_fn):
        raise TypeError(f"perturb_fn must be None or a callable, got {type(perturb_fn).__name__}")
    n = x.shape[0]
    # Captum perturbs all samples x perturbations at once unless max_examples_per_batch splits them
    per_call = n * n_perturb_samples if max_examples_per_batch is None else min(n * n_perturb_samples,
                                                                                 max_examples_per_batch)
    limits.check(Cost(evaluations=n * (n_perturb_samples + 1), bytes=12.0 * per_call * math.prod(x.shape[1:]),
                      param="n_perturb_samples", value=n_perturb_samples,
                      detail=f"{n} input(s) x {n_perturb_samples} perturbations"), "metric 'infidelity'")
    evaluator = BatchedEvaluator(model, batch_size=batch_size, progress=progress)
    x = evaluator.work_input(x)   # the model's device, float32 or wider; results come back on the host
    method_evals = 0
    with evaluation_mode(model):
        resolved = metric_target(evaluator, x, target)
        kind = score_kind(score, resolved)
        if isinstance(explanation, (Explanation, torch.Tensor)):
            if method_kwargs:
                raise TypeError(f"unexpected keyword arguments {sorted(method_kwargs)} with a precomputed attribution")
            attribution = as_attribution(explanation, "explanation")
        else:
            m = _method(model, explanation, batch_size=batch_size, seed=seed, progress=progress,
                        method_kwargs=method_kwargs, name="explanation")
            attribution = m.explain(x, _method_target(resolved)).attribution
            method_evals = m.evaluator.n_evaluations
        if tuple(attribution.shape) != tuple(x.shape):
            raise ValueError(f"infidelity needs an attribution of the shape of x {tuple(x.shape)} (it is multiplied "
                             f"by input perturbations), got {tuple(attribution.shape)}")
        attribution = attribution.to(x)

        def forward(inputs: torch.Tensor) -> torch.Tensor:
            out = evaluator.forward(inputs.detach(), desc="infidelity")
            if resolved.fn is not None:
                return resolved.fn(out).unsqueeze(1)
            if kind == "softmax":
                return out.softmax(dim=1)
            if kind == "log_softmax":
                return out.log_softmax(dim=1)
            return out

        if perturb_fn is None:
            generator = torch.Generator(device=x.device).manual_seed(item_seed(seed, "infidelity", 0))

            def perturb_fn(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                noise = noise_std * torch.randn(inputs.shape, generator=generator, dtype=inputs.dtype,
                                                device=inputs.device)
                return noise, inputs - noise

        captum_target = 0 if resolved.fn is not None else resolved.classes.to(x.device)
        values = captum_infidelity(forward, perturb_fn, x, attribution, target=captum_target,
                                   n_perturb_samples=n_perturb_samples, max_examples_per_batch=max_examples_per_batch,
                                   normalize=normalize)
    meta = {"metric": "infidelity", "n_perturb_samples": n_perturb_samples, "noise_std": noise_std,
            "normalize": normalize, "score": score, "seed": seed, "batch_size": evaluator.batch_size,
            "model_evaluations": evaluator.n_evaluations, "method_evaluations": method_evals,
            "target": target_meta(resolved), "wall_time_s": time.perf_counter() - start_time}
    return CaptumMetricResult(score=values.detach().reshape(-1).to(x.dtype).cpu(), curve=None, meta=meta,
                              attribution=attribution.cpu())


@register_metric(MetricInfo(
    name="sensitivity_max", category="robustness", score_direction="lower", needs_model=True, input="method",
    score_range="[0, inf)",
    reference="Yeh et al., On the (in)fidelity and sensitivity of explanations, NeurIPS 2019 (captum.metrics)",
    description="Largest relative change of the explanation under small uniform input perturbations."))
def sensitivity_max(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, method: Any,
                    target: TargetLike = None, *, perturb_radius: float = 0.02, n_perturb_samples: int = 10,
                    norm_ord: str = "fro", perturb_fn: Callable[..., Any] | None = None, seed: int = 0,
                    batch_size: int | str = AUTO, max_examples_per_batch: int | None = None,
                    progress: bool | None = None, **method_kwargs: Any) -> CaptumMetricResult:
    """Captum's max-sensitivity of an explanation method.

    Args:
        model: callable ``(N, ...) -> (N, K)``.
        x: (N, ...) inputs.
        method: registered method name, Method class or instance (``method_kwargs`` go to its constructor).
        target: int class, N ints, ``None`` (predicted class, resolved once on x) or callable ``output -> (N,)``.
        perturb_radius: radius of the L-inf ball of the default uniform perturbation (Captum's default 0.02).
        n_perturb_samples: perturbed copies per sample.
        norm_ord: norm of the explanation difference (Captum's ``norm_ord``).
        perturb_fn: Captum ``perturb_func`` instead of the seeded default.
    Returns:
        :class:`CaptumMetricResult`: ``score`` (N,) = max over perturbations of ||e(x') - e(x)|| / ||e(x)||.
    """
    from captum.metrics import sensitivity_max as captum_sensitivity_max

    start_time = time.perf_counter()
    x = check_input(x, "x").detach().cpu()
    n_perturb_samples = check_positive_int(n_perturb_samples, "n_perturb_samples")
    if isinstance(perturb_radius, bool) or not isinstance(perturb_radius, (int, float)) or not perturb_radius >= 0 \
            or not math.isfinite(perturb_radius):
        raise ValueError(f"perturb_radius must be a number >= 0, got {perturb_radius!r}")
    seed = check_seed(seed)
    if max_examples_per_batch is not None:
        max_examples_per_batch = check_positive_int(max_examples_per_batch, "max_examples_per_batch")
    if perturb_fn is not None and not callable(perturb_fn):
        raise TypeError(f"perturb_fn must be None or a callable, got {type(perturb_fn).__name__}")
    evaluator = BatchedEvaluator(model, batch_size=batch_size, progress=progress)
    x = evaluator.work_input(x)   # the model's device, float32 or wider; results come back on the host
    m = _method(model, method, batch_size=batch_size, seed=seed, progress=progress, method_kwargs=method_kwargs)
    # every perturbed copy is explained by the method: its cost times (1 + n_perturb_samples)
    per = m.cost(tuple(x.shape))
    limits.check(Cost(evaluations=per.evaluations * (n_perturb_samples + 1), bytes=per.bytes,
                      param="n_perturb_samples", value=n_perturb_samples,
                      detail=f"{n_perturb_samples + 1} explanations by {m.name!r} of about "
                             f"{per.evaluations:.3g} evaluations each"), "metric 'sensitivity_max'")
    first: dict[str, torch.Tensor] = {}
    method_evals = [0]
    with evaluation_mode(model):
        resolved = metric_target(evaluator, x, target)

        def explain(inputs: Any, target: Any = None) -> Any:
            # Captum passes a tuple of input tensors and expects the same structure back (as its ``attribute``).
            inp = inputs[0] if isinstance(inputs, tuple) else inputs
            t = resolved.fn if resolved.fn is not None else target
            attribution = m.explain(inp.detach(), t).attribution.to(inp.dtype)
            first.setdefault("attribution", attribution)
            method_evals[0] += m.evaluator.n_evaluations
            return (attribution,) if isinstance(inputs, tuple) else attribution

        if perturb_fn is None:
            generator = torch.Generator(device=x.device).manual_seed(item_seed(seed, "sensitivity_max", 0))

            def perturb_fn(inputs: Any, radius: float) -> tuple[torch.Tensor, ...]:
                items = inputs if isinstance(inputs, tuple) else (inputs,)
                return tuple(t + (2 * torch.rand(t.shape, generator=generator, dtype=t.dtype, device=t.device) - 1)
                             * radius for t in items)

        kwargs = {} if resolved.fn is not None else {"target": resolved.classes.to(x.device)}
        values = captum_sensitivity_max(explain, x, perturb_func=perturb_fn, perturb_radius=perturb_radius,
                                        n_perturb_samples=n_perturb_samples, norm_ord=norm_ord,
                                        max_examples_per_batch=max_examples_per_batch, **kwargs)
    meta = {"metric": "sensitivity_max", "method": m.name, "perturb_radius": perturb_radius,
            "n_perturb_samples": n_perturb_samples, "norm_ord": norm_ord, "seed": seed,
            "batch_size": evaluator.batch_size, "model_evaluations": evaluator.n_evaluations,
            "method_evaluations": method_evals[0], "target": target_meta(resolved),
            "wall_time_s": time.perf_counter() - start_time}
    return CaptumMetricResult(score=values.detach().reshape(-1).to(x.dtype).cpu(), curve=None, meta=meta,
                              attribution=first["attribution"].cpu())
