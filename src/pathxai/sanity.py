"""Sanity checks for saliency maps (Adebayo et al. 2018): does a map change when what the model learnt is destroyed?

    import pathxai as px
    r = px.sanity.model_randomisation(model, x, target, method="ig")        # cascading, Spearman of |maps|
    r.similarity      # (L, N): step k = the top k + 1 layers re-initialised; item n
    r.layers          # the L layers (qualified module names), in the order they were randomised
    r.summary()       # per step: mean over items and its 95 % percentile-bootstrap interval

    r = px.sanity.random_logit(model, x, target, method="ig")               # explain another class instead
    r.similarity      # (N,)

**Model parameter randomisation.** The model is deep-copied (the caller's model is never modified) and its layers --
the modules that own parameters directly -- are re-initialised one step at a time:

- ``mode="cascading"`` (the paper's main test): step 1 re-initialises the top layer (the logits), step 2 the top two,
  and so on down to the input layer: step k has the first k + 1 layers of :attr:`ModelRandomisationResult.layers`
  re-initialised;
- ``mode="independent"``: step k re-initialises only layer k, every other layer keeps its trained weights.

The layers default to every parameterised layer in top-down order: the order in which they start running on one
input (a forward pre-hook on each, on the copy; the layer that starts last is the top one); layers that never run come
last, in reverse registration order (models whose layers cannot be hooked, e.g. TorchScript, use reverse registration
order throughout). ``layers="blocks"`` groups the layers the way the paper groups Inception v3's (its "Mixed_7c",
...): every child of the model's longest ``nn.ModuleList`` / ``nn.Sequential`` of parameterised children is one step
(EfficientNet-Lite0: its 16 MBConv blocks, plus the stem, head and classifier layers one by one). An explicit list of
module names is randomised in the order given; each name stands for every parameterised layer at or below it (a
block is re-initialised in one step; two names may not share a layer).

**Re-initialisation** (seeded, reproducible, and the caller's global random state is neither read nor changed):

- a layer with ``reset_parameters()`` (``nn.Linear``, ``nn.Conv*``, norms, embeddings, ...) gets exactly what a fresh
  layer of its class would get: ``reset_parameters()`` runs on a float32 CPU copy of the layer inside
  ``torch.random.fork_rng`` with the CPU generator seeded from ``(seed, layer name)`` -- PyTorch's own init functions
  take no generator, and forking restores the caller's state afterwards -- and the layer's own parameters and buffers
  are copied back (so a BatchNorm returns to weight 1, bias 0, running mean 0, running variance 1, as when it was
  made). Drawing on the CPU makes the new weights identical on every device;
- a layer without it (e.g. a module that owns a ``cls_token`` or a scale): each of its own floating parameters is
  redrawn i.i.d. from a normal distribution with the trained tensor's mean and standard deviation (a seeded
  ``torch.Generator``), which destroys what was learnt while keeping the scale of the activations.

Each layer's seed depends only on ``seed`` and the layer's name, so a layer gets the same weights in both modes and
in every step. The method keeps its own ``seed`` (the same noise, masks or baselines) on every model, so the maps
differ only through the model; the explained class on every randomised model is the class explained on the trained
model (its prediction when ``target=None``).

**Similarities** (:func:`similarity`, per item, between the trained model's map and the randomised model's):

- ``spearman_abs`` (default; the paper's main figures): Spearman rank correlation of |maps|;
- ``spearman``: of the signed maps (a sign flip gives -1);
- ``ssim``: scikit-image's ``structural_similarity`` of the maps normalised as the paper does (``|map| / max |map|``,
  data range 1, a 7 x 7 window, or the largest odd window that fits a smaller map);
- ``hog``: Pearson correlation of scikit-image ``hog`` features of the same normalised maps (9 orientations, 8 x 8
  pixel cells or a third of a smaller map's side, 3 x 3 cell blocks).

Identical maps have similarity 1 under every measure (even a constant map, whose rank correlation is otherwise
undefined); a correlation with a constant map is NaN (reported, and left out of means with the count of items kept).

**Random logit** (:func:`random_logit`; Adebayo et al. 2018, Sixt et al. 2020): the map of the explained class
against the map of a random other class (seeded per item, never the explained class). A map that barely changes
does not say which class it explains.

How to read a result: a similarity that stays high as layers are randomised means the map does not depend on what
the model learnt (it explains the input, like an edge detector); a good method falls towards 0 as soon as the top
layers are randomised. For stochastic methods the ceiling is below 1: two runs on the same model with other seeds do
not agree perfectly either.
"""
from __future__ import annotations

