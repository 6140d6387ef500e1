"""The cascading-randomisation figure of Adebayo et al. 2018: one row per method, the map on the trained model, then
the map after each randomisation step."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from .curves import _save
from .heatmap import DISPLAY_PERCENTILE, _agg, to_display_image


def _magnitude(m: torch.Tensor | np.ndarray) -> np.ndarray:
    """|map| clipped at its 99th percentile and scaled to [0, 1] (the paper's grayscale view: every map on its own
    scale, so what is compared is where the map puts its mass, not how large it is)."""
    a = np.abs(m.detach().cpu().double().numpy() if isinstance(m, torch.Tensor) else np.asarray(m, dtype=float))
    top = float(np.percentile(a, DISPLAY_PERCENTILE))
    if top <= 0:
        top = float(a.max())
    return np.clip(a / top, 0.0, 1.0) if top > 0 else a


def _short(name: str, parts: int = 2) -> str:
    return ".".join(name.split(".")[-parts:]).lstrip("_") or "(model)"


def save_randomisation_grid(image: torch.Tensor | np.ndarray, original: Mapping[str, torch.Tensor],
                            randomised: Mapping[str, torch.Tensor], steps: Sequence[str], path: str | Path, *,
                            title: str = "", similarity: Mapping[str, Sequence[float]] | None = None,
                            dpi: int = 100) -> Path:
    """Write the cascading-randomisation figure (PNG or any format matplotlib knows by the suffix), atomically.

    Args:
        image: the explained input, (C, H, W) in [0, 1] (or (H, W, C)); shown at the top left.
        original: ``{method: (H, W)}`` map on the trained model.
        randomised: ``{method: (L, H, W)}`` maps after each of the L steps.
        steps: the L step names (qualified module names; the last two parts are shown).
        similarity: optional ``{method: L values}`` printed under each map (e.g. the mean Spearman over items).
        dpi: resolution (a panel is 1.3 inches wide: 130 px at the default).
    Returns:
        ``path``.
    Rows: methods; columns: the input (first row only), the trained model's map, then each step. Maps are shown as
    |map| on a gray scale, each clipped at its own 99th percentile.
    """
    methods = list(original)
    if not methods:
        raise ValueError("original must hold at least one method's map")
    if set(randomised) != set(methods):
        raise ValueError(f"randomised must have the methods of original ({', '.join(methods)}), got "
                         f"{', '.join(randomised)}")
    n_steps = len(steps)
    for m in methods:
        if randomised[m].ndim != 3 or randomised[m].shape[0] != n_steps:
            raise ValueError(f"randomised[{m!r}] must have shape (L, H, W) with L = {n_steps} steps, got "
                             f"{tuple(randomised[m].shape)}")
    _agg()
    import matplotlib.pyplot as plt

    cols = n_steps + 2
    size = 1.3
    fig, axes = plt.subplots(len(methods), cols, figsize=(size * cols + 0.8, size * len(methods) + 1.1),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    axes[0, 0].imshow(to_display_image(image))
    axes[0, 0].set_title("input", fontsize=7)
    for i, method in enumerate(methods):
        axes[i, 0].set_ylabel(method, fontsize=8, rotation=0, ha="right", va="center")
        panels = [original[method]] + [randomised[method][k] for k in range(n_steps)]
        for j, m in enumerate(panels, start=1):
            axes[i, j].imshow(_magnitude(m), cmap="gray", vmin=0, vmax=1)
            if similarity is not None and j > 1:
                axes[i, j].set_xlabel(f"{float(similarity[method][j - 2]):.2f}", fontsize=6, labelpad=1)
    axes[0, 1].set_title("trained", fontsize=7)
    for k, name in enumerate(steps):
        axes[0, k + 2].set_title(_short(name), fontsize=6, rotation=60, ha="left", va="bottom")
    fig.suptitle(title or "maps as layers are randomised (left to right: top layer first)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path, dpi=dpi)
