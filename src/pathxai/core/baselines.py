"""Reference inputs ("baselines") that methods and metrics move towards: zero, mean, blur, noise or custom."""
from __future__ import annotations

import math
from typing import Any, Callable, Union

import torch
import torch.nn.functional as F

from .seeding import item_generator

BaselineLike = Union[str, float, int, torch.Tensor, Callable[[torch.Tensor], torch.Tensor], None]
BASELINE_NAMES = ("zero", "mean", "blur", "uniform", "gaussian")


def gaussian_kernel1d(sigma: float, truncate: float = 3.0) -> torch.Tensor:
    """Normalised 1-D Gaussian kernel of radius ``ceil(truncate * sigma)`` (shape (2r+1,))."""
    if sigma <= 0:
        return torch.ones(1)
    radius = max(1, int(math.ceil(truncate * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


def gaussian_blur(x: torch.Tensor, sigma: float, truncate: float = 3.0) -> torch.Tensor:
    """Blur the last two axes of ``x`` (..., H, W) with a Gaussian of std ``sigma`` pixels (reflect padding).

    The kernel is clipped to the image size, so very large ``sigma`` still works on small images.
    """
    if sigma <= 0:
        return x.clone()
    shape = x.shape
    h, w = shape[-2], shape[-1]
    flat = x.reshape(-1, 1, h, w)
    k = gaussian_kernel1d(sigma, truncate).to(x.dtype)
    for dim, size in ((2, h), (3, w)):
        r = min((k.numel() - 1) // 2, size - 1)
        kk = k[(k.numel() - 1) // 2 - r:(k.numel() - 1) // 2 + r + 1]
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
            return gaussian_blur(x, blur_sigma)
        if key in ("uniform", "random"):
            out = torch.empty_like(x)
            for i in range(x.shape[0]):
                lo, hi = x[i].min(), x[i].max()
                g = item_generator(seed, "baseline-uniform", i)
                out[i] = lo + (hi - lo) * torch.rand(x.shape[1:], generator=g, dtype=x.dtype)
            return out
        if key == "gaussian":
            out = torch.empty_like(x)
            for i in range(x.shape[0]):
                g = item_generator(seed, "baseline-gaussian", i)
                out[i] = x[i].mean() + x[i].std() * torch.randn(x.shape[1:], generator=g, dtype=x.dtype)
            return out
        raise ValueError(f"{name} must be one of {', '.join(BASELINE_NAMES)}, a number, a tensor or a callable; "
                         f"got {baseline!r}")
    if isinstance(baseline, bool):
        raise TypeError(f"{name} must be a string, number, tensor or callable, got a bool")
    if isinstance(baseline, (int, float)):
        return torch.full_like(x, float(baseline))
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
        return b.detach()
    raise TypeError(f"{name} must be a string, number, tensor or callable, got {type(baseline).__name__}")


def describe_baseline(baseline: Any) -> Any:
    """A JSON-friendly description of a baseline spec for ``meta``."""
    if isinstance(baseline, torch.Tensor):
        return f"tensor{tuple(baseline.shape)}"
    if callable(baseline) and not isinstance(baseline, str):
        return getattr(baseline, "__name__", "callable")
    return baseline
