"""Grad-CAM (Selvaraju et al., 2017) on CNNs and vision transformers, chunked by the shared evaluator.

For a layer with activations A (channels c) and the target score y, Grad-CAM is ReLU(sum_c w_c A_c) with
w_c = the mean over positions of dy/dA_c. Positions are

- the (h, w) cells of a conv map (N, C, h, w): computed by Captum's ``LayerGradCam``;
- the patch tokens of a transformer layer (N, T, C), reshaped to their (h, w) grid after dropping the class,
  distillation and register tokens; or the cells of a channels-last map (N, h, w, C) such as timm Swin's.
  Captum would read (N, T, C) as (N, channels=T, C) and silently average over the wrong axis, so these layers
  have their own implementation (a forward hook on the layer, one gradient per chunk of the evaluator).

Default layer (recorded by its qualified module name in ``meta["params"]["layer"]``):

1. the model's ``gradcam_layer`` attribute (models of ``px.models`` name theirs);
2. a transformer (a module with an attention child and a norm child repeated as blocks): the last block's norm
   before attention (timm ViT/DeiT ``blocks.{L-1}.norm1``, transformers ViT/DeiT ``...layers.{L-1}.layernorm_before``,
   Swin: the last stage's last block). Not the last block's *output*: only the class token goes on to the head, so
   the patch tokens there get exactly zero gradient (and a map of zeros); before the last attention they still
   reach the class token through that attention;
3. a CNN: the last ``nn.Conv2d``, unless it is the model's only conv -- the input stem (a ViT's patch embedding
   is one), where Grad-CAM would explain the stem and still look plausible; then ``ValueError`` asks for ``layer=``.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from captum.attr import LayerGradCam
from torch import nn

from ..core import Method, Target, register_method
from ..core.evaluator import check_gradients_possible
from ..core.validation import GRADIENT_CAUSE, ModelNotSupportedError, check_bool, check_finite

MAX_PREFIX_TOKENS = 16  # class + distillation + register tokens ahead of the patch tokens (DINOv2-reg has 5)
Reshape = Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------------------------------------------
# finding the layer

def is_norm(module: nn.Module) -> bool:
    """A per-token normalisation (LayerNorm / RMSNorm and library subclasses); batch/group norms are not."""
    rms = getattr(nn, "RMSNorm", None)
    if isinstance(module, nn.LayerNorm) or (rms is not None and isinstance(module, rms)):
        return True
    name = type(module).__name__
    return "LayerNorm" in name or "RMSNorm" in name


def is_channels_last_norm(module: nn.Module, out: torch.Tensor) -> bool:
    """Whether a 4-d output of ``module`` is channels-last (N, h, w, C): a per-token norm over its last axis.
    timm's ``LayerNorm2d`` normalises the channels of (N, C, h, w) maps and is not one."""
    if not is_norm(module) or "2d" in type(module).__name__.lower():
        return False
    shape = getattr(module, "normalized_shape", None)
    if shape is None and isinstance(getattr(module, "weight", None), torch.Tensor):
        shape = module.weight.shape
    return not shape or tuple(shape)[-1] == out.shape[-1]


def is_attention(module: nn.Module) -> bool:
    """An attention module by its class name (timm ``Attention``/``WindowAttention``, transformers ``*Attention``,
    ``nn.MultiheadAttention``)."""
    return "Attention" in type(module).__name__


