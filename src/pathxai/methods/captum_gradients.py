"""DeepLIFT, Guided Backprop (both through Captum) and GradientSHAP (Captum's estimator on the shared evaluator).

- ``deeplift``: ``captum.attr.DeepLift`` (Shrikumar et al. 2017, the Rescale rule), reference ``baseline`` default
  zeros (any baseline IG takes). Captum runs each chunk's inputs and references in one pass (2n rows per chunk of n
  samples: the rule needs both) with hooks on the user's nonlinearity modules.
- ``guided_backprop``: ``captum.attr.GuidedBackprop`` (Springenberg et al. 2015): the gradient with every
  ``nn.ReLU``'s backward signal clipped at zero.
- ``gradient_shap``: GradientSHAP (Lundberg & Lee 2017) as ``captum.attr.GradientShap`` computes it -- for each of
  ``n_samples`` draws: a reference b from the baseline distribution, Gaussian noise eps of std ``stdevs`` on the
  input, a point alpha ~ U(0, 1); the attribution is the mean of (x + eps - b) * grad f(alpha (x + eps) + (1 - alpha) b).
  Written here on :func:`pathxai.core.item_gradients`, not wrapped: Captum draws the reference indices and alphas from
  NumPy's global generator once per call, so its draws depend on how samples are grouped into calls, and one call per
  sample would ignore ``batch_size``. Our draws are per item (sample i, draw k) from
  ``item_generator(seed, "gradient_shap", i * n_samples + k)``, so the result does not depend on the chunking;
  ``tests/test_baselines_captum.py`` feeds the same draws to Captum and gets the same attributions.
  Default distribution: the all-zero image and the input itself, ``n_samples=50``, ``stdevs=1e-4`` -- the settings of
  Captum's ResNet tutorial (``torch.cat([input * 0, input * 1])``). With the input as a reference, half the draws
  contribute only noise x gradient, so the map is about half the expected gradients from the zero baseline.

Which models DeepLIFT and Guided Backprop apply to: Captum's rules hook *modules*. DeepLIFT has rules for
``nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.MaxPool1d/2d/3d, nn.Softmax`` (linear layers,
convolutions, average pooling and batch norm in eval mode need none); Guided Backprop clips the signal at
``nn.ReLU`` modules. Where a model computes a nonlinearity outside such a module (``F.relu``, ``torch.sigmoid``,
GELU, LayerNorm, attention, a product of two activations), Captum silently back-propagates the plain gradient there.
Before the first chunk both methods run one probe forward pass that records every such operation; with
``strict=True`` (the default) they refuse the model with a ``ValueError`` that names the operations and where they
run; ``strict=False`` accepts Captum's gradient fallback (e.g. for a vision transformer). A rule module that runs
twice per forward pass makes Captum's DeepLIFT fail, and is refused up front whatever ``strict`` says.
"""
from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..core import Method, Target, accumulate_rows, item_gradients, register_method
from ..core.baselines import BaselineLike, check_baseline, describe_baseline, make_baseline
from ..core.evaluator import check_gradients_possible, evaluation_mode
from ..core.limits import Cost
from ..core.seeding import item_generator
from ..core.validation import (GRADIENT_CAUSE, ModelNotSupportedError, check_bool, check_choice, check_finite,
                               check_positive_float, check_positive_int)

SCORES = ("output", "softmax", "log_softmax")

try:  # Captum's own table, so that a new rule in Captum is picked up
    from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR as _CAPTUM_RULES
    DEEPLIFT_RULE_MODULES: tuple[type[nn.Module], ...] = tuple(_CAPTUM_RULES)
except ImportError:  # pragma: no cover - the table as of Captum 0.9
    DEEPLIFT_RULE_MODULES = (nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.MaxPool1d,
                             nn.MaxPool2d, nn.MaxPool3d, nn.Softmax)

