"""Relative stability of explanations (Agarwal et al., "Rethinking Stability for Attribution-based Explanations",
ICLR 2022 PAIR2Struct workshop, arXiv:2203.06877), driven by a pathxai method like ``sensitivity_max``.

For an input x, its explanation e_x = e(x) and perturbed copies x' that keep the predicted class
(arg-max f(x') = arg-max f(x)), with p = 2 (the L2 norm over all values of a sample) and ``(a - b) / a`` element-wise:

- :func:`relative_input_stability` (RIS): ``max_x' ||(e_x - e_x') / e_x|| / max(||(x - x') / x||, eps_min)``
- :func:`relative_representation_stability` (RRS): ``max_x' ||(e_x - e_x') / e_x|| / max(||(L_x - L_x') / L_x||,
  eps_min)`` with L the activations of an internal layer (``layer``: a module name; default the input of the
  model's last ``nn.Linear``, i.e. the penultimate representation)
- :func:`relative_output_stability` (ROS): ``max_x' ||(e_x - e_x') / e_x|| / max(||h(x) - h(x')||, eps_min)`` with h
  the model's logits.

Lower is better: the explanation changes little relative to how much the input, the representation or the output
changes. A zero in a denominator of an element-wise ratio is replaced by ``eps_min`` (as in Quantus), so features
that are exactly 0 in x (or in e_x, L_x) dominate the ratio when they change: that is the definition.

Perturbations: ``n_perturb_samples`` copies x' = x + u with u uniform in [-perturb_radius, perturb_radius] for every
value (seeded per (seed, perturbation k, sample i) on the model's device), or ``perturb_fn(x, k) -> x'`` for the k-th
batch of perturbed copies. Copies that change the predicted class are left out of the maximum (the paper's
neighbourhood); their entry of ``curve`` is NaN, ``n_valid`` counts the others, and a sample with no valid copy gets a
NaN score and a RuntimeWarning. Only valid copies are explained, so the cost is about (1 + n_valid) explanations.

Differences from Quantus' ``RelativeInputStability`` / ``RelativeRepresentationStability`` /
``RelativeOutputStability`` (0.6), which compute the same objectives (tests/test_metrics_quantus.py compares them on
perturbations that keep the class): (1) Quantus returns NaN for a sample as soon as *one* perturbation changes its
prediction (its NaN enters ``np.max``), pathxai takes the maximum over the perturbations that keep it, as the paper's
definition does; (2) Quantus adds ``eps_min`` to a denominator norm only when it is exactly 0, pathxai takes
``max(norm, eps_min)`` as the paper writes it (the same unless the norm is below eps_min); (3) Quantus' default
perturbation is uniform noise in [0.02, 0.2] (one-sided) added to every value, with 200 samples; pathxai's default is
the symmetric L-inf ball of radius 0.02 of ``sensitivity_max``, with 10 samples; (4) Quantus' RRS concatenates the
outputs of every named layer (default: all layers), pathxai uses one layer.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..core import limits
from ..core.evaluator import AUTO, BatchedEvaluator, evaluation_mode
from ..core.limits import Cost
from ..core.seeding import item_generator
from ..core.targets import TargetLike
from ..core.validation import (
    check_finite_float,
    check_input,
    check_model_output,
    check_positive_float,
    check_positive_int,
    check_seed,
)
from ._common import MetricInfo, MetricResult, metric_target, register_metric, target_meta, warn_nan
from .captum_adapter import _method, _method_target


@dataclass(kw_only=True)
class StabilityResult(MetricResult):
    """Result of the relative stability metrics.

    Attributes:
        score: (N,) maximum of the objective over the valid perturbations (lower is better; NaN without any).
        curve: (N, n_perturb_samples) the objective per perturbation, NaN where the perturbation changed the class.
        n_valid: (N,) perturbations that kept the predicted class.
        attribution: the explanation of x (host).
        layer: the representation used (RRS), else ``None``.
    """

    n_valid: torch.Tensor
    attribution: torch.Tensor
    layer: str | None = None


def _rel(a: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    """||(a - b) / a|| per sample (L2 over all values), with eps replacing zeros of a (Quantus' guard)."""
    den = a + (a == 0).to(a.dtype) * eps
    return ((a - b) / den).flatten(1).norm(dim=1)


def _find_layer(model: Any, layer: str | None) -> tuple[torch.nn.Module, bool, str]:
    """(module, capture its input?, description)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError("relative_representation_stability reads an internal layer: the model must be an nn.Module")
    modules = dict(model.named_modules(remove_duplicate=False))
    if layer is None:
        linear = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
        if not linear:
            raise ValueError("layer=None uses the input of the model's last nn.Linear (the penultimate "
                             "representation), but the model has no nn.Linear; name a layer, one of: "
                             f"{', '.join([n for n in modules if n][:12])}")
        name, module = linear[-1]
        return module, True, f"input of {name}"
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a module name (str) or None, got {type(layer).__name__}")
    declared = model.__dict__.get(layer) if layer else None
    if isinstance(declared, torch.nn.Module):   # a module the model names by attribute (px.models' gradcam_layer)
        modules = {**modules, layer: declared}
    if layer not in modules or layer == "":
        raise ValueError(f"layer {layer!r} is not a module of the model; available: "
                         f"{', '.join([n for n in modules if n][:20])}")
    return modules[layer], False, layer


def _outputs_and_representations(evaluator: BatchedEvaluator, inputs: torch.Tensor, module: torch.nn.Module | None,
                                 capture_input: bool, desc: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Model outputs (n, K) for ``inputs`` and, with ``module``, its flattened activations (n, D), chunk by chunk."""
    if module is None:
        return evaluator.forward(inputs, desc=desc), None
    store: dict[str, torch.Tensor] = {}

    def hook(_m: torch.nn.Module, args: Any, out: Any) -> None:
        value = args[0] if capture_input else out
        if isinstance(value, (tuple, list)):
            value = value[0]
        if isinstance(value, torch.Tensor):
            store["value"] = value

    def work(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        store.clear()
        with torch.inference_mode():
            out = evaluator._call(inputs[a:b], a, desc)
        if "value" not in store:
            raise ValueError(f"the representation layer was not called by the model's forward (in the {desc} "
                             "evaluations) or did not produce a tensor")
        act = store.pop("value").flatten(1)
        evaluator.count(b - a, grad=False)   # only once the chunk succeeded
        return out.clone(), act.to(out.dtype).clone()

    handle = module.register_forward_hook(hook)
    try:
        parts = list(evaluator.map_chunks(inputs.shape[0], work, grad=False, sample_shape=inputs.shape[1:],
                                          desc=desc))
    finally:
        handle.remove()
    return torch.cat([p[2][0] for p in parts]), torch.cat([p[2][1] for p in parts])


def _stability(kind: str, model: Any, x: torch.Tensor, method: Any, target: TargetLike, *, layer: str | None,
               n_perturb_samples: int, perturb_radius: float, perturb_fn: Callable[..., Any] | None,
               eps_min: float, seed: int, batch_size: int | str, progress: bool | None,
               method_kwargs: dict[str, Any]) -> StabilityResult:
    start_time = time.perf_counter()
    x = check_input(x, "x").detach()
    n_perturb_samples = check_positive_int(n_perturb_samples, "n_perturb_samples")
    perturb_radius = check_positive_float(perturb_radius, "perturb_radius")
    eps_min = check_finite_float(eps_min, "eps_min", low=0.0, low_open=True)
    seed = check_seed(seed)
    if perturb_fn is not None and not callable(perturb_fn):
        raise TypeError(f"perturb_fn must be None or a callable (x, k) -> perturbed x, got {type(perturb_fn).__name__}")
    module, capture_input, layer_desc = _find_layer(model, layer) if kind == "representation" else (None, False, None)
    evaluator = BatchedEvaluator(model, batch_size=batch_size, progress=progress)
    dtype = x.dtype
    x = evaluator.work_input(x)
    m = _method(model, method, batch_size=batch_size, seed=seed, progress=progress, method_kwargs=method_kwargs)
    n = x.shape[0]
    per = m.cost(tuple(x.shape))
    limits.check(Cost(evaluations=(per.evaluations + n) * (n_perturb_samples + 1), bytes=per.bytes,
                      param="n_perturb_samples", value=n_perturb_samples,
                      detail=f"{n_perturb_samples + 1} explanations by {m.name!r} of about {per.evaluations:.3g} "
                             "evaluations each"), f"metric 'relative_{kind}_stability'")
    name = f"relative_{kind}_stability"
    curve = torch.full((n, n_perturb_samples), float("nan"), dtype=torch.float64)
    method_evals = 0
    with evaluation_mode(model):
        resolved = metric_target(evaluator, x, target)
        out0, rep0 = _outputs_and_representations(evaluator, x, module, capture_input, name)
        out0 = check_model_output(out0, n)
        if out0.ndim != 2:
            raise ValueError(f"relative stability compares predicted classes and needs a model output of shape "
                             f"(N, num_classes), got {tuple(out0.shape)}")
        pred0 = out0.argmax(dim=1)
        mt = _method_target(resolved)
        e_x = m.explain(x, mt).attribution.to(x)
        method_evals += m.evaluator.n_evaluations
        for k in range(n_perturb_samples):
            if perturb_fn is None:
                noise = torch.stack([torch.rand(x.shape[1:], generator=item_generator(
                    seed, name, k * n + i, device=x.device), device=x.device, dtype=x.dtype) for i in range(n)])
                xs = x + (2 * noise - 1) * perturb_radius
            else:
                xs = perturb_fn(x, k)
                if not isinstance(xs, torch.Tensor) or tuple(xs.shape) != tuple(x.shape):
                    raise ValueError(f"perturb_fn(x, k) must return a tensor of x's shape {tuple(x.shape)}, got "
                                     f"{tuple(xs.shape) if isinstance(xs, torch.Tensor) else type(xs).__name__}")
                xs = xs.detach().to(x)
            out_s, rep_s = _outputs_and_representations(evaluator, xs, module, capture_input, name)
            keep = (out_s.argmax(dim=1) == pred0).cpu()
            idx = keep.nonzero().flatten()
            if idx.numel() == 0:
                continue
            idx_dev = idx.to(x.device)
            sub_target = mt if callable(mt) else mt[idx]
            e_s = m.explain(xs[idx_dev], sub_target).attribution.to(x)
            method_evals += m.evaluator.n_evaluations
            num = _rel(e_x[idx_dev], e_s, eps_min)
            if kind == "input":
                den = _rel(x[idx_dev], xs[idx_dev], eps_min)
            elif kind == "output":
                den = (out0[idx_dev] - out_s[idx_dev]).flatten(1).norm(dim=1)
            else:
                den = _rel(rep0[idx_dev], rep_s[idx_dev], eps_min)
            curve[idx, k] = (num.double() / den.double().clamp_min(eps_min)).cpu()
    n_valid = torch.isfinite(curve).sum(1)
    warn_nan(f"{name}: every perturbation changed the predicted class", n_valid == 0)
    filled = torch.where(torch.isfinite(curve), curve, torch.full_like(curve, -float("inf")))
    score = torch.where(n_valid > 0, filled.max(1).values, torch.full((n,), float("nan"), dtype=torch.float64))
    meta = {"metric": name, "method": m.name, "n_perturb_samples": n_perturb_samples,
            "perturb_radius": perturb_radius if perturb_fn is None else "perturb_fn", "eps_min": eps_min,
            "seed": seed, "layer": layer_desc, "batch_size": evaluator.batch_size,
            "model_evaluations": evaluator.n_evaluations, "method_evaluations": method_evals,
            "target": target_meta(resolved), "wall_time_s": time.perf_counter() - start_time}
    return StabilityResult(score=score.to(dtype), curve=curve.to(dtype), meta=meta, n_valid=n_valid,
                           attribution=e_x.to(dtype).cpu(), layer=layer_desc)


_ARGS = """
    Args:
        model: classifier ``(N, ...) -> (N, K)``.
        x: (N, ...) inputs.
        method: registered method name, Method class or instance (``method_kwargs`` go to its constructor).
        target: what the method explains: int class, N ints, ``None`` (the predicted class, resolved once on x) or a
            callable ``output -> (N,)``. Validity of a perturbation is always judged by the arg-max class.
        n_perturb_samples: perturbed copies per sample.
        perturb_radius: half-width of the uniform noise added to every value (default 0.02).
        perturb_fn: ``(x (N, ...), k) -> (N, ...)`` the k-th perturbed batch, instead of the seeded default.
        eps_min: the paper's epsilon (zeros in element-wise denominators, lower bound of the denominator norm).
        seed: seed of the perturbations and of a stochastic method.
        batch_size: most model evaluations in flight (the metric's and the method's).
    Returns:
        :class:`StabilityResult` with ``score`` (N,) and ``curve`` (N, n_perturb_samples).
"""


@register_metric(MetricInfo(
    name="relative_input_stability", category="robustness", score_direction="lower", needs_model=True,
    input="method", score_range="[0, inf)",
    reference="Agarwal et al., Rethinking Stability for Attribution-based Explanations, 2022; Quantus "
              "RelativeInputStability",
    description="Max over class-preserving perturbations of the relative explanation change over the relative "
                "input change."))
def relative_input_stability(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, method: Any,
                             target: TargetLike = None, *, n_perturb_samples: int = 10, perturb_radius: float = 0.02,
                             perturb_fn: Callable[..., Any] | None = None, eps_min: float = 1e-6, seed: int = 0,
                             batch_size: int | str = AUTO, progress: bool | None = None,
                             **method_kwargs: Any) -> StabilityResult:
    return _stability("input", model, x, method, target, layer=None, n_perturb_samples=n_perturb_samples,
                      perturb_radius=perturb_radius, perturb_fn=perturb_fn, eps_min=eps_min, seed=seed,
                      batch_size=batch_size, progress=progress, method_kwargs=method_kwargs)


@register_metric(MetricInfo(
    name="relative_representation_stability", category="robustness", score_direction="lower", needs_model=True,
    input="method", score_range="[0, inf)",
    reference="Agarwal et al., Rethinking Stability for Attribution-based Explanations, 2022; Quantus "
              "RelativeRepresentationStability",
    description="Max over class-preserving perturbations of the relative explanation change over the relative "
                "change of an internal layer's activations."))
def relative_representation_stability(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, method: Any,
                                      target: TargetLike = None, *, layer: str | None = None,
                                      n_perturb_samples: int = 10, perturb_radius: float = 0.02,
                                      perturb_fn: Callable[..., Any] | None = None, eps_min: float = 1e-6,
                                      seed: int = 0, batch_size: int | str = AUTO, progress: bool | None = None,
                                      **method_kwargs: Any) -> StabilityResult:
    return _stability("representation", model, x, method, target, layer=layer, n_perturb_samples=n_perturb_samples,
                      perturb_radius=perturb_radius, perturb_fn=perturb_fn, eps_min=eps_min, seed=seed,
                      batch_size=batch_size, progress=progress, method_kwargs=method_kwargs)


@register_metric(MetricInfo(
    name="relative_output_stability", category="robustness", score_direction="lower", needs_model=True,
    input="method", score_range="[0, inf)",
    reference="Agarwal et al., Rethinking Stability for Attribution-based Explanations, 2022; Quantus "
              "RelativeOutputStability",
    description="Max over class-preserving perturbations of the relative explanation change over the change of "
                "the logits."))
def relative_output_stability(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, method: Any,
                              target: TargetLike = None, *, n_perturb_samples: int = 10, perturb_radius: float = 0.02,
                              perturb_fn: Callable[..., Any] | None = None, eps_min: float = 1e-6, seed: int = 0,
                              batch_size: int | str = AUTO, progress: bool | None = None,
                              **method_kwargs: Any) -> StabilityResult:
    return _stability("output", model, x, method, target, layer=None, n_perturb_samples=n_perturb_samples,
                      perturb_radius=perturb_radius, perturb_fn=perturb_fn, eps_min=eps_min, seed=seed,
                      batch_size=batch_size, progress=progress, method_kwargs=method_kwargs)


relative_input_stability.__doc__ = ("Relative input stability (RIS) of a method's explanations (see the module "
                                    "doc); lower is better.\n" + _ARGS)
relative_representation_stability.__doc__ = (
    "Relative representation stability (RRS) of a method's explanations (see the module doc); lower is better.\n"
    + _ARGS.replace("        n_perturb_samples:", "        layer: module name whose output is the representation "
                    "(``dict(model.named_modules())``);\n            ``None`` = the input of the last nn.Linear.\n"
                    "        n_perturb_samples:"))
relative_output_stability.__doc__ = ("Relative output stability (ROS) of a method's explanations (see the module "
                                     "doc); lower is better.\n" + _ARGS)

__all__ = ["StabilityResult", "relative_input_stability", "relative_output_stability",
           "relative_representation_stability"]
