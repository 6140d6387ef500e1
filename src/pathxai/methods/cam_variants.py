"""Grad-CAM++ (Chattopadhay et al., WACV 2018) and Score-CAM (Wang et al., CVPR-W 2020) on Grad-CAM's layer machinery.

Both use :class:`pathxai.methods.gradcam.GradCAM`'s layers: the same default (a model's ``gradcam_layer``, a
transformer's last pre-attention norm with its patch tokens on their grid, a CNN's last conv), ``layer=``,
``reshape=`` and ``meta["params"]["layer"]`` -- with one difference: when that default is a conv followed in its
``nn.Sequential`` by an ``nn.ReLU``, the ReLU's output is used (:func:`rectified_default_layer`), because both papers
weight rectified maps and Grad-CAM++'s weights have a pole on maps that can be negative. Captum has neither method,
so they are written here.

**Grad-CAM++.** For the layer's maps A_k (positions ij) and the target score S, the paper explains Y = exp(S): with
S piecewise linear in A (ReLU networks after the layer), dY/dA = exp(S) g, d2Y/dA2 = exp(S) g^2 and
d3Y/dA3 = exp(S) g^3 with g = dS/dA (Eq. 18), so its closed-form pixel weights (Eq. 19) need one gradient:

    alpha_kij = g^2 / (2 g^2 + (sum_ab A_kab) g^3),   w_k = sum_ij alpha_kij relu(g_kij),   map = relu(sum_k w_k A_k).

alpha is 0 where the denominator is 0. The paper's w_k carry the factor exp(S), common to all channels of a sample:
it is dropped here (it overflows float32 for scores above ~88 and does not change the map's shape), so the maps are
the paper's divided by exp(S). On layers where S is not piecewise linear in A (a transformer's tokens before
attention), the identity is an approximation, as it is in the paper's own use.

**Score-CAM.** Each of the layer's C maps (per sample) is upsampled bilinearly to the input size and min-max
normalised to [0, 1] (H_k); the masked input X_b + (x - X_b) * H_k goes through the model (``baseline`` X_b, default
zeros: x * H_k as in the paper). The weight of map k is the channel-wise increase of confidence (the paper's
Definition 2) with f the softmax probability of the target class: alpha_k = p(X_b + (x - X_b) * H_k) - p(X_b); the
map is relu(sum_k alpha_k A_k) at the layer's resolution. Maps whose range is below 1e-5 of their magnitude (e.g.
channels that a ReLU switched off everywhere) get weight 0 without a model call: normalising them would magnify
float rounding (the authors' code skips exactly-constant maps). Common re-implementations weight by p(x * H_k)
alone; subtracting p(X_b), as the definition does, changes the map by -p(X_b) sum_k A_k before the ReLU. The N x C
masked passes go through the shared evaluator (:func:`pathxai.core.item_outputs`: chunked, counted, out-of-memory
back-off), item (sample, map) by item, so the result does not depend on ``batch_size`` beyond float rounding.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core import Target, item_outputs, register_method
from ..core.baselines import BaselineLike, check_baseline, describe_baseline, make_baseline
from ..core.limits import Cost
from ..core.validation import check_choice, check_positive_float
from .gradcam import GradCAM, Reshape


def rectified_default_layer(model: Any, name: str, layer: nn.Module) -> tuple[str, nn.Module]:
    """The default layer of Grad-CAM++ / Score-CAM: Grad-CAM's, except that a conv whose next sibling in an
    ``nn.Sequential`` is an ``nn.ReLU`` (registered once) gives way to that ReLU -- the rectified maps both papers
    weight. On maps that can be negative Grad-CAM++'s alpha = 1 / (2 + g sum(A)) has a pole (sum(A) < 0 < g), where
    float rounding of the activations is magnified without bound."""
    if not isinstance(model, nn.Module) or not isinstance(layer, nn.Conv2d):
        return name, layer
    parent_name, _, child = name.rpartition(".")
    try:
        parent = model.get_submodule(parent_name) if parent_name else model
    except AttributeError:
        return name, layer
    if not isinstance(parent, nn.Sequential):
        return name, layer
    names = [n for n, _ in parent.named_children()]
    if child not in names or names.index(child) + 1 >= len(names):
        return name, layer
    nxt_name = names[names.index(child) + 1]
    nxt = getattr(parent, nxt_name)
    uses = sum(1 for _, m in model.named_modules(remove_duplicate=False) if m is nxt)
    if type(nxt) is nn.ReLU and uses == 1:
        return (f"{parent_name}.{nxt_name}" if parent_name else nxt_name), nxt
    return name, layer


# a map is constant (weight 0, not evaluated) when its range is below this fraction of its magnitude
CONSTANT_MAP_RTOL = 1e-5
SCORECAM_SCORES = ("softmax", "output")


def gradcam_pp_weights(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ channel weights (n, C, 1, 1) from maps ``acts`` and gradients ``grads`` (n, C, h, w) of the score
    S, with the paper's exp(S) trick (module docstring) and its common factor exp(S) left out."""
    g2 = grads * grads
    g3 = g2 * grads
    denom = 2.0 * g2 + acts.sum(dim=(2, 3), keepdim=True) * g3
    alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)),
                        torch.zeros_like(denom))
    return (alpha * torch.relu(grads)).sum(dim=(2, 3), keepdim=True)