import copy
import itertools
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from .core.evaluator import AUTO, BatchedEvaluator, evaluation_mode
from .core.method import Method, get_method
from .core.seeding import item_generator, item_seed
from .core.targets import TargetLike
from .core.validation import check_choice, check_finite_float, check_input, check_positive_int, check_seed

SIMILARITIES = ("spearman_abs", "spearman", "ssim", "hog")
MODES = ("cascading", "independent")
INIT_RESET = "reset_parameters"
INIT_NORMAL = "normal(mean, std of the trained tensor)"

__all__ = ["MODES", "ModelRandomisationResult", "RandomLogitResult", "SIMILARITIES", "block_layers",
           "bootstrap_ci", "format_table", "model_randomisation", "parameterised_layers", "randomised_models",
           "random_logit", "reinitialise", "save_results", "similarity", "summarise"]


# ---------------------------------------------------------------------------------------------------------------
# similarity of two batches of maps


def _as_maps(value: Any, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of maps (N, H, W), got {type(value).__name__}")
    if not (value.is_floating_point() or value.dtype in (torch.int8, torch.int16, torch.int32, torch.int64,
                                                         torch.uint8)):
        raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
    if value.ndim < 2 or value.shape[0] == 0 or value[0].numel() == 0:
        raise ValueError(f"{name} must have shape (N, H, W) (or (N, ...)) with N >= 1 and non-empty maps, got shape "
                         f"{tuple(value.shape)}")
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN/Inf values (shape {tuple(value.shape)})")
    return value.detach().to("cpu", torch.float64)


def _unit_abs(m: np.ndarray) -> np.ndarray:
    """|m| / max |m| (all zeros stays zeros): the paper's normalisation for SSIM and HOG."""
    a = np.abs(m)
    top = a.max()
    return a / top if top > 0 else a


def _pearson(u: np.ndarray, v: np.ndarray) -> float:
    u = u - u.mean()
    v = v - v.mean()
    den = math.sqrt(float((u * u).sum()) * float((v * v).sum()))
    return float((u * v).sum()) / den if den > 0 else math.nan


def _ssim_window(h: int, w: int) -> int:
    side = min(7, h, w)
    side -= 1 - side % 2   # odd
    if side < 3:
        raise ValueError(f"similarity='ssim' needs maps of at least 3 x 3 pixels, got {h} x {w}")
    return side


def _hog_features(m: np.ndarray) -> np.ndarray:
    from skimage.feature import hog

    h, w = m.shape
    cell = min(8, min(h, w) // 3)
    if cell < 1:
        raise ValueError(f"similarity='hog' needs maps of at least 3 x 3 pixels, got {h} x {w}")
    return hog(m, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(3, 3), feature_vector=True)


def similarity(a: torch.Tensor, b: torch.Tensor, kind: str = "spearman_abs") -> torch.Tensor:
    """Similarity of two batches of maps, item by item.

    Args:
        a, b: (N, H, W) maps (``(N, 1, H, W)`` is accepted; ``(N, ...)`` of any shape for the Spearman measures), the
            same shape.
        kind: ``"spearman_abs"`` (rank correlation of |maps|), ``"spearman"`` (signed), ``"ssim"`` or ``"hog"``
            (see the module docstring for the normalisation).
    Returns:
        (N,) float64 on the CPU: 1 for identical maps; NaN where a correlation meets a constant map.
    """
    kind = check_choice(kind, "similarity", SIMILARITIES)
    a = _as_maps(a, "a")
    b = _as_maps(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"b must have the shape of a, {tuple(a.shape)}, got {tuple(b.shape)}")
    if kind in ("ssim", "hog"):
        if a.ndim == 4 and a.shape[1] == 1:
            a, b = a[:, 0], b[:, 0]
        if a.ndim != 3:
            raise ValueError(f"similarity={kind!r} compares 2-D maps: a and b must have shape (N, H, W), got "
                             f"{tuple(a.shape)}")
    n = a.shape[0]
    if kind in ("spearman_abs", "spearman"):
        from .metrics.localisation import spearman

        fa, fb = a.reshape(n, -1), b.reshape(n, -1)
        if kind == "spearman_abs":
            fa, fb = fa.abs(), fb.abs()
        out = spearman(fa, fb)
        same = (fa == fb).all(1)
        return torch.where(same, torch.ones_like(out), out)
    out = torch.empty(n, dtype=torch.float64)
    an, bn = a.numpy(), b.numpy()
    for i in range(n):
        ua, ub = _unit_abs(an[i]), _unit_abs(bn[i])
        if np.array_equal(ua, ub):
            out[i] = 1.0
        elif kind == "ssim":
            from skimage.metrics import structural_similarity

            out[i] = float(structural_similarity(ua, ub, data_range=1.0, win_size=_ssim_window(*ua.shape)))
        else:
            out[i] = _pearson(_hog_features(ua), _hog_features(ub))
    return out


def bootstrap_ci(values: torch.Tensor | Sequence[float], *, n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float, int]:
    """Mean of the finite ``values`` (N,) and its percentile-bootstrap confidence interval.

    Returns:
        ``(mean, low, high, n)`` with ``n`` the finite values used; the interval is NaN with fewer than 2 values.
        Uses ``scipy.stats.bootstrap`` (percentile method, items resampled with replacement, seeded).
    """
    from scipy.stats import bootstrap

    n_boot = check_positive_int(n_boot, "n_boot")
    level = check_finite_float(level, "level", low=0.0, high=1.0, low_open=True, high_open=True)
    seed = check_seed(seed)
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    v = v[torch.isfinite(v)].numpy()
    if len(v) == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(v.mean())
    if len(v) < 2:
        return mean, math.nan, math.nan, 1
    if np.all(v == v[0]):   # every resample has the same mean (scipy would warn about a degenerate distribution)
        return mean, mean, mean, len(v)
    r = bootstrap((v,), np.mean, n_resamples=n_boot, confidence_level=level, method="percentile",
                  random_state=np.random.default_rng(item_seed(seed, "bootstrap", 0)))
    return mean, float(r.confidence_interval.low), float(r.confidence_interval.high), len(v)


# ---------------------------------------------------------------------------------------------------------------
# layers and their re-initialisation


def _check_model(model: Any) -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (its layers are re-initialised), got "
                        f"{type(model).__name__}")
    return model


def _owns_parameters(module: torch.nn.Module) -> bool:
    return any(p is not None for p in module._parameters.values())


def parameterised_layers(model: torch.nn.Module) -> list[str]:
    """Qualified names of the modules that own parameters directly, in registration order (a module reachable
    under two names is listed once, under the first)."""
    _check_model(model)
    return [name for name, m in model.named_modules() if _owns_parameters(m)]


def _canonical_names(model: torch.nn.Module) -> dict[int, str]:
    return {id(m): name for name, m in model.named_modules()}


def _subtree(all_layers: list[str], base: str) -> list[str]:
    """The parameterised layers at or below the module named ``base`` ("" = the root)."""
    return [n for n in all_layers if not base or n == base or n.startswith(base + ".")]


def _block_steps(model: torch.nn.Module) -> list[tuple[str, list[str]]]:
    layers = parameterised_layers(model)
    best: tuple[str, list[str]] | None = None
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.ModuleList, torch.nn.Sequential)):
            kids = [f"{name}.{k}" if name else k for k, c in m.named_children()
                    if any(True for _ in c.parameters())]
            if len(kids) >= 2 and (best is None or len(kids) > len(best[1])):
                best = (name, kids)
    blocks = {k: _subtree(layers, k) for k in (best[1] if best is not None else [])}
    steps: list[tuple[str, list[str]]] = []
    for layer in layers:
        block = next((k for k, members in blocks.items() if layer in members), None)
        if block is None:
            steps.append((layer, [layer]))
        elif all(s[0] != block for s in steps):
            steps.append((block, blocks[block]))
    return steps


