"""The result every method returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

Reduction = Literal["sum", "abs_sum", "sum_abs", "l2", "max_abs", "mean"]


def reduce_channels(attribution: torch.Tensor, reduction: str) -> torch.Tensor:
    """Collapse the channel axis of an (N, C, H, W) attribution to an (N, H, W) map.

    ``sum``: signed sum over channels; ``abs_sum``: |sum|; ``sum_abs``: sum of |.|; ``l2``: Euclidean norm;
    ``max_abs``: max of |.| (the usual gradient-saliency view); ``mean``: mean over channels.
    """
    if attribution.ndim != 4:
        raise ValueError(f"attribution must have shape (N, C, H, W) to reduce channels, got {tuple(attribution.shape)}")
    if reduction == "sum":
        return attribution.sum(1)
    if reduction == "abs_sum":
        return attribution.sum(1).abs()
    if reduction == "sum_abs":
        return attribution.abs().sum(1)
    if reduction == "l2":
        return attribution.pow(2).sum(1).sqrt()
    if reduction == "max_abs":
        return attribution.abs().amax(1)
    if reduction == "mean":
        return attribution.mean(1)
    raise ValueError(f"reduction must be one of sum, abs_sum, sum_abs, l2, max_abs, mean; got {reduction!r}")


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    return (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t).numpy()


@dataclass
class Explanation:
    """What a method returns for a batch of N inputs.

    Attributes:
        attribution: (N, ...) tensor on the device and in the dtype of the explained input; the shape is documented
            per method ((N, C, H, W) for pixel methods,
            (N, 1, h, w) for low-resolution maps such as Grad-CAM, (N, L) for tokens).
        extras: method-specific results (e.g. "path", "uncertainty", "curve"); tensors on the input's device, in the
            dtype they were computed in (float32 or wider).
        meta: method name, parameters, model evaluations used, wall time, chunk sizes, seed.
        input_shape: shape of the explained input batch (N, C, H, W) or (N, L, D).
        saliency_reduction: how :meth:`saliency` collapses channels by default.
    """

    attribution: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, ...] = ()
    saliency_reduction: str = "sum"

    @property
    def method(self) -> str:
        return str(self.meta.get("method", "?"))

    def __len__(self) -> int:
        return int(self.attribution.shape[0])

    def saliency(self, reduction: str | None = None) -> torch.Tensor:
        """Per-pixel map (N, H, W) at the input's resolution, the map metrics consume.

        Channel attributions (N, C, H, W) are reduced with ``reduction`` (default: the method's own); maps at a lower
        resolution (N, 1, h, w) or (N, h, w) are upsampled bilinearly to the input's (H, W).
        """
        a = self.attribution
        if len(self.input_shape) != 4:
            raise ValueError(f"saliency() needs image inputs of shape (N, C, H, W); this explanation is for "
                             f"inputs of shape {self.input_shape}; use .attribution instead")
        h, w = self.input_shape[2], self.input_shape[3]
        if a.ndim == 3:
            a = a.unsqueeze(1)
        if a.ndim != 4:
            raise ValueError(f"cannot make an (N, H, W) map from an attribution of shape {tuple(a.shape)}")
        if a.shape[1] == 1:
            a = a[:, 0]
        else:
            a = reduce_channels(a, reduction or self.saliency_reduction)
        if a.shape[-2:] != (h, w):
            a = F.interpolate(a.unsqueeze(1), size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        return a

    def numpy(self) -> dict[str, np.ndarray]:
        """Arrays worth saving: attribution, saliency (for images) and tensor extras (on the CPU; float16/bfloat16
        as float32, which NumPy can hold)."""
        out: dict[str, np.ndarray] = {"attribution": _to_numpy(self.attribution)}
        if len(self.input_shape) == 4:
            out["saliency"] = _to_numpy(self.saliency())
        for key, value in self.extras.items():
            if isinstance(value, torch.Tensor):
                out[f"extras_{key}"] = _to_numpy(value)
            elif isinstance(value, np.ndarray):
                out[f"extras_{key}"] = value
        return out

    def save(self, path: str) -> None:
        """Write :meth:`numpy` arrays plus meta (as JSON) to an ``.npz`` file, atomically."""
        import json

        from .files import atomic_path

        arrays = self.numpy()
        arrays["meta_json"] = np.array(json.dumps(self.meta, default=str))
        with atomic_path(path) as tmp, open(tmp, "wb") as f:   # a file object: savez adds no suffix
            np.savez_compressed(f, **arrays)
