"""Digits among clutter: one digit at a seeded random place on a 64 x 64 canvas with distractor strokes.

One digit (8 x 8 sklearn digit upsampled bilinearly to 20-28 px) at a seeded random position on a 64 x 64 canvas
with 3-6 distractors at similar intensity and stroke width: line segments, bent strokes, arcs and *fragments* (one
side of a straight cut through another random digit, of a class independent of the label). The ground truth of a
canvas is the digit's ink (pixels > 0.2; the faint fringe of the upsampled digit outside its box is not drawn) and
its bounding box; distractors never touch the box dilated by one pixel, so everything inside the box is the digit
and the digit is nowhere else. A canvas is ``difficult`` when a distractor comes as close as allowed (a one-pixel
gap to the box).

This module only draws canvases and their ground truth: the evaluation suite ``digits-clutter`` (which pairs them
with the model ``digits-clutter-cnn``) lives in :mod:`pathxai.suites`, and that model is trained on the canvases of
the *train* split drawn here (:mod:`pathxai.models.clutter`).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core.seeding import numpy_rng
from .digits import digits
from .ground_truth import INK_THRESHOLD, box_of as _box_of

CLUTTER_SIZE = 64

@lru_cache(maxsize=4)
def _raw_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The sklearn 8 x 8 digits of a split (same split as :func:`pathxai.data.digits`) as (M, 8, 8) in [0, 1]."""
    x, y = digits(split, size=8)   # bilinear 8 -> 8 is the identity
    arr = x[:, 0].numpy().copy()
    arr.setflags(write=False)
    return arr, y.numpy()


_DIGIT_SIZES = (20, 29)   # digits are drawn at 20..28 px


@lru_cache(maxsize=2 * (_DIGIT_SIZES[1] - _DIGIT_SIZES[0]))
def _sized_digits(split: str, size: int) -> np.ndarray:
    """All digits of ``split`` upsampled (bilinear, like :func:`pathxai.data.digits`) to size x size."""
    raw, _ = _raw_digits(split)
    t = torch.from_numpy(raw.copy())[:, None]
    arr = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[:, 0].clamp(0, 1).numpy()
    arr.setflags(write=False)
    return arr


def _soft_profile(d: np.ndarray, width: float, amp: float) -> np.ndarray:
    # flat core of the given width, then a 2-px linear ramp: similar to the bilinear-upsampled digits' strokes
    return (amp * np.clip(1.0 - np.maximum(d - width / 2, 0) / 2.0, 0, 1)).astype(np.float32)


def _grid(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ys = np.arange(lo[0], hi[0], dtype=np.float32)[:, None]
    xs = np.arange(lo[1], hi[1], dtype=np.float32)[None, :]
    return ys, xs


def _polyline_patch(points: np.ndarray, width: float, amp: float) -> np.ndarray:
    """Render a polyline (k, 2) of (y, x) points with a soft profile into a tight patch."""
    pad = width / 2 + 2.5
    lo = np.floor(points.min(0) - pad).astype(int)
    hi = np.ceil(points.max(0) + pad).astype(int)
    ys, xs = _grid(lo, hi)
    d = np.full((len(ys), xs.shape[1]), np.inf, dtype=np.float32)
    for a, b in zip(points[:-1], points[1:]):
        ab = b - a
        t = np.clip(((ys - a[0]) * ab[0] + (xs - a[1]) * ab[1]) / max(float(ab @ ab), 1e-6), 0, 1)
        np.minimum(d, np.hypot(a[0] + t * ab[0] - ys, a[1] + t * ab[1] - xs), out=d)
    return _soft_profile(d, width, amp)


def _arc_patch(radius: float, start: float, span: float, width: float, amp: float) -> np.ndarray:
    """An arc of a circle (centre at the patch centre) from angle ``start`` over ``span`` (< 2 pi)."""
    pad = radius + width / 2 + 2.5
    lo, hi = np.floor(np.array([-pad, -pad])).astype(int), np.ceil(np.array([pad, pad])).astype(int)
    ys, xs = _grid(lo, hi)
    r = np.hypot(ys, xs)
    theta = np.mod(np.arctan2(ys, xs) - start, 2 * np.pi)
    on_arc = np.abs(r - radius)
    ends = [radius * np.array([np.sin(start + a), np.cos(start + a)]) for a in (0.0, span)]
    to_ends = np.minimum(*[np.hypot(ys - e[0], xs - e[1]) for e in ends])
    d = np.where(theta <= span, on_arc, to_ends)
    return _soft_profile(d, width, amp)


def _distractor(rng: np.random.Generator, split: str) -> np.ndarray:
    """One distractor patch: a segment, a bent stroke, an arc or a fragment of a digit."""
    u = rng.random()
    amp = rng.uniform(0.7, 1.0)
    width = rng.uniform(1.5, 3.5)
    if u < 0.25:   # straight segment
        length, angle = rng.uniform(8, 22), rng.uniform(0, np.pi)
        d = np.array([np.sin(angle), np.cos(angle)]) * length / 2
        return _polyline_patch(np.stack([-d, d]), width, amp)
    if u < 0.45:   # bent stroke (two segments meeting at 45-135 degrees)
        l1, l2 = rng.uniform(6, 14, size=2)
        a1 = rng.uniform(0, 2 * np.pi)
        a2 = a1 + rng.choice([-1, 1]) * rng.uniform(np.pi / 4, 3 * np.pi / 4)
        pts = np.stack([l1 * np.array([np.sin(a1), np.cos(a1)]), np.zeros(2), l2 * np.array([np.sin(a2), np.cos(a2)])])
        return _polyline_patch(pts, width, amp)
    if u < 0.7:    # open arc: never a closed loop (which would read as a 0)
        return _arc_patch(rng.uniform(4, 10), rng.uniform(0, 2 * np.pi), rng.uniform(np.pi / 3, 1.3 * np.pi),
                          width, amp)
    # fragment: at most half of another digit, cut by a soft straight edge at a random angle, at or beyond the
    # centre (its class is drawn independently of the canvas label, so it carries no information about the label)
    pool = _sized_digits(split, int(rng.integers(*_DIGIT_SIZES)))
    src = pool[int(rng.integers(len(pool)))]
    s = src.shape[0]
    angle, offset = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.15) * s
    ys, xs = _grid(np.zeros(2, int), np.array([s, s]))
    proj = (ys + 0.5 - s / 2) * np.sin(angle) + (xs + 0.5 - s / 2) * np.cos(angle)
    frag = src * np.clip((proj - offset) / 2.0, 0, 1) * (amp / max(float(src.max()), 1e-6))
    rows, cols = np.nonzero(frag > 0.05)
    if len(rows) == 0:
        return np.zeros((1, 1), dtype=np.float32)
    return frag[rows.min():rows.max() + 1, cols.min():cols.max() + 1].astype(np.float32)