@register_method
class GradCAMPlusPlus(GradCAM):
    """Grad-CAM++: Grad-CAM with the paper's closed-form pixel weights alpha (see the module docstring).

    Args:
        layer, relu, reshape: as :class:`~pathxai.methods.gradcam.GradCAM`.
    Attribution: (N, 1, h, w) at the layer's resolution; ``saliency()`` upsamples it bilinearly to (H, W).
    """

    name = "gradcam++"
    description = "Grad-CAM++: activation maps weighted by positive gradients with closed-form pixel weights."
    display_name = "Grad-CAM++"
    map_description = "Grad-CAM++ map (alpha-weighted positive gradients)"

    def __init__(self, model: Any, *, layer: nn.Module | str | None = None, relu: bool = True,
                 reshape: Reshape | None = None, **kwargs: Any) -> None:
        super().__init__(model, layer=layer, relu=relu, reshape=reshape, **kwargs)
        if layer is None:
            self.layer_name, self.layer = rectified_default_layer(model, self.layer_name, self.layer)

    def _chunk_cam(self, chunk: torch.Tensor, target: Target, kind: str, start: int,
                   stop: int) -> tuple[torch.Tensor, int]:
        acts, grads, prefix = self.layer_maps(chunk, target.subset(slice(start, stop)), kind, start)
        assert grads is not None
        cam = (gradcam_pp_weights(acts, grads) * acts).sum(dim=1, keepdim=True)
        return (torch.relu(cam) if self.relu else cam), prefix


def layer_channels(layer: nn.Module) -> int | None:
    """The channels a layer outputs when its type tells (conv, linear, norms), else ``None``."""
    for attr in ("out_channels", "out_features", "num_features"):
        value = getattr(layer, attr, None)
        if isinstance(value, int):
            return value
    shape = getattr(layer, "normalized_shape", None)
    if isinstance(shape, (tuple, list)) and shape and isinstance(shape[-1], int):
        return int(shape[-1])
    return None