def block_layers(model: torch.nn.Module) -> list[str]:
    """Steps that group layers into blocks, as the paper groups Inception v3's: every child (holding parameters) of
    the model's longest ``nn.ModuleList`` / ``nn.Sequential`` of such children is one step (all the parameterised
    layers inside it), and every parameterised layer outside it is a step of its own. Registration order
    (:func:`model_randomisation` orders them top-down). A model without such a container gets its layers."""
    _check_model(model)
    return [name for name, _ in _block_steps(model)]


def _layer_seed(seed: int, name: str) -> int:
    return item_seed(seed, f"sanity/model_randomisation/{name}", 0)


def _cpu_copy(layer: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``layer`` (and its children) whose parameters and buffers are float32 CPU copies: the memo hands
    ``deepcopy`` the CPU tensors, so nothing is duplicated on the model's device."""
    memo: dict[int, Any] = {}
    for m in layer.modules():
        for store in (m._parameters, m._buffers):
            for t in store.values():
                if t is not None and id(t) not in memo:
                    c = t.detach().to("cpu", torch.float32 if t.is_floating_point() else t.dtype, copy=True)
                    memo[id(t)] = torch.nn.Parameter(c, requires_grad=False) if isinstance(
                        t, torch.nn.Parameter) else c
    return copy.deepcopy(layer, memo)


def reinitialise(layer: torch.nn.Module, seed: int) -> str:
    """Re-initialise the parameters ``layer`` owns directly (not its children's), in place, reproducibly.

    With ``reset_parameters()``: the layer's own init, run on a float32 CPU copy under ``torch.random.fork_rng``
    with the CPU generator seeded from ``seed`` (own parameters and buffers copied back). Without it: every own
    floating parameter redrawn from a normal distribution with the tensor's trained mean and standard deviation.

    Returns:
        which init was used: :data:`INIT_RESET` or :data:`INIT_NORMAL`.
    """
    seed = check_seed(seed)
    own_params = {k: p for k, p in layer._parameters.items() if p is not None}
    reset = getattr(layer, "reset_parameters", None)
    with torch.no_grad():
        if callable(reset):
            clone = _cpu_copy(layer)                          # draws on the CPU: the same weights on any device
            with torch.random.fork_rng(devices=[]):           # the caller's CPU random state is restored after
                torch.default_generator.manual_seed(seed)
                clone.reset_parameters()
            for k, p in own_params.items():
                p.copy_(clone._parameters[k])
            for k, buf in layer._buffers.items():
                if buf is not None and clone._buffers.get(k) is not None:
                    buf.copy_(clone._buffers[k])
            return INIT_RESET
        g = torch.Generator().manual_seed(seed)
        for p in own_params.values():
            if not p.is_floating_point():
                continue
            trained = p.detach().to("cpu", torch.float64)
            mean = float(trained.mean())
            std = float(trained.std()) if trained.numel() > 1 else abs(float(trained.reshape(-1)[0]))
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * std + mean)
    return INIT_NORMAL


