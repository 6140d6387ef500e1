"""Bundled sample data: scikit-image photos with known ImageNet classes, digits, clutter canvases, image loading.

``data`` holds images and their ground truth only; it imports no model and no suite. The evaluation suites, which
bind data to a model, live in :mod:`pathxai.suites`; ``px.data.load_suite``, ``list_suites``, ``Suite``,
``SuiteItem`` and ``save_item_png`` are kept here as lazy aliases (resolved by the module ``__getattr__`` on first
use, so ``import pathxai.data`` stays free of models), as is the old module ``pathxai.data.suites``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .clutter import CLUTTER_SIZE, clutter_dataset, render_clutter
from .digits import digits
from .ground_truth import INK_THRESHOLD, Box, box_of
from .images import (IMAGE_SUFFIXES, FolderScan, ImageData, ImageReadError, max_image_pixels, read_image,
                     scan_images)

# names that moved to pathxai.suites (which sits above data and models), resolved lazily by __getattr__
_SUITE_NAMES = ("Suite", "SuiteItem", "list_suites", "load_suite", "save_item_png")


def __getattr__(name: str) -> Any:
    if name in _SUITE_NAMES:
        return getattr(importlib.import_module("pathxai.suites"), name)
    if name == "suites":   # the deprecated alias module (see pathxai.data.suites)
        return importlib.import_module("pathxai.data.suites")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUITE_NAMES))


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


def load_image(path: str | Path, *, channels: int = 3, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 array ((H, W) with ``channels=1``), converting its mode.

    A thin wrapper of :func:`read_image` for callers that do not need the notes of what was converted; the pixel
    limit applies (see :func:`max_image_pixels`).
    """
    return read_image(path, channels=channels, max_pixels=max_pixels).array


def image_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders into a sorted list of image files (folders: their images, not recursive).

    Entries of a folder that are not images (or are symbolic links leading out of it) are left out; use
    :func:`scan_images` to learn which and why.
    """
    return scan_images(list(paths)).files


__all__ = ["Box", "CLUTTER_SIZE", "FolderScan", "IMAGE_SUFFIXES", "INK_THRESHOLD", "ImageData", "ImageReadError",
           "box_of", "clutter_dataset", "max_image_pixels", "read_image", "render_clutter", "scan_images",
           "SampleImage", "Suite", "SuiteItem", "digits", "image_files", "list_suites", "load_image", "load_suite",
           "sample_images", "save_item_png"]
