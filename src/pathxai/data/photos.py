"""Photos with object masks: the bundled scikit-image photos and composites (an object pasted on another photo).

The objects are the cat of ``chelsea`` (ImageNet 285 "Egyptian cat"), the cup of ``coffee`` (967 "espresso") and
the rocket of ``rocket`` (657 "missile"). Their masks are hand-specified polygons / ellipses in each photo's own
pixel coordinates (drawn over a gridded plot of the photo and checked by eye; see ``_OBJECTS``) -- a segmentation
algorithm was not used because the photos are few and fixed, and a hand-drawn outline is easier to audit than a
tuned GrabCut/threshold.

A *composite* is one of those objects, cut out with its mask, pasted at a seeded random position and scale onto
another scikit-image photo (a random square crop of it) that does not contain the object's class. The paste is a
hard 0/1 mask, so the object mask and box of a composite are exact. Candidate ``i`` under ``seed`` is a fixed
function of (i, seed).

This module knows no model: the evaluation suite ``photos`` (:mod:`pathxai.suites`) decides which composites to
keep by asking its model.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import numpy as np

from ..core.seeding import numpy_rng
from .ground_truth import box_of as _box_of, ellipse_mask as _ellipse_mask, polygon_mask as _polygon_mask


def _resize(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from skimage.transform import resize

    if arr.shape[:2] == tuple(size):
        return arr.astype(np.float32)
    return resize(arr, size, order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)


def _as_rgb_float(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    arr = arr[..., :3]
    return arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)


PHOTO_SIZE = 224


@dataclass(frozen=True)
class _PhotoObject:
    key: str              # short name used in item names
    photo: str            # skimage.data function
    label: int
    mask_fn: Callable[[tuple[int, int]], np.ndarray]
    long_side: tuple[float, float]   # pasted size: the object's longer side as a fraction of 224
    exclude: tuple[str, ...]         # backgrounds that contain the class


def _cat_mask(shape: tuple[int, int]) -> np.ndarray:
    # chelsea (300 x 451): the cat's head and chest fill the frame; the outline follows the left ear, the top edge,
    # the right ear and the right cheek; the blurred pink/grey background at the left top and the right is excluded.
    return _polygon_mask(shape, [(0, 300), (0, 125), (15, 110), (25, 60), (35, 10), (40, 0), (405, 0), (395, 30),
                                 (385, 70), (385, 110), (375, 140), (370, 180), (360, 220), (350, 255), (340, 285),
                                 (335, 300)])


def _cup_mask(shape: tuple[int, int]) -> np.ndarray:
    # coffee (400 x 600): saucer (ellipse), cup rim (ellipse; the cup body lies inside the saucer) and the spoon
    # handle that sticks out above the saucer.
    return (_ellipse_mask(shape, 278, 232, 203, 158) | _ellipse_mask(shape, 291, 113, 119, 97)
            | _polygon_mask(shape, [(395, 70), (404, 64), (425, 70), (420, 110), (395, 230), (375, 240),
                                    (370, 230), (385, 120)]))


def _rocket_mask(shape: tuple[int, int]) -> np.ndarray:
    # rocket (427 x 640): the rocket with its nose cone, the strongback along it and the launch mount at its base
    # (x 290-355 from y 350); the lightning towers and the flood lights are excluded.
    return _polygon_mask(shape, [(323, 127), (330, 131), (334, 142), (336, 160), (336, 178), (339, 182), (339, 350),
                                 (355, 368), (355, 409), (290, 409), (290, 368), (308, 350), (308, 182), (311, 178),
                                 (311, 160), (313, 142), (317, 131)])


_OBJECTS = (
    _PhotoObject("cat", "chelsea", 285, _cat_mask, (0.45, 0.75), ("chelsea", "cat")),
    _PhotoObject("cup", "coffee", 967, _cup_mask, (0.45, 0.75), ("coffee",)),
    _PhotoObject("rocket", "rocket", 657, _rocket_mask, (0.65, 0.95), ("rocket", "astronaut")),
)

# scikit-image photos bundled with the wheel (no download); grey ones are repeated over three channels.
_BACKGROUNDS = ("astronaut", "camera", "brick", "grass", "gravel", "moon", "coins", "hubble_deep_field",
                "immunohistochemistry", "coffee", "rocket", "chelsea")


@lru_cache(maxsize=None)
def _skimage_photo(name: str) -> np.ndarray:
    from skimage import data as skdata

    arr = _as_rgb_float(getattr(skdata, name)())
    arr.setflags(write=False)
    return arr


@lru_cache(maxsize=None)
def _object_cutout(key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(photo float RGB, full-size mask, the mask's box crop as (y0, y1, x0, x1))."""
    obj = next(o for o in _OBJECTS if o.key == key)
    photo = _skimage_photo(obj.photo)
    mask = obj.mask_fn(photo.shape[:2])
    x0, y0, x1, y1 = _box_of(mask)
    return photo, mask, np.array([y0, y1, x0, x1])


