"""Reference inputs ("baselines") that methods and metrics move towards: zero, mean, blur, noise or custom."""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Union

import torch
import torch.nn.functional as F

from .seeding import item_generator
from .validation import check_finite_float, check_positive_float

BaselineLike = Union[str, float, int, torch.Tensor, Callable[[torch.Tensor], torch.Tensor], None]
BASELINE_NAMES = ("zero", "mean", "blur", "uniform", "gaussian")


# Kernels wider than this are never built whole: the blur clips them to the image anyway (see gaussian_blur), and a
# sigma of 1e9 px would otherwise allocate a 6e9-tap kernel (48 GB) before the clipping.
_MAX_KERNEL_RADIUS = 10**5


def gaussian_kernel1d(sigma: float, truncate: float = 3.0) -> torch.Tensor:
    """Normalised 1-D Gaussian kernel of radius ``ceil(truncate * sigma)`` (shape (2r+1,)); ``sigma = 0`` gives [1].

    ``sigma`` must be a finite number >= 0 and the radius at most 100,000 taps.
    """
    sigma = check_positive_float(sigma, "sigma", allow_zero=True)
    truncate = check_positive_float(truncate, "truncate")
    if sigma <= 0:
        return torch.ones(1)
    radius = max(1, int(math.ceil(truncate * sigma)))
    if radius > _MAX_KERNEL_RADIUS:
        raise ValueError(f"sigma={sigma:g} gives a Gaussian kernel of radius {radius} taps, more than "
                         f"{_MAX_KERNEL_RADIUS}; use a smaller sigma (gaussian_blur clips wide kernels to the image)")
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


