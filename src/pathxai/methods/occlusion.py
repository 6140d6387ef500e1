"""Occlusion (Zeiler & Fergus, 2014): the score drop when a sliding window is replaced by a baseline.

Same windows and averaging as ``captum.attr.Occlusion`` with a window spanning all channels (tested to agree), but
all (image, window) pairs are streamed through the shared evaluator, so chunks mix images and windows and memory
stays bounded by ``batch_size``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ..core import Method, Target, accumulate_rows, item_outputs, register_method
from ..core.baselines import BaselineLike, check_baseline, describe_baseline, make_baseline
from ..core.limits import Cost
from ..core.validation import check_choice, check_positive_float, check_positive_int


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Top-left offsets of windows along one axis: 0, stride, ... up to ceil((size - window) / stride) steps."""
    if window > size:
        raise ValueError(f"window ({window}) must not exceed the input size ({size})")
    return [i * stride for i in range(math.ceil((size - window) / stride) + 1)]


@register_method
class Occlusion(Method):
    """Occlusion with a square sliding window over all channels.

    Args:
        window: window side in pixels; default ``max(2, round(H / 7))`` (32 px at 224 px, 4 px at 28 px).
        stride: step in pixels; default ``max(1, window // 2)``.
        baseline: what the window is replaced by (see :func:`pathxai.core.make_baseline`), default zeros.
        score: ``"output"`` (Captum's convention) or ``"softmax"``.
    Attribution: (N, 1, H, W) = mean over the windows covering a pixel of f(x) - f(x with the window occluded).
    """

    name = "occlusion"
    description = "Occlusion: score drop when a sliding window is replaced by a baseline."

    def __init__(self, model: Any, *, window: int | None = None, stride: int | None = None,
                 baseline: BaselineLike = "zero", blur_sigma: float = 10.0, score: str = "output",
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.window = None if window is None else check_positive_int(window, "window")
        self.stride = None if stride is None else check_positive_int(stride, "stride")
        self.baseline = check_baseline(baseline)
        self.blur_sigma = check_positive_float(blur_sigma, "blur_sigma")
        self.score = check_choice(score, "score", ("output", "softmax", "log_softmax"))

    def params(self) -> dict[str, Any]:
        return {"window": self.window, "stride": self.stride, "baseline": describe_baseline(self.baseline),
                "score": self.score}

    def cost(self, input_shape: Sequence[int] | None) -> Cost:
        """N x (windows + 1) forward evaluations; memory: the (windows, H, W) table of window masks."""
        if input_shape is None or len(input_shape) != 4:
            return Cost(evaluations=1 if input_shape is None else int(input_shape[0]))
        n, _, h, w = (int(v) for v in input_shape)
        window = self.window or max(2, round(min(h, w) / 7))
        stride = self.stride or max(1, window // 2)
        if window > min(h, w):
            return Cost(evaluations=n)  # geometry() raises the clear error
        per = (math.ceil((h - window) / stride) + 1) * (math.ceil((w - window) / stride) + 1)
        param = "stride" if self.stride is not None else "window" if self.window is not None else None
        return Cost(evaluations=n * (per + 1), bytes=4.0 * per * h * w + 4.0 * n * h * w, param=param,
                    value=None if param is None else getattr(self, param), detail=f"{n} input(s) x {per} windows",
                    hint="use a larger window or stride")

    def geometry(self, h: int, w: int) -> tuple[int, int, list[tuple[int, int]]]:
        """(window, stride, [(top, left), ...]) for an H x W input."""
        window = self.window or max(2, round(min(h, w) / 7))
        stride = self.stride or max(1, window // 2)
        if window > min(h, w):
            raise ValueError(f"window={window} exceeds the input's spatial size {h}x{w}")
        return window, stride, [(t, l) for t in window_starts(h, window, stride) for l in window_starts(w, window, stride)]

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        n, _, h, w = x.shape
        window, _, starts = self.geometry(h, w)
        b = make_baseline(x, self.baseline, blur_sigma=self.blur_sigma, seed=self.seed)
        masks = torch.zeros(len(starts), h, w, dtype=x.dtype, device=x.device)
        for j, (t, l) in enumerate(starts):
            masks[j, t:t + window, l:l + window] = 1.0
        full = target.score(self.evaluator.forward(x, desc="occlusion reference"), kind=self.score)  # type: ignore[arg-type]
        per = len(starts)

        def build(items: torch.Tensor) -> torch.Tensor:
            s, k = items // per, items % per
            m = masks[k].unsqueeze(1)
            return x[s] * (1 - m) + b[s] * m

        total = torch.zeros(n, h, w, dtype=x.dtype, device=x.device)
        for items, out in item_outputs(self.evaluator, n * per, build, sample_shape=x.shape[1:], desc=self.name):
            s = items // per
            drop = full[s] - target.score(out, s, kind=self.score)  # type: ignore[arg-type]
            accumulate_rows(total, s, masks[items % per], drop)
        counts = masks.sum(0).clamp_min(1)
        return (total / counts).unsqueeze(1), {"window": window, "n_windows": per}
