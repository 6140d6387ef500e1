"""The contract every explanation method follows, and the registry that names them.

A method subclasses :class:`Method`, sets ``name`` and ``description``, implements :meth:`Method._explain` and is
decorated with :func:`register_method`; the shared contract tests then run it through shapes, determinism,
batch-size invariance, per-sample targets and bad inputs without further work.
"""
from __future__ import annotations

import functools
import time
from typing import Any, Callable, ClassVar, Iterator, Sequence

import torch

from . import limits
from .evaluator import AUTO, BatchedEvaluator, evaluation_mode
from .explanation import Explanation
from .limits import Cost
from .targets import Target, TargetLike, resolve_target
from .validation import MODEL_OUTPUT_CAUSE, check_finite, check_input, check_model_output, check_seed

_REGISTRY: dict[str, type["Method"]] = {}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register_method(cls: type["Method"]) -> type["Method"]:
    """Class decorator: make ``cls`` available as ``px.get_method(cls.name)``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} must set a non-empty class attribute `name` to be registered")
    key = _key(cls.name)
    if key in _REGISTRY and _REGISTRY[key] is not cls:
        raise ValueError(f"a method named {cls.name!r} is already registered ({_REGISTRY[key].__name__})")
    _REGISTRY[key] = cls
    return cls


def get_method(name: str) -> type["Method"]:
    """The method class registered under ``name`` (case-insensitive, '-' and '_' alike)."""
    if not isinstance(name, str):
        raise TypeError(f"method name must be a string, got {type(name).__name__}")
    try:
        return _REGISTRY[_key(name)]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(list_methods())}") from None


def list_methods() -> list[str]:
    """Names of all registered methods, sorted."""
    return sorted(cls.name for cls in _REGISTRY.values())


def describe_methods() -> dict[str, str]:
    """``{name: one-line description}`` for every registered method."""
    return {cls.name: cls.description for cls in sorted(_REGISTRY.values(), key=lambda c: c.name)}


class Method:
    """Base class of every explanation method.

    Args:
        model: callable ``(N, ...) -> (N, K)`` (or any tensor output with a callable target); an ``nn.Module`` is put
            in eval mode with frozen parameters while it is explained, and restored afterwards.
        batch_size: most samples per forward or forward+backward pass, or ``"auto"`` (fastest measured chunk size).
        seed: seed for stochastic methods, an int in [0, 2**63); the same seed gives the same result bit for bit
            (integer ``batch_size``).
        progress: tqdm progress bar on long runs; ``None`` = only on a terminal.

    Cost: :meth:`cost` estimates the model evaluations and up-front memory of an explanation; :meth:`explain` checks
    it against :mod:`pathxai.core.limits` before any model call, and every constructor (through
    ``__init_subclass__``) refuses settings whose cost for a single input already exceeds a bound.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs_target: ClassVar[bool] = True
    stochastic: ClassVar[bool] = False
    saliency_reduction: ClassVar[str] = "sum"
    input_ndim: ClassVar[tuple[int, ...]] = (4,)
    input_expected: ClassVar[str] = "(N, C, H, W)"
    # the constructor parameter that scales the number of model evaluations (steps, samples, masks), if any:
    # the benchmark harness grows it 10x to check that memory stays flat
    cost_param: ClassVar[str | None] = None

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], *, batch_size: int | str = AUTO,
                 seed: int = 0, progress: bool | None = None) -> None:
        if not callable(model):
            raise TypeError(f"model must be callable (an nn.Module or a function), got {type(model).__name__}")
        self.model = model
        self.seed = check_seed(seed)
        self.evaluator = BatchedEvaluator(model, batch_size=batch_size, progress=progress)
        self._num_classes: dict[tuple[int, ...], int | None] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Wrap each subclass constructor so that, once the outermost one has returned (subclass constructors call
        # their parents' in any order), the cost of one input is checked: a setting that could never run (e.g.
        # RELAX's tolerance=1e-9, ~1e18 masks) is refused when it is made, not when the first batch arrives.
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_pathxai_cost_checked", False):
            return

        @functools.wraps(init)
        def __init__(self: "Method", *args: Any, **kw: Any) -> None:
            depth = self.__dict__.get("_init_depth", 0)
            self.__dict__["_init_depth"] = depth + 1
            try:
                init(self, *args, **kw)
            finally:
                self.__dict__["_init_depth"] = depth
            if depth == 0:
                del self.__dict__["_init_depth"]
                limits.check(self.cost(None), f"method {self.name!r}", warn=False)

        __init__._pathxai_cost_checked = True  # type: ignore[attr-defined]
        cls.__init__ = __init__  # type: ignore[method-assign]

    # ------------------------------------------------------------------ for subclasses
    def cost(self, input_shape: Sequence[int] | None) -> Cost:
        """Estimated cost of explaining a batch of shape ``input_shape`` (N, ...), before any work.

        ``None`` asks, at construction, for one input of unknown shape: return the terms known without the shape.
        The default counts N x ``getattr(self, cost_param)`` model evaluations (N without a ``cost_param``) and no
        up-front memory; methods whose cost has another form, or that allocate dense structures (quadrature rules,
        mask tables, per-pixel statistics), override it. Lower bounds are fine for adaptive methods.
        """
        n = 1 if input_shape is None else int(input_shape[0])
        if self.cost_param is None:
            return Cost(evaluations=n, detail=f"{n} input(s)")
        per = int(getattr(self, self.cost_param))
        return Cost(evaluations=n * per, param=self.cost_param, value=per,
                    detail=f"{n} input(s) x {per} {self.cost_param}")

    def params(self) -> dict[str, Any]:
        """Method parameters recorded in ``Explanation.meta`` (override to add your own)."""
        return {}

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        """Compute ``(attribution (N, ...), extras)`` for a validated batch ``x`` and resolved ``target``.

        Stochastic methods draw their randomness with :func:`pathxai.core.seeding.item_generator` from
        ``self.seed``, one generator per item, so results do not depend on how items are chunked.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ public
    @property
    def batch_size(self) -> int | str:
        return self.evaluator.batch_size

    def num_classes(self, x: torch.Tensor) -> int | None:
        """Classes of the model output for inputs shaped like ``x`` (one cached single-sample forward pass)."""
        key = tuple(x.shape[1:])
        if key not in self._num_classes:
            with torch.inference_mode():
                out = check_model_output(self.evaluator.call_model(x[:1]), 1)
            check_finite(out, "model output", cause=MODEL_OUTPUT_CAUSE, context=" (probing the number of classes)")
            self.evaluator.n_probe += 1
            self._num_classes[key] = int(out.shape[1]) if out.ndim == 2 else None
        return self._num_classes[key]

    def resolve_target(self, x: torch.Tensor, target: TargetLike) -> Target:
        """Resolve a user ``target`` for the batch ``x`` (``None`` costs one forward pass per sample)."""
        if callable(target) and not isinstance(target, torch.Tensor):
            return resolve_target(target, x.shape[0])
        n_classes = self.num_classes(x)
        if n_classes is None:
            raise ValueError(f"the model output for inputs of shape {tuple(x.shape)} is not (N, num_classes); "
                             "pass a callable target mapping the output to (N,) scores")
        return resolve_target(target, x.shape[0], predict=lambda: self.evaluator.forward(x, desc="predict"),
                              num_classes=n_classes)

    def validate_input(self, x: Any) -> torch.Tensor:
        """Check ``x`` against the method's accepted ranks and, when the model declares ``input_shape``
        (models of ``px.models`` do), against the shape the model takes."""
        declared = getattr(self.model, "input_shape", None)
        if isinstance(declared, tuple) and len(declared) + 1 in self.input_ndim:
            expected = "(N, " + ", ".join(str(d) for d in declared) + ")"
            x = check_input(x, "x", ndim=len(declared) + 1, expected=expected)
            if tuple(x.shape[1:]) != declared:
                name = getattr(self.model, "model_name", type(self.model).__name__)
                raise ValueError(f"x must have shape {expected} for the model {name}, got shape {tuple(x.shape)}")
            return x
        return check_input(x, "x", ndim=self.input_ndim, expected=self.input_expected)

    def explain(self, x: torch.Tensor, target: TargetLike = None) -> Explanation:
        """Explain the model's output for the batch ``x``.

        Args:
            x: inputs, shape :attr:`input_expected` (``(N, C, H, W)`` for images), floating point, finite.
            target: int class, N ints, ``None`` (predicted class) or a callable ``output -> (N,)`` scores.
        Returns:
            An :class:`Explanation` whose ``meta`` records the evaluations used and the wall time.
        Raises:
            ResourceLimitError: the estimated cost exceeds :mod:`pathxai.core.limits` (checked before any work).
            NonFiniteError: the model output, a target score or a gradient is NaN/Inf.
            GradientUnavailableError: a gradient method under ``torch.inference_mode()`` or on a model whose output
                does not depend differentiably on the input.
        """
        x = self.validate_input(x)
        # work runs where the model lives, in float32 or wider; results go back where x came from, in its dtype
        user_device, user_dtype = x.device, x.dtype
        x = self.evaluator.work_input(x)
        placement = self.evaluator.placement
        limits.check(self.cost(tuple(x.shape)), f"method {self.name!r}")
        start = time.perf_counter()
        self.evaluator.reset_counts()
        with evaluation_mode(self.model):
            if self.needs_target:
                resolved = self.resolve_target(x, target)
            else:
                if target is not None:
                    raise ValueError(f"method {self.name!r} explains a representation and takes no target; "
                                     f"got target={target!r}")
                resolved = Target(None, None)
            attribution, extras = self._explain(x, resolved)
        wall = time.perf_counter() - start
        ev = self.evaluator
        meta = {
            "method": self.name,
            "params": self.params(),
            "batch_size": ev.batch_size,
            "chunk_sizes": sorted(ev.chunk_sizes_used),
            "seed": self.seed,
            "model_evaluations": ev.n_evaluations,
            "forward_evaluations": ev.n_forward,
            "gradient_evaluations": ev.n_gradient,
            "probe_evaluations": ev.n_probe,
            "wall_time_s": wall,
            "target": resolved.classes.tolist() if resolved.classes is not None else
            ("callable" if resolved.fn is not None else None),
        }
        meta["device"] = str(x.device)
        meta["dtype"] = str(x.dtype).replace("torch.", "")
        meta["model_dtype"] = None if placement.dtype is None else str(placement.dtype).replace("torch.", "")
        attribution = attribution.detach().to(device=user_device, dtype=user_dtype)
        extras = {k: v.detach().to(user_device) if isinstance(v, torch.Tensor) else v for k, v in extras.items()}
        return Explanation(attribution=attribution, extras=extras, meta=meta,
                           input_shape=tuple(x.shape), saliency_reduction=self.saliency_reduction)

    __call__ = explain

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({params}{', ' if params else ''}batch_size={self.batch_size!r}, seed={self.seed})"


def explain(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, target: TargetLike = None,
            method: str = "ig", **kwargs: Any) -> Explanation:
    """Explain ``model`` on ``x`` with the registered ``method`` in one call.

    ``kwargs`` go to the method's constructor (``batch_size``, ``seed``, method parameters).
    """
    return get_method(method)(model, **kwargs).explain(x, target)


def items_of(start: int, stop: int, per_sample: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sample, step)`` indices of items ``start..stop`` laid out sample-major with ``per_sample`` items each."""
    items = torch.arange(start, stop)
    return items // per_sample, items % per_sample


def item_gradients(evaluator: BatchedEvaluator, target: Target, n_samples: int, per_sample: int,
                   build: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, sample_shape: Sequence[int],
                   score_kind: str = "output", desc: str | None = None
                   ) -> "Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]":
    """Gradients of the target score at ``n_samples * per_sample`` inputs, streamed chunk by chunk.

    Items are laid out sample-major: item ``j`` is step ``j % per_sample`` of sample ``j // per_sample``.

    Args:
        build: ``(sample_idx (n,), step_idx (n,)) -> inputs (n, *sample_shape)``.
        score_kind: ``"output"``, ``"softmax"`` or ``"log_softmax"`` (see :meth:`Target.score`).
    Yields:
        ``(sample_idx (n,), step_idx (n,), scores (n,), grads (n, *sample_shape))`` per chunk, in item order.
    """
    def make(start: int, stop: int) -> torch.Tensor:
        s, k = items_of(start, stop, per_sample)
        return build(s, k)

    def score(out: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return target.score(out, items_of(start, stop, per_sample)[0], kind=score_kind)  # type: ignore[arg-type]

    for start, stop, scores, grads in evaluator.gradient_chunks(n_samples * per_sample, make, score,
                                                                sample_shape=sample_shape, desc=desc):
        s, k = items_of(start, stop, per_sample)
        yield s, k, scores, grads


def item_outputs(evaluator: BatchedEvaluator, n_items: int, build: Callable[[torch.Tensor], torch.Tensor], *,
                 sample_shape: Sequence[int], desc: str | None = None
                 ) -> "Iterator[tuple[torch.Tensor, torch.Tensor]]":
    """Forward-only model outputs for ``n_items`` inputs built by ``build(item_idx (n,)) -> (n, *sample_shape)``.

    Yields:
        ``(item_idx (n,), output (n, ...))`` per chunk, in item order.
    """
    for start, stop, out in evaluator.forward_chunks(n_items, lambda a, b: build(torch.arange(a, b)),
                                                     sample_shape=sample_shape, desc=desc):
        yield torch.arange(start, stop), out
