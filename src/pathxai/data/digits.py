"""scikit-learn's 8x8 handwritten digits, upsampled to 28 x 28 in [0, 1] (a small, real, offline MNIST stand-in)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

DIGITS_SIZE = 28


@lru_cache(maxsize=4)
def _digits_arrays(size: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # (1797, 1, 8, 8)
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return images.numpy(), bunch.target.astype(np.int64)


def digits(split: str = "all", size: int = DIGITS_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits as ``(images (M, 1, size, size) float in [0, 1], labels (M,) int64)``.

    ``split``: ``"train"`` (a fixed 80 % of each class), ``"test"`` (the other 20 %) or ``"all"`` (1797 images).
    """
    images, labels = _digits_arrays(size)
    if split == "all":
        idx = np.arange(len(labels))
    elif split in ("train", "test"):
        rng = np.random.default_rng(0)
        test = np.zeros(len(labels), dtype=bool)
        for c in range(10):
            members = np.flatnonzero(labels == c)
            test[rng.choice(members, size=len(members) // 5, replace=False)] = True
        idx = np.flatnonzero(test if split == "test" else ~test)
    else:
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    return torch.from_numpy(images[idx].copy()), torch.from_numpy(labels[idx].copy())
