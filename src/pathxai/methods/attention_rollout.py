"""Attention rollout (Abnar & Zuidema, 2020) and its gradient-weighted variant (Chefer, Gur & Wolf, 2021) for ViTs.

Both read the self-attention probabilities A (n, heads, T, T) of every layer, in execution order, and multiply them
up the network; the map is the class token's row over the patch tokens, reshaped to the patch grid.

- ``attention_rollout`` (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", Sec. 3): the residual
  connection is modelled as in the paper, Â = 0.5 · mean_heads(A) + 0.5 · I (rows re-normalised; they already sum
  to 1), and R = Â_L ··· Â_1; R is row-stochastic. It does not depend on the explained class.
- ``grad_rollout`` (Chefer et al., "Generic Attention-model Explainability for Interpreting Bi-Modal and
  Encoder-Decoder Transformers", Eq. 5-6 for self-attention): Ā = mean_heads(ReLU(∇A ⊙ A)) with ∇A = d y_t / d A
  (the target logit), R ← R + Ā R from R = I. Class-specific.

Capturing A. timm and transformers use fused scaled-dot-product attention, which never materialises A. A forward hook
on each attention module recomputes A = softmax(q kᵀ · scale) from the module's own projections (timm ``Attention``:
``qkv``, ``q_norm``, ``k_norm``, ``num_heads``, ``scale``; transformers >= 5 ViT/DeiT/DINOv2: ``q_proj``, ``k_proj``,
``v_proj``, ``o_proj``, ``scaling``; transformers 4 ``ViTSelfAttention``: ``query``, ``key``, ``value``), recomputes
the module's output from that A and checks it against the module's real output (so an attention variant we do not
know -- rotary embeddings, relative position bias -- fails loudly instead of giving a wrong map). The gradient
variant returns the recomputed output in place of the module's, so that A is in the autograd graph.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Iterator

import torch
from torch import nn

from ..core import Method, Target, check_model_output, register_method
from ..core.evaluator import check_gradients_possible
from ..core.validation import MODEL_OUTPUT_CAUSE, ModelNotSupportedError, check_finite
from .gradcam import TokenGridProbe, token_grid

RESIDUAL_WEIGHT = 0.5   # Abnar & Zuidema: Â = 0.5 A + 0.5 I
OUTPUT_TOLERANCE = 1e-4  # relative difference allowed between the recomputed and the module's own output

_Recompute = Callable[[nn.Module, tuple, dict], "tuple[torch.Tensor, torch.Tensor]"]


# ---------------------------------------------------------------------------------------------------------------
# recomputing attention probabilities from a module's own projections

def _masked(logits: torch.Tensor, mask: Any) -> torch.Tensor:
    if mask is None:
        return logits
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"unsupported attention mask of type {type(mask).__name__}")
    if mask.dtype == torch.bool:  # scaled_dot_product_attention's convention: True = may attend
        return logits.masked_fill(~mask, float("-inf"))
    return logits + mask


def _arg(args: tuple, kwargs: dict, index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def _timm(module: nn.Module, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """timm ``Attention``: (probs (B, H, N, N), output (B, N, C_out))."""
    x = _arg(args, kwargs, 0, "x")
    if kwargs.get("is_causal") or (len(args) > 2 and args[2] is True):
        raise ValueError("causal attention is not supported")
    b, n, _ = x.shape
    heads = int(module.num_heads)
    head_dim = int(getattr(module, "head_dim", module.qkv.out_features // (3 * heads)))
    q, k, v = module.qkv(x).reshape(b, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q = module.q_norm(q) if isinstance(getattr(module, "q_norm", None), nn.Module) else q
    k = module.k_norm(k) if isinstance(getattr(module, "k_norm", None), nn.Module) else k
    probs = _masked((q * module.scale) @ k.transpose(-2, -1), _arg(args, kwargs, 1, "attn_mask")).softmax(dim=-1)
    out = (probs @ v).transpose(1, 2).reshape(b, n, heads * head_dim)
    if isinstance(getattr(module, "norm", None), nn.Module):
        out = module.norm(out)
    if isinstance(getattr(module, "gate", None), nn.Module):
        out = out * module.gate(x).sigmoid()
    out = module.proj(out)
    if isinstance(getattr(module, "proj_drop", None), nn.Module):
        out = module.proj_drop(out)
    return probs, out


def _hf(module: nn.Module, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers >= 5 ``ViTAttention`` / ``DeiTAttention`` / ``Dinov2Attention`` (q/k/v/o projections)."""
    x = _arg(args, kwargs, 0, "hidden_states")
    b, n, _ = x.shape
    head_dim = int(module.head_dim)
    split = lambda t: t.view(b, n, -1, head_dim).transpose(1, 2)  # noqa: E731 - (B, N, H*d) -> (B, H, N, d)
    q, k, v = split(module.q_proj(x)), split(module.k_proj(x)), split(module.v_proj(x))
    scaling = float(getattr(module, "scaling", head_dim ** -0.5))
    logits = _masked((q @ k.transpose(-2, -1)) * scaling, _arg(args, kwargs, 1, "attention_mask"))
    probs = logits.softmax(dim=-1, dtype=torch.float32).to(q.dtype)  # as transformers' eager attention
    out = module.o_proj((probs @ v).transpose(1, 2).reshape(b, n, -1))
    return probs, out


