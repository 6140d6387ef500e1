"""RISE (Petsiuk et al., 2018): saliency as the score-weighted average of random smooth masks.

Masks are generated on the fly, one seeded generator per mask, and shared by all images of the batch (as in the
paper); the weighted sum is streamed, so memory does not grow with the number of masks.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..core import Method, Target, accumulate_rows, item_generator, item_outputs, register_method
from ..core.limits import Cost
from ..core.validation import check_choice, check_fraction, check_positive_int


def rise_masks(index: torch.Tensor, seed: int, height: int, width: int, grid: int = 7, p: float = 0.5,
               stream: str = "rise", device: torch.device | str | None = None) -> torch.Tensor:
    """RISE masks number ``index`` (n,) of an (H, W) image: (n, H, W) float32 in [0, 1], on ``device``.

    Each mask: a ``grid x grid`` Bernoulli(p) grid, bilinearly upsampled to ((grid + 1) * cell) with
    cell = ceil(size / grid), then cropped at a random shift in [0, cell) -- the paper's construction.
    """
    height, width = check_positive_int(height, "height"), check_positive_int(width, "width")
    grid, p = check_positive_int(grid, "grid"), check_fraction(p, "p")
    cell_h, cell_w = math.ceil(height / grid), math.ceil(width / grid)
    up_h, up_w = (grid + 1) * cell_h, (grid + 1) * cell_w
    # the random draws are tiny (grid^2 cells and a shift per mask): drawn on the host, so every device gets the
    # same masks; the upsampling to full size runs where the masks are used
    cells = torch.empty(len(index), 1, grid, grid)
    shifts = []
    for j, m in enumerate(index.tolist()):
        g = item_generator(seed, stream, m)
        cells[j, 0] = (torch.rand(grid, grid, generator=g) < p).float()
        shifts.append((int(torch.randint(0, cell_h, (1,), generator=g)), int(torch.randint(0, cell_w, (1,), generator=g))))
    up = F.interpolate(cells.to(device), size=(up_h, up_w), mode="bilinear", align_corners=False)
    out = torch.empty(len(index), height, width, device=up.device)
    for j, (dy, dx) in enumerate(shifts):
        out[j] = up[j, 0, dy:dy + height, dx:dx + width]
    return out


@register_method
class RISE(Method):
    """Randomized Input Sampling for Explanation.

    Args:
        n_masks: number of random masks (paper: 4000-8000 for ImageNet; default 2000).
        grid: mask grid size s (paper: 7).
        p: probability that a grid cell is kept (paper: 0.5).
        score: ``"softmax"`` (the paper; default for class targets) or ``"output"`` (default for callable targets).
    Attribution: (N, 1, H, W) = sum_m f(x * M_m) M_m / (n_masks * p).
    """

    name = "rise"
    description = "RISE: average of random smooth masks weighted by the model's score on the masked input."
    stochastic = True
    cost_param = "n_masks"

    def __init__(self, model: Any, *, n_masks: int = 2000, grid: int = 7, p: float = 0.5, score: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.n_masks = check_positive_int(n_masks, "n_masks")
        self.grid = check_positive_int(grid, "grid")
        self.p = check_fraction(p, "p", inclusive=False)
        self.score = check_choice(score, "score", (None, "softmax", "output", "log_softmax"))

    def cost(self, input_shape: Sequence[int] | None) -> Cost:
        """N x n_masks forward evaluations; memory: one upsampled (grid + 1) x (grid + 1) cell grid per mask being
        made, the masks of a chunk and the (N, H, W) accumulator."""
        n = 1 if input_shape is None else int(input_shape[0])
        memory = 0.0
        if input_shape is not None and len(input_shape) == 4:
            h, w = int(input_shape[2]), int(input_shape[3])
            up = (self.grid + 1) ** 2 * math.ceil(h / self.grid) * math.ceil(w / self.grid)
            memory = 4.0 * (up + (n + self.grid * self.grid) + 2 * n * h * w)
        return Cost(evaluations=n * self.n_masks, bytes=memory, param="n_masks", value=self.n_masks,
                    detail=f"{n} input(s) x {self.n_masks} masks", bytes_param="grid" if memory else None,
                    bytes_value=self.grid)

    def params(self) -> dict[str, Any]:
        return {"n_masks": self.n_masks, "grid": self.grid, "p": self.p, "score": self.score}

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        n, _, h, w = x.shape
        total = torch.zeros(n, h, w, dtype=x.dtype, device=x.device)
        cache: dict[str, Any] = {"index": None, "masks": None}
        kind = self.score or ("softmax" if target.fn is None else "output")

        def masks_for(mask_idx: torch.Tensor) -> torch.Tensor:
            # items are laid out mask-major (all images for mask 0, then mask 1, ...): make each mask once
            unique = torch.unique(mask_idx)
            if cache["index"] is None or not torch.equal(cache["index"], unique):
                cache["index"], cache["masks"] = unique, rise_masks(unique, self.seed, h, w, self.grid, self.p,
                                                                    device=x.device)
            return cache["masks"][mask_idx - unique[0]]

        def build(items: torch.Tensor) -> torch.Tensor:
            return x[items % n] * masks_for(items // n).unsqueeze(1).to(x.dtype)

        for items, out in item_outputs(self.evaluator, self.n_masks * n, build, sample_shape=x.shape[1:],
                                       desc=self.name):
            s = items % n
            scores = target.score(out, s, kind=kind)  # type: ignore[arg-type]
            accumulate_rows(total, s, masks_for(items // n).to(x.dtype), scores)
        return (total / (self.n_masks * self.p)).unsqueeze(1), {}
