"""Bundled sample data: scikit-image photos with known ImageNet classes, digits, image loading."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from .digits import digits
from .suites import Suite, SuiteItem, list_suites, load_suite, save_item_png

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class SampleImage:
    """A bundled photo: ``image`` is (H, W, 3) uint8; ``label`` its expected ImageNet class."""

    name: str
    image: np.ndarray
    label: int
    label_name: str


# scikit-image photos whose EfficientNet-Lite0 top-1 class is the sensible one (checked in tests).
_PHOTOS = (("chelsea", 285, "Egyptian cat"), ("coffee", 967, "espresso"), ("rocket", 657, "missile"))


def sample_images(names: Iterable[str] | None = None) -> list[SampleImage]:
    """The bundled photos (default: chelsea, coffee, rocket) with their expected ImageNet classes."""
    from skimage import data as skdata

    wanted = list(names) if names is not None else [n for n, _, _ in _PHOTOS]
    table = {n: (label, label_name) for n, label, label_name in _PHOTOS}
    out = []
    for name in wanted:
        if name not in table:
            raise ValueError(f"unknown sample image {name!r}; available: {', '.join(table)}")
        out.append(SampleImage(name, np.asarray(getattr(skdata, name)()), *table[name]))
    return out


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 array (grey images are repeated over 3 channels)."""
    from PIL import Image

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file {path} does not exist")
    with Image.open(path) as img:
        arr = np.asarray(img.convert("RGB"))
    return arr


def image_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders into a sorted list of image files (folders: their images, not recursive)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES))
        elif p.exists():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise ValueError(f"{p} is not an image file (expected one of {', '.join(IMAGE_SUFFIXES)})")
            out.append(p)
        else:
            raise FileNotFoundError(f"{p} does not exist")
    return out


__all__ = ["SampleImage", "Suite", "SuiteItem", "digits", "image_files", "list_suites", "load_image", "load_suite",
           "sample_images", "save_item_png"]