def _clipped_kernel(sigma: float, radius: int) -> torch.Tensor:
    """The Gaussian kernel of std ``sigma`` restricted to [-radius, radius] and renormalised, float32 (2r+1,)."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


def gaussian_blur(x: torch.Tensor, sigma: float, truncate: float = 3.0) -> torch.Tensor:
    """Blur the last two axes of ``x`` (..., H, W) with a Gaussian of std ``sigma`` pixels (reflect padding).

    The kernel is clipped to the image size, so very large ``sigma`` still works on small images. ``sigma = 0`` is the
    identity (a point of a blur path); NaN, Inf and negative values are refused. Returns a tensor like ``x`` (same
    shape, dtype and device).
    """
    sigma = check_positive_float(sigma, "sigma", allow_zero=True)
    truncate = check_positive_float(truncate, "truncate")
    if sigma <= 0:
        return x.clone()
    shape = x.shape
    h, w = shape[-2], shape[-1]
    flat = x.reshape(-1, 1, h, w)
    radius = max(1, int(math.ceil(truncate * sigma)))
    k = gaussian_kernel1d(sigma, truncate) if radius <= _MAX_KERNEL_RADIUS else None
    for dim, size in ((2, h), (3, w)):
        if k is not None:
            r = min((k.numel() - 1) // 2, size - 1)
            kk = k[(k.numel() - 1) // 2 - r:(k.numel() - 1) // 2 + r + 1]
        else:  # very wide kernel: build only the part inside the image
            r = min(radius, size - 1)
            kk = _clipped_kernel(sigma, r)
        kk = kk.to(x)   # x's device and dtype
        kk = kk / kk.sum()
        if r == 0:
            continue
        if dim == 2:
            flat = F.conv2d(F.pad(flat, (0, 0, r, r), mode="reflect"), kk.view(1, 1, -1, 1))
        else:
            flat = F.conv2d(F.pad(flat, (r, r, 0, 0), mode="reflect"), kk.view(1, 1, 1, -1))
    return flat.reshape(shape)


def make_baseline(x: torch.Tensor, baseline: BaselineLike = "zero", *, blur_sigma: float = 10.0,
                  seed: int = 0, name: str = "baseline") -> torch.Tensor:
    """A baseline for each sample of ``x`` (N, ...), returned with the same shape.

    Args:
        baseline: ``"zero"``; ``"mean"`` (per-sample, per-channel mean); ``"blur"`` (Gaussian blur of std
            ``blur_sigma`` px); ``"uniform"`` (noise uniform in each sample's value range, seeded);
            ``"gaussian"`` (per-sample mean plus noise of the sample's std, seeded); a number (constant); a tensor of
            shape x.shape, x.shape[1:] (shared) or broadcastable to it; or a callable ``x -> baseline``.
    """
    if baseline is None:
        baseline = "zero"
    if isinstance(baseline, str):
        key = baseline.lower()
        if key in ("zero", "zeros", "black"):
            return torch.zeros_like(x)
        if key == "mean":
            dims = tuple(range(2, x.ndim)) if x.ndim > 2 else (1,)
            return x.mean(dim=dims, keepdim=True).expand_as(x).clone()
        if key == "blur":
            if x.ndim < 3:
                raise ValueError(f"{name}='blur' needs inputs with spatial axes (N, C, H, W), got {tuple(x.shape)}")
            # sigma 0 would make the baseline the input itself: every path collapses and attributions are all 0
            return gaussian_blur(x, check_positive_float(blur_sigma, "blur_sigma"))
        if key in ("uniform", "random"):
            out = torch.empty_like(x)
            for i in range(x.shape[0]):
                lo, hi = x[i].min(), x[i].max()
                g = item_generator(seed, "baseline-uniform", i, x.device)
                out[i] = lo + (hi - lo) * torch.rand(x.shape[1:], generator=g, dtype=x.dtype, device=x.device)
            return out
        if key == "gaussian":
            out = torch.empty_like(x)
            for i in range(x.shape[0]):
                g = item_generator(seed, "baseline-gaussian", i, x.device)
                out[i] = x[i].mean() + x[i].std() * torch.randn(x.shape[1:], generator=g, dtype=x.dtype,
                                                                device=x.device)
            return out
        raise ValueError(f"{name} must be one of {', '.join(BASELINE_NAMES)}, a number, a tensor or a callable; "
                         f"got {baseline!r}")
    if isinstance(baseline, bool):
        raise TypeError(f"{name} must be a string, number, tensor or callable, got a bool")
    if isinstance(baseline, numbers.Real):
        return torch.full_like(x, check_finite_float(baseline, name))
    if isinstance(baseline, torch.Tensor):
        b = baseline.detach().to(dtype=x.dtype, device=x.device)
        if b.shape == x.shape[1:]:
            b = b.unsqueeze(0)
        try:
            b = torch.broadcast_to(b, x.shape).clone()
        except RuntimeError:
            raise ValueError(f"{name} tensor must have shape {tuple(x.shape)} or {tuple(x.shape[1:])} "
                             f"(or broadcast to it), got {tuple(baseline.shape)}") from None
        if not torch.isfinite(b).all():
            raise ValueError(f"{name} contains NaN/Inf values")
        return b
    if callable(baseline):
        b = baseline(x)
        if not isinstance(b, torch.Tensor) or b.shape != x.shape:
            got = tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__
            raise ValueError(f"{name} callable must return a tensor of shape {tuple(x.shape)}, got {got}")
        if not torch.is_floating_point(b):
            raise TypeError(f"{name} callable must return a floating-point tensor, got dtype {b.dtype}")
        bad = ~torch.isfinite(b.detach()).reshape(b.shape[0], -1).all(1)
        if bool(bad.any()):
            rows = bad.nonzero().flatten().tolist()
            raise ValueError(f"{name} callable returned NaN/Inf values for {len(rows)} sample(s) {rows[:8]}; a "
                             "baseline must be finite")
        return b.detach().to(device=x.device, dtype=x.dtype)
    raise TypeError(f"{name} must be a string, number, tensor or callable, got {type(baseline).__name__}")


_BASELINE_KEYS = ("zero", "zeros", "black", "mean", "blur", "uniform", "random", "gaussian")


def check_baseline(baseline: Any, name: str = "baseline") -> Any:
    """Validate a baseline spec when it is given (before any input is seen); returns it unchanged.

    Strings must name a baseline of :data:`BASELINE_NAMES`, numbers and tensors must be finite, anything else must be
    callable (a callable's result is checked by :func:`make_baseline`).
    """
    if baseline is None:
        return baseline
    if isinstance(baseline, str):
        if baseline.lower() not in _BASELINE_KEYS:
            raise ValueError(f"{name} must be one of {', '.join(BASELINE_NAMES)}, a number, a tensor or a callable; "
                             f"got {baseline!r}")
        return baseline
    if isinstance(baseline, bool):
        raise TypeError(f"{name} must be a string, number, tensor or callable, got a bool")
    if isinstance(baseline, numbers.Real):
        check_finite_float(baseline, name)
        return baseline
    if isinstance(baseline, torch.Tensor):
        if torch.is_floating_point(baseline) and not bool(torch.isfinite(baseline.detach()).all()):
            raise ValueError(f"{name} contains NaN/Inf values (shape {tuple(baseline.shape)}); a baseline must be "
                             "finite")
        return baseline
    if callable(baseline):
        return baseline
    raise TypeError(f"{name} must be a string, number, tensor or callable, got {type(baseline).__name__}")


def describe_baseline(baseline: Any) -> Any:
    """A JSON-friendly description of a baseline spec for ``meta``."""
    if isinstance(baseline, torch.Tensor):
        return f"tensor{tuple(baseline.shape)}"
    if callable(baseline) and not isinstance(baseline, str):
        return getattr(baseline, "__name__", "callable")
    return baseline
