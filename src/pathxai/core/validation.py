"""Input checks shared by every method and metric.

Every check raises a ``ValueError`` or ``TypeError`` whose message names the argument, what was seen and what was
expected, so a user never has to guess which of five tensors had the wrong shape.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch


def _shape_str(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def check_input(x: Any, name: str = "x", *, ndim: int | Sequence[int] | None = None,
                expected: str = "(N, C, H, W)") -> torch.Tensor:
    """Validate a batch of model inputs and return it as a CPU-contiguous float tensor view.

    Args:
        x: tensor of shape ``expected`` (``N >= 1``), floating point, finite.
        name: argument name used in error messages.
        ndim: allowed rank(s); ``None`` accepts any rank >= 2.
        expected: human-readable expected shape for messages.
    Returns:
        ``x`` unchanged when it already is a floating tensor (no copy).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {expected}, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a floating-point tensor of shape {expected}, got dtype {x.dtype} "
                        f"with shape {_shape_str(x.shape)}; convert with x.float()")
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim) if ndim is not None else None
    if allowed is not None and x.ndim not in allowed:
        raise ValueError(f"{name} must have shape {expected} ({' or '.join(map(str, allowed))} dims), "
                         f"got shape {_shape_str(x.shape)} ({x.ndim} dims)")
    if allowed is None and x.ndim < 2:
        raise ValueError(f"{name} must have shape {expected} with a leading batch dimension, "
                         f"got shape {_shape_str(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch: shape {_shape_str(x.shape)}, expected {expected} with N >= 1")
    if x.numel() == 0:
        raise ValueError(f"{name} has a zero-sized dimension: shape {_shape_str(x.shape)}, expected {expected}")
    if not torch.isfinite(x).all():
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {n_bad} NaN/Inf value(s) (shape {_shape_str(x.shape)}); "
                         "inputs must be finite")
    return x


def check_model_output(out: Any, n: int, name: str = "model output") -> torch.Tensor:
    """Check that a model returned a tensor with one row per input sample.

    Args:
        out: what the model returned for a batch of ``n`` inputs; expected a tensor of shape ``(n, ...)``.
    """
    if isinstance(out, (tuple, list)) and len(out) > 0 and isinstance(out[0], torch.Tensor):
        raise TypeError(f"{name} must be a single torch.Tensor of shape (N, ...), got a {type(out).__name__} "
                        "of tensors; wrap the model so that it returns one tensor")
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, ...), got {type(out).__name__}")
    if out.ndim == 0 or out.shape[0] != n:
        raise ValueError(f"{name} must have shape (N, ...) with N = {n} (one row per input), "
                         f"got shape {_shape_str(out.shape)}")
    return out


def check_saliency(saliency: Any, x: torch.Tensor, name: str = "saliency") -> torch.Tensor:
    """Validate a per-pixel map for image inputs ``x`` of shape (N, C, H, W): accepts (N, H, W) or (N, 1, H, W)."""
    if not isinstance(saliency, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, H, W), got {type(saliency).__name__}")
    n, _, h, w = x.shape
    if saliency.ndim == 4 and saliency.shape[1] == 1:
        saliency = saliency[:, 0]
    if saliency.ndim != 3 or tuple(saliency.shape) != (n, h, w):
        raise ValueError(f"{name} must have shape (N, H, W) = {_shape_str((n, h, w))} to match x of shape "
                         f"{_shape_str(x.shape)}, got {_shape_str(saliency.shape)}")
    if not torch.is_floating_point(saliency):
        raise TypeError(f"{name} must be floating point, got dtype {saliency.dtype}")
    if not torch.isfinite(saliency).all():
        raise ValueError(f"{name} contains NaN/Inf values (shape {_shape_str(saliency.shape)})")
    return saliency


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as an int, raising if it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
            isinstance(value, torch.Tensor) and value.ndim == 0 and not torch.is_floating_point(value)):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def check_fraction(value: Any, name: str, *, low: float = 0.0, high: float = 1.0,
                   inclusive: bool = True) -> float:
    """Return ``value`` as a float in [low, high] (or (low, high) when not inclusive)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    value = float(value)
    ok = low <= value <= high if inclusive else low < value < high
    if not ok:
        interval = f"[{low}, {high}]" if inclusive else f"({low}, {high})"
        raise ValueError(f"{name} must lie in {interval}, got {value}")
    return value
