"""RISE (Petsiuk et al., 2018): saliency as the score-weighted average of random smooth masks.

    S_ij = E_M[f(x ⊙ M) M_ij] / p,   estimated from N masks as  (1 / (N p)) Σ_n f(x ⊙ M_n) M_n,ij

Masks are generated on the fly in aligned blocks of 64 and shared by all images of the batch (as in the paper); the
statistics are streamed, so memory does not grow with the number of masks.

``sampling`` (:mod:`pathxai.core.sampling`) picks how masks are drawn *jointly*; each single mask is always the
paper's (a grid x grid Bernoulli(p) grid, bilinearly upsampled, cropped at a uniform random shift), so the estimate
stays unbiased:

- ``"sobol"`` (default): each block of 64 masks is one scrambled Sobol net over (cells, shift) -- every cell kept in
  exactly half of the block's masks at p = 0.5, pairs of cells balanced, shifts stratified -- plus the past-fitted
  cell control variate (``control_variate="auto"``, used once 200 earlier masks have fitted it at grid 7). Measured
  on the digits-clutter CNN and EfficientNet-Lite0 (benchmarks/results/sampling.md): see the README for the gain.
- ``"stratified"``: RELAX's strata of 8 masks with balanced cells and one shift per stratum (+ control variate).
- ``"antithetic"``: mask pairs (u < p, 1 - u < p) with a shared shift (+ control variate).
- ``"mc"``: the paper's independent masks, each from its own generator (seed, "rise", m): the results of earlier
  pathxai versions bit for bit, accumulated as they were.

Non-``"mc"`` samplings round ``n_masks`` up to whole groups (8 or 64 masks; 2 antithetic).

Standard error (``extras["stderr"]``, (N, 1, H, W)): from the same masks, the spread of the independent groups'
means (one mask for ``"mc"``, a stratum, a Sobol net, a pair), see :mod:`pathxai.core.sampling`. ``tol``: stop once
the relative standard error (:func:`pathxai.core.sampling.relative_error`: RMS standard error over the map's
noise-free spatial SD) is below ``tol`` for every image,
checked every 64 masks; ``n_masks`` is then the cap.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..core import Method, Target, item_generator, item_outputs, register_method
from ..core.limits import Cost
from ..core.sampling import (BLOCK, MASK_SAMPLINGS, REPLICATE_SLICE, BlockStream, MaskedMean, SamplingMixin,
                             ToleranceStop, check_sampling, check_tol, expected_cell_weights, round_up, smooth_masks)
from ..core.validation import check_choice, check_fraction, check_positive_int

#: masks per independent group (replicate) for each sampling
GROUPS = {"mc": 1, "antithetic": 2, "stratified": 8, "sobol": BLOCK}


def rise_masks(index: torch.Tensor, seed: int, height: int, width: int, grid: int = 7, p: float = 0.5,
               stream: str = "rise", device: torch.device | str | None = None) -> torch.Tensor:
    """RISE masks number ``index`` (n,) of an (H, W) image: (n, H, W) float32 in [0, 1], on ``device``.

    Each mask: a ``grid x grid`` Bernoulli(p) grid, bilinearly upsampled to ((grid + 1) * cell) with
    cell = ceil(size / grid), then cropped at a random shift in [0, cell) -- the paper's construction. These are the
    independent masks of ``sampling="mc"``; the other samplings use :func:`pathxai.core.sampling.smooth_masks`.
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
class RISE(SamplingMixin, Method):
    """Randomized Input Sampling for Explanation.

    Args:
        n_masks: number of random masks (paper: 4000-8000 for ImageNet; default 2000); the cap with ``tol``.
        grid: mask grid size s (paper: 7).
        p: probability that a grid cell is kept (paper: 0.5).
        score: ``"softmax"`` (the paper; default for class targets) or ``"output"`` (default for callable targets).
        sampling: ``"sobol"`` (default), ``"stratified"``, ``"antithetic"`` or ``"mc"`` (the paper's iid masks,
            bit for bit those of earlier versions); see the module doc.
        tol: stop once the relative standard error is below ``tol`` (e.g. 0.05) for every image; ``None``: all
            ``n_masks``.
        control_variate: ``"auto"`` (default: on for every sampling but ``"mc"``), ``True`` or ``False``: the
            past-fitted cell-regression control variate (unbiased; :class:`pathxai.core.sampling.MaskedMean`).
    Attribution: (N, 1, H, W) = sum_m f(x * M_m) M_m / (n_masks * p) (its variance-reduced equivalent).
    Extras: ``stderr`` (N, 1, H, W), the attribution's standard error. ``meta``: ``samples_used`` (masks per image),
    ``relative_error``, ``tol_reached``.
    """

    name = "rise"
    description = "RISE: average of random smooth masks weighted by the model's score on the masked input."
    stochastic = True
    cost_param = "n_masks"

    def __init__(self, model: Any, *, n_masks: int = 2000, grid: int = 7, p: float = 0.5, score: str | None = None,
                 sampling: str = "sobol", tol: float | None = None, control_variate: bool | str = "auto",
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.sampling = check_sampling(sampling, MASK_SAMPLINGS)
        self.group = GROUPS[self.sampling]
        self.n_masks = round_up(check_positive_int(n_masks, "n_masks"), self.group)
        self.grid = check_positive_int(grid, "grid")
        self.p = check_fraction(p, "p", inclusive=False)
        self.score = check_choice(score, "score", (None, "softmax", "output", "log_softmax"))
        self.tol = check_tol(tol)
        self.control_variate = check_choice(control_variate, "control_variate", ("auto", True, False))
        if self.control_variate is True and self.sampling == "mc":
            raise ValueError("control_variate=True needs a variance-reduced sampling: sampling='mc' keeps the "
                             "paper's plain estimator (use sampling='sobol', 'stratified' or 'antithetic')")

    @property
    def uses_control_variate(self) -> bool:
        return self.sampling != "mc" and self.control_variate is not False

    def cost(self, input_shape: Sequence[int] | None) -> Cost:
        """N x n_masks forward evaluations; memory: one block of masks (and, for ``"mc"``, their upsampled grids),
        the float64 statistics (mean and co-moment per image and pixel, 8 replicates being merged) and, with the
        control variate, its (cells x pixels) expectation."""
        n = 1 if input_shape is None else int(input_shape[0])
        memory = 0.0
        if input_shape is not None and len(input_shape) == 4:
            h, w = int(input_shape[2]), int(input_shape[3])
            pixels, cells = h * w, self.grid * self.grid
            up = (self.grid + 1) ** 2 * math.ceil(h / self.grid) * math.ceil(w / self.grid)
            memory = 4.0 * (BLOCK * up + (n + cells) + 2 * n * pixels) + 12.0 * BLOCK * pixels \
                + 8.0 * n * pixels * (2 + REPLICATE_SLICE)
            if self.uses_control_variate:
                memory += 8.0 * (cells * pixels + (cells + 1) ** 2 + n * (cells + 1 + pixels))
        return Cost(evaluations=n * self.n_masks, bytes=memory, param="n_masks", value=self.n_masks,
                    detail=f"{n} input(s) x {self.n_masks} masks", bytes_param="grid" if memory else None,
                    bytes_value=self.grid)

    def params(self) -> dict[str, Any]:
        return {"n_masks": self.n_masks, "grid": self.grid, "p": self.p, "score": self.score,
                "sampling": self.sampling, "tol": self.tol, "control_variate": self.control_variate}

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        n, _, h, w = x.shape
        pixels = h * w
        kind = self.score or ("softmax" if target.fn is None else "output")
        mc = self.sampling == "mc"
        if mc:
            stream = BlockStream(n, self.n_masks, lambda idx: (rise_masks(idx, self.seed, h, w, self.grid, self.p,
                                                                          device=x.device),))
        else:
            stream = BlockStream(n, self.n_masks, lambda idx: smooth_masks(idx, self.seed, (h, w), self.grid, self.p,
                                                                           self.sampling, self.group, "rise",
                                                                           device=x.device))
        basis = None
        if self.uses_control_variate:
            basis = self.p * self.p + self.p * (1 - self.p) * expected_cell_weights((h, w), self.grid)
        stats = MaskedMean(n, pixels, self.group, basis, self.p, x.device)
        total = torch.zeros(n, h, w, dtype=x.dtype, device=x.device) if mc else None
        stop = ToleranceStop(self.tol, self.n_masks, "masks", self.name, self.evaluator, group=self.group)

        def build(items: torch.Tensor) -> torch.Tensor:
            # items are laid out mask-major (all images for mask 0, then mask 1, ...): each block of masks is made once
            return x[items % n] * stream.rows(items // n).unsqueeze(1).to(x.dtype)

        stopped = False
        for items, out in item_outputs(self.evaluator, self.n_masks * n, build, sample_shape=x.shape[1:],
                                       desc=self.name):
            s = items % n
            scores = target.score(out, s, kind=kind)  # type: ignore[arg-type]
            for idx, data, buf in stream.add(s, items // n, scores):
                masks = data[0]
                if total is not None:
                    # the paper's sum, row by row in mask order as earlier versions added it: bit for bit the same
                    rows, weights = masks.to(x.dtype), buf.to(scores.dtype)
                    for j in range(len(idx)):
                        for i in range(n):
                            total[i] += rows[j] * weights[i, j]
                stats.add_block(None if mc else data[1], masks.reshape(len(idx), pixels), buf)
                if stop.check(stats.estimate(), stats.stderr(), stats.replicates):
                    stopped = True
                    break
            if stopped:
                break   # the rest of the last model chunk (< batch_size items) is discarded
        stream.close(stopped)
        used = stats.n
        stop.finish(used, stopped)
        self._record_sampling([used] * n, stop.error, None if self.tol is None else stopped)
        if total is not None:
            attribution = (total / (used * self.p)).unsqueeze(1)
        else:
            attribution = (stats.estimate() / self.p).view(n, 1, h, w).to(x.dtype)
        stderr = (stats.stderr() / self.p).view(n, 1, h, w).to(x.dtype)
        return attribution, {"stderr": stderr}
