"""Deletion/insertion curves per method and a grid of heatmaps per image, as PNG files."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from ..core.files import atomic_path
from .heatmap import _agg, display_map, to_display_image


def _save(fig, path: str | Path, dpi: int = 110) -> Path:  # type: ignore[no-untyped-def]
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path


def save_curves(curves: Mapping[tuple[str, str], torch.Tensor], path: str | Path, title: str = "") -> Path:
    """One panel per metric (e.g. insertion, deletion): the mean curve of each method with a ±1 std band.

    Args:
        curves: ``{(method, metric): (n, steps + 1) tensor}``; the x axis is the fraction of pixels changed.
    """
    _agg()
    import matplotlib.pyplot as plt

    metrics = sorted({metric for _, metric in curves}, key=lambda m: (m != "insertion", m))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.0), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for (method, m), c in curves.items():
            if m != metric:
                continue
            c = c.double()
            t = np.linspace(0, 1, c.shape[1])
            mean, std = c.mean(0).numpy(), c.std(0, unbiased=False).numpy()
            auc = float(np.trapezoid(mean, t)) if hasattr(np, "trapezoid") else float(np.trapz(mean, t))
            line, = ax.plot(t, mean, label=f"{method} (AUC {auc:.3f})")
            ax.fill_between(t, mean - std, mean + std, color=line.get_color(), alpha=0.12)
        ax.set_xlabel("fraction of pixels " + ("inserted" if metric == "insertion" else "deleted"))
        ax.set_ylabel("target score")
        ax.set_title(f"{metric} ({'higher' if metric == 'insertion' else 'lower'} is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def save_heatmap_grid(images: torch.Tensor, saliency: Mapping[str, torch.Tensor], path: str | Path, *,
                      row_titles: Sequence[str] | None = None, max_rows: int = 8) -> Path:
    """A grid: one row per image (first ``max_rows``), the image then each method's saliency overlaid.

    Args:
        images: (N, C, H, W) in [0, 1]. saliency: ``{method: (N, H, W)}``.
    """
    _agg()
    import matplotlib.pyplot as plt

    methods = list(saliency)
    n = min(max_rows, images.shape[0])
    fig, axes = plt.subplots(n, len(methods) + 1, figsize=(1.9 * (len(methods) + 1), 1.9 * n + 0.4),
                             squeeze=False)
    for i in range(n):
        img = to_display_image(images[i])
        axes[i, 0].imshow(img)
        if row_titles is not None:
            axes[i, 0].set_ylabel(str(row_titles[i])[:22], fontsize=7)
        for j, method in enumerate(methods, start=1):
            d = display_map(saliency[method][i])   # same display rules as the single overlays
            axes[i, j].imshow(img.mean(-1), cmap="gray", vmin=0, vmax=1)
            axes[i, j].imshow(d.values, cmap="bwr" if d.signed else "inferno", vmin=d.vmin, vmax=d.vmax, alpha=0.6)
            if i == 0:
                axes[i, j].set_title(method, fontsize=9)
    axes[0, 0].set_title("input", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return _save(fig, path)
