"""Baselines for ablation paths: the class-changing blur of Eq. 2.32, and the usual fixed ones.

Thesis Sec. 2.7.1: x_BL = gamma_sigma * x_Tg with sigma "chosen to a minimum size that ensures
argmax F(x_BL) != argmax F(x_Tg), and at least 4 pixels, at most 100 pixels". :func:`blur_baseline` finds that sigma
per image by bisection on [4, 100] px (to ``tol`` px), assuming -- as bisection must -- that once the blur changes the
arg-max class, stronger blur keeps it changed. When even 100 px does not change the class, 100 px is used and the
image is flagged (``changed = False``).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ...core.baselines import gaussian_blur, make_baseline

Predict = Callable[[torch.Tensor], torch.Tensor]
"""``images (m, C, H, W) -> (m,)`` arg-max class of each image."""


def blur_images(x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Blur image i of ``x`` (N, C, H, W) with its own std ``sigmas[i]`` px (reflect padding)."""
    return torch.cat([gaussian_blur(x[i:i + 1], float(sigmas[i])) for i in range(x.shape[0])])


def blur_baseline(x: torch.Tensor, predict: Predict, sigma_range: tuple[float, float] = (4.0, 100.0),
                  tol: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The blurred baseline of Eq. 2.32 with the smallest class-changing sigma in ``sigma_range`` (bisection).

    Args:
        x: (N, C, H, W) images.
        predict: arg-max class of a batch of images (one forward pass).
        sigma_range: (lowest, highest) sigma in pixels of ``x``; the thesis' (4, 100).
        tol: bisection stops when the bracket is at most ``tol`` px wide; the upper end is returned.
    Returns:
        ``(baseline (N, C, H, W), sigma (N,) float64, changed (N,) bool)``.
    """
    lo_s, hi_s = float(sigma_range[0]), float(sigma_range[1])
    if not 0 < lo_s <= hi_s or not math.isfinite(hi_s):
        raise ValueError(f"blur_range must be (low, high) with 0 < low <= high, got {sigma_range!r}")
    if not tol > 0 or not math.isfinite(tol):  # NaN would pass `tol <= 0` and never end the bisection
        raise ValueError(f"blur_tol must be > 0, got {tol}")
    n = x.shape[0]
    reference = predict(x)
    lo = torch.full((n,), lo_s, dtype=torch.float64)
    hi = torch.full((n,), hi_s, dtype=torch.float64)
    both = predict(torch.cat([blur_images(x, lo), blur_images(x, hi)]))
    changed_lo = both[:n] != reference
    changed_hi = both[n:] != reference
    changed = changed_lo | changed_hi
    sigma = torch.where(changed_lo, lo, hi)
    search = changed & ~changed_lo
    while bool(search.any()) and float((hi - lo)[search].max()) > tol:
        idx = search.nonzero().flatten()
        mid = 0.5 * (lo[idx] + hi[idx])
        flips = predict(blur_images(x[idx], mid)) != reference[idx]
        hi[idx[flips]] = mid[flips]
        lo[idx[~flips]] = mid[~flips]
    sigma[search] = hi[search]
    return blur_images(x, sigma), sigma, changed


def ablation_baseline(x: torch.Tensor, baseline: Any, *, predict: Predict | None, blur_sigma: Any = "auto",
                      blur_range: tuple[float, float] = (4.0, 100.0), blur_tol: float = 0.5, seed: int = 0
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The baseline for each image and, for blur baselines, the sigma used.

    Args:
        baseline: ``"blur"`` (Eq. 2.32; ``blur_sigma="auto"`` searches sigma, a number fixes it), ``"zero"``,
            ``"mean"``, ``"uniform"``/``"random"`` (seeded noise image in the image's value range), ``"gaussian"``, a
            number, a tensor (x.shape or x.shape[1:]) or a callable ``x -> baseline``
            (see :func:`pathxai.core.make_baseline`).
    Returns:
        ``(baseline (N, C, H, W), sigma (N,) float64 -- NaN unless blurred, changed (N,) bool -- whether the arg-max
        class of the baseline differs from the image's, only checked by the sigma search, else True)``.
    """
    n = x.shape[0]
    nan = torch.full((n,), float("nan"), dtype=torch.float64)
    yes = torch.ones(n, dtype=torch.bool)
    if isinstance(baseline, str) and baseline.lower() == "blur":
        if isinstance(blur_sigma, str):
            if blur_sigma != "auto":
                raise ValueError(f"blur_sigma must be 'auto' or a number of pixels, got {blur_sigma!r}")
            if predict is None:
                raise ValueError("blur_sigma='auto' needs the model's arg-max class (a (N, num_classes) output)")
            return blur_baseline(x, predict, blur_range, blur_tol)
        if isinstance(blur_sigma, bool) or not isinstance(blur_sigma, (int, float)) or not blur_sigma > 0 \
                or not math.isfinite(blur_sigma):
            raise ValueError(f"blur_sigma must be 'auto' or a number of pixels > 0, got {blur_sigma!r}")
        return gaussian_blur(x, float(blur_sigma)), torch.full((n,), float(blur_sigma), dtype=torch.float64), yes
    return make_baseline(x, baseline, seed=seed), nan, yes
