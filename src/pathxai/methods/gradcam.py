"""Grad-CAM (Selvaraju et al., 2017) through Captum's ``LayerGradCam``, chunked by the shared evaluator."""
from __future__ import annotations

from typing import Any

import torch
from captum.attr import LayerGradCam

from ..core import Method, Target, register_method
from ..core.evaluator import GradientUnavailableError, PERTURBATION_HINT, check_gradients_possible
from ..core.validation import (GRADIENT_CAUSE, MODEL_OUTPUT_CAUSE, check_bool, check_finite, check_model_output)


def last_conv_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The last ``nn.Conv2d`` in module order: Grad-CAM's usual layer (EfficientNet's ``_conv_head``)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError("Grad-CAM needs an nn.Module model to find its last conv layer; pass layer= explicitly")
    layer = getattr(model, "gradcam_layer", None)  # models of px.models name their layer
    if isinstance(layer, torch.nn.Module):
        return layer
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        raise ValueError("the model has no nn.Conv2d layer; pass layer= (a module or its dotted name) for Grad-CAM")
    return convs[-1]


def resolve_layer(model: Any, layer: torch.nn.Module | str | None) -> torch.nn.Module:
    if layer is None:
        return last_conv_layer(model)
    if isinstance(layer, torch.nn.Module):
        return layer
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError:
            names = [n for n, _ in model.named_modules() if n]
            raise ValueError(f"layer {layer!r} is not a submodule of the model; e.g. {names[-3:]}") from None
    raise TypeError(f"layer must be an nn.Module, a dotted module name or None, got {type(layer).__name__}")


@register_method
class GradCAM(Method):
    """Grad-CAM: ReLU of the gradient-weighted sum of a conv layer's activation maps.

    Args:
        layer: the conv layer (module or dotted name); default: the model's last ``nn.Conv2d``.
        relu: apply the ReLU of the paper.
    Attribution: (N, 1, h, w) at the layer's resolution; ``saliency()`` upsamples it bilinearly to (H, W).
    """

    name = "gradcam"
    description = "Grad-CAM: gradient-weighted class activation map of the last conv layer."

    def __init__(self, model: Any, *, layer: torch.nn.Module | str | None = None, relu: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.layer = resolve_layer(model, layer)
        self.relu = check_bool(relu, "relu")

    def params(self) -> dict[str, Any]:
        return {"layer": type(self.layer).__name__, "relu": self.relu}

    def _forward(self, first_item: int, fn: Any = None) -> Any:
        """The forward Captum calls: the model, checked like the shared evaluator checks it (one tensor per input,
        finite, differentiable), optionally followed by the callable target ``fn``."""
        def forward(inp: torch.Tensor) -> torch.Tensor:
            out = check_model_output(self.model(inp), inp.shape[0])
            check_finite(out, "model output", cause=MODEL_OUTPUT_CAUSE, first_item=first_item,
                         context=" (in the gradcam evaluations)")
            if torch.is_grad_enabled() and not out.requires_grad:
                raise GradientUnavailableError(
                    "cannot compute gradients (in the gradcam evaluations): the model output does not require grad: "
                    "the model detaches it, converts through NumPy, or runs under torch.no_grad()/inference_mode "
                    f"internally, so it does not depend differentiably on the layer's activations; {PERTURBATION_HINT}")
            return out if fn is None else fn(out)
        return forward

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        check_gradients_possible("gradcam")
        parts: list[torch.Tensor] = []
        for start, stop in self.evaluator.chunks(x.shape[0], grad=True, sample_shape=x.shape[1:], desc=self.name):
            chunk = x[start:stop]
            if target.fn is not None:  # Captum takes class targets only: fold the callable into the forward
                cam = LayerGradCam(self._forward(start, target.fn), self.layer)
                attr = cam.attribute(chunk, target=None, relu_attributions=self.relu)
            else:
                cam = LayerGradCam(self._forward(start), self.layer)
                attr = cam.attribute(chunk, target=target.classes[start:stop].tolist(), relu_attributions=self.relu)
            check_finite(attr, "Grad-CAM map (gradient-weighted activations)", cause=GRADIENT_CAUSE, first_item=start,
                         context=" (in the gradcam evaluations)")
            self.evaluator.count(stop - start, grad=True)
            parts.append(attr.detach())
        return torch.cat(parts), {}