def render_clutter(split: str, index: int, rng: np.random.Generator, with_digit: bool = True,
                   size: int = CLUTTER_SIZE) -> dict[str, Any]:
    """One clutter canvas: digit ``index`` of ``split`` scaled to 20-28 px at a random place plus 3-6 distractors.

    Fragments are cut from digits of the same split. With ``with_digit=False`` the same canvas is drawn without the
    digit (all random draws are the same). Returns ``image`` (size, size) float32, ``mask`` (the digit's ink
    > 0.2, also when it is not drawn), ``box`` (the mask's bounding box), ``difficult`` and ``meta``.
    """
    s = int(rng.integers(*_DIGIT_SIZES))
    dy, dx = int(rng.integers(0, size - s + 1)), int(rng.integers(0, size - s + 1))
    digit = _sized_digits(split, s)[index]
    canvas = np.zeros((size, size), dtype=np.float32)
    mask = np.zeros((size, size), dtype=bool)
    mask[dy:dy + s, dx:dx + s] = digit > INK_THRESHOLD
    x0, y0, x1, y1 = _box_of(mask)
    # the digit's faint fringe (<= 0.2) outside its ink box is not drawn: all the digit adds lies in its box
    digit = np.zeros_like(digit)
    digit[y0 - dy:y1 - dy, x0 - dx:x1 - dx] = _sized_digits(split, s)[index][y0 - dy:y1 - dy, x0 - dx:x1 - dx]
    forbidden = np.zeros((size, size), dtype=bool)
    forbidden[max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1] = True
    near = np.zeros((size, size), dtype=bool)
    near[max(y0 - 2, 0):y1 + 2, max(x0 - 2, 0):x1 + 2] = True
    n_distractors = int(rng.integers(3, 7))
    placed = 0
    difficult = False
    for _ in range(n_distractors):
        patch = _distractor(rng, split)
        ph, pw = patch.shape
        if ph > size or pw > size:
            continue
        ink = patch > 0.05
        for _try in range(20):
            py, px_ = int(rng.integers(0, size - ph + 1)), int(rng.integers(0, size - pw + 1))
            if not (forbidden[py:py + ph, px_:px_ + pw] & ink).any():
                np.maximum(canvas[py:py + ph, px_:px_ + pw], patch, out=canvas[py:py + ph, px_:px_ + pw])
                difficult |= bool((near[py:py + ph, px_:px_ + pw] & ink).any())
                placed += 1
                break
    if with_digit:
        np.maximum(canvas[dy:dy + s, dx:dx + s], digit, out=canvas[dy:dy + s, dx:dx + s])
    return {"image": canvas, "mask": mask, "box": (x0, y0, x1, y1), "difficult": difficult,
            "meta": {"digit_size": s, "digit_offset": (dx, dy), "distractors": placed}}


def clutter_dataset(split: str = "test", n: int | None = None, seed: int = 0, with_digit: bool = True,
                    details: bool = False):
    """Clutter canvases of the digits of ``split``: ``(x (n, 1, 64, 64), labels (n,))`` (+ list of details).

    Canvas ``i`` shows digit ``perm[i % M]`` of the split (``perm`` a seeded permutation, ``M`` the split size;
    default ``n = M``) and uses its own generator ``numpy_rng(seed, "clutter-<split>", i)``, so a canvas does not
    depend on ``n``.
    """
    _, labels = _raw_digits(split)
    m = len(labels)
    n = m if n is None else int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    perm = numpy_rng(seed, f"clutter-{split}-order").permutation(m)
    x = np.zeros((n, 1, CLUTTER_SIZE, CLUTTER_SIZE), dtype=np.float32)
    y = np.zeros(n, dtype=np.int64)
    rows = []
    for i in range(n):
        j = int(perm[i % m])
        r = render_clutter(split, j, numpy_rng(seed, f"clutter-{split}", i), with_digit=with_digit)
        x[i, 0] = r["image"]
        y[i] = labels[j]
        if details:
            r["meta"].update(split=split, digit_index=j, canvas=i)
            rows.append(r)
    out = (torch.from_numpy(x), torch.from_numpy(y))
    return (*out, rows) if details else out



__all__ = ["CLUTTER_SIZE", "INK_THRESHOLD", "clutter_dataset", "render_clutter"]