# functions (torch.*, torch.nn.functional.*, Tensor methods, by __name__) that are nonlinear in an input-dependent
# argument: ReLU-like activations ...
RELU_LIKE = frozenset({
    "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "selu_", "celu", "celu_", "gelu",
    "silu", "mish", "hardswish", "softplus", "threshold", "threshold_", "rrelu", "rrelu_", "prelu", "hardtanh",
    "hardtanh_", "glu"})
# ... and everything else without a linear backward pass
OTHER_NONLINEAR = frozenset({
    "sigmoid", "sigmoid_", "tanh", "tanh_", "hardsigmoid", "logsigmoid", "softmax", "log_softmax", "softmin",
    "exp", "exp_", "log", "log_", "sqrt", "rsqrt", "reciprocal", "pow", "__pow__", "__rpow__", "__rtruediv__",
    "abs", "clamp", "clamp_", "clip", "clip_", "clamp_min", "clamp_max", "maximum", "minimum", "max_pool1d",
    "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d", "adaptive_max_pool1d_with_indices",
    "adaptive_max_pool2d_with_indices", "adaptive_max_pool3d_with_indices", "layer_norm", "group_norm", "rms_norm",
    "instance_norm", "normalize", "scaled_dot_product_attention", "softshrink", "hardshrink", "tanhshrink"})
# bilinear operations: nonlinear when two of their arguments depend on the input (attention scores, gating)
PRODUCTS = frozenset({"mul", "mul_", "__mul__", "__rmul__", "__imul__", "matmul", "__matmul__", "__rmatmul__", "bmm",
                      "einsum", "baddbmm", "div", "div_", "__truediv__", "__itruediv__", "true_divide"})