def _top_down(model: torch.nn.Module, layers: list[str], x: torch.Tensor | None) -> list[str]:
    """``layers`` ordered top-down: latest forward start on one input first; never-run layers last."""
    fallback = list(reversed(layers))
    if x is None:
        return fallback
    started: dict[str, int] = {}
    counter = itertools.count()
    hooks = []
    try:
        for name in layers:
            module = model.get_submodule(name)
            hooks.append(module.register_forward_pre_hook(
                lambda _m, _inp, name=name: started.__setitem__(name, next(counter))))
        evaluator = BatchedEvaluator(model, batch_size=1)
        with evaluation_mode(model), torch.no_grad():
            evaluator.call_model(evaluator.work_input(x[:1]))
    except Exception:   # noqa: BLE001 - no hooks on TorchScript; a model that fails on x fails in explain() with
        return fallback   # the method's own message
    finally:
        for h in hooks:
            h.remove()
    ran = sorted(started, key=lambda n: -started[n])
    return ran + [n for n in fallback if n not in started]


def _resolve_steps(model: torch.nn.Module, layers: Any, x: torch.Tensor | None
                   ) -> list[tuple[str, list[str]]]:
    """``[(step name, [parameterised layers it re-initialises])]`` in randomisation order."""
    all_layers = parameterised_layers(model)
    if not all_layers:
        raise ValueError(f"model ({type(model).__name__}) has no layer with parameters to randomise")
    if layers is None or (isinstance(layers, str) and layers in ("all", "blocks")):
        steps = [(n, [n]) for n in all_layers] if layers in (None, "all") else _block_steps(model)
        rank = {n: i for i, n in enumerate(_top_down(model, all_layers, x))}
        steps = [(name, sorted(members, key=rank.__getitem__)) for name, members in steps]
        return sorted(steps, key=lambda s: min(rank[m] for m in s[1]))
    if isinstance(layers, str) or not isinstance(layers, Sequence):
        raise TypeError(f"layers must be None, 'all', 'blocks' or a sequence of module names, got {layers!r}")
    if len(layers) == 0:
        raise ValueError("layers must name at least one module (None for every parameterised layer)")
    canonical = _canonical_names(model)
    steps, seen = [], {}
    for entry in layers:
        # a step is one module name, or a group of names re-initialised together (e.g. several blocks at once)
        names = [entry] if isinstance(entry, str) else entry
        if not isinstance(names, Sequence) or len(names) == 0 or not all(isinstance(n, str) for n in names):
            raise TypeError(f"layers must hold module names (strings) or non-empty groups of them, got {entry!r}")
        members: list[str] = []
        for name in names:
            try:
                module = model.get_submodule(name)
            except AttributeError:
                shown = ", ".join(all_layers[:12]) + (", ..." if len(all_layers) > 12 else "")
                raise ValueError(f"layers: the model has no module named {name!r}; its parameterised layers: "
                                 f"{shown}") from None
            inside = _subtree(all_layers, canonical.get(id(module), name))
            if not inside:
                raise ValueError(f"layers: module {name!r} ({type(module).__name__}) holds no parameters to "
                                 "randomise")
            for m in inside:
                if m in seen:
                    raise ValueError(f"layers: {name!r} and {seen[m]!r} both contain layer {m!r}; name each layer "
                                     "once")
                seen[m] = name
            members += inside
        steps.append((names[0] if len(names) == 1 else "+".join(names), members))
    return steps


