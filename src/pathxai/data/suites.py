"""Evaluation suites with known ground truth: images, the class to explain, where the object is, and the model.

    suite = px.data.load_suite("digits-clutter", n_images=32, seed=0)
    model = suite.model()
    x, labels, boxes = suite.batch()          # (n, C, H, W) in [0, 1], (n,) int64, [[(x0, y0, x1, y1)], ...]
    masks = suite.masks()                     # (n, H, W) bool object masks (where known)

Suites (see :func:`list_suites`):

``photos``
    EfficientNet-Lite0 on the bundled scikit-image photos (chelsea -> 285 "Egyptian cat", coffee -> 967 "espresso",
    rocket -> 657 "missile") and on *composites*: one of those objects, cut out with a hand-drawn mask, pasted at a
    seeded random position and scale onto another scikit-image photo (a random square crop of it) that does not
    contain the object's class. The paste is a hard 0/1 mask, so the object mask and box of a composite are exact.
    The object masks are hand-specified polygons / ellipses in each photo's own pixel coordinates (drawn over a
    gridded plot of the photo and checked by eye; see ``_OBJECTS``) -- a segmentation algorithm was not used because
    the photos are few and fixed, and a hand-drawn outline is easier to audit than a tuned GrabCut/threshold.
    *Rule*: a composite is kept only if the model ranks its label in the top 5 (``top_k=5``, an option of
    :func:`load_suite`; ``top_k=None`` keeps every candidate). Candidates are generated in a fixed seeded order and
    the first ones that pass are kept, so a suite is a deterministic function of (seed, n_images, model weights).
    Every item records ``meta["rank"]`` (0 = the model's top-1 is the label) and ``difficult = rank > 0``;
    ``suite.info`` has the top-1 / top-5 accuracy and how many candidates were tried and rejected.
    ``check_model=False`` skips the model (no rule, no ranks, ``difficult`` False): the raw candidates, fast.
    With seed 0 about 60 % of candidates pass: cats and cups mostly do, the rocket mostly does not (the model
    needs a dark sky around it), so the default suite has more cats and cups than rockets.

``digits``
    The digits CNN on the digits test split (28 x 28); labels are the true digits; the box is the bounding box of
    the ink (pixels > 0.2) and the mask is the ink itself. ``difficult`` is False (no meaningful definition).

``digits-clutter``
    One digit (8 x 8 sklearn digit upsampled bilinearly to 20-28 px) at a seeded random position on a 64 x 64
    canvas with 3-6 distractors at similar intensity and stroke width: line segments, bent strokes, arcs and
    *fragments* (one side of a straight cut through another random digit, of a class independent of the label).
    The box is the bounding box of the digit's ink (pixels > 0.2; the faint fringe of the upsampled digit outside
    it is not drawn) and the mask is the ink; distractors never touch the box dilated by one pixel, so everything
    inside the box is the digit and the digit is nowhere else: the ground truth for the pointing game.
    ``difficult`` is True when a distractor comes as close as allowed (a one-pixel gap to the box; about 28 % of
    canvases), where a saliency peak just outside the box is ambiguous. The model is ``digits-clutter-cnn`` (see
    :mod:`pathxai.models.clutter`), trained on canvases from the digits *train* split; the suite uses the *test*
    split. Default 100 canvases; ``with_digit=False`` draws the same canvases without the digit.

Images are ``float32`` tensors in [0, 1]; boxes are ``(x0, y0, x1, y1)`` pixel coordinates, half-open
(``mask[y0:y1, x0:x1]`` is the box region).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..core.seeding import numpy_rng
from ..core.validation import check_seed
from .digits import digits

Box = tuple[int, int, int, int]

INK_THRESHOLD = 0.2
CLUTTER_SIZE = 64


@dataclass(eq=False)
class SuiteItem:
    """One image of a suite.

    Attributes:
        name: a short unique id, e.g. ``"composite-03-cat-on-grass"``.
        image: (C, H, W) float32 tensor in [0, 1].
        label: the class the model should explain. label_name: its human-readable name.
        boxes: object boxes ``(x0, y0, x1, y1)``, half-open pixel coordinates (may be empty when unknown).
        mask: (H, W) bool object mask, or None when unknown.
        difficult: whether the item is hard in the suite-specific sense documented in this module.
        meta: construction details (source, background, scale, model rank, ...).
    """

    name: str
    image: torch.Tensor
    label: int
    label_name: str
    boxes: list[Box]
    mask: torch.Tensor | None = None
    difficult: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class Suite:
    """A deterministic list of :class:`SuiteItem` and the name of the model that goes with it."""

    name: str
    items: list[SuiteItem]
    model_name: str
    seed: int
    description: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> SuiteItem:
        return self.items[i]

    def __iter__(self) -> Iterator[SuiteItem]:
        return iter(self.items)

    def model(self) -> torch.nn.Module:
        """Load the suite's model (``pathxai.models.load(self.model_name)``), in eval mode."""
        from ..models import load

        return load(self.model_name)

    def _indices(self, indices: Sequence[int] | int | slice | None) -> list[int]:
        if indices is None:
            return list(range(len(self.items)))
        if isinstance(indices, slice):
            return list(range(len(self.items)))[indices]
        if isinstance(indices, int):
            return [indices]
        out = [int(i) for i in (indices.tolist() if isinstance(indices, torch.Tensor) else indices)]
        bad = [i for i in out if not -len(self.items) <= i < len(self.items)]
        if bad:
            raise IndexError(f"indices {bad} out of range for suite {self.name!r} of {len(self.items)} items")
        return out

    def batch(self, indices: Sequence[int] | int | slice | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, list[list[Box]]]:
        """``(x (n, C, H, W), labels (n,) int64, boxes)`` for the given items (default: all)."""
        idx = self._indices(indices)
        if not idx:
            raise ValueError("indices must select at least one item, got an empty selection")
        items = [self.items[i] for i in idx]
        x = torch.stack([it.image for it in items])
        labels = torch.tensor([it.label for it in items], dtype=torch.int64)
        return x, labels, [list(it.boxes) for it in items]

    def masks(self, indices: Sequence[int] | int | slice | None = None) -> torch.Tensor:
        """(n, H, W) bool object masks; items without a mask get their boxes filled in instead."""
        out = []
        for i in self._indices(indices):
            it = self.items[i]
            if it.mask is not None:
                out.append(it.mask)
            else:
                m = torch.zeros(it.image.shape[-2:], dtype=torch.bool)
                for x0, y0, x1, y1 in it.boxes:
                    m[y0:y1, x0:x1] = True
                out.append(m)
        return torch.stack(out)

    def save_png(self, index: int, path: str | Path) -> Path:
        """Draw item ``index`` with its boxes and mask outline to a PNG (see :func:`save_item_png`)."""
        return save_item_png(self.items[index], path)


