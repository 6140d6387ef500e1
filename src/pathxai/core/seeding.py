"""Reproducible randomness that does not depend on how work is chunked.

Each random item (a noise sample, a mask, a perturbation) gets its own generator derived from the method's seed, a
stream name and the item's index, so items can be produced in any chunking, order or worker and still be identical.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch

from .validation import SEED_LIMIT, check_seed

_MASK64 = (1 << 63) - 1


def item_seed(seed: int, stream: str, item: int) -> int:
    """A 63-bit seed for item ``item`` of the named ``stream`` under ``seed`` (SplitMix64-style mixing).

    ``seed`` and ``item`` must be ints in [0, 2**63): the mixing works modulo 2**64, so larger or negative values
    would alias others (seed 2**70 would repeat seed 0's random numbers) and are refused.
    """
    if not (type(seed) is int and 0 <= seed < SEED_LIMIT):  # fast path: this runs once per random item
        seed = check_seed(seed)
    if not (type(item) is int and 0 <= item < SEED_LIMIT):
        item = check_seed(item, "item")
    if not isinstance(stream, str):
        raise TypeError(f"stream must be a string, got {type(stream).__name__}")
    z = (int(seed) * 0x9E3779B97F4A7C15 + zlib.crc32(stream.encode()) * 0xBF58476D1CE4E5B9 + int(item)) & ((1 << 64) - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return (z ^ (z >> 31)) & _MASK64


def item_generator(seed: int, stream: str, item: int, device: torch.device | str | None = None) -> torch.Generator:
    """A ``torch.Generator`` for one item (on ``device``, default the CPU); see :func:`item_seed`.

    Large draws (noise images) use a generator on the device where the work runs, so no random tensor crosses from
    the host; results are then reproducible bit for bit per device type (a CUDA generator draws other numbers than
    the CPU one). Small draws (mask cells, subsets) use the CPU generator and move the result, which keeps them
    identical on every device.
    """
    return torch.Generator(device=device or "cpu").manual_seed(item_seed(seed, stream, item))


def numpy_rng(seed: int, stream: str, item: int = 0) -> np.random.Generator:
    """A NumPy generator for one item; see :func:`item_seed`."""
    return np.random.default_rng(item_seed(seed, stream, item))