def randomised_models(model: torch.nn.Module, layers: Any = None, *, mode: str = "cascading", seed: int = 0,
                      x: torch.Tensor | None = None) -> Iterator[tuple[str, torch.nn.Module]]:
    """Yield ``(step name, randomised copy)`` for each step of the randomisation; ``model`` is never modified.

    One deep copy is modified in place from step to step (cascading: layers accumulate; independent: the previous
    step's layer gets its trained weights back), so a yielded model is only valid until the next step: deep-copy it
    to keep it. ``x`` (an example input) orders the default layers top-down (see the module docstring).
    """
    _check_model(model)
    mode = check_choice(mode, "mode", MODES)
    seed = check_seed(seed)
    work = _copy(model)
    steps = _resolve_steps(work, layers, x)
    for name, _members, _init in _apply_steps(work, steps, mode, seed):
        yield name, work


def _copy(model: torch.nn.Module) -> torch.nn.Module:
    try:
        return copy.deepcopy(model)
    except Exception as err:   # whatever deepcopy raised, the message says what the check needed
        raise TypeError(f"model could not be copied (copy.deepcopy: {type(err).__name__}: {err}); the sanity check "
                        "randomises a copy and never the model itself") from err


def _apply_steps(work: torch.nn.Module, steps: list[tuple[str, list[str]]], mode: str, seed: int
                 ) -> Iterator[tuple[str, list[str], dict[str, str]]]:
    saved: dict[str, dict[str, torch.Tensor]] = {}
    previous: list[str] = []
    for name, members in steps:
        if mode == "independent":
            with torch.no_grad():
                for layer in previous:   # the last step's layers get their trained values back
                    module = work.get_submodule(layer)
                    for key, t in saved.pop(layer).items():
                        (module._parameters.get(key) if key in module._parameters else module._buffers[key]).copy_(t)
            for layer in members:
                module = work.get_submodule(layer)
                saved[layer] = {k: t.detach().clone() for k, t in
                                itertools.chain(module._parameters.items(), module._buffers.items()) if t is not None}
            previous = members
        init = {layer: reinitialise(work.get_submodule(layer), _layer_seed(seed, layer)) for layer in members}
        yield name, members, init


# ---------------------------------------------------------------------------------------------------------------
# the checks


def _method_class(method: Any) -> type[Method]:
    if isinstance(method, str):
        try:
            return get_method(method)
        except ValueError as err:
            raise ValueError(f"method: {err}") from None
    if isinstance(method, type) and issubclass(method, Method):
        return method
    raise TypeError(f"method must be a registered method name or a pathxai Method subclass, got {method!r}")


def _maps(e: Any) -> torch.Tensor:
    """The per-pixel maps of an explanation (its attribution for non-image inputs), float32 on the CPU."""
    m = e.saliency() if len(e.input_shape) == 4 else e.attribution
    return m.detach().to("cpu", torch.float32)


def _keep(return_maps: Any) -> int | None:
    """How many items' maps to keep: None = all, 0 = none."""
    if isinstance(return_maps, bool):
        return None if return_maps else 0
    return check_positive_int(return_maps, "return_maps", minimum=0)


@dataclass
class ModelRandomisationResult:
    """Result of :func:`model_randomisation`.

    Attributes:
        similarity: (L, N) float64: similarity of item n's map on the trained model and after step l.
        layers: the L steps (qualified module names), in the order they were randomised.
        step_layers: for each step, the parameterised layers it re-initialised (a block lists several).
        original: (K, H, W) maps on the trained model (K items kept by ``return_maps``), or None.
        maps: (L, K, H, W) maps after each step, or None.
        target: (N,) classes explained on every model (None for a callable target or a representation method).
        meta: method, its parameters, mode, similarity, seed, the init used per layer, evaluations, seconds.
    """

    similarity: torch.Tensor
    layers: list[str]
    step_layers: list[list[str]]
    original: torch.Tensor | None
    maps: torch.Tensor | None
    target: torch.Tensor | None
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> list[dict[str, Any]]:
        """One row per step: ``step`` (1-based), ``layer``, ``mean``, ``ci_low``, ``ci_high`` (the ``level``
        percentile-bootstrap interval of the mean over items) and ``n`` (finite items)."""
        rows = []
        for k, layer in enumerate(self.layers):
            mean, lo, hi, n = bootstrap_ci(self.similarity[k], n_boot=n_boot, level=level, seed=seed)
            rows.append({"step": k + 1, "layer": layer, "mean": mean, "ci_low": lo, "ci_high": hi, "n": n})
        return rows


