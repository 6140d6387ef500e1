"""Views of a SIFT explanation (Sec. 4.3.4, Fig. 4.9): keypoints drawn as circles of their scale, path strips."""
from __future__ import annotations

from typing import Any

import torch

from .decoder import SiftDecoder


def path_strip(decoder: SiftDecoder, path: torch.Tensor, *, gap: int = 2) -> torch.Tensor:
    """The images D(1 - phi(t_k)) along a feature path side by side (Fig. 4.9).

    Args:
        decoder: the image's decoder. path: (n, K) masks phi (0 = feature kept), e.g. ``extras["path"][i]``.
        gap: white pixels between the slices.
    Returns:
        (C, H, n W + (n - 1) gap) strip, clipped to [0, 1].
    """
    if path.ndim != 2 or path.shape[1] != decoder.n_features:
        raise ValueError(f"path must have shape (n, K) with K = {decoder.n_features}, got {tuple(path.shape)}")
    with torch.no_grad():
        imgs = decoder.decode(1.0 - path.to(decoder.matrices[0].dtype)).clamp(0, 1)
    n, c, h, w = imgs.shape
    strip = torch.ones(c, h, n * w + (n - 1) * gap, dtype=imgs.dtype)
    for k in range(n):
        strip[:, :, k * (w + gap):k * (w + gap) + w] = imgs[k]
    return strip


def draw_keypoints(image: torch.Tensor, keypoints: torch.Tensor, importance: torch.Tensor | None = None, *,
                   top: int = 20, ax: Any = None, radius_per_sigma: float = 2.0) -> Any:
    """Draw the ``top`` features (by importance, else by |response|) as circles of radius 2 sigma on the image.

    Args:
        image: (C, H, W) in [0, 1]. keypoints: (K, 4) rows (y, x, sigma, response), e.g. ``extras["keypoints"][i]``.
        importance: (K,) feature importance (``extras["feature_importance"][i]``); circles coloured by it.
        ax: a matplotlib axes (a new figure if ``None``).
    Returns:
        The matplotlib axes.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    if keypoints.ndim != 2 or keypoints.shape[1] != 4:
        raise ValueError(f"keypoints must have shape (K, 4), got {tuple(keypoints.shape)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    img = image.detach().permute(1, 2, 0).clamp(0, 1).numpy()
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
    key = importance if importance is not None else keypoints[:, 3].abs()
    order = torch.argsort(key, descending=True, stable=True)[:top]
    lo, hi = float(key[order].min()), float(key[order].max())
    cmap = plt.get_cmap("viridis")
    for j in order.tolist():
        y, x, s = (float(v) for v in keypoints[j, :3])
        colour = cmap((float(key[j]) - lo) / (hi - lo) if hi > lo else 1.0)
        ax.add_patch(Circle((x, y), radius_per_sigma * s, fill=False, color=colour, linewidth=1.5))
    ax.set_axis_off()
    return ax