def _grad_tensors(obj: Any, out: list[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        if obj.requires_grad:
            out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            _grad_tensors(o, out)
    elif isinstance(obj, dict):
        for o in obj.values():
            _grad_tensors(o, out)
    return out


class _OpRecorder(TorchFunctionMode):
    """Records nonlinear torch calls on input-dependent tensors made outside every rule module."""

    def __init__(self, state: _ProbeState, names: frozenset[str], products: bool) -> None:
        super().__init__()
        self.state, self.names, self.products = state, names, products

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if self.state.depth == 0:
            name = getattr(func, "__name__", "")
            if name in self.names or (self.products and name in PRODUCTS):
                grads = _grad_tensors(list(args) + list(kwargs.values()), [])
                if name in self.names and grads:
                    self.state.record(name)
                elif name in PRODUCTS and len(grads) >= 2:
                    self.state.record(f"{name} of two activations")
        return func(*args, **kwargs)


class _ProbeState:
    def __init__(self) -> None:
        self.depth = 0
        self.stack: list[str] = []
        self.calls: dict[str, int] = {}
        self.found: dict[str, list[str]] = {}

    def record(self, op: str) -> None:
        where = self.stack[-1] if self.stack else "the model's forward"
        places = self.found.setdefault(op, [])
        if where not in places:
            places.append(where)


def unruled_nonlinearities(model: nn.Module, call: Callable[[torch.Tensor], Any], x: torch.Tensor,
                           is_rule_module: Callable[[nn.Module], bool], names: frozenset[str], *,
                           products: bool) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Run ``call(x)`` once and find the nonlinear operations a module-hooking rule (Captum's DeepLIFT, Guided
    Backprop) would not see.

    Args:
        model: the module tree the rules hook. call: runs the model on ``x`` (e.g. the evaluator's ``call_model``).
        x: (1, ...) input; its dependants are tracked through ``requires_grad`` (parameters are frozen meanwhile).
        is_rule_module: which modules the rule hooks; operations inside them are covered.
        names: ``__name__`` of the functions that count as nonlinear; ``products``: also count products and
            quotients of two input-dependent tensors.
    Returns:
        ``({operation: ["'qualified.name' (Type)", ...]}, {rule module name: calls in the pass})``.
    """
    state = _ProbeState()
    handles = []
    for qualified, module in model.named_modules():
        label = f"{qualified!r} ({type(module).__name__})" if qualified else f"the model ({type(module).__name__})"
        rule = is_rule_module(module)

        def pre(_m: nn.Module, _i: Any, label: str = label, rule: bool = rule, qualified: str = qualified) -> None:
            state.stack.append(label)
            if rule:
                state.depth += 1
                state.calls[qualified] = state.calls.get(qualified, 0) + 1

        def post(_m: nn.Module, _i: Any, _o: Any, rule: bool = rule) -> None:
            state.stack.pop()
            if rule:
                state.depth -= 1

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    try:
        with evaluation_mode(model), torch.enable_grad(), _OpRecorder(state, names, products):
            call(x.detach().requires_grad_(True))
    finally:
        for h in handles:
            h.remove()
    return state.found, state.calls


def _describe_ops(found: dict[str, list[str]], limit: int = 6) -> str:
    parts = []
    for op, places in list(found.items())[:limit]:
        more = f" and {len(places) - 2} more" if len(places) > 2 else ""
        parts.append(f"{op} (in {', '.join(places[:2])}{more})")
    if len(found) > limit:
        parts.append(f"{len(found) - limit} more operation(s)")
    return "; ".join(parts)


class CaptumModel(nn.Module):
    """The user's model as Captum sees it: the user's module tree (registered as ``model``, so Captum's hooks reach
    its layers) behind a forward that goes through the shared evaluator (device and dtype cast, structured outputs
    unwrapped, output checked)."""

    def __init__(self, model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self._call = forward

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._call(inputs)


class _HookedCaptumMethod(Method):
    """A Captum method that hooks the model's modules, run chunk by chunk through the evaluator."""

    input_ndim = (2, 3, 4)
    input_expected = "(N, C, H, W) or (N, L, D) or (N, D)"
    captum_warning = ""          # Captum's per-call UserWarning, silenced
    rows_per_sample = 1

    def __init__(self, model: Any, *, strict: bool = True, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if not isinstance(model, nn.Module):
            raise TypeError(f"{self.name} needs the model as an nn.Module (Captum hooks its nonlinearity modules), "
                            f"got {type(model).__name__}")
        self.strict = check_bool(strict, "strict")
        self._checked: set[tuple[int, ...]] = set()

    # ------------------------------------------------------------------ for subclasses
    def _rules(self) -> tuple[Callable[[nn.Module], bool], frozenset[str], bool]:
        raise NotImplementedError

    def _refuse(self, found: dict[str, list[str]], calls: dict[str, int]) -> None:
        raise NotImplementedError

    def _attribute(self, module: CaptumModel, chunk: torch.Tensor, target: Any, start: int,
                   stop: int) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    def params(self) -> dict[str, Any]:
        return {"strict": self.strict}

    def check_rules(self, x: torch.Tensor) -> None:
        """One probe forward pass per input shape: refuse what Captum's rules cannot handle (see the module doc)."""
        key = tuple(x.shape[1:])
        if key in self._checked:
            return
        is_rule, names, products = self._rules()
        found, calls = unruled_nonlinearities(self.model, self.evaluator.call_model, x[:1], is_rule, names,
                                              products=products)
        self.evaluator.n_probe += 1
        self._refuse(found, calls)
        self._checked.add(key)

    def _forward(self, first_item: int, fn: Callable[[torch.Tensor], torch.Tensor] | None = None
                 ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The forward Captum calls: the evaluator's checked model call, then the callable target ``fn`` if any."""
        return self.evaluator.checked_forward(self.name, first_item, fn)

    def _run_chunks(self, x: torch.Tensor, target: Target) -> torch.Tensor:
        check_gradients_possible(self.name)
        self.check_rules(x)
        parts: list[torch.Tensor] = []

        def attribute(start: int, stop: int) -> torch.Tensor:
            if target.fn is not None:  # Captum takes class targets only: fold the callable into the forward
                module, tgt = CaptumModel(self.model, self._forward(start, target.fn)), None
            else:
                module, tgt = CaptumModel(self.model, self._forward(start)), target.classes[start:stop].tolist()
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=self.captum_warning)
                    # a leaf that requires grad: Captum would otherwise warn that it set requires_grad itself
                    chunk = x[start:stop].detach().requires_grad_(True)
                    attr = self._attribute(module, chunk, tgt, start, stop)
            finally:
                _clear_captum_state(self.model)
            check_finite(attr, f"{self.name} attribution", cause=GRADIENT_CAUSE, first_item=start,
                         context=f" (in the {self.name} evaluations)")
            return attr.detach()

        # map_chunks retries a chunk that runs out of memory in halves (Captum runs the model itself)
        for start, stop, attr in self.evaluator.map_chunks(x.shape[0], attribute, grad=True,
                                                           sample_shape=x.shape[1:], desc=self.name):
            self.evaluator.count(self.rows_per_sample * (stop - start), grad=True)
            parts.append(attr)
        return torch.cat(parts).to(x.dtype)


def _clear_captum_state(model: nn.Module) -> None:
    """Captum's DeepLIFT keeps each hooked module's last input/output as module attributes and deletes them in the
    backward pass; a chunk that fails between the two (out of memory) would leave them behind on the user's model."""
    for m in model.modules():
        if isinstance(m, DEEPLIFT_RULE_MODULES):
            for attr in ("input", "output"):
                if isinstance(m.__dict__.get(attr), torch.Tensor):
                    del m.__dict__[attr]


@register_method
class DeepLift(_HookedCaptumMethod):
    """DeepLIFT (Shrikumar et al. 2017), Rescale rule, through ``captum.attr.DeepLift``.

    Args:
        baseline: the reference input (any of :func:`pathxai.core.make_baseline`'s, as for ``ig``), default zeros.
        blur_sigma: blur of ``baseline="blur"``, pixels.
        strict: refuse models with nonlinearities outside Captum's rule modules (see the module docstring).
        return_delta: also compute the summation-to-delta residual sum(a) - (f(x) - f(baseline)) per sample
            (``extras["delta"]``, 2N more forward passes).
    Attribution: the input's shape; sums to f(x) - f(baseline) on models built from rule modules.
    """

    name = "deeplift"
    description = "DeepLIFT (Rescale rule) via Captum: contributions relative to a reference input."
    captum_warning = "Setting forward, backward hooks and attributes on non-linear"
    rows_per_sample = 2   # each sample and its reference go through the model together

    def __init__(self, model: Any, *, baseline: BaselineLike = "zero", blur_sigma: float = 10.0,
                 strict: bool = True, return_delta: bool = False, **kwargs: Any) -> None:
        super().__init__(model, strict=strict, **kwargs)
        self.baseline = check_baseline(baseline)
        self.blur_sigma = check_positive_float(blur_sigma, "blur_sigma")
        self.return_delta = check_bool(return_delta, "return_delta")

    def cost(self, input_shape: Sequence[int] | None) -> Cost:
        n = 1 if input_shape is None else int(input_shape[0])
        return Cost(evaluations=2 * n + (2 * n if self.return_delta else 0),
                    detail=f"{n} input(s) and their references")

    def params(self) -> dict[str, Any]:
        return {"baseline": describe_baseline(self.baseline), "strict": self.strict}

    def _rules(self) -> tuple[Callable[[nn.Module], bool], frozenset[str], bool]:
        return (lambda m: type(m) in DEEPLIFT_RULE_MODULES), RELU_LIKE | OTHER_NONLINEAR, True

    def _refuse(self, found: dict[str, list[str]], calls: dict[str, int]) -> None:
        reused = {name: n for name, n in calls.items() if n > 1}
        if reused:
            name, n = next(iter(reused.items()))
            raise ModelNotSupportedError(
                f"deeplift: module {name!r} ({type(self.model.get_submodule(name)).__name__}) runs {n} times per "
                "forward pass; Captum's DeepLIFT keeps one input per module and fails on a reused module: give each "
                "use its own module instance")
        if found and self.strict:
            rules = ", ".join(f"nn.{t.__name__}" for t in DEEPLIFT_RULE_MODULES)
            raise ModelNotSupportedError(
                f"deeplift: Captum's DeepLIFT has rules only for modules of type {rules} (linear layers, "
                "convolutions, average pooling and batch norm in eval mode need none); this model computes "
                f"{_describe_ops(found)} outside them, where Captum passes the plain gradient through, so the "
                "attribution would not be DeepLIFT's and would not sum to f(x) - f(baseline). Use such modules "
                "(nn.ReLU() rather than F.relu), or pass strict=False to accept Captum's gradient fallback")

    def _attribute(self, module: CaptumModel, chunk: torch.Tensor, target: Any, start: int,
                   stop: int) -> torch.Tensor:
        from captum.attr import DeepLift as CaptumDeepLift

        # Captum's eps (1e-10: where |input - reference| < eps the rule falls back to the gradient) rounds to 0 in a
        # float16 model, and 0 / 0 there makes NaN: no smaller than the model dtype's smallest normal number
        dtype = self.evaluator.placement.dtype
        eps = max(1e-10, torch.finfo(dtype).tiny) if dtype is not None and dtype.is_floating_point else 1e-10
        return CaptumDeepLift(module, eps=eps).attribute(chunk, baselines=self._b[start:stop], target=target)

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        b = make_baseline(x, self.baseline, blur_sigma=self.blur_sigma, seed=self.seed)
        self._b = b
        try:
            attribution = self._run_chunks(x, target)
        finally:
            del self._b
        extras: dict[str, Any] = {"baseline": b}
        if self.return_delta:
            ends = self.evaluator.forward(torch.cat([x, b]), desc="summation-to-delta")
            index = torch.cat([torch.arange(x.shape[0])] * 2)
            f = target.score(ends, index)  # type: ignore[arg-type]
            extras["delta"] = attribution.flatten(1).sum(1) - (f[: x.shape[0]] - f[x.shape[0]:])
        return attribution, extras


@register_method
class GuidedBackprop(_HookedCaptumMethod):
    """Guided Backpropagation (Springenberg et al. 2015) through ``captum.attr.GuidedBackprop``: the gradient of the
    target score with the backward signal at every ``nn.ReLU`` clipped at zero.

    Args:
        strict: refuse models whose ReLU-like activations are not ``nn.ReLU`` modules, or that have none (then the
            result would be the plain gradient); see the module docstring.
    Attribution: the input's shape; ``saliency()`` = max |.| over channels.
    """

    name = "guided_backprop"
    description = "Guided Backprop via Captum: gradient with negative signals clipped at every ReLU."
    captum_warning = "Setting backward hooks on ReLU activations"
    saliency_reduction = "max_abs"

    def _rules(self) -> tuple[Callable[[nn.Module], bool], frozenset[str], bool]:
        return (lambda m: isinstance(m, nn.ReLU)), RELU_LIKE, False

    def _refuse(self, found: dict[str, list[str]], calls: dict[str, int]) -> None:
        if not self.strict:
            return
        if found:
            raise ModelNotSupportedError(
                "guided_backprop: Captum's Guided Backprop clips the backward signal at nn.ReLU modules only; this "
                f"model computes {_describe_ops(found)} outside them, where the plain gradient would pass. Use "
                "nn.ReLU modules (not F.relu), or pass strict=False to accept the plain gradient there")
        if not calls:
            raise ModelNotSupportedError("guided_backprop: the model runs no nn.ReLU module, so Guided Backprop would "
                                         "be the plain gradient; use method 'saliency', or pass strict=False")

    def _attribute(self, module: CaptumModel, chunk: torch.Tensor, target: Any, start: int,
                   stop: int) -> torch.Tensor:
        from captum.attr import GuidedBackprop as CaptumGuidedBackprop

        return CaptumGuidedBackprop(module).attribute(chunk, target=target)

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        return self._run_chunks(x, target), {}


# ---------------------------------------------------------------------------------------------------------------
# GradientSHAP

INPUT = "input"   # a reference equal to the explained input itself (Captum's tutorial distribution)


def check_baseline_distribution(baselines: Any) -> Any:
    """Validate GradientSHAP's ``baselines`` at construction: a (B, ...) tensor (B references shared by every input,
    Captum's form) or a non-empty sequence of per-input specs (``"input"`` or any spec of
    :func:`pathxai.core.make_baseline`); a single spec is a distribution of one. Returns it normalised."""
    if isinstance(baselines, torch.Tensor):
        if baselines.ndim < 2 or baselines.shape[0] < 1:
            raise ValueError(f"baselines tensor must have shape (B, ...) with B >= 1 references, got "
                             f"{tuple(baselines.shape)}")
        if not torch.is_floating_point(baselines):
            raise TypeError(f"baselines tensor must be floating point, got dtype {baselines.dtype}")
        if not bool(torch.isfinite(baselines.detach()).all()):
            raise ValueError("baselines contains NaN/Inf values; references must be finite")
        return baselines
    if isinstance(baselines, (str, numbers.Real)) or callable(baselines):
        baselines = (baselines,)
    if not isinstance(baselines, (list, tuple)):
        raise TypeError(f"baselines must be a (B, ...) tensor or a sequence of baseline specs, got "
                        f"{type(baselines).__name__}")
    if not baselines:
        raise ValueError("baselines must hold at least one reference, got an empty sequence")
    for spec in baselines:
        if not (isinstance(spec, str) and spec == INPUT):
            check_baseline(spec, "baselines")
    return tuple(baselines)


def gradient_shap_draws(seed: int, items: torch.Tensor, n_baselines: int, sample_shape: Sequence[int],
                        stdevs: float, device: torch.device | str | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """GradientSHAP's random draws for ``items`` (item j = sample j // n_samples, draw j % n_samples).

    Returns:
        ``(reference index (n,) int64 on the host, alpha (n,) float32 on the host, noise (n, *sample_shape) float32
        on ``device`` -- already scaled by ``stdevs`` -- or None when ``stdevs`` is 0)``. The index and alpha come from
        the host generator ``item_generator(seed, "gradient_shap", j)`` (identical on every device), the noise from
        ``item_generator(seed, "gradient_shap-noise", j, device)``.
    """
    index = torch.empty(len(items), dtype=torch.int64)
    alpha = torch.empty(len(items), dtype=torch.float32)
    for row, j in enumerate(items.tolist()):
        g = item_generator(seed, "gradient_shap", int(j))
        index[row] = torch.randint(n_baselines, (1,), generator=g)[0]
        alpha[row] = torch.rand(1, generator=g)[0]
    if stdevs == 0:
        return index, alpha, None
    noise = torch.stack([torch.randn(tuple(sample_shape), device=device,
                                     generator=item_generator(seed, "gradient_shap-noise", int(j), device))
                         for j in items.tolist()])
    return index, alpha, noise * stdevs


@register_method
class GradientShap(Method):
    """GradientSHAP (Lundberg & Lee 2017) with Captum's estimator, seeded per draw (see the module docstring).

    Args:
        n_samples: draws per input (Captum's tutorial: 50).
        stdevs: std of the Gaussian noise added to the input for each draw, in input units (tutorial: 1e-4); 0 for
            none.
        baselines: the reference distribution: a sequence of per-input specs -- ``"input"`` (the input itself),
            ``"zero"``, ``"blur"``, ``"mean"``, ``"uniform"``, ``"gaussian"``, a number, a tensor of the input's
            shape, a callable (see :func:`pathxai.core.make_baseline`) -- or a (B, ...) tensor of B references shared
            by all inputs (Captum's form). Default ``("zero", "input")``, Captum's tutorial's.
        blur_sigma: blur of a ``"blur"`` reference, pixels.
        score: ``"output"`` (Captum's), ``"softmax"`` or ``"log_softmax"``.
    Attribution: the input's shape. ``extras``: ``baseline_index`` and ``alpha`` (N, n_samples), the draws.
    """

    name = "gradient_shap"
    description = "GradientSHAP: expected gradients x (input - reference) over seeded references, noise and path points."
    stochastic = True
    cost_param = "n_samples"
    input_ndim = (2, 3, 4)
    input_expected = "(N, C, H, W) or (N, L, D) or (N, D)"

    def __init__(self, model: Any, *, n_samples: int = 50, stdevs: float = 1e-4,
                 baselines: Any = ("zero", INPUT), blur_sigma: float = 10.0, score: str = "output",
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.n_samples = check_positive_int(n_samples, "n_samples")
        self.stdevs = check_positive_float(stdevs, "stdevs", allow_zero=True)
        self.baselines = check_baseline_distribution(baselines)
        self.blur_sigma = check_positive_float(blur_sigma, "blur_sigma")
        self.score = check_choice(score, "score", SCORES)

    def cost(self, input_shape: Sequence[int] | None) -> Cost:
        """N x n_samples gradient evaluations; memory: the references (B copies of the batch) and the accumulator."""
        n = 1 if input_shape is None else int(input_shape[0])
        d = 0 if input_shape is None else math.prod(input_shape[1:])
        refs = self.baselines.shape[0] if isinstance(self.baselines, torch.Tensor) else len(self.baselines)
        return Cost(evaluations=n * self.n_samples, bytes=8.0 * (refs + 2) * n * d, param="n_samples",
                    value=self.n_samples, detail=f"{n} input(s) x {self.n_samples} samples")

    def params(self) -> dict[str, Any]:
        refs = (f"tensor{tuple(self.baselines.shape)}" if isinstance(self.baselines, torch.Tensor)
                else [describe_baseline(b) for b in self.baselines])
        return {"n_samples": self.n_samples, "stdevs": self.stdevs, "baselines": refs, "score": self.score}

    def distribution(self, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """``(references, per_input)``: (B, N, ...) references of each input, or (B, ...) shared ones."""
        if isinstance(self.baselines, torch.Tensor):
            refs = self.baselines.detach().to(device=x.device, dtype=x.dtype)
            if tuple(refs.shape[1:]) != tuple(x.shape[1:]):
                raise ValueError(f"baselines tensor must have shape (B, {', '.join(map(str, x.shape[1:]))}) for "
                                 f"inputs of shape {tuple(x.shape)}, got {tuple(refs.shape)}")
            return refs, False
        refs = [x.clone() if isinstance(spec, str) and spec == INPUT else
                make_baseline(x, spec, blur_sigma=self.blur_sigma, seed=self.seed, name="baselines")
                for spec in self.baselines]
        return torch.stack(refs), True

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        n, k_draws = x.shape[0], self.n_samples
        refs, per_input = self.distribution(x)
        shape = (-1,) + (1,) * (x.ndim - 1)
        index_table = torch.empty(n, k_draws, dtype=torch.int64)
        alpha_table = torch.empty(n, k_draws, dtype=torch.float32)

        def draw(s: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """(noisy inputs, references, alphas) of the items (s, k)."""
            index, alpha, noise = gradient_shap_draws(self.seed, s * k_draws + k, refs.shape[0], x.shape[1:],
                                                      self.stdevs, x.device)
            index_table[s, k] = index
            alpha_table[s, k] = alpha
            noisy = x[s] if noise is None else x[s] + noise.to(x.dtype)
            b = refs[index, s] if per_input else refs[index]
            return noisy, b, alpha.to(x)

        def build(s: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            noisy, b, alpha = draw(s, k)
            a = alpha.view(shape)
            return a * noisy + (1.0 - a) * b     # Captum's _scale_input

        total = torch.zeros_like(x)
        for s, k, _, g in item_gradients(self.evaluator, target, n, k_draws, build, sample_shape=x.shape[1:],
                                         score_kind=self.score, desc=self.name):
            noisy, b, _ = draw(s, k)     # the same draws again (seeded per item), cheaper than keeping them
            accumulate_rows(total, s, (noisy - b) * g)
        return total / k_draws, {"baseline_index": index_table, "alpha": alpha_table}