@dataclass
class RandomLogitResult:
    """Result of :func:`random_logit`.

    Attributes:
        similarity: (N,) float64: similarity of the map of ``target`` and the map of ``random_target``.
        target, random_target: (N,) int64 classes (``random_target[i] != target[i]`` for every item).
        original, maps: (K, H, W) maps of ``target`` and of ``random_target`` (K items kept), or None.
        meta: method, parameters, similarity, seed, evaluations, seconds.
    """

    similarity: torch.Tensor
    target: torch.Tensor
    random_target: torch.Tensor
    original: torch.Tensor | None
    maps: torch.Tensor | None
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
        """``mean``, ``ci_low``, ``ci_high`` (percentile bootstrap over items) and ``n`` (finite items)."""
        mean, lo, hi, n = bootstrap_ci(self.similarity, n_boot=n_boot, level=level, seed=seed)
        return {"mean": mean, "ci_low": lo, "ci_high": hi, "n": n}


def _check_x(x: Any, cls: type[Method]) -> torch.Tensor:
    return check_input(x, "x", ndim=cls.input_ndim, expected=cls.input_expected)


def model_randomisation(model: torch.nn.Module, x: torch.Tensor, target: TargetLike = None, *,
                        method: str | type[Method] = "ig", mode: str = "cascading",
                        similarity: str = "spearman_abs", layers: Sequence[str] | str | None = None, seed: int = 0,
                        method_params: Mapping[str, Any] | None = None, batch_size: int | str = AUTO,
                        return_maps: bool | int = False, progress: bool | None = None,
                        on_step: Callable[[int, str], None] | None = None) -> ModelRandomisationResult:
    """Model parameter randomisation test (Adebayo et al. 2018): explain ``x`` on the trained model and on copies
    whose layers are re-initialised step by step, and compare the maps.

    Args:
        model: the trained ``nn.Module`` (never modified: a deep copy is randomised).
        x: inputs (N, C, H, W) (or what the method takes).
        target: the class to explain (int, N ints, ``None`` = the trained model's prediction, or a callable); the
            same class is explained on every randomised model.
        method: a registered method name (or a :class:`~pathxai.core.Method` subclass); ``method_params`` go to its
            constructor, with ``batch_size``, ``seed`` and ``progress``.
        mode: ``"cascading"`` (top layers first, accumulating) or ``"independent"`` (one layer at a time).
        similarity: ``"spearman_abs"``, ``"spearman"``, ``"ssim"`` or ``"hog"`` (see :func:`similarity`).
        layers: ``None`` / ``"all"`` (every parameterised layer, top-down), ``"blocks"`` (see :func:`block_layers`)
            or module names, randomised in the order given (a container stands for every layer inside it); an
            entry that is a list of names is one step re-initialising all of them (its name joins theirs by "+").
        seed: seeds the re-initialisation (per layer) and the method.
        return_maps: keep the maps: ``True`` for every item, an int k for the first k items, ``False`` for none.
        on_step: called as ``on_step(step_index, step_name)`` after each step (progress reporting).
    Returns:
        :class:`ModelRandomisationResult` with ``similarity`` (L, N).
    """
    t0 = time.perf_counter()
    model = _check_model(model)
    cls = _method_class(method)
    mode = check_choice(mode, "mode", MODES)
    kind = check_choice(similarity, "similarity", SIMILARITIES)
    seed = check_seed(seed)
    keep = _keep(return_maps)
    params = dict(method_params or {})
    x = _check_x(x, cls)
    if kind in ("ssim", "hog") and x.ndim != 4:
        raise ValueError(f"similarity={kind!r} compares 2-D maps of image inputs (N, C, H, W); x has shape "
                         f"{tuple(x.shape)}")
    if not cls.needs_target and target is not None:
        raise ValueError(f"method {cls.name!r} explains a representation and takes no target; got target={target!r}")
    work = _copy(model)
    steps = _resolve_steps(work, layers, x)   # bad layer names fail before the first explanation

    def explain(net: torch.nn.Module, tgt: TargetLike) -> Any:
        return cls(net, batch_size=batch_size, seed=seed, progress=progress, **params).explain(x, tgt)

    e0 = explain(model, target)
    evaluations = int(e0.meta["model_evaluations"])
    classes = None
    if cls.needs_target and not callable(target):
        classes = torch.as_tensor(e0.meta["target"], dtype=torch.long)
        target = classes   # the trained model's class, also for the randomised models
    original = _maps(e0)
    sims, kept, inits = [], [], {}
    for k, (name, _members, init) in enumerate(_apply_steps(work, steps, mode, seed)):
        inits.update(init)
        e = explain(work, target)
        evaluations += int(e.meta["model_evaluations"])
        m = _maps(e)
        sims.append(_similarity_checked(original, m, kind))
        if keep != 0:
            kept.append(m[:keep])
        if on_step is not None:
            on_step(k, name)
    return ModelRandomisationResult(
        similarity=torch.stack(sims), layers=[s[0] for s in steps], step_layers=[s[1] for s in steps],
        original=original[:keep] if keep != 0 else None, maps=torch.stack(kept) if keep != 0 else None,
        target=classes,
        meta={"method": cls.name, "params": e0.meta["params"], "mode": mode, "similarity": kind, "seed": seed,
              "init": inits, "model_evaluations": evaluations, "seconds": time.perf_counter() - t0,
              "batch_size": batch_size, "n_items": int(x.shape[0])})


