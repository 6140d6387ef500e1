"""Heatmap overlays a person can read: the image, the saliency on top of it, a colorbar and a title."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..core.files import atomic_path


def _agg() -> None:
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg")


def to_display_image(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """A (C, H, W) tensor in [0, 1] (or an (H, W, C) array) as an (H, W, 3) float array for imshow."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


def heatmap_limits(saliency: np.ndarray, signed: bool) -> tuple[float, float]:
    """Colour limits: symmetric around 0 for signed maps, [min, max] otherwise (99.5th percentile clipped)."""
    if signed:
        m = float(np.percentile(np.abs(saliency), 99.5)) or 1.0
        return -m, m
    lo, hi = float(saliency.min()), float(np.percentile(saliency, 99.5))
    return lo, hi if hi > lo else lo + 1.0


def save_overlay(image: torch.Tensor | np.ndarray, saliency: torch.Tensor | np.ndarray, path: str | Path, *,
                 title: str = "", method: str = "", alpha: float = 0.55, dpi: int = 110) -> Path:
    """Write a PNG with the image and the saliency overlay side by side, a colorbar and a title.

    Args:
        image: (C, H, W) tensor in [0, 1] or (H, W, C) array.
        saliency: (H, W) map. Signed maps (with clearly negative values) use a diverging colormap centred on 0.
    Returns the path written (atomically: a crash never leaves half a file).
    """
    _agg()
    import matplotlib.pyplot as plt

    img = to_display_image(image)
    sal = saliency.detach().cpu().numpy() if isinstance(saliency, torch.Tensor) else np.asarray(saliency)
    if sal.shape != img.shape[:2]:
        raise ValueError(f"saliency must have shape (H, W) = {img.shape[:2]}, got {sal.shape}")
    signed = bool(sal.min() < -0.05 * max(abs(float(sal.max())), 1e-12))
    vmin, vmax = heatmap_limits(sal, signed)
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 4.3), gridspec_kw={"width_ratios": [1, 1.12]})
    axes[0].imshow(img)
    axes[0].set_title("input")
    axes[1].imshow(img.mean(-1), cmap="gray", vmin=0, vmax=1)
    im = axes[1].imshow(sal, cmap="bwr" if signed else "inferno", vmin=vmin, vmax=vmax, alpha=alpha)
    axes[1].set_title(f"{method} attribution" if method else "attribution")
    for ax in axes:
        ax.axis("off")
    cbar = fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.03)
    cbar.set_label("attribution (signed)" if signed else "attribution")
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return path
