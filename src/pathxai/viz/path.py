"""Ablation paths as pictures: masks and blended images along t, and the class probability along the path."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .curves import _save
from .heatmap import _agg, to_display_image


def save_path_strip(x: torch.Tensor, path: torch.Tensor, baseline: torch.Tensor, curve: torch.Tensor,
                    out: str | Path, *, n_columns: int = 7, class_name: str = "", title: str = "") -> Path:
    """Write a PNG: row 1 the masks φ(t), row 2 the images along the path, and the score curve under them.

    Args:
        x: (C, H, W) explained image in [0, 1]. baseline: (C, H, W) the path's end point.
        path: (n, h, w) masks, 0 = the image kept, 1 = the baseline (thesis convention), for t = k / (n + 1).
        curve: (n + 2,) target score along the path, both ends included (t = 0 and t = 1).
        n_columns: slices shown (evenly spread over the n stored ones).
    """
    _agg()
    import matplotlib.pyplot as plt

    from ..methods.ablation_path.paths import blend

    n = path.shape[0]
    picks = np.asarray(path_columns(n, n_columns))
    times = (picks + 1) / (n + 1)
    images = blend(x.double(), baseline.double(), path[picks].double()).float()
    fig = plt.figure(figsize=(1.7 * len(picks), 5.6))
    grid = fig.add_gridspec(3, len(picks), height_ratios=[1, 1, 1.1])
    for j, (k, t) in enumerate(zip(picks, times)):
        ax = fig.add_subplot(grid[0, j])
        ax.imshow(path[k].float().numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"t = {t:.2f}", fontsize=8)
        ax.axis("off")
        ax = fig.add_subplot(grid[1, j])
        ax.imshow(to_display_image(images[j]))
        ax.axis("off")
    fig.axes[0].text(-0.15, 0.5, "mask φ(t)\n(black = removed)", transform=fig.axes[0].transAxes, ha="right",
                     va="center", fontsize=8)
    fig.axes[1].text(-0.15, 0.5, "image along\nthe path", transform=fig.axes[1].transAxes, ha="right", va="center",
                     fontsize=8)
    ax = fig.add_subplot(grid[2, :])
    t_all = np.linspace(0, 1, curve.shape[0])
    ax.plot(t_all, curve.float().numpy(), marker="o", ms=3)
    ax.set_xlabel("t (0 = image, 1 = baseline)")
    ax.set_ylabel(f"score of {class_name}" if class_name else "target score")
    ax.grid(alpha=0.3)
    ax.set_xlim(0, 1)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out)


def path_columns(n: int, n_columns: int) -> Sequence[int]:
    """Indices of the slices a strip of ``n_columns`` shows out of ``n``."""
    return np.unique(np.linspace(0, n - 1, min(n_columns, n)).round().astype(int)).tolist()
