"""The pointing game (Zhang et al., "Top-down neural attention by excitation backprop", ECCV 2016 / IJCV 2018),
with the protocol of TorchRay's benchmark (Fong et al., 2019).

For each sample (an image-class pair) the saliency map's maximum is the predicted point p = (row, col); when several
pixels share the maximum the first one in row-major order is taken (``torch.argmax`` of the flattened map). The
ground truth is a boolean object mask (N, H, W) or boxes rasterised to one. With d = Euclidean distance from p to the
nearest object pixel (pixel centres, so d = 0 when p lies on the object):

    hit  <=>  d == 0  or  d < tolerance            (tolerance = 15 px by default)

which is TorchRay's acceptance region ``(v - p_v)**2 + (u - p_u)**2 < tolerance**2`` intersected with the mask,
plus the point-on-object case so that ``tolerance=0`` means "inside the object" (TorchRay would reject everything).
So with tolerance 15 a point at distance 14.9 px hits and one at exactly 15 px or 15.1 px misses.

Boxes are ``(x0, y0, x1, y1)`` in pixel indices, x along the width (columns), y along the height (rows),
inclusive-exclusive: the box covers pixels with ``x0 <= col < x1`` and ``y0 <= row < y1`` (0-based; clipped to the
image). Several boxes per image are united. The accuracy is computed per class (``classes``: one class id per
sample) and then averaged over the classes that occur; ``difficult`` (one flag per sample, e.g. TorchRay's EBP
"difficult" image-class pairs) gives the same statistics on that subset. TorchRay averages over all classes of the
data set, counting a class with no samples as 0 accuracy; the two agree whenever every class occurs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ._common import MetricInfo, MetricResult, as_saliency, register_metric


@dataclass(kw_only=True)
class PointingGameResult(MetricResult):
    """Result of :func:`pointing_game`.

    Attributes:
        score: (N,) 1.0 for a hit, 0.0 for a miss.
        hits: (N,) bool.
        points: (N, 2) predicted point (row, col) per sample.
        distances: (N,) Euclidean distance (px) from the point to the nearest object pixel.
        accuracy: mean over classes of the per-class hit rate (all samples).
        per_class: ``{class_id: hit rate}``.
        accuracy_difficult / per_class_difficult: the same on the ``difficult`` subset (NaN / empty without flags or
            without difficult samples).
        tolerance: as passed.
    """

    hits: torch.Tensor
    points: torch.Tensor
    distances: torch.Tensor
    accuracy: float
    per_class: dict[int, float]
    accuracy_difficult: float
    per_class_difficult: dict[int, float]
    tolerance: float


def _is_box(value: Any) -> bool:
    arr = np.asarray(value) if not isinstance(value, torch.Tensor) else value.detach().cpu().numpy()
    return arr.dtype != bool and arr.ndim in (1, 2) and arr.shape[-1] == 4 and arr.size > 0


def boxes_to_mask(boxes: Any, height: int, width: int, name: str = "boxes") -> torch.Tensor:
    """(H, W) bool mask covering the union of ``boxes``: one (x0, y0, x1, y1) box or a (K, 4) collection of them.

    Coordinates are 0-based pixel indices, inclusive-exclusive (``x0 <= col < x1``, ``y0 <= row < y1``).
    """
    arr = boxes.detach().cpu().numpy() if isinstance(boxes, torch.Tensor) else np.asarray(boxes, dtype=float)
    if arr.dtype == object or arr.ndim not in (1, 2) or arr.shape[-1] != 4:
        raise ValueError(f"{name} must be one box (x0, y0, x1, y1) or a (K, 4) array of boxes, "
                         f"got shape {tuple(arr.shape)}")
    arr = arr.reshape(-1, 4).astype(float)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN/Inf coordinates")
    rows = np.arange(height)[:, None]
    cols = np.arange(width)[None, :]
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in arr:
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"{name} has an empty box ({x0:g}, {y0:g}, {x1:g}, {y1:g}): expected x0 < x1 and "
                             "y0 < y1 (boxes are (x0, y0, x1, y1), inclusive-exclusive)")
        mask |= (cols >= x0) & (cols < x1) & (rows >= y0) & (rows < y1)
    return torch.from_numpy(mask)


def _as_masks(boxes_or_masks: Any, n: int, h: int, w: int) -> torch.Tensor:
    name = "boxes_or_masks"
    if isinstance(boxes_or_masks, np.ndarray):
        boxes_or_masks = torch.from_numpy(boxes_or_masks)
    if isinstance(boxes_or_masks, torch.Tensor):
        t = boxes_or_masks.detach().cpu()
        if t.dtype == torch.bool:
            if t.ndim == 4 and t.shape[1] == 1:
                t = t[:, 0]
            if tuple(t.shape) != (n, h, w):
                raise ValueError(f"{name} as boolean masks must have shape (N, H, W) = ({n}, {h}, {w}) to match "
                                 f"the saliency, got {tuple(t.shape)}")
            return t
        if t.ndim == 2 and tuple(t.shape) == (n, 4):
            return torch.stack([boxes_to_mask(t[i], h, w, f"{name}[{i}]") for i in range(n)])
        if t.ndim == 3 and t.shape[0] == n and t.shape[2] == 4:
            return torch.stack([boxes_to_mask(t[i], h, w, f"{name}[{i}]") for i in range(n)])
        raise ValueError(f"{name} must be boolean masks (N, H, W) = ({n}, {h}, {w}), boxes (N, 4) or (N, K, 4) "
                         f"with N = {n}, or a list of N per-image entries; got a {t.dtype} tensor of shape "
                         f"{tuple(t.shape)}")
    if isinstance(boxes_or_masks, (list, tuple)):
        if len(boxes_or_masks) != n:
            raise ValueError(f"{name} must have one entry per saliency map (N = {n}), got {len(boxes_or_masks)}")
        masks = []
        for i, entry in enumerate(boxes_or_masks):
            if isinstance(entry, np.ndarray):
                entry = torch.from_numpy(entry)
            if isinstance(entry, torch.Tensor) and entry.dtype == torch.bool:
                if tuple(entry.shape) != (h, w):
                    raise ValueError(f"{name}[{i}] as a boolean mask must have shape (H, W) = ({h}, {w}), "
                                     f"got {tuple(entry.shape)}")
                masks.append(entry.detach().cpu())
            elif _is_box(entry):
                masks.append(boxes_to_mask(entry, h, w, f"{name}[{i}]"))
            elif isinstance(entry, (list, tuple)) and len(entry) > 0 and all(_is_box(e) for e in entry):
                stacked = np.concatenate([(e.detach().cpu().numpy() if isinstance(e, torch.Tensor)
                                           else np.asarray(e, dtype=float)).reshape(-1, 4) for e in entry])
                masks.append(boxes_to_mask(stacked, h, w, f"{name}[{i}]"))
            else:
                raise ValueError(f"{name}[{i}] must be a boolean (H, W) = ({h}, {w}) mask, a box (x0, y0, x1, y1) "
                                 f"or a list of boxes; got {type(entry).__name__} "
                                 f"{tuple(np.shape(entry)) if not isinstance(entry, (list, tuple)) else ''}".rstrip())
        return torch.stack(masks)
    raise TypeError(f"{name} must be a tensor of masks or boxes or a list of per-image entries, "
                    f"got {type(boxes_or_masks).__name__}")


def _per_sample_vector(value: Any, n: int, name: str, dtype: torch.dtype) -> torch.Tensor | None:
    if value is None:
        return None
    t = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value).detach().cpu()
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"{name} must have shape (N,) = ({n},) (one entry per saliency map), got {tuple(t.shape)}")
    if dtype == torch.bool:
        if t.dtype != torch.bool and not (not torch.is_floating_point(t) and set(t.unique().tolist()) <= {0, 1}):
            raise TypeError(f"{name} must hold booleans (one flag per sample), got dtype {t.dtype}")
        return t.to(torch.bool)
    if torch.is_floating_point(t) or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class ids, got dtype {t.dtype}")
    return t.to(torch.long)


def _class_accuracy(hits: torch.Tensor, classes: torch.Tensor) -> tuple[float, dict[int, float]]:
    if hits.numel() == 0:
        return float("nan"), {}
    per_class = {int(c): float(hits[classes == c].double().mean()) for c in classes.unique().tolist()}
    return float(np.mean(list(per_class.values()))), per_class


@register_metric(MetricInfo(
    name="pointing_game", category="localisation", score_direction="higher", needs_model=False,
    input="saliency (N, H, W) + object masks or boxes", score_range="{0, 1} per sample; accuracy in [0, 1]",
    reference="Zhang et al., Excitation backprop, ECCV 2016; TorchRay benchmark protocol (Fong et al., ICCV 2019)",
    description="Hit when the saliency maximum lies on (or within `tolerance` px of) the object."))
def pointing_game(saliency: Any, boxes_or_masks: Any, *, tolerance: float = 15, classes: Sequence[int] | None = None,
                  difficult: Sequence[bool] | None = None) -> PointingGameResult:
    """The pointing game: does the saliency maximum land on the object?

    Args:
        saliency: (N, H, W) or (N, 1, H, W) maps (or an Explanation: its ``.saliency()``).
        boxes_or_masks: boolean masks (N, H, W); boxes (N, 4) or (N, K, 4) as (x0, y0, x1, y1), inclusive-exclusive
            pixel indices; or a list of N entries, each a boolean (H, W) mask, one box or a list of boxes.
        tolerance: pixels; hit when the distance from the maximum to the object is 0 or < ``tolerance``.
        classes: (N,) class id per sample for the per-class mean (default: one class).
        difficult: (N,) flags marking the "difficult" subset (default: none).
    Returns:
        :class:`PointingGameResult` (``score`` (N,) is 1 for a hit, 0 for a miss; ``accuracy`` the class mean).
    """
    saliency = as_saliency(saliency)
    if not isinstance(saliency, torch.Tensor):
        raise TypeError(f"saliency must be a torch.Tensor of shape (N, H, W), got {type(saliency).__name__}")
    if saliency.ndim == 4 and saliency.shape[1] == 1:
        saliency = saliency[:, 0]
    if saliency.ndim != 3 or saliency.shape[0] == 0 or saliency.numel() == 0:
        raise ValueError(f"saliency must have shape (N, H, W) with N >= 1, got {tuple(saliency.shape)}")
    if not torch.is_floating_point(saliency):
        raise TypeError(f"saliency must be floating point, got dtype {saliency.dtype}")
    if not torch.isfinite(saliency).all():
        raise ValueError(f"saliency contains NaN/Inf values (shape {tuple(saliency.shape)})")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not np.isfinite(tolerance) \
            or tolerance < 0:
        raise ValueError(f"tolerance must be a number of pixels >= 0, got {tolerance!r}")
    saliency = saliency.detach().cpu()
    n, h, w = saliency.shape
    masks = _as_masks(boxes_or_masks, n, h, w)
    empty = (~masks.flatten(1).any(1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"boxes_or_masks: the object of sample(s) {empty[:10]} covers no pixel of the "
                         f"({h}, {w}) map; the pointing game needs an object in every sample")
    cls = _per_sample_vector(classes, n, "classes", torch.long)
    cls = torch.zeros(n, dtype=torch.long) if cls is None else cls
    diff = _per_sample_vector(difficult, n, "difficult", torch.bool)

    flat_idx = saliency.reshape(n, -1).argmax(dim=1)  # first maximum in row-major order
    points = torch.stack([flat_idx // w, flat_idx % w], dim=1)
    rows = torch.arange(h, dtype=torch.float64).view(1, h, 1)
    cols = torch.arange(w, dtype=torch.float64).view(1, 1, w)
    d2 = (rows - points[:, 0].double().view(n, 1, 1)) ** 2 + (cols - points[:, 1].double().view(n, 1, 1)) ** 2
    d2 = torch.where(masks, d2, torch.full_like(d2, float("inf")))
    d2min = d2.flatten(1).min(dim=1).values
    hits = (d2min == 0) | (d2min < float(tolerance) ** 2)
    accuracy, per_class = _class_accuracy(hits, cls)
    if diff is not None:
        acc_d, per_class_d = _class_accuracy(hits[diff], cls[diff])
    else:
        acc_d, per_class_d = float("nan"), {}
    meta = {"metric": "pointing_game", "tolerance": tolerance, "n_classes": len(per_class),
            "n_difficult": int(diff.sum()) if diff is not None else 0}
    return PointingGameResult(score=hits.double(), curve=None, meta=meta, hits=hits, points=points,
                              distances=d2min.sqrt(), accuracy=accuracy, per_class=per_class,
                              accuracy_difficult=acc_d, per_class_difficult=per_class_d, tolerance=float(tolerance))