def transformer_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(qualified name, module)`` of every transformer block in module order: a module with a direct attention
    child and a direct norm child (timm ``Block``, ``SwinTransformerBlock``; transformers ``ViTLayer``, ``SwinLayer``).

    A post-norm block (``nn.TransformerEncoderLayer(norm_first=False)``) counts too; its first norm then comes after
    the attention."""
    blocks = []
    for name, module in model.named_modules():
        children = list(module.children())
        if any(is_attention(c) for c in children) and any(is_norm(c) for c in children):
            blocks.append((name, module))
    return blocks


def pre_attention_norm(block_name: str, block: nn.Module) -> tuple[str, nn.Module]:
    """The block's first registered norm child: its norm before attention in every pre-norm block we know
    (timm ``norm1``, transformers ``layernorm_before``, CLIP ``layer_norm1``)."""
    for child_name, child in block.named_children():
        if is_norm(child):
            return (f"{block_name}.{child_name}" if block_name else child_name), child
    raise ValueError(f"block {block_name!r} has no norm layer")  # pragma: no cover - blocks have one by definition


def qualified_name(model: Any, layer: nn.Module) -> str:
    """The dotted name of ``layer`` inside ``model`` (``ValueError`` if it is not a submodule)."""
    if not isinstance(model, nn.Module):
        return type(layer).__name__  # a plain function model: no module tree to name the layer in
    for name, module in model.named_modules():
        if module is layer:
            return name
    raise ValueError(f"layer {type(layer).__name__} is not a submodule of the model "
                     f"{getattr(model, 'model_name', type(model).__name__)}")


def default_gradcam_layer(model: nn.Module) -> tuple[str, nn.Module]:
    """``(qualified name, module)`` of the layer Grad-CAM uses when ``layer=None`` (see the module docstring)."""
    if not isinstance(model, nn.Module):
        raise TypeError("Grad-CAM needs an nn.Module model to find a layer; pass layer= explicitly")
    declared = getattr(model, "gradcam_layer", None)  # models of px.models name their layer
    if isinstance(declared, nn.Module):
        return qualified_name(model, declared), declared
    if isinstance(declared, str):
        return resolve_named_layer(model, declared)
    blocks = transformer_blocks(model)
    if blocks:
        return pre_attention_norm(*blocks[-1])
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ModelNotSupportedError("the model has no nn.Conv2d layer and no recognisable transformer blocks; pass "
                                     "layer= (a module or its dotted name) for Grad-CAM")
    if len(convs) == 1:
        raise ModelNotSupportedError(
            f"the model's only nn.Conv2d ({convs[0][0]!r}) is its input stem (e.g. a ViT patch embedding) and no "
            "transformer blocks were recognised: Grad-CAM there would explain the stem, not the decision; pass layer= "
            "(a module or its dotted name; reshape= for token layers)")
    return convs[-1]


def resolve_named_layer(model: Any, layer: nn.Module | str | None) -> tuple[str, nn.Module]:
    """``(qualified name, module)`` for ``layer``: a module of ``model``, its dotted name, or ``None`` (default)."""
    if layer is None:
        return default_gradcam_layer(model)
    if isinstance(layer, nn.Module):
        return qualified_name(model, layer), layer
    if isinstance(layer, str):
        if not isinstance(model, nn.Module):
            raise TypeError("layer given by name needs an nn.Module model; pass the module itself")
        try:
            return layer, model.get_submodule(layer)
        except AttributeError:
            names = [n for n, _ in model.named_modules() if n]
            raise ValueError(f"layer {layer!r} is not a submodule of the model; e.g. {names[-3:]}") from None
    raise TypeError(f"layer must be an nn.Module, a dotted module name or None, got {type(layer).__name__}")


def resolve_layer(model: Any, layer: nn.Module | str | None) -> nn.Module:
    """The module of :func:`resolve_named_layer`."""
    return resolve_named_layer(model, layer)[1]


# ---------------------------------------------------------------------------------------------------------------
# token grids

def token_grid(n_tokens: int, conv_grids: list[tuple[int, int]], block_dims: tuple[int, int] | None = None,
               where: str = "layer") -> tuple[int, tuple[int, int]]:
    """``(prefix tokens, (h, w))`` of a (N, T, C) token sequence: T = prefix + h * w, prefix tokens first.

    Args:
        n_tokens: T.
        conv_grids: spatial sizes of the conv outputs computed before the tokens, in execution order (the last is
            normally the patch embedding).
        block_dims: an (h, w) the enclosing block received as an argument (transformers Swin's
            ``input_dimensions``), if any.
    Raises:
        ValueError: no rule explains T (then the caller should pass ``reshape=``).
    """
    if block_dims is not None and block_dims[0] * block_dims[1] == n_tokens:
        return 0, block_dims
    if conv_grids:
        h, w = conv_grids[-1]
        prefix = n_tokens - h * w
        if 0 <= prefix <= MAX_PREFIX_TOKENS:
            return prefix, (h, w)
        # hierarchical models (Swin-like) merge 2 x 2 patches per stage and have no prefix tokens
        ratio = h * w / n_tokens
        k = round(math.log(ratio, 4)) if ratio > 1 else 0
        if k >= 1 and h % 2 ** k == 0 and w % 2 ** k == 0 and (h // 2 ** k) * (w // 2 ** k) == n_tokens:
            return 0, (h // 2 ** k, w // 2 ** k)
    raise ValueError(f"cannot tell the (h, w) patch grid of the {n_tokens} tokens of {where} "
                     f"(patch-embedding grids seen: {conv_grids}); pass reshape= (tokens (N, T, C) -> (N, C, h, w))")


class TokenGridProbe:
    """During a forward pass, records the output grid of every ``nn.Conv2d`` of ``model`` (the patch embedding's is
    the token grid) and any ``(h, w)`` tuple argument of ``block`` (transformers Swin's ``input_dimensions``)."""

    def __init__(self, model: Any, block: nn.Module | None = None) -> None:
        self.model = model
        self.block = block
        self.conv_grids: list[tuple[int, int]] = []
        self.block_dims: tuple[int, int] | None = None
        self.frozen = False
        self._handles: list[Any] = []

    def __enter__(self) -> "TokenGridProbe":
        if isinstance(self.model, nn.Module):
            for m in self.model.modules():
                if isinstance(m, nn.Conv2d):
                    self._handles.append(m.register_forward_hook(self._conv))
        if self.block is not None:
            self._handles.append(self.block.register_forward_pre_hook(self._dims, with_kwargs=True))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()

    def freeze(self) -> None:
        """Stop recording: call it when the tokens of interest are computed (later convs are not their grid)."""
        self.frozen = True

    def _conv(self, _m: nn.Module, _inp: Any, out: Any) -> None:
        if not self.frozen and isinstance(out, torch.Tensor) and out.ndim == 4:
            self.conv_grids.append((int(out.shape[2]), int(out.shape[3])))

    def _dims(self, _m: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.frozen:
            return
        for value in (*args, *kwargs.values()):
            if (isinstance(value, (tuple, list)) and len(value) == 2
                    and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
                self.block_dims = (int(value[0]), int(value[1]))
                return

    def reset(self) -> None:
        self.conv_grids = []
        self.block_dims = None
        self.frozen = False


def _parent(model: Any, name: str) -> nn.Module | None:
    if not isinstance(model, nn.Module) or "." not in name:
        return None
    try:
        return model.get_submodule(name.rsplit(".", 1)[0])
    except AttributeError:
        return None


# ---------------------------------------------------------------------------------------------------------------
# the method

@register_method
class GradCAM(Method):
    """Grad-CAM: ReLU of the gradient-weighted sum of a layer's activation maps (conv maps or ViT patch tokens).

    Args:
        layer: a module of the model or its dotted name; default: see the module docstring (a CNN's last conv, a
            transformer's last pre-attention norm).
        relu: apply the ReLU of the paper.
        reshape: for token layers the library does not recognise: ``tokens (N, T, C) -> (N, C, h, w)``; it must only
            select and rearrange tokens (it is applied to the activations and to their gradients alike).
    Attribution: (N, 1, h, w) at the layer's resolution; ``saliency()`` upsamples it bilinearly to (H, W).
    """

    name = "gradcam"
    description = "Grad-CAM: gradient-weighted class activation map of the last conv layer or ViT block."

    def __init__(self, model: Any, *, layer: nn.Module | str | None = None, relu: bool = True,
                 reshape: Reshape | None = None, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if reshape is not None and not callable(reshape):
            raise TypeError(f"reshape must be a callable tokens (N, T, C) -> (N, C, h, w) or None, "
                            f"got {type(reshape).__name__}")
        self.relu = check_bool(relu, "relu")
        self.layer_name, self.layer = resolve_named_layer(model, layer)
        self.reshape = reshape
        self._layouts: dict[tuple[int, ...], str] = {}

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"layer": self.layer_name, "relu": self.relu}
        if self.reshape is not None:
            params["reshape"] = getattr(self.reshape, "__qualname__", type(self.reshape).__name__)
        return params

    # -------------------------------------------------------------- layout of the layer output
    def layout(self, x: torch.Tensor) -> str:
        """``"nchw"`` (conv maps: Captum), ``"nhwc"`` (channels-last maps), ``"tokens"`` (N, T, C) or ``"reshape"``
        (a user ``reshape``) for inputs shaped like ``x``; one single-sample forward pass per input shape."""
        key = tuple(x.shape[1:])
        if key not in self._layouts:
            seen: dict[str, Any] = {}

            def hook(_m: nn.Module, _i: Any, out: Any) -> None:
                seen.setdefault("out", out[0] if isinstance(out, (tuple, list)) and out else out)

            handle = self.layer.register_forward_hook(hook)
            try:
                with torch.inference_mode():
                    self.evaluator.call_model(x[:1])
            finally:
                handle.remove()
            self.evaluator.n_probe += 1
            out = seen.get("out")
            if not isinstance(out, torch.Tensor):
                raise ValueError(f"layer {self.layer_name!r} did not produce a tensor in the forward pass "
                                 f"(got {type(out).__name__}); pass another layer=")
            if self.reshape is not None:
                kind = "reshape"
            elif out.ndim == 3:
                kind = "tokens"
            elif out.ndim == 4 and is_channels_last_norm(self.layer, out):
                kind = "nhwc"  # a per-token norm over the last axis: channels last (timm Swin stages)
            elif out.ndim == 4:
                kind = "nchw"
            else:
                raise ValueError(f"layer {self.layer_name!r} outputs shape {tuple(out.shape)}: Grad-CAM needs "
                                 "(N, C, h, w) maps or (N, T, C) tokens; pass reshape= or another layer=")
            self._layouts[key] = kind
        return self._layouts[key]

    def _forward(self, first_item: int, fn: Any = None) -> Any:
        """The forward Captum calls: the evaluator's checked model call, then the callable target ``fn`` if any."""
        return self.evaluator.checked_forward(self.name, first_item, fn, depends_on="the layer's activations")

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        check_gradients_possible(self.name)
        kind = self.layout(x)
        parts: list[torch.Tensor] = []
        grids: set[tuple[int, int]] = set()
        prefixes: set[int] = set()

        def cam_of(start: int, stop: int) -> tuple[torch.Tensor, int]:
            attr, prefix = self._chunk_cam(x[start:stop], target, kind, start, stop)
            check_finite(attr, self.map_description, cause=GRADIENT_CAUSE, first_item=start,
                         context=f" (in the {self.name} evaluations)")
            return attr.detach(), prefix

        # map_chunks retries a chunk that runs out of memory in halves (Captum runs the model itself)
        for start, stop, (attr, prefix) in self.evaluator.map_chunks(x.shape[0], cam_of, grad=True,
                                                                     sample_shape=x.shape[1:], desc=self.name):
            if kind != "nchw":
                prefixes.add(prefix)
            grids.add((int(attr.shape[-2]), int(attr.shape[-1])))
            self.evaluator.count(stop - start, grad=True)
            parts.append(attr)
        extras: dict[str, Any] = {"layout": kind}
        if kind == "tokens":
            extras["prefix_tokens"] = prefixes.pop() if len(prefixes) == 1 else sorted(prefixes)
        return torch.cat(parts), extras

    # how messages name the method and the map a chunk's finite check is about
    display_name = "Grad-CAM"
    map_description = "Grad-CAM map (gradient-weighted activations)"

    def _chunk_cam(self, chunk: torch.Tensor, target: Target, kind: str, start: int,
                   stop: int) -> tuple[torch.Tensor, int]:
        """The map of one chunk ``x[start:stop]``: ((n, 1, h, w), prefix tokens dropped). Subclasses (Grad-CAM++)
        override it to weight the same activations and gradients differently."""
        if kind == "nchw":
            return self._captum(chunk, target, start, stop), 0
        return self._token_cam(chunk, target.subset(slice(start, stop)), kind, start)

    def _captum(self, chunk: torch.Tensor, target: Target, start: int, stop: int) -> torch.Tensor:
        if target.fn is not None:  # Captum takes class targets only: fold the callable into the forward
            cam = LayerGradCam(self._forward(start, target.fn), self.layer)
            return cam.attribute(chunk, target=None, relu_attributions=self.relu)
        cam = LayerGradCam(self._forward(start), self.layer)
        return cam.attribute(chunk, target=target.classes[start:stop].tolist(), relu_attributions=self.relu)

    def _token_cam(self, chunk: torch.Tensor, target: Target, kind: str, start: int = 0) -> tuple[torch.Tensor, int]:
        """Grad-CAM of one chunk at a token / channels-last layer: ((n, 1, h, w), prefix tokens dropped)."""
        acts, grad, prefix = self.layer_maps(chunk, target, kind, start)
        weights = grad.mean(dim=(2, 3), keepdim=True)   # w_c: gradient averaged over the grid cells / patch tokens
        cam = (weights * acts).sum(dim=1, keepdim=True)
        return (torch.relu(cam) if self.relu else cam), prefix

    def layer_maps(self, chunk: torch.Tensor, target: Target | None, kind: str, start: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """The layer's activations for one chunk (n, ...) as maps (n, C, h, w), and the gradient of the target score
        w.r.t. them (same shape; ``None`` when ``target`` is ``None``: a forward pass without gradients).

        Token layers are reshaped to their patch grid (prefix tokens dropped), channels-last maps permuted, a user
        ``reshape`` applied; ``kind`` is :meth:`layout`'s. Returns ``(acts, grads, prefix tokens dropped)``;
        evaluations are not counted here.
        """
        captured: list[torch.Tensor] = []
        probe = TokenGridProbe(self.model, _parent(self.model, self.layer_name))
        with_grad = target is not None

        def hook(_m: nn.Module, _i: Any, out: Any) -> Any:
            if captured:
                raise ValueError(f"layer {self.layer_name!r} runs more than once per forward pass; "
                                 f"{self.display_name} needs a layer that runs once (pass another layer=)")
            probe.freeze()
            first = out[0] if isinstance(out, (tuple, list)) else out
            # a leaf from here on: we need d score / d activation only, not the backward pass below the layer
            leaf = first.detach().requires_grad_(with_grad)
            captured.append(leaf)
            return (leaf, *out[1:]) if isinstance(out, tuple) else leaf

        n = chunk.shape[0]
        grad = None
        handle = self.layer.register_forward_hook(hook)
        try:
            with probe, torch.set_grad_enabled(with_grad):
                out = self._forward(start)(chunk)
                if not captured:
                    raise ValueError(f"layer {self.layer_name!r} did not run in the forward pass")
                if with_grad:
                    scores = target.score(out)  # type: ignore[union-attr]
                    (grad,) = torch.autograd.grad(scores.sum(), captured[0], allow_unused=True)
                    if grad is None:
                        raise ValueError(f"the target score does not depend on layer {self.layer_name!r}; "
                                         "pass another layer=")
        finally:
            handle.remove()
        acts = captured[0].detach()
        prefix = 0
        if kind == "reshape":
            acts = self._user_reshape(acts, n)
            grad = None if grad is None else self._user_reshape(grad, n)
        elif kind == "nhwc":
            acts = acts.permute(0, 3, 1, 2)
            grad = None if grad is None else grad.permute(0, 3, 1, 2)
        elif kind == "tokens":
            prefix, (h, w) = token_grid(acts.shape[1], probe.conv_grids, probe.block_dims,
                                        where=f"layer {self.layer_name!r}")
            acts = acts[:, prefix:].transpose(1, 2).reshape(n, acts.shape[2], h, w)
            grad = None if grad is None else grad[:, prefix:].transpose(1, 2).reshape(n, grad.shape[2], h, w)
        return acts, grad, prefix

    def _user_reshape(self, t: torch.Tensor, n: int) -> torch.Tensor:
        out = self.reshape(t)  # type: ignore[misc]
        if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != n:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"reshape must map the layer output of shape {tuple(t.shape)} to (N, C, h, w) with "
                             f"N = {n}, got {got}")
        return out