def _center_crop_224(image: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    h, w = image.shape[:2]
    s = min(h, w)
    sl = (slice((h - s) // 2, (h - s) // 2 + s), slice((w - s) // 2, (w - s) // 2 + s))
    img = _resize(image[sl], (PHOTO_SIZE, PHOTO_SIZE))
    if mask is None:
        return img, None
    return img, _resize(mask[sl].astype(np.float32), (PHOTO_SIZE, PHOTO_SIZE)) >= 0.5


def _composite(index: int, seed: int, long_side: tuple[float, float] | None = None) -> dict[str, Any]:
    """Candidate composite ``index``: object ``index % 3`` pasted on a seeded background crop."""
    rng = numpy_rng(seed, "photos-composite", index)
    obj = _OBJECTS[index % len(_OBJECTS)]
    choices = [b for b in _BACKGROUNDS if b not in obj.exclude]
    bg_name = choices[int(rng.integers(len(choices)))]
    bg = _skimage_photo(bg_name)
    # background: a random square crop covering 60-100 % of the shorter side, resized to 224 x 224
    h, w = bg.shape[:2]
    side = int(round(min(h, w) * rng.uniform(0.6, 1.0)))
    by, bx = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    canvas = _resize(bg[by:by + side, bx:bx + side], (PHOTO_SIZE, PHOTO_SIZE))
    # object: its mask's bounding-box crop, scaled so that its longer side is a random fraction of 224
    photo, mask, (y0, y1, x0, x1) = _object_cutout(obj.key)
    crop, crop_mask = photo[y0:y1, x0:x1], mask[y0:y1, x0:x1].astype(np.float32)
    frac = rng.uniform(*(obj.long_side if long_side is None else long_side))
    scale = frac * PHOTO_SIZE / max(crop.shape[:2])
    oh, ow = max(1, int(round(crop.shape[0] * scale))), max(1, int(round(crop.shape[1] * scale)))
    obj_img = _resize(crop, (oh, ow))
    alpha = _resize(crop_mask, (oh, ow)) >= 0.5          # hard paste: the ground truth is exact
    py, px_ = int(rng.integers(0, PHOTO_SIZE - oh + 1)), int(rng.integers(0, PHOTO_SIZE - ow + 1))
    full = np.zeros((PHOTO_SIZE, PHOTO_SIZE), dtype=bool)
    full[py:py + oh, px_:px_ + ow] = alpha
    region = canvas[py:py + oh, px_:px_ + ow]
    region[alpha] = obj_img[alpha]
    return {"name": f"composite-{index:02d}-{obj.key}-on-{bg_name}", "image": canvas, "mask": full,
            "label": obj.label,
            "meta": {"kind": "composite", "object": obj.key, "source": obj.photo, "background": bg_name,
                     "background_crop": (bx, by, bx + side, by + side), "scale": float(scale),
                     "object_fraction": float(frac), "candidate": index}}


def _photo_item(obj: _PhotoObject) -> dict[str, Any]:
    photo, mask, _ = _object_cutout(obj.key)
    img, m = _center_crop_224(photo, mask)
    return {"name": f"photo-{obj.photo}", "image": img, "mask": m, "label": obj.label,
            "meta": {"kind": "photo", "object": obj.key, "source": obj.photo}}


def photo_item(index: int) -> dict[str, Any]:
    """Photo ``index`` (0 chelsea, 1 coffee, 2 rocket) centre-cropped to 224 x 224, with its object's mask.

    Returns ``name``, ``image`` (224, 224, 3) float32 in [0, 1], ``mask`` (224, 224) bool, ``label`` (ImageNet
    index) and ``meta``.
    """
    return _photo_item(_OBJECTS[index])


def composite(index: int, seed: int, long_side: tuple[float, float] | None = None) -> dict[str, Any]:
    """Candidate composite ``index`` under ``seed``: object ``index % 3`` pasted on a seeded background crop.

    Args:
        long_side: (low, high): the pasted object's longer side as a fraction of 224, drawn uniformly in the range
            (e.g. ``(0.18, 0.25)``: 40-56 px, small objects for a pointing test); ``None``: the object's own range
            (0.45-0.75, the rocket 0.65-0.95), as in the ``photos`` suite.
    Returns ``name``, ``image`` (224, 224, 3) float32 in [0, 1], ``mask`` (224, 224) bool (exact), ``label`` and
    ``meta`` (object, source, background, background_crop, scale, object_fraction, candidate).
    """
    if long_side is not None:
        lo, hi = (float(v) for v in long_side)
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"long_side must be (low, high) with 0 < low <= high <= 1, got {long_side!r}")
        long_side = (lo, hi)
    return _composite(index, seed, long_side)


N_PHOTO_OBJECTS = len(_OBJECTS)

__all__ = ["N_PHOTO_OBJECTS", "PHOTO_SIZE", "composite", "photo_item"]