def _similarity_checked(original: torch.Tensor, m: torch.Tensor, kind: str) -> torch.Tensor:
    if original.shape != m.shape:   # a method whose map shape depends on the model: say so rather than fail deep
        raise ValueError(f"the map on the randomised model has shape {tuple(m.shape)}, the trained model's "
                         f"{tuple(original.shape)}")
    return similarity(original, m, kind)


def random_logit(model: torch.nn.Module, x: torch.Tensor, target: TargetLike = None, *,
                 method: str | type[Method] = "ig", similarity: str = "spearman_abs", seed: int = 0,
                 method_params: Mapping[str, Any] | None = None, batch_size: int | str = AUTO,
                 return_maps: bool | int = False, progress: bool | None = None) -> RandomLogitResult:
    """Random-logit test: the map of ``target`` against the map of a random other class, item by item.

    The other class of item i is drawn uniformly from the K - 1 classes that are not ``target[i]``, with a generator
    seeded by ``(seed, i)`` (the same items get the same classes whatever N or the batch size).

    Args:
        model: a classifier ``(N, ...) -> (N, K)``, K >= 2 (any callable; it is not modified).
        target: int, N ints or ``None`` (the model's prediction); callables are refused (there is no "other class").
        method, similarity, seed, method_params, batch_size, return_maps, progress: as in
            :func:`model_randomisation`.
    Returns:
        :class:`RandomLogitResult` with ``similarity`` (N,).
    """
    t0 = time.perf_counter()
    cls = _method_class(method)
    kind = check_choice(similarity, "similarity", SIMILARITIES)
    seed = check_seed(seed)
    keep = _keep(return_maps)
    params = dict(method_params or {})
    if not cls.needs_target:
        raise ValueError(f"method {cls.name!r} explains a representation (no class), so it has no other class to "
                         "compare with; random_logit needs a class method")
    if callable(target) and not isinstance(target, torch.Tensor):
        raise TypeError("target must be a class (int, N ints or None) for random_logit, got a callable")
    x = _check_x(x, cls)
    explainer = cls(model, batch_size=batch_size, seed=seed, progress=progress, **params)
    e0 = explainer.explain(x, target)
    classes = torch.as_tensor(e0.meta["target"], dtype=torch.long)
    k = explainer.num_classes(explainer.evaluator.work_input(x[:1]))
    if k is None or k < 2:
        raise ValueError(f"random_logit needs a classifier with at least 2 classes; the model has {k}")
    offsets = torch.stack([torch.randint(1, k, (1,), generator=item_generator(seed, "sanity/random_logit", i))[0]
                           for i in range(len(classes))])
    other = (classes + offsets) % k   # uniform over the k - 1 other classes
    e1 = explainer.explain(x, other)
    a, b = _maps(e0), _maps(e1)
    return RandomLogitResult(
        similarity=_similarity_checked(a, b, kind), target=classes, random_target=other,
        original=a[:keep] if keep != 0 else None, maps=b[:keep] if keep != 0 else None,
        meta={"method": cls.name, "params": e0.meta["params"], "similarity": kind, "seed": seed,
              "model_evaluations": int(e0.meta["model_evaluations"]) + int(e1.meta["model_evaluations"]),
              "seconds": time.perf_counter() - t0, "batch_size": batch_size, "n_items": int(x.shape[0]),
              "num_classes": k})


# ---------------------------------------------------------------------------------------------------------------
# tables and files for several methods on one model


def _common_layers(results: Mapping[str, ModelRandomisationResult]) -> list[str]:
    if not results:
        raise ValueError("results must hold at least one method's ModelRandomisationResult")
    layers = None
    for name, r in results.items():
        if not isinstance(r, ModelRandomisationResult):
            raise TypeError(f"results[{name!r}] must be a ModelRandomisationResult, got {type(r).__name__}")
        if layers is None:
            layers = r.layers
        elif r.layers != layers:
            raise ValueError(f"results[{name!r}] randomised other layers ({r.layers}) than the first method "
                             f"({layers}); a table compares methods step by step on the same layers")
    return list(layers or [])