def normalised_masks(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Score-CAM's masks: maps (n, h, w) upsampled bilinearly to ``size`` (H, W) and min-max normalised per map to
    [0, 1]. Returns (n, 1, H, W)."""
    up = F.interpolate(maps.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False)
    flat = up.flatten(1)
    low = flat.amin(1).view(-1, 1, 1, 1)
    span = (flat.amax(1).view(-1, 1, 1, 1) - low)
    return (up - low) / torch.where(span > 0, span, torch.ones_like(span))


def constant_maps(acts: torch.Tensor) -> torch.Tensor:
    """(N, C) bool: maps of ``acts`` (N, C, h, w) whose range is below :data:`CONSTANT_MAP_RTOL` of their
    magnitude (all-zero maps included)."""
    flat = acts.flatten(2)
    span = flat.amax(2) - flat.amin(2)
    return span <= CONSTANT_MAP_RTOL * flat.abs().amax(2)


@register_method
class ScoreCAM(GradCAM):
    """Score-CAM: activation maps weighted by the increase in the class probability they cause as input masks.

    Args:
        layer, relu, reshape: as :class:`~pathxai.methods.gradcam.GradCAM`.
        baseline: X_b, what a mask value 0 shows (:func:`pathxai.core.make_baseline`), default zeros (the paper's
            x * H_k).
        blur_sigma: blur of ``baseline="blur"``, pixels.
        score: ``"softmax"`` (the paper's class probability) or ``"output"`` (the raw output, e.g. the logit); a
            callable target's score is used as it is.
    Cost: N x (C + 2) forward passes for a layer of C channels (the activations, the baseline, one per map).
    Attribution: (N, 1, h, w) at the layer's resolution; ``saliency()`` upsamples it bilinearly to (H, W).
    ``extras["weights"]``: (N, C) alpha_k.
    """

    name = "scorecam"
    description = "Score-CAM: activation maps weighted by the class-probability increase of the input they mask."
    display_name = "Score-CAM"

    def __init__(self, model: Any, *, layer: nn.Module | str | None = None, relu: bool = True,
                 reshape: Reshape | None = None, baseline: BaselineLike = "zero", blur_sigma: float = 10.0,
                 score: str = "softmax", **kwargs: Any) -> None:
        super().__init__(model, layer=layer, relu=relu, reshape=reshape, **kwargs)
        if layer is None:
            self.layer_name, self.layer = rectified_default_layer(model, self.layer_name, self.layer)
        self.baseline = check_baseline(baseline)
        self.blur_sigma = check_positive_float(blur_sigma, "blur_sigma")
        self.score = check_choice(score, "score", SCORECAM_SCORES)

    def cost(self, input_shape: Sequence[int] | None) -> Cost:
        """N x (C + 2) forward passes when the layer's type tells C (a lower bound of 2N otherwise); memory: the
        (N, C) weights."""
        n = 1 if input_shape is None else int(input_shape[0])
        c = layer_channels(self.layer)
        per = 2 + (c or 0)
        return Cost(evaluations=n * per, bytes=8.0 * n * (c or 0),
                    detail=f"{n} input(s) x ({c if c is not None else '?'} maps + 2)")

    def params(self) -> dict[str, Any]:
        return {**super().params(), "baseline": describe_baseline(self.baseline), "score": self.score}

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        kind = self.layout(x)
        n = x.shape[0]
        sample_shape = x.shape[1:]
        kind_of_score = "output" if target.fn is not None else self.score

        # 1. the layer's maps, forward only (map_chunks: chunked, retried in halves on out-of-memory)
        parts: list[torch.Tensor] = []
        prefixes: set[int] = set()

        def maps_of(start: int, stop: int) -> tuple[torch.Tensor, int]:
            acts, _, prefix = self.layer_maps(x[start:stop], None, kind, start)
            return acts, prefix

        for start, stop, (acts, prefix) in self.evaluator.map_chunks(n, maps_of, grad=False,
                                                                     sample_shape=sample_shape, desc=self.name):
            self.evaluator.count(stop - start, grad=False)
            parts.append(acts)
            prefixes.add(prefix)
        acts = torch.cat(parts).to(x.dtype)          # (N, C, h, w), in the work dtype (a bf16 model's are widened)
        n_maps = acts.shape[1]

        # 2. the baseline's score p(X_b) per sample
        b = make_baseline(x, self.baseline, blur_sigma=self.blur_sigma, seed=self.seed)
        base = torch.empty(n, dtype=x.dtype, device=x.device)
        for idx, out in item_outputs(self.evaluator, n, lambda i: b[i], sample_shape=sample_shape,
                                     desc=f"{self.name} baseline"):
            base[idx] = target.score(out, idx, kind=kind_of_score).to(x.dtype)  # type: ignore[arg-type]

        # 3. one masked input per (sample, non-constant map), in item order
        pairs = (~constant_maps(acts)).nonzero()     # (M, 2): sample, map
        weights = torch.zeros(n, n_maps, dtype=x.dtype, device=x.device)
        spatial = x.shape[2:]
        diff = x - b

        def build(items: torch.Tensor) -> torch.Tensor:
            s, k = pairs[items, 0], pairs[items, 1]
            masks = normalised_masks(acts[s, k], spatial)            # (n, 1, H, W)
            return b[s] + diff[s] * masks

        for items, out in item_outputs(self.evaluator, int(pairs.shape[0]), build, sample_shape=sample_shape,
                                       desc=self.name):
            s, k = pairs[items, 0], pairs[items, 1]
            scores = target.score(out, s, kind=kind_of_score).to(x.dtype)
            weights[s, k] = scores - base[s]

        cam = (weights[:, :, None, None] * acts).sum(dim=1, keepdim=True)
        extras: dict[str, Any] = {"layout": kind, "weights": weights, "baseline_score": base,
                                  "evaluated_maps": int(pairs.shape[0])}
        if kind == "tokens":
            extras["prefix_tokens"] = prefixes.pop() if len(prefixes) == 1 else sorted(prefixes)
        return (torch.relu(cam) if self.relu else cam), extras