def _hf4(module: nn.Module, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers 4 ``ViTSelfAttention`` (query/key/value; its output is the merged context, before ``dense``)."""
    x = _arg(args, kwargs, 0, "hidden_states")
    if _arg(args, kwargs, 1, "head_mask") is not None:
        raise ValueError("head_mask is not supported")
    b, n, _ = x.shape
    heads = int(module.num_attention_heads)
    head_dim = int(getattr(module, "attention_head_size", module.query.out_features // heads))
    split = lambda t: t.view(b, n, heads, head_dim).transpose(1, 2)  # noqa: E731
    q, k, v = split(module.query(x)), split(module.key(x)), split(module.value(x))
    scaling = float(getattr(module, "scaling", head_dim ** -0.5))
    probs = ((q @ k.transpose(-2, -1)) * scaling).softmax(dim=-1, dtype=torch.float32).to(q.dtype)
    out = (probs @ v).transpose(1, 2).reshape(b, n, heads * head_dim)
    return probs, out


def attention_kind(module: nn.Module) -> str | None:
    """``"timm"``, ``"hf"`` or ``"hf4"`` for an attention module whose probabilities we can recompute, ``"windowed"``
    for a Swin-style window attention (no global token mixing to roll out), else ``None``."""
    name = type(module).__name__
    if "Attention" not in name:
        return None
    if ("Window" in name or "Swin" in name or hasattr(module, "relative_position_bias_table")
            or hasattr(module, "relative_position_bias")):
        return "windowed"
    if isinstance(getattr(module, "qkv", None), nn.Linear) and hasattr(module, "num_heads") and hasattr(module, "proj"):
        return "timm"
    if all(isinstance(getattr(module, a, None), nn.Linear) for a in ("q_proj", "k_proj", "v_proj", "o_proj")) \
            and hasattr(module, "head_dim"):
        return "hf"
    if all(isinstance(getattr(module, a, None), nn.Linear) for a in ("query", "key", "value")) \
            and hasattr(module, "num_attention_heads"):
        return "hf4"
    return None


_RECOMPUTE: dict[str, _Recompute] = {"timm": _timm, "hf": _hf, "hf4": _hf4}


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(qualified name, module)`` of every self-attention module whose probabilities can be recomputed.

    Raises:
        ValueError: no such module, or Swin-style windowed attention (rollout needs global attention).
    """
    found, windowed = [], []
    for name, module in model.named_modules():
        kind = attention_kind(module)
        if kind == "windowed":
            windowed.append(name)
        elif kind is not None:
            found.append((name, module))
    if windowed:
        raise ModelNotSupportedError(
            f"attention rollout needs global self-attention over all tokens (ViT, DeiT); the model has windowed "
            f"attention ({windowed[0]!r}, Swin-style), whose product over layers is not a token-to-token flow; use "
            "gradcam instead")
    if not found:
        raise ModelNotSupportedError(
            f"model {getattr(model, 'model_name', type(model).__name__)} has no self-attention module we recognise "
            "(timm Attention; transformers ViT/DeiT/DINOv2 attention): attention rollout needs a vision transformer")
    return found


class AttentionCapture:
    """Context manager: while active, every forward pass appends each attention module's probabilities
    (n, heads, T, T) to :attr:`probs`, in execution order.

    Args:
        modules: ``(name, module)`` pairs from :func:`attention_modules`.
        graph: return the output recomputed from the captured probabilities in place of the module's own, so that
            the probabilities are in the autograd graph of the model output (needed for d y / d A).
        on_first: called when the first attention layer of a forward pass has run.
    """

    def __init__(self, modules: list[tuple[str, nn.Module]], graph: bool = False,
                 on_first: Callable[[], None] | None = None) -> None:
        self.modules = modules
        self.graph = graph
        self.on_first = on_first
        self.probs: list[torch.Tensor] = []
        self.names: list[str] = []
        self._handles: list[Any] = []

    def __enter__(self) -> "AttentionCapture":
        for name, module in self.modules:
            self._handles.append(module.register_forward_hook(self._hook(name, module), with_kwargs=True))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _hook(self, name: str, module: nn.Module) -> Callable[..., Any]:
        recompute = _RECOMPUTE[attention_kind(module)]  # type: ignore[index]

        def hook(_m: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            if not self.probs and self.on_first is not None:
                self.on_first()
            original = output[0] if isinstance(output, tuple) else output
            try:
                probs, out = recompute(module, args, kwargs)
            except Exception as err:  # noqa: BLE001 - any failure means the module is not the variant we know
                raise ValueError(f"cannot recompute the attention probabilities of {name!r} "
                                 f"({type(module).__name__}): {type(err).__name__}: {err}") from err
            with torch.no_grad():
                diff = float((out - original).float().norm() / original.float().norm().clamp_min(1e-12))
            # the two computations round differently: a float16/bfloat16 model gets its own precision's slack
            tolerance = max(OUTPUT_TOLERANCE, 16 * torch.finfo(original.dtype).eps)
            if not diff <= tolerance:
                raise ValueError(f"the attention probabilities recomputed for {name!r} ({type(module).__name__}) do "
                                 f"not reproduce its output (relative difference {diff:.2e}): an attention variant "
                                 "this method does not know (e.g. rotary embeddings or a position bias)")
            self.probs.append(probs)
            self.names.append(name)
            if self.graph:
                return (out, *output[1:]) if isinstance(output, tuple) else out
            return None

        return hook

    def clear(self) -> None:
        self.probs, self.names = [], []


# ---------------------------------------------------------------------------------------------------------------
# the products

def rollout(probs: list[torch.Tensor], residual: float = RESIDUAL_WEIGHT) -> torch.Tensor:
    """Attention rollout R = Â_L ··· Â_1 with Â = (1 - residual) · mean_heads(A) + residual · I, rows re-normalised.

    Args:
        probs: per layer in execution order, (n, heads, T, T) row-stochastic attention.
    Returns:
        (n, T, T) row-stochastic R; ``R[i, j]`` is the attention flow from input token j to output token i.
    """
    n, _, t, _ = probs[0].shape
    eye = torch.eye(t, dtype=probs[0].dtype, device=probs[0].device)
    r = eye.expand(n, t, t).clone()
    for a in probs:
        a_hat = (1.0 - residual) * a.mean(dim=1) + residual * eye
        a_hat = a_hat / a_hat.sum(dim=-1, keepdim=True)
        r = a_hat @ r
    return r


def gradient_rollout(probs: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor:
    """Chefer et al.'s relevance R = I, R ← R + Ā R with Ā = mean_heads(ReLU(∇A ⊙ A)), layers in execution order.

    Args:
        probs, grads: per layer, (n, heads, T, T) attention probabilities and d y_t / d A.
    Returns:
        (n, T, T) relevance; row 0 (the class token) over the patch tokens is the explanation.
    """
    n, _, t, _ = probs[0].shape
    r = torch.eye(t, dtype=probs[0].dtype, device=probs[0].device).expand(n, t, t).clone()
    for a, g in zip(probs, grads):
        a_bar = (g * a).clamp_min(0.0).mean(dim=1)
        r = r + a_bar @ r
    return r


# ---------------------------------------------------------------------------------------------------------------
# the methods

class _RolloutBase(Method):
    """Shared work of the two rollouts: capture A chunk by chunk, combine, read the class-token row on the grid.

    Attribution: (N, 1, h, w) on the patch grid; ``saliency()`` upsamples it bilinearly to (H, W).
    Extras: ``rollout`` (N, T, T) the full product R; ``prefix_tokens``; ``grid`` (h, w).
    """

    # the contract suite runs these on a vision transformer instead of the digits CNN
    needs_transformer: ClassVar[bool] = True
    uses_gradients: ClassVar[bool] = False

    def __init__(self, model: Any, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if not isinstance(model, nn.Module):
            raise TypeError(f"{self.name} needs an nn.Module model whose attention modules can be hooked, "
                            f"got {type(model).__name__}")
        self.attention = attention_modules(model)

    def params(self) -> dict[str, Any]:
        return {"attention_layers": [name for name, _ in self.attention]}

    def _combine(self, probs: list[torch.Tensor], grads: list[torch.Tensor] | None) -> torch.Tensor:
        raise NotImplementedError

    def _capture(self, chunk: torch.Tensor, target: Target, start: int = 0
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, TokenGridProbe]:
        probe = TokenGridProbe(self.model)
        # the patch grid is read from the convs that run before the first attention layer
        with AttentionCapture(self.attention, graph=self.uses_gradients, on_first=probe.freeze) as cap, probe:
            if self.uses_gradients:
                with torch.enable_grad():
                    # the input in the graph puts every layer's A in it, so d y / d A_l includes the paths through
                    # the later layers' attention (the full derivative the paper uses)
                    out = self._checked_call(chunk.detach().requires_grad_(True), start)
                    scores = target.score(out)
                    grads = list(torch.autograd.grad(scores.sum(), cap.probs, allow_unused=True))
                grads = [torch.zeros_like(a) if g is None else g for a, g in zip(cap.probs, grads)]
                probs = [a.detach() for a in cap.probs]
                return probs, [g.detach() for g in grads], probe
            with torch.inference_mode():
                self._checked_call(chunk, start)
            return cap.probs, None, probe

    def _checked_call(self, chunk: torch.Tensor, start: int) -> torch.Tensor:
        """The model through the evaluator's call (the model's device and dtype, a ModelOutput/dict/tuple unwrapped),
        checked as the evaluator checks it: one row per input, finite."""
        out = check_model_output(self.evaluator.call_model(chunk), chunk.shape[0])
        check_finite(out, "model output", cause=MODEL_OUTPUT_CAUSE, first_item=start, context=f" (in the {self.name} "
                     "evaluations)")
        return out

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        if self.uses_gradients:
            check_gradients_possible(self.name)
        maps, products = [], []
        prefix, grid = 0, (0, 0)
        # map_chunks: a chunk that runs out of memory is retried in halves (the model is called here, not through
        # the evaluator's forward)
        for start, stop, (probs, grads, probe) in self.evaluator.map_chunks(
                x.shape[0], lambda a, b: self._capture(x[a:b], target.subset(slice(a, b)), a),
                grad=self.uses_gradients, sample_shape=x.shape[1:], desc=self.name):
            self.evaluator.count(stop - start, grad=self.uses_gradients)
            if len(probs) != len(self.attention):
                raise ValueError(f"{len(self.attention)} attention modules were found but {len(probs)} ran in the "
                                 "forward pass")
            n_tokens = {a.shape[-1] for a in probs}
            if len(n_tokens) != 1:
                raise ValueError(f"the attention layers see different numbers of tokens {sorted(n_tokens)}: rollout "
                                 "needs one token sequence through all layers")
            t = n_tokens.pop()
            prefix, grid = token_grid(t, probe.conv_grids, where="the attention layers")
            if prefix == 0:
                raise ValueError(f"{self.name} reads the class token's row, but the model's {t} tokens are all patch "
                                 "tokens (no class token)")
            r = self._combine(probs, grads)
            maps.append(r[:, 0, prefix:].reshape(-1, 1, *grid).float())
            products.append(r.float())
        return torch.cat(maps), {"rollout": torch.cat(products), "prefix_tokens": prefix, "grid": grid}


@register_method
class AttentionRollout(_RolloutBase):
    """Attention rollout (Abnar & Zuidema, 2020): the class token's row of Π (0.5 · mean_heads A + 0.5 · I).

    Class-agnostic: the target is recorded but does not change the map. Needs a ViT (timm or transformers).
    Attribution: (N, 1, h, w) on the patch grid.
    """

    name = "attention_rollout"
    description = "Attention rollout (Abnar & Zuidema 2020): product of head-averaged attention + identity, ViTs only."

    def params(self) -> dict[str, Any]:
        return {"residual_weight": RESIDUAL_WEIGHT, "head_fusion": "mean", **super().params()}

    def _combine(self, probs: list[torch.Tensor], grads: list[torch.Tensor] | None) -> torch.Tensor:
        return rollout(probs)


@register_method
class GradRollout(_RolloutBase):
    """Gradient-weighted attention rollout (Chefer, Gur & Wolf, 2021): R ← R + mean_heads(ReLU(∇A ⊙ A)) R.

    Class-specific (∇A is the gradient of the target score). Needs a ViT (timm or transformers).
    Attribution: (N, 1, h, w) on the patch grid.
    """

    name = "grad_rollout"
    description = ("Gradient-weighted attention rollout (Chefer et al. 2021): class-specific relevance through "
                   "attention layers, ViTs only.")
    uses_gradients = True

    def _combine(self, probs: list[torch.Tensor], grads: list[torch.Tensor] | None) -> torch.Tensor:
        assert grads is not None
        return gradient_rollout(probs, grads)


def iter_attention(model: nn.Module, x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
    """``(module name, probabilities (N, heads, T, T))`` of every attention layer of ``model`` on ``x``, in execution
    order (one forward pass under inference mode), e.g. to plot attention maps or to check a new model family."""
    with AttentionCapture(attention_modules(model)) as cap, torch.inference_mode():
        model(x)
    yield from zip(cap.names, cap.probs)


__all__ = ["AttentionCapture", "AttentionRollout", "GradRollout", "attention_kind", "attention_modules",
           "gradient_rollout", "iter_attention", "rollout"]
