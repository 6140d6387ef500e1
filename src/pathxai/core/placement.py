"""Where a model lives and what it returns: devices, dtypes, and the unwrapping of structured outputs.

Work follows the model. A method moves its input once to the model's device, computes its own arithmetic there in a
*work dtype* of at least float32 (accumulators never run in float16/bfloat16), casts each chunk to the model's dtype
at the call, and widens low-precision outputs back to float32 before scores and gradients are taken. Results return
on the device and in the dtype of the input as the user passed it.

A model may return a tensor, a transformers ``ModelOutput`` (its ``logits``), a dict (``"logits"``) or a tuple/list
(its first element); :func:`as_logits` unwraps these and names what came back otherwise.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

_LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Placement:
    """The device and floating dtype of a model's parameters (``None`` for a plain function: follow the input)."""

    device: torch.device | None
    dtype: torch.dtype | None

    def work_dtype(self, input_dtype: torch.dtype) -> torch.dtype:
        """The dtype a method computes in: the widest of the input's, the model's and float32."""
        dtype = torch.promote_types(input_dtype, torch.float32)
        return dtype if self.dtype is None else torch.promote_types(dtype, self.dtype)


def model_placement(model: Any) -> Placement:
    """Device and dtype of the first floating parameter (else buffer) of an ``nn.Module``; ``Placement(None, None)``
    for a callable without tensors (it is then called where its inputs are)."""
    if isinstance(model, torch.nn.Module):
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_floating_point():
                return Placement(tensor.device, tensor.dtype)
        for tensor in list(model.parameters()) + list(model.buffers()):
            return Placement(tensor.device, None)
    device = getattr(model, "device", None)   # e.g. px.models.adapt wrappers or user objects that declare it
    return Placement(torch.device(device) if isinstance(device, (str, torch.device)) else None, None)


def resolve_device(spec: str | torch.device | None) -> torch.device:
    """``"auto"`` (CUDA when available, else the CPU; MPS only when asked for: some operators still fall back),
    ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` -> a ``torch.device``, checked to exist on this machine.

    Raises:
        ValueError: an unknown spec, or a device this machine does not have (named, with what it has).
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if spec is None or spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(spec, str):
        raise TypeError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {spec!r}")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {spec!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r}: this machine has no CUDA device (torch {torch.__version__} "
                             f"{'is a CPU build' if torch.version.cuda is None else 'finds no GPU'}); use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {spec!r}: this machine has {count} CUDA device(s): cuda:0..cuda:{count - 1}")
    elif device.type == "mps":
        if not _mps_available():
            raise ValueError(f"device {spec!r}: MPS (Apple GPU) is not available on this machine; use --device cpu")
    elif device.type != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {spec!r}")
    return device


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _describe(out: Any) -> str:
    """A short description of a model's raw output for error messages: its type and fields / keys / length."""
    kind = type(out).__name__
    if isinstance(out, Mapping):
        return f"{kind} with keys {[str(k) for k in out.keys()]}"
    if isinstance(out, (tuple, list)):
        parts = [f"{type(v).__name__}{tuple(v.shape) if isinstance(v, torch.Tensor) else ''}" for v in out[:6]]
        return f"{kind} of length {len(out)} ({', '.join(parts)}{', ...' if len(out) > 6 else ''})"
    fields = [k for k, v in vars(out).items() if isinstance(v, torch.Tensor)] if hasattr(out, "__dict__") else []
    return f"{kind}" + (f" with tensor fields {fields}" if fields else "")


def _hint(out: Any) -> str:
    if isinstance(out, Mapping) and len(out):
        return f'px.models.adapt(model, output="{next(iter(out.keys()))}")'
    if isinstance(out, (tuple, list)):
        return "px.models.adapt(model, output=0)"
    return "px.models.adapt(model, output=lambda out: <the (N, K) logits tensor in out>)"


def as_logits(out: Any, model_name: str = "the model") -> torch.Tensor:
    """Unwrap a model's raw output into one tensor.

    A tensor is returned as it is; an object with a ``logits`` field (a transformers ``ModelOutput``) or a dict
    with a ``"logits"`` key gives that; a tuple or list gives its first element (which must be a tensor).

    Raises:
        TypeError: anything else, naming what was returned and how to adapt the model.
    """
    if isinstance(out, torch.Tensor):
        return out
    found: Any = None
    if isinstance(out, Mapping):
        if "logits" in out:
            found = out["logits"]
    elif isinstance(getattr(out, "logits", None), torch.Tensor):
        found = out.logits
    elif isinstance(out, (tuple, list)) and len(out):
        found = out[0]
    if isinstance(found, torch.Tensor):
        return found
    raise TypeError(f"{model_name} returned {_describe(out)}, not a logits tensor; wrap it so that it returns one "
                    f"(N, K) tensor, e.g. {_hint(out)}")


def widen_output(out: torch.Tensor) -> torch.Tensor:
    """A float16/bfloat16 model output in float32 (differentiably), so scores and softmaxes are taken in float32."""
    return out.float() if out.dtype in _LOW_PRECISION else out


def to_model_input(inputs: torch.Tensor, placement: Placement) -> torch.Tensor:
    """``inputs`` on the model's device and in its dtype (differentiably: gradients flow back to the work dtype)."""
    device = placement.device if placement.device is not None else inputs.device
    dtype = placement.dtype if placement.dtype is not None and inputs.is_floating_point() else inputs.dtype
    if inputs.device == device and inputs.dtype == dtype:
        return inputs
    return inputs.to(device=device, dtype=dtype)


def is_out_of_memory(err: BaseException) -> bool:
    """An allocation failure of any device: ``torch.OutOfMemoryError`` (CUDA, MPS) or the CPU allocator's
    ``RuntimeError`` ("can't allocate memory" / "not enough memory")."""
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(err, oom):
        return True
    if isinstance(err, MemoryError):
        return True
    if isinstance(err, RuntimeError):
        text = str(err).lower()
        return any(s in text for s in ("out of memory", "can't allocate memory", "not enough memory",
                                       "failed to allocate"))
    return False


def free_device_memory(device: torch.device | None) -> None:
    """Return cached blocks to the device after an out-of-memory error, so the retry can use them."""
    import gc

    gc.collect()
    if device is not None and device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device is not None and device.type == "mps" and _mps_available():
        torch.mps.empty_cache()