def summarise(results: Mapping[str, ModelRandomisationResult], *, n_boot: int = 2000, level: float = 0.95,
              seed: int = 0) -> list[dict[str, Any]]:
    """Rows ``{method, step, layer, mean, ci_low, ci_high, n}`` for every method and step (see
    :meth:`ModelRandomisationResult.summary`)."""
    _common_layers(results)
    return [{"method": name, **row} for name, r in results.items()
            for row in r.summary(n_boot=n_boot, level=level, seed=seed)]


def format_table(results: Mapping[str, ModelRandomisationResult], *, n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0, rows: list[dict[str, Any]] | None = None) -> str:
    """Markdown table: one row per randomisation step (the layer randomised at that step), one column per method,
    cells ``mean [low, high]`` over items (NaN items left out; ``(n=k)`` says so when some were)."""
    layers = _common_layers(results)
    rows = rows if rows is not None else summarise(results, n_boot=n_boot, level=level, seed=seed)
    cell = {(r["method"], r["step"]): r for r in rows}
    n_items = {name: int(r.similarity.shape[1]) for name, r in results.items()}
    mode = next(iter(results.values())).meta.get("mode", "cascading")
    lines = ["| step | layer randomised" + (" (and every one above)" if mode == "cascading" else "") + " | "
             + " | ".join(results) + " |",
             "|---:|---|" + "---:|" * len(results)]
    for k, layer in enumerate(layers, start=1):
        cells = []
        for name in results:
            c = cell[(name, k)]
            text = "n/a" if not math.isfinite(c["mean"]) else (
                f"{c['mean']:.2f}" + (f" [{c['ci_low']:.2f}, {c['ci_high']:.2f}]" if math.isfinite(c["ci_low"])
                                      else ""))
            if c["n"] < n_items[name]:
                text += f" (n={c['n']})"
            cells.append(text)
        lines.append(f"| {k} | {layer} | " + " | ".join(cells) + " |")
    if any(c["n"] < n_items[c["method"]] for c in rows):
        lines.append("\n(n=k): only k items have a finite similarity; for the others one of the two maps was constant "
                     "(e.g. an all-zero Grad-CAM on a randomised model), where a correlation is undefined.")
    return "\n".join(lines)


def save_results(results: Mapping[str, ModelRandomisationResult], out: str | os.PathLike[str], *,
                 image: torch.Tensor | None = None, header: str = "", n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0, figure_title: str = "", figure_dpi: int = 100) -> list[Path]:
    """Write ``sanity.csv`` (per method and step: mean, CI, n), ``sanity_items.csv`` (every item's similarity),
    ``sanity.md`` (``header`` then :func:`format_table`) and, when ``image`` (C, H, W) is given and the results
    kept maps, ``sanity.png`` (:func:`pathxai.viz.save_randomisation_grid` for the first item, each map labelled
    with that item's similarity), atomically.

    Returns:
        the paths written.
    """
    import csv
    import io

    from .core.files import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = summarise(results, n_boot=n_boot, level=level, seed=seed)
    written = []

    def write_csv(path: Path, head: list[str], body: list[list[Any]]) -> None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(head)
        w.writerows(body)
        written.append(atomic_write_text(path, buf.getvalue()))

    write_csv(out / "sanity.csv", ["method", "step", "layer", "mean", "ci_low", "ci_high", "n"],
              [[r["method"], r["step"], r["layer"]] + [f"{r[k]:.6g}" for k in ("mean", "ci_low", "ci_high")]
               + [r["n"]] for r in rows])
    write_csv(out / "sanity_items.csv", ["method", "step", "layer", "item", "similarity"],
              [[name, k + 1, layer, i, f"{float(v):.6g}"] for name, r in results.items()
               for k, layer in enumerate(r.layers) for i, v in enumerate(r.similarity[k].tolist())])
    table = format_table(results, rows=rows)
    written.append(atomic_write_text(out / "sanity.md", (header.rstrip() + "\n\n" if header else "") + table + "\n"))
    kept = all(r.maps is not None and r.original is not None and r.maps.shape[1] >= 1 for r in results.values())
    if image is not None and kept:
        from .viz import save_randomisation_grid

        first = next(iter(results.values()))
        written.append(save_randomisation_grid(
            image, {n: r.original[0] for n, r in results.items()},   # type: ignore[index]
            {n: r.maps[:, 0] for n, r in results.items()}, first.layers, out / "sanity.png",   # type: ignore[index]
            title=figure_title, similarity={n: r.similarity[:, 0].tolist() for n, r in results.items()},
            dpi=figure_dpi))
    return written
