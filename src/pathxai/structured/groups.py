"""Feature groups: the units an explanation selects (features, pixels, patches, tokens) for inputs of any shape.

A group index tensor ``groups`` has the shape of one input, ``x.shape[1:]``, and holds for every input element the id
of its group, ``0 .. G-1`` (every id used). A k-hot selection ``mask`` (N, G) over groups becomes an input mask with
``mask[:, groups]``; a group that is not selected takes the masking value (0, the convention of
:mod:`pathxai.structured`). For feature vectors (N, D), ``groups = arange(D)``: every feature its own group, which is
the behaviour of the original (N, D) code.
"""
from __future__ import annotations

from typing import Sequence

import torch


def identity_groups(n_features: int) -> torch.Tensor:
    """(D,) groups of a feature vector: every feature its own group."""
    return torch.arange(int(n_features))


def patch_groups(h: int, w: int, patch: int, channels: int = 1) -> torch.Tensor:
    """(C, H, W) groups of ``patch`` x ``patch`` squares (row-major ids, shared by all channels); H and W must be
    multiples of ``patch`` so every group has the same size."""
    if patch < 1 or h % patch or w % patch:
        raise ValueError(f"patch={patch} must divide the image size {h}x{w}")
    rows = torch.arange(h) // patch
    cols = torch.arange(w) // patch
    ids = rows[:, None] * (w // patch) + cols[None, :]
    return ids.expand(channels, h, w).clone()


def token_groups(length: int, dim: int) -> torch.Tensor:
    """(L, V) groups of a token sequence (one-hot or embeddings (N, L, V)): every token (all its V entries) a group."""
    return torch.arange(length)[:, None].expand(length, dim).clone()


def check_groups(groups: torch.Tensor | None, input_shape: Sequence[int], name: str = "groups") -> torch.Tensor:
    """Validate a group index tensor for inputs of per-sample shape ``input_shape``; ``None`` gives one group per
    element of a vector input (D,). Returns an int64 tensor of shape ``input_shape``."""
    input_shape = tuple(int(s) for s in input_shape)
    if groups is None:
        if len(input_shape) != 1:
            raise ValueError(f"{name} is required for inputs of shape (N, {', '.join(map(str, input_shape))}): pass "
                             "a group index tensor of that per-sample shape (e.g. patch_groups, token_groups)")
        return identity_groups(input_shape[0])
    if not isinstance(groups, torch.Tensor) or groups.dtype.is_floating_point or groups.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer torch.Tensor of shape {input_shape}, got "
                        f"{getattr(groups, 'dtype', type(groups).__name__)}")
    if tuple(groups.shape) != input_shape:
        raise ValueError(f"{name} must have the per-sample input shape {input_shape}, got {tuple(groups.shape)}")
    groups = groups.to(torch.long)
    g = int(groups.max()) + 1
    if int(groups.min()) < 0 or torch.bincount(groups.flatten(), minlength=g).eq(0).any():
        raise ValueError(f"{name} must number its groups 0 .. G-1 with every id used, got ids "
                         f"{int(groups.min())} .. {int(groups.max())} with gaps")
    return groups


def n_groups(groups: torch.Tensor) -> int:
    """Number of groups G of a (valid) group index tensor."""
    return int(groups.max()) + 1


def expand_mask(mask: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Group mask (N, G) -> input mask (N, *groups.shape); differentiable in ``mask``."""
    return mask[:, groups]


def apply_mask(x: torch.Tensor, mask: torch.Tensor, groups: torch.Tensor, baseline: float = 0.0) -> torch.Tensor:
    """x (N, *S) with the groups where ``mask`` (N, G) is 0 replaced by ``baseline`` (soft masks interpolate)."""
    m = expand_mask(mask, groups)
    return x * m if baseline == 0 else x * m + baseline * (1 - m)


def group_mean(values: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Per-element values (N, *groups.shape) -> (N, G) mean over each group's elements; differentiable."""
    n = values.shape[0]
    g = n_groups(groups)
    flat = groups.flatten()
    sums = values.reshape(n, -1).new_zeros(n, g).index_add(1, flat, values.reshape(n, -1))
    return sums / torch.bincount(flat, minlength=g).to(values.dtype)