# ---------------------------------------------------------------------------------------------------------------
# helpers


def _box_of(mask: np.ndarray) -> Box:
    """Half-open bounding box ``(x0, y0, x1, y1)`` of the True pixels of an (H, W) mask."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise ValueError("mask is empty: no bounding box")
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _polygon_mask(shape: tuple[int, int], points: Sequence[tuple[float, float]]) -> np.ndarray:
    from skimage.draw import polygon

    pts = np.asarray(points, dtype=float)
    m = np.zeros(shape, dtype=bool)
    rr, cc = polygon(pts[:, 1], pts[:, 0], shape)
    m[rr, cc] = True
    return m


def _ellipse_mask(shape: tuple[int, int], cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    from skimage.draw import ellipse

    m = np.zeros(shape, dtype=bool)
    rr, cc = ellipse(cy, cx, ay, ax, shape)
    m[rr, cc] = True
    return m


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


# ---------------------------------------------------------------------------------------------------------------
# photos


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


def _composite(index: int, seed: int) -> dict[str, Any]:
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
    frac = rng.uniform(*obj.long_side)
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


_RANKS: dict[tuple[int, str], int] = {}   # (seed, item name) -> rank, memoised within a process


def _label_ranks(rows: list[dict], seed: int) -> list[int]:
    """Rank of each row's label among EfficientNet-Lite0's logits (0 = top-1), memoised per (seed, item name)."""
    keys = [(seed, r["name"]) for r in rows]
    todo = [i for i, k in enumerate(keys) if k not in _RANKS]
    if todo:
        from ..models import load

        model = load("efficientnet-lite0")
        x = torch.from_numpy(np.stack([rows[i]["image"].transpose(2, 0, 1) for i in todo])).float().clamp(0, 1)
        labels = torch.tensor([rows[i]["label"] for i in todo])
        with torch.no_grad():
            out = torch.cat([model(x[j:j + 16]) for j in range(0, len(x), 16)])
        target = out[torch.arange(len(todo)), labels]
        for i, k in zip(todo, (out > target[:, None]).sum(1).tolist()):
            _RANKS[keys[i]] = int(k)
    return [_RANKS[k] for k in keys]


def _build_photos(n_images: int | None, seed: int, top_k: int | None = 5, check_model: bool = True,
                  max_candidates: int | None = None) -> tuple[list[dict], dict]:
    n = 12 if n_images is None else n_images
    n_photos = min(len(_OBJECTS), n)
    n_comp = n - n_photos
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
    if not check_model:
        top_k = None
    rows = [_photo_item(o) for o in _OBJECTS[:n_photos]]
    if check_model and rows:
        for r, k in zip(rows, _label_ranks(rows, seed)):
            r["meta"]["rank"] = k
    limit = max_candidates if max_candidates is not None else max(12, 4 * n_comp)
    kept: list[dict] = []
    generated = tried = rejected = 0
    while len(kept) < n_comp and generated < limit:
        block = [_composite(i, seed) for i in range(generated, min(limit, generated + max(4, n_comp - len(kept))))]
        generated += len(block)
        ranks = _label_ranks(block, seed) if check_model else [None] * len(block)
        for r, k in zip(block, ranks):
            r["meta"]["rank"] = k
            if len(kept) == n_comp:
                break
            tried += 1
            if top_k is None or k < top_k:
                kept.append(r)
            else:
                rejected += 1
    if len(kept) < n_comp:
        raise RuntimeError(f"only {len(kept)} of {n_comp} composites passed the top-{top_k} rule in {tried} "
                           "candidates; ask for fewer images or pass top_k=None")
    rows += kept
    for r in rows:
        r["difficult"] = r["meta"].get("rank") is not None and r["meta"]["rank"] > 0
        r["boxes"] = [_box_of(r["mask"])]
    ranks = [r["meta"].get("rank") for r in rows]
    info: dict[str, Any] = {"candidates_tried": tried, "candidates_rejected": rejected, "top_k": top_k}
    if check_model and rows:
        info["top1_accuracy"] = float(np.mean([k == 0 for k in ranks]))
        info["top5_accuracy"] = float(np.mean([k < 5 for k in ranks]))
    return rows, info


# ---------------------------------------------------------------------------------------------------------------
# digits


def _build_digits(n_images: int | None, seed: int) -> tuple[list[dict], dict]:
    x, y = digits("test")
    if n_images is None or n_images >= len(y):
        idx = np.arange(len(y))
    else:
        idx = np.sort(numpy_rng(seed, "digits-suite").choice(len(y), size=n_images, replace=False))
    rows = []
    for i in idx.tolist():
        img = x[i].numpy()
        ink = img[0] > INK_THRESHOLD
        rows.append({"name": f"digits-test-{i:03d}", "image": img, "label": int(y[i]), "mask": ink,
                     "boxes": [_box_of(ink)], "difficult": False, "meta": {"kind": "digit", "test_index": i}})
    return rows, {}


# ---------------------------------------------------------------------------------------------------------------
# digits-clutter


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


def _build_clutter(n_images: int | None, seed: int, with_digit: bool = True) -> tuple[list[dict], dict]:
    x, y, details = clutter_dataset("test", 100 if n_images is None else n_images, seed, with_digit, details=True)
    rows = []
    for i, r in enumerate(details):
        rows.append({"name": f"clutter-{i:03d}-digit{int(y[i])}", "image": x[i].numpy(), "label": int(y[i]),
                     "mask": r["mask"], "boxes": [r["box"]], "difficult": r["difficult"], "meta": r["meta"]})
    return rows, {"with_digit": with_digit}


# ---------------------------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class _SuiteSpec:
    build: Callable[..., tuple[list[dict], dict]]
    model_name: str
    description: str


_SUITES: dict[str, _SuiteSpec] = {
    "photos": _SuiteSpec(_build_photos, "efficientnet-lite0",
                         "EfficientNet-Lite0 on 3 scikit-image photos + composites (object pasted on another photo); "
                         "default 12 images; options: top_k=5, check_model=True"),
    "digits": _SuiteSpec(_build_digits, "digits-cnn", "digits CNN on the digits test split (28x28); default all 355"),
    "digits-clutter": _SuiteSpec(_build_clutter, "digits-clutter-cnn",
                                 "one test digit among distractor strokes on a 64x64 canvas; default 100 images; "
                                 "options: with_digit=True"),
}


def list_suites() -> list[str]:
    """Names accepted by :func:`load_suite`."""
    return sorted(_SUITES)


def load_suite(name: str, n_images: int | None = None, seed: int = 0, **options: Any) -> Suite:
    """Build suite ``name`` (see :func:`list_suites`) with ``n_images`` items (default: the suite's) from ``seed``.

    The same (name, n_images, seed, options) gives the same items bit for bit. Suite-specific ``options``:
    ``photos``: ``top_k`` (keep composites whose label is in the model's top-k; None keeps all) and
    ``check_model`` (False: do not run the model at all, keep every candidate);
    ``digits-clutter``: ``with_digit`` (False draws the same canvases without the digit, a sanity check).
    """
    key = str(name).strip().lower().replace("_", "-")
    if key not in _SUITES:
        raise ValueError(f"unknown suite {name!r}; available suites: {', '.join(list_suites())}")
    if n_images is not None and (isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer))
                                 or n_images < 1):
        raise ValueError(f"n_images must be a positive int or None, got {n_images!r}")
    seed = check_seed(seed)  # int(seed) used to truncate 1.5 to 1 and seeds wrap modulo 2**64
    spec = _SUITES[key]
    try:
        rows, info = spec.build(None if n_images is None else int(n_images), int(seed), **options)
    except TypeError as err:
        if "unexpected keyword" in str(err):
            raise TypeError(f"suite {key!r} does not accept option(s) {sorted(options)}: {spec.description}") from err
        raise
    names = _class_names(spec.model_name)
    items = []
    for r in rows:
        img = torch.from_numpy(np.ascontiguousarray(r["image"], dtype=np.float32))
        if img.ndim == 3 and img.shape[-1] == 3 and img.shape[0] != 3:
            img = img.permute(2, 0, 1).contiguous()
        elif img.ndim == 2:
            img = img[None]
        mask = None if r.get("mask") is None else torch.from_numpy(np.ascontiguousarray(r["mask"], dtype=bool))
        items.append(SuiteItem(r["name"], img.clamp_(0, 1), int(r["label"]), names[int(r["label"])],
                               [tuple(int(v) for v in b) for b in r["boxes"]], mask, bool(r.get("difficult", False)),
                               r.get("meta", {})))
    return Suite(key, items, spec.model_name, int(seed), spec.description, info)


def _class_names(model_name: str) -> list[str]:
    if model_name == "efficientnet-lite0":
        from ..models.imagenet import imagenet_class_names

        return imagenet_class_names()
    return [str(i) for i in range(10)]


# ---------------------------------------------------------------------------------------------------------------
# drawing


def save_item_png(item: SuiteItem, path: str | Path, title: str | None = None) -> Path:
    """Draw ``item`` with its boxes (red) and mask outline (yellow) to a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.patches import Rectangle

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = item.image.permute(1, 2, 0).numpy()
    fig = Figure(figsize=(4, 4.3), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes([0.02, 0.02, 0.96, 0.88])
    ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if item.mask is not None:
        ax.contour(item.mask.numpy().astype(float), levels=[0.5], colors="yellow", linewidths=0.8)
    for x0, y0, x1, y1 in item.boxes:
        # half-open pixel box: pixel centres at integers, so the box edges sit at x0 - 0.5 and x1 - 0.5
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="red", linewidth=1.2))
    ax.set_axis_off()
    ax.set_title(title or f"{item.name}\nlabel {item.label} ({item.label_name})"
                 + (" [difficult]" if item.difficult else ""), fontsize=8)
    fig.savefig(path)
    return path


__all__ = ["CLUTTER_SIZE", "INK_THRESHOLD", "Suite", "SuiteItem", "clutter_dataset", "list_suites", "load_suite",
           "render_clutter", "save_item_png"]
