"""Heatmap overlays a person can read: the image, the saliency on top of it, a colorbar and a title.

How a map is shown (:func:`display_map`) -- for display only, saved ``.npz`` files keep the raw attribution:

- a map with both signs whose signs form regions (occlusion, LIME, IG on small digits) is shown signed, on a
  diverging colormap centred on 0, clipped at the 99th percentile of ``|a|``;
- a signed map whose signs alternate from pixel to pixel (gradient maps of photo models: IG, gradient x input on
  EfficientNet) reads as red/blue speckle where neither colour means anything to the eye, so it is shown as its
  magnitude -- the sum over channels of ``|a|`` when the attribution has the image's channels (the convention of
  the IG / SmoothGrad authors' own visualisations), else ``|saliency|`` -- clipped at the 99th percentile and
  lightly Gaussian-smoothed (sigma = side / 112 px: 2 px at 224 px, none on 28 px digits);
- a non-negative map is shown as it is, clipped at the 99th percentile (and smoothed if it is speckled too).

The colorbar label says which of these was drawn.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.files import atomic_path

DISPLAY_PERCENTILE = 99.0
# a signed map is "speckled" when more than this share of neighbouring pixel pairs (both above the median |value|)
# have opposite signs: 0.29 for IG on the EfficientNet demo, <= 0.04 for every method on the digits CNN
SPECKLE_FLIP_RATE = 0.1
# a non-negative map is speckled when neighbouring pixels correlate less than this (0.47 for |IG| on the demo,
# >= 0.75 for every method on the digits CNN)
SPECKLE_CORRELATION = 0.6


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


def heatmap_limits(saliency: np.ndarray, signed: bool, percentile: float = DISPLAY_PERCENTILE) -> tuple[float, float]:
    """Colour limits: symmetric around 0 for signed maps, [min, percentile] otherwise."""
    if signed:
        m = float(np.percentile(np.abs(saliency), percentile)) or 1.0
        return -m, m
    lo, hi = float(saliency.min()), float(np.percentile(saliency, percentile))
    return lo, hi if hi > lo else lo + 1.0


def _is_signed(sal: np.ndarray) -> bool:
    return bool(sal.min() < -0.05 * max(abs(float(sal.max())), 1e-12))


def sign_flip_rate(sal: np.ndarray) -> float:
    """Share of horizontally or vertically neighbouring pixel pairs, both above the median ``|value|``, whose signs
    differ: ~0.5 for sign noise, ~0 for maps whose signs form regions."""
    thr = float(np.median(np.abs(sal)))
    flips, pairs = 0, 0
    for a, b in ((sal[:, 1:], sal[:, :-1]), (sal[1:], sal[:-1])):
        both = (np.abs(a) > thr) & (np.abs(b) > thr)
        flips += int((both & (np.sign(a) != np.sign(b))).sum())
        pairs += int(both.sum())
    return flips / pairs if pairs else 0.0


def neighbour_correlation(m: np.ndarray, lag: int = 1) -> float:
    """Pearson correlation of the map with itself shifted by ``lag`` pixels (mean of both axes); 1.0 for a constant
    map. Smooth maps score near 1, pixel noise near 0."""
    values = []
    for a, b in ((m[:, lag:], m[:, :-lag]), (m[lag:], m[:-lag])):
        a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
        if a.size < 2 or a.std() == 0 or b.std() == 0:
            values.append(1.0)
        else:
            values.append(float(np.corrcoef(a, b)[0, 1]))
    return float(np.mean(values))


@dataclass(frozen=True)
class DisplayMap:
    """What an overlay draws: ``values`` (H, W), its colour limits, whether it is signed, and a label saying what it
    is (for the colorbar) and a short form (for the panel title)."""

    values: np.ndarray
    vmin: float
    vmax: float
    signed: bool
    label: str
    short: str
    smoothing_sigma: float = 0.0


def display_map(saliency: torch.Tensor | np.ndarray, attribution: torch.Tensor | np.ndarray | None = None, *,
                mode: str = "auto", percentile: float = DISPLAY_PERCENTILE,
                smoothing_sigma: float | None = None) -> DisplayMap:
    """Choose how to show a saliency map (see the module docstring); the inputs are not modified.

    Args:
        saliency: (H, W) map. attribution: the raw attribution (C, H, W) of the same image, used for the magnitude
            ``sum_c |a_c|`` when it has the map's spatial size (else ``|saliency|`` is used).
        mode: ``"auto"``, ``"signed"`` (diverging, centred on 0), ``"magnitude"`` or ``"raw"`` (the map as it is).
        percentile: the colour scale is clipped at this percentile (of ``|values|`` for signed maps).
        smoothing_sigma: Gaussian sigma in pixels for display; ``None`` = side / 112 when the map is speckled.
    """
    sal = saliency.detach().cpu().numpy() if isinstance(saliency, torch.Tensor) else np.asarray(saliency)
    sal = sal.astype(np.float64)
    if sal.ndim != 2:
        raise ValueError(f"saliency must be an (H, W) map, got shape {sal.shape}")
    if mode not in ("auto", "signed", "magnitude", "raw"):
        raise ValueError(f"mode must be 'auto', 'signed', 'magnitude' or 'raw', got {mode!r}")
    signed_input = _is_signed(sal)
    speckled = (sign_flip_rate(sal) > SPECKLE_FLIP_RATE) if signed_input else \
        (neighbour_correlation(sal) < SPECKLE_CORRELATION)
    if mode == "auto":
        mode = ("magnitude" if speckled else "signed") if signed_input else "raw"
    why = ""
    if mode == "magnitude":
        attr = None
        if attribution is not None:
            attr = attribution.detach().cpu().numpy() if isinstance(attribution, torch.Tensor) else np.asarray(attribution)
        if attr is not None and attr.ndim == 3 and attr.shape[1:] == sal.shape:
            values, what = np.abs(attr.astype(np.float64)).sum(0), "|attribution| (sum over channels of |a|)"
        else:
            values, what = np.abs(sal), "|attribution|"
        if signed_input and speckled:
            why = "; sign dropped: it alternates pixel to pixel"
    else:
        values, what = sal, "attribution"
    sigma = 0.0
    if smoothing_sigma is None:
        if speckled and mode != "signed":
            sigma = max(sal.shape) / 112.0
            sigma = sigma if sigma >= 0.5 else 0.0
    else:
        sigma = float(smoothing_sigma)
    if sigma > 0:
        from scipy.ndimage import gaussian_filter

        values = gaussian_filter(values, sigma)
    signed = mode == "signed" or (mode == "raw" and _is_signed(values))
    vmin, vmax = heatmap_limits(values, signed, percentile)
    pct = f"{percentile:g}th percentile"
    if signed:
        label = f"{what} (signed: red for the output, blue against it), clipped at ±{pct} of |a|"
        short = "signed attribution"
    else:
        label = f"{what}, clipped at the {pct}"
        short = what.split(" (")[0]
    if sigma > 0:
        label += f", smoothed (σ = {sigma:.1f} px) for display"
        short += ", smoothed"
    return DisplayMap(values, vmin, vmax, signed, label + why, short, sigma)


def _overlay_rgba(d: DisplayMap, cmap_name: str, alpha: float) -> np.ndarray:
    """The map as RGBA whose opacity grows with |value| up to ``alpha``: weak attribution leaves the photo visible."""
    import matplotlib

    cmap = matplotlib.colormaps[cmap_name]
    if d.signed:
        norm = np.clip((d.values - d.vmin) / (d.vmax - d.vmin), 0.0, 1.0)
        strength = np.clip(np.abs(d.values) / max(d.vmax, 1e-12), 0.0, 1.0)
    else:
        norm = np.clip((d.values - d.vmin) / (d.vmax - d.vmin), 0.0, 1.0)
        strength = norm
    rgba = cmap(norm)
    rgba[..., 3] = alpha * (0.15 + 0.85 * strength)
    return rgba


def save_overlay(image: torch.Tensor | np.ndarray, saliency: torch.Tensor | np.ndarray, path: str | Path, *,
                 title: str = "", method: str = "", alpha: float = 0.9, dpi: int = 110,
                 attribution: torch.Tensor | np.ndarray | None = None, mode: str = "auto") -> Path:
    """Write a PNG with the image and the saliency overlay side by side, a colorbar and a title.

    Args:
        image: (C, H, W) tensor in [0, 1] or (H, W, C) array.
        saliency: (H, W) map. attribution: the raw (C, H, W) attribution, for the magnitude display of speckled
            signed maps (see :func:`display_map`, which also explains ``mode``).
        alpha: opacity of the strongest attribution; weaker values fade to 15 % of it, so the photo shows through.
    Returns the path written (atomically: a crash never leaves half a file).
    """
    _agg()
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    img = to_display_image(image)
    sal = saliency.detach().cpu().numpy() if isinstance(saliency, torch.Tensor) else np.asarray(saliency)
    if sal.shape != img.shape[:2]:
        raise ValueError(f"saliency must have shape (H, W) = {img.shape[:2]}, got {sal.shape}")
    d = display_map(sal, attribution, mode=mode)
    cmap = "bwr" if d.signed else "inferno"
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 4.5), gridspec_kw={"width_ratios": [1, 1.12]})
    axes[0].imshow(img)
    axes[0].set_title("input")
    axes[1].imshow(img.mean(-1), cmap="gray", vmin=0, vmax=1)
    axes[1].imshow(_overlay_rgba(d, cmap, alpha))
    axes[1].set_title(f"{method}: {d.short}" if method else d.short, fontsize=10)
    for ax in axes:
        ax.axis("off")
    cbar = fig.colorbar(ScalarMappable(Normalize(d.vmin, d.vmax), cmap), ax=axes[1], fraction=0.046, pad=0.03)
    cbar.set_label(_wrap(d.label, 48), fontsize=8)
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


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))
