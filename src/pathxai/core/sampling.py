"""The sampling layer shared by every Monte Carlo method: variance-reduced draws, standard errors from the same
samples, and stopping at a tolerance instead of a fixed budget.

Every sampling method (RISE, sift_rise, SmoothGrad / SmoothGrad² / VarGrad, FI, RELAX and its variants) estimates an
expectation E[Y] per pixel (or feature) from draws it makes itself: binary cell masks, Gaussian noise. This module
makes those draws, keeps the streamed statistics and decides when to stop.

Draws (``sampling=``). Every option draws each *single* mask or noise vector exactly as plain Monte Carlo would
(marginally), so every per-draw average stays unbiased; they differ in how draws are coupled *jointly*:

- ``"mc"``: the paper's independent draws. Each method keeps its own historical generator streams for ``"mc"``, so its
  results are bit-for-bit those of earlier pathxai versions.
- ``"stratified"`` (binary masks; RELAX's scheme, :func:`binary_cells`): in each aligned group of K masks every cell is
  kept in exactly floor(pK) or ceil(pK) of them (randomised rounding, so P(kept) = p exactly), in an independent
  random order per cell; one crop shift per group.
- ``"sobol"``: randomised quasi-Monte Carlo. Each aligned group of 2^m draws is one scrambled Sobol net
  (``scipy.stats.qmc.Sobol``, linear matrix scrambling + digital shift, seeded per group) in
  [0, 1)^d. Masks: cell c is kept when u_c < p and the crop shift is read from two more coordinates (d = cells + 2).
  Noise: eps = Phi^-1(u) coordinate-wise, with u moved to the centre of its 2^-30 dyadic cell (so Phi^-1 stays finite
  and the draw symmetric), d = number of input features (scipy's Sobol directions stop at 21,201 dimensions, so
  larger inputs -- e.g. 3 x 224 x 224 photos -- are refused with a hint to use ``"antithetic"``). Every point of a
  digitally shifted net is uniform on the 2^-30 grid, so a cell is kept with probability exactly p for dyadic p
  (p = 0.5; |bias| <= 2^-30 otherwise) and a noise draw is N(0, I) up to that grid.
- ``"antithetic"``: draws 2k and 2k+1 are a pair: (u, 1 - u) for masks (RELAX's), (eps, -eps) for noise. For noise
  this removes, exactly and at no cost, the first-order Taylor term of any smooth integrand (g(x + s eps) + g(x - s eps)
  = 2 g(x) + O(s^2)): the first-order Taylor control variate a Hessian-vector product would buy, for free.

Randomness is drawn per group from :func:`~pathxai.core.seeding.item_generator` / :func:`numpy_rng` (stream, group
index), never per model chunk, and statistics are merged in whole aligned groups, so results are bit-for-bit
reproducible for a seed and do not depend on ``batch_size``.

Standard errors. Groups (a stratum, a scrambled net, an antithetic pair, a single ``"mc"`` draw) are independent
replicates: each group's mean Y_g is an unbiased estimate, the estimate is their mean, and its standard error is

    stderr = sqrt( sum_g (Y_g - Ybar)^2 / (G (G - 1)) )          (G = number of groups)

per pixel, streamed with Chan et al.'s parallel form of Welford's update (:class:`ReplicateMoments`; memory does not
grow with G). This is the textbook randomised-QMC / stratified-sampling variance estimator; the naive per-draw iid
formula would be wrong for coupled draws (it ignores the negative covariances that make them better). For a nonlinear
function of means (VarGrad's E[g^2] - E[g]^2, a ratio) the delta method is applied to the same replicates.

Control variate (:class:`MaskedMean`, masks only). The score f(x ⊙ M) is close to linear in the binary cells B a
mask was made from, and E[B_c M_ij] is known in closed form (:func:`expected_cell_weights`), so

    Y_g = (1/K) sum_{n in g} (f_n - a - beta.B_n) M_n + a p + beta.E[B M]

is unbiased for *any* (a, beta) that does not depend on group g's draws. Here (a, beta) is the least-squares fit on
all *earlier* blocks (a sequential, "past-fitted" control variate): each Y_g is then an unbiased replicate given the
past, the Y_g are martingale differences around the true value, and the replicate formula above stays a consistent
standard error -- which a cross-fitted coefficient (fitted on the other half, RELAX's :class:`CellControlVariate`)
would not give while streaming. The full regression is used once the past holds ``CV_MASKS_PER_COEFFICIENT`` x
(cells + 1) masks (before that the fit is too noisy to help); from the second block until then, the intercept alone
(the past mean score).

Two refinements were tried and measured worse, so they are not used (benchmarks/results/sampling.md): a ridge
regression with its penalty chosen by generalised cross-validation from the second block on (the score's regression
on the cells of past Sobol nets extrapolates poorly to a freshly scrambled net: sift_rise's error on EfficientNet-Lite0
at 500 masks rose from 0.44 to 0.60 of the map's SD), and a burn-in that kept the uncorrected first block out of the
estimate (0.60 -> 0.87 on top of the ridge; slightly worse for RISE on digits at 250-500 masks).

Stopping (``tol=``, :class:`ToleranceStop`). After each whole block of draws (once at least ``MIN_REPLICATES`` = 4
independent groups and ``MIN_DRAWS`` = 16 draws are in: 4 Sobol nets of 64 masks, 8 antithetic pairs, 16 single
draws), the relative error of each explained input is

    rel_err = sqrt(mean over the map of stderr^2) / sqrt(max(0, var over the map of the estimate - mean stderr^2))

the RMS standard error of the map relative to the spatial standard deviation of the *true* map, estimated without
its noise (the variance of a noisy map over its pixels exceeds the true map's by the mean squared standard error:
that excess is subtracted). So rel_err is one over the map's signal-to-noise ratio: tol = 0.1 asks for noise at a
tenth of the map's spatial variation. Why not the map's range or largest magnitude: RISE and RELAX maps sit on an
offset (the mean score) that carries no information, and the range of a *noisy* map is inflated by its noise -- on a
224 x 224 gradient map of EfficientNet-Lite0 at 16 samples the estimate's max - min is 2-3 times the true map's,
which made an earlier range-normalised rule stop 3-12 times too early. A map that is still all noise (excess <= 0)
has rel_err = inf and sampling goes on. Sampling stops once every input of the batch is below ``tol``; the budget
argument (``n_masks``, ``n_samples``) is the cap, and reaching it first warns (:class:`ToleranceNotReachedWarning`)
and returns what the cap gives, with its standard error. ``meta["samples_used"]`` and ``meta["relative_error"]`` say
where it stopped. Stopping on the data is optional stopping: the estimate at a data-dependent sample size can carry a
bias of the order of its standard error times the (small) correlation between the estimate and its own
standard-error estimate; it is measured in tests/test_sampling.py and is far below the standard error.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from .seeding import item_generator, numpy_rng
from .validation import _is_number

BLOCK = 64                   # draws per aligned block: statistics are merged and the stopping rule is checked per block
MIN_REPLICATES = 4           # independent groups needed before the stopping rule is trusted ...
MIN_DRAWS = 16               # ... and draws: a group of many draws (a Sobol net of 64) is a near-normal replicate
REPLICATE_SLICE = 8          # replicates materialised at once when a block is merged
CV_MASKS_PER_COEFFICIENT = 4  # the mask control variate starts once the past holds this many masks per coefficient
SOBOL_MAX_DIM = 21201        # scipy's Sobol direction numbers stop here
SOBOL_BITS = 30
MASK_SAMPLINGS = ("sobol", "stratified", "antithetic", "mc")
NOISE_SAMPLINGS = ("antithetic", "sobol", "mc")


class ToleranceNotReachedWarning(UserWarning):
    """The sample cap (``n_masks`` / ``n_samples``) was reached before the relative standard error fell below
    ``tol``; the estimate the cap gives is returned, with its standard error."""


# ---------------------------------------------------------------------------------------------------------------
# arguments


def check_tol(tol: Any, name: str = "tol") -> float | None:
    """``None`` (a fixed budget) or ``tol`` as a finite float > 0: the relative standard error to stop at."""
    if tol is None:
        return None
    if not _is_number(tol):
        raise TypeError(f"{name} must be None or a number > 0 (the relative standard error to stop at, e.g. 0.05), "
                        f"got {tol!r} ({type(tol).__name__})")
    value = float(tol)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0 (the relative standard error to stop at, e.g. 0.05), "
                         f"got {tol!r}")
    return value


def check_sampling(sampling: Any, choices: Sequence[str], name: str = "sampling") -> str:
    """``sampling`` if it is one of ``choices``, else a ``ValueError`` listing them."""
    if not isinstance(sampling, str) or sampling not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {sampling!r}")
    return sampling


def round_up(n: int, group: int) -> int:
    """``n`` rounded up to a multiple of ``group`` (whole groups: a partial stratum or net would be unbalanced)."""
    return -(-int(n) // group) * group


def sobol_group_size(group: int) -> int:
    """Check that a scrambled-net size is a power of two (Sobol nets are balanced in blocks of 2^m)."""
    if group < 1 or group & (group - 1):
        raise ValueError(f"a Sobol group must be a power of two, got {group}")
    return group


# ---------------------------------------------------------------------------------------------------------------
# binary cells and smooth masks (RISE's construction; RELAX's samplers)


def _sobol_points(seed: int, stream: str, group_id: int, d: int, n: int) -> np.ndarray:
    """(n, d) float64: one scrambled Sobol net of n = 2^m points in [0, 1)^d, seeded by (seed, stream, group)."""
    from scipy.stats import qmc

    if d > SOBOL_MAX_DIM:
        raise ValueError(f"sampling='sobol' supports at most {SOBOL_MAX_DIM} dimensions (scipy's Sobol directions), "
                         f"these draws need {d}; use sampling='antithetic'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # "balance properties" warning for non-power-of-2 n: not ours
        sampler = qmc.Sobol(d, scramble=True, bits=SOBOL_BITS, rng=numpy_rng(seed, stream, group_id))
    return sampler.random_base2(int(math.log2(n)))


def binary_cells(index: torch.Tensor, seed: int, n_cells: int, p: float, sampling: str, group: int,
                 stream: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary cells (n, n_cells) float32 and a uniform pair (n, 2) for the crop shift, for draws number ``index``.

    ``sampling``: ``"iid"`` (independent draws), ``"antithetic"`` (pairs u, 1 - u), ``"stratified"`` (groups of
    ``group`` with balanced cells, one shift per group) or ``"sobol"`` (a scrambled Sobol net per group of
    ``group`` = 2^m draws, shifts float64). Random numbers are drawn per item (iid), per pair (antithetic) or per
    group, each from its own generator, so a draw never depends on which other draws are requested with it.
    """
    idx = index.to(torch.long)
    if sampling == "sobol":
        group = sobol_group_size(group)
        groups, pos = idx // group, idx % group
        cells = torch.empty(len(idx), n_cells)
        shifts = torch.empty(len(idx), 2, dtype=torch.float64)
        for g_id in torch.unique(groups).tolist():
            u = torch.from_numpy(_sobol_points(seed, f"{stream}-sobol-{group}", g_id, n_cells + 2, group))
            sel = groups == g_id
            cells[sel] = (u[pos[sel], :n_cells] < p).float()
            shifts[sel] = u[pos[sel], n_cells:]
        return cells, shifts
    group = {"iid": 1, "antithetic": 2, "stratified": group}[sampling]
    groups, pos = idx // group, idx % group
    cells = torch.empty(len(idx), n_cells)
    shifts = torch.empty(len(idx), 2)
    for g_id in torch.unique(groups).tolist():
        g = item_generator(seed, f"{stream}-{sampling}-{group}", g_id)
        if sampling == "iid":
            c = (torch.rand(1, n_cells, generator=g) < p).float()
        elif sampling == "antithetic":
            u = torch.rand(n_cells, generator=g)
            c = torch.stack([(u < p).float(), ((1.0 - u) < p).float()])
        else:
            ranks = torch.rand(group, n_cells, generator=g).argsort(0).argsort(0)   # a random order per cell
            counts = torch.floor(p * group + torch.rand(n_cells, generator=g))      # E[count] = p * group
            c = (ranks < counts).float()
        sel = groups == g_id
        cells[sel] = c[pos[sel]]
        shifts[sel] = torch.rand(2, generator=g)  # one shift per group
    return cells, shifts


def smooth_masks(index: torch.Tensor, seed: int, shape: tuple[int, ...], grid: int, p: float, sampling: str,
                 group: int, stream: str, device: torch.device | str | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """RISE-style masks number ``index`` (n,) and their binary cells: ``(masks (n, *shape), cells (n, n_cells))``.

    ``shape`` = (H, W): a ``grid`` x ``grid`` grid of Bernoulli(p) cells, bilinearly upsampled to
    ((grid + 1) C_H, (grid + 1) C_W) with cell C = ceil(size / grid), cropped at a uniform shift in [0, C) (RISE,
    Petsiuk et al. 2018; RELAX Sec. 3.1); ``n_cells`` = grid² (row-major). ``shape`` = (L,): binary per-token masks,
    the cells themselves. The draws are tiny and made on the host, so every device gets the same masks; the
    upsampling runs on ``device``.
    """
    if len(shape) == 1:
        cells, _ = binary_cells(index, seed, int(shape[0]), p, sampling, group, stream)
        cells = cells.to(device)
        return cells, cells
    if len(shape) != 2:
        raise ValueError(f"shape must be (H, W) or (L,), got {tuple(shape)}")
    height, width = int(shape[0]), int(shape[1])
    cells, shifts = binary_cells(index, seed, grid * grid, p, sampling, group, stream)
    cell_h, cell_w = math.ceil(height / grid), math.ceil(width / grid)
    dy = (shifts[:, 0] * cell_h).long().clamp_max(cell_h - 1)
    dx = (shifts[:, 1] * cell_w).long().clamp_max(cell_w - 1)
    # bilinear upsampling is separable: crop(up(C)) = A_y[dy:dy+H] @ C @ A_x[dx:dx+W]^T, computed for the crop only
    a_y = bilinear_weights((grid + 1) * cell_h, grid)[dy[:, None] + torch.arange(height)].to(device)  # (n, H, grid)
    a_x = bilinear_weights((grid + 1) * cell_w, grid)[dx[:, None] + torch.arange(width)].to(device)   # (n, W, grid)
    cells = cells.to(device)
    out = torch.bmm(torch.bmm(a_y, cells.view(-1, grid, grid)), a_x.transpose(1, 2))
    return out.clamp_(0.0, 1.0), cells


def bilinear_weights(out_len: int, in_len: int) -> torch.Tensor:
    """(out_len, in_len) matrix of ``F.interpolate(..., mode="bilinear", align_corners=False)`` along one axis."""
    src = ((torch.arange(out_len, dtype=torch.float64) + 0.5) * (in_len / out_len) - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(in_len - 1)
    i1 = (i0 + 1).clamp_max(in_len - 1)
    lam = src - i0.to(torch.float64)
    a = torch.zeros(out_len, in_len, dtype=torch.float64)
    rows = torch.arange(out_len)
    a.index_put_((rows, i0), 1.0 - lam, accumulate=True)
    a.index_put_((rows, i1), lam, accumulate=True)
    return a.float()


def expected_cell_weights(shape: tuple[int, ...], grid: int = 7) -> torch.Tensor:
    """(n_cells, P) float64: E_shift[w_c(pixel)], the bilinear weight of cell c at each pixel averaged over the
    uniform shift -- so that E[B_c M_ij] = p² + p (1 - p) w̄_c(ij) for Bernoulli(p) cells B. Tokens: the identity."""
    if len(shape) == 1:
        return torch.eye(int(shape[0]), dtype=torch.float64)
    height, width = int(shape[0]), int(shape[1])
    cell_h, cell_w = math.ceil(height / grid), math.ceil(width / grid)
    a_y = bilinear_weights((grid + 1) * cell_h, grid).double()
    a_x = bilinear_weights((grid + 1) * cell_w, grid).double()
    mean_y = torch.stack([a_y[dy:dy + height] for dy in range(cell_h)]).mean(0)   # (H, grid)
    mean_x = torch.stack([a_x[dx:dx + width] for dx in range(cell_w)]).mean(0)    # (W, grid)
    return torch.einsum("ia,jb->abij", mean_y, mean_x).reshape(grid * grid, height * width)


class BlockStream:
    """Draws in aligned blocks of ``BLOCK``: made on demand, their scores collected as model outputs arrive, and
    each block handed out once all its scores are in, in draw order.

    Accumulating whole aligned blocks (never model chunks) is what makes the streamed statistics independent of
    ``batch_size``; only the blocks in flight are kept (items arrive in order, so at most two are open).

    Args:
        n_images: images scored with every draw.
        n_masks: draws in all.
        make: draw indices (k,) -> a tuple of tensors with k rows each (e.g. masks and the cells they came from).
    """

    def __init__(self, n_images: int, n_masks: int,
                 make: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]) -> None:
        self.n_images, self.n_masks, self.make = n_images, n_masks, make
        self._data: dict[int, tuple[torch.Tensor, ...]] = {}
        self._scores: dict[int, torch.Tensor] = {}

    def _index(self, b: int) -> torch.Tensor:
        return torch.arange(b * BLOCK, min((b + 1) * BLOCK, self.n_masks))

    def data(self, b: int) -> tuple[torch.Tensor, ...]:
        """The tensors of block ``b`` (made once, kept until the block is handed out)."""
        if b not in self._data:
            self._data[b] = self.make(self._index(b))
        return self._data[b]

    def rows(self, index: torch.Tensor, part: int = 0) -> torch.Tensor:
        """Rows ``index`` (k,) (increasing) of tensor ``part`` of the blocks: (k, ...)."""
        blk = index // BLOCK
        first, last = int(blk[0]), int(blk[-1])
        if first == last:
            return self.data(first)[part][index - first * BLOCK]
        return torch.cat([self.data(b)[part][index[blk == b] - b * BLOCK] for b in range(first, last + 1)])

    def add(self, image: torch.Tensor, mask: torch.Tensor, scores: torch.Tensor
            ) -> list[tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor]]:
        """Record ``scores`` (k,) of (``image`` (k,), ``mask`` (k,)) pairs and return the blocks completed so far as
        ``(mask indices (m,), block tensors, scores (n_images, m) float64)``, in order (each exactly once)."""
        blk = mask // BLOCK
        for b in torch.unique(blk).tolist():
            size = min(BLOCK, self.n_masks - b * BLOCK)
            buf = self._scores.setdefault(b, torch.full((self.n_images, size), float("nan"), dtype=torch.float64,
                                                        device=scores.device))
            sel = blk == b
            buf[image[sel], mask[sel] - b * BLOCK] = scores[sel].to(torch.float64)
        done = []
        for b in sorted(self._scores):
            if torch.isnan(self._scores[b]).any():  # scores are checked finite: NaN means "not evaluated yet"
                break
            done.append((self._index(b), self.data(b), self._scores.pop(b)))
            self._data.pop(b, None)
        return done

    def close(self, stopped: bool = False) -> None:
        """Raise if some draw was never scored (unless sampling ``stopped`` early on purpose)."""
        if self._scores and not stopped:  # pragma: no cover - every item was evaluated
            raise RuntimeError("internal error: some masks were not evaluated")
        self._scores.clear()
        self._data.clear()


# ---------------------------------------------------------------------------------------------------------------
# Gaussian noise


class GaussianNoise:
    """N(0, I) draws of one sample shape for one explained input, by draw index, with variance-reduced coupling.

    ``sampling``: ``"antithetic"`` (draws 2k, 2k+1 = eps_k, -eps_k; eps_k from the generator (seed, stream, input,
    k) on ``device``) or ``"sobol"`` (groups of ``group`` = 2^m draws = one scrambled Sobol net through Phi^-1, made
    on the host in float64 and cast to float32). Draw j never depends on the cap or on the other draws requested.
    """

    def __init__(self, seed: int, stream: str, item: int, shape: Sequence[int], sampling: str, group: int,
                 device: torch.device | str | None = None) -> None:
        self.seed, self.item, self.shape = seed, int(item), tuple(int(s) for s in shape)
        self.sampling, self.device = sampling, device
        self.stream = f"{stream}-{sampling}"
        self.group = {"antithetic": 2, "sobol": group}[sampling]
        if sampling == "sobol":
            sobol_group_size(group)
            d = math.prod(self.shape)
            if d > SOBOL_MAX_DIM:
                raise ValueError(f"sampling='sobol' supports inputs of at most {SOBOL_MAX_DIM} features (scipy's "
                                 f"Sobol directions); this input has {d} ({'x'.join(map(str, self.shape))}): use "
                                 "sampling='antithetic'")
        self._cache: tuple[int, torch.Tensor] | None = None

    def _group(self, g_id: int) -> torch.Tensor:
        if self._cache is not None and self._cache[0] == g_id:
            return self._cache[1]
        key = (self.item << 32) | g_id   # one generator per (input, group), whatever the cap
        if self.sampling == "antithetic":
            eps = torch.randn(self.shape, device=self.device,
                              generator=item_generator(self.seed, self.stream, key, self.device))
            out = torch.stack([eps, -eps])
        else:
            from scipy.special import ndtri

            u = _sobol_points(self.seed, f"{self.stream}-{self.group}", key, math.prod(self.shape), self.group)
            u = u + 2.0 ** -(SOBOL_BITS + 1)      # the centre of its dyadic cell: finite, symmetric about 1/2
            out = torch.from_numpy(ndtri(u)).float().view((self.group,) + self.shape).to(self.device)
        self._cache = (g_id, out)
        return out

    def draws(self, index: torch.Tensor) -> torch.Tensor:
        """Draws number ``index`` (k,): (k, *shape) float32 on the device."""
        rows = [self._group(int(j) // self.group)[int(j) % self.group] for j in index.tolist()]
        return torch.stack(rows) if rows else torch.empty((0,) + self.shape, device=self.device)


# ---------------------------------------------------------------------------------------------------------------
# streaming replicate statistics


class ReplicateMoments:
    """Streaming mean and co-moments of ``k`` quantities estimated by independent replicates, per element.

    Replicates arrive in blocks (:meth:`add`); each block's mean and centred co-moments are merged into the running
    ones with Chan et al.'s parallel form of Welford's update, in float64, so memory is O(k² x elements) whatever the
    number of replicates and the result depends only on the (aligned) blocks, not on model chunks.

    Args:
        k: quantities per replicate (1 for a mean; 2 for VarGrad's g and g², or a ratio's numerator and denominator).
        shape: elements per quantity, e.g. (N, P) for N images of P pixels.
    """

    def __init__(self, k: int, shape: Sequence[int], device: torch.device | str | None = None) -> None:
        self.k = int(k)
        self.count = 0
        self.mean = torch.zeros((self.k, *shape), dtype=torch.float64, device=device)
        self.comoment = torch.zeros((self.k, self.k, *shape), dtype=torch.float64, device=device)

    def add(self, values: torch.Tensor) -> None:
        """Merge a block of replicates ``values`` (r, k, *shape)."""
        r = int(values.shape[0])
        if r == 0:
            return
        v = values.to(torch.float64)
        mean_b = v.mean(0)
        dev = v - mean_b
        com_b = torch.einsum("rj...,rl...->jl...", dev, dev) if self.k > 1 else (dev * dev).sum(0).unsqueeze(0)
        total = self.count + r
        delta = mean_b - self.mean
        self.mean += delta * (r / total)
        cross = delta.unsqueeze(1) * delta.unsqueeze(0) if self.k > 1 else (delta * delta).unsqueeze(0)
        self.comoment += com_b + cross * (self.count * r / total)
        self.count = total

    def covariance_of_mean(self, j: int = 0, l: int | None = None) -> torch.Tensor:
        """Cov(mean_j, mean_l) estimated from the replicates: comoment / (R (R - 1)); NaN (unknown) before 2
        replicates."""
        l = j if l is None else l
        if self.count < 2:
            return torch.full_like(self.mean[0], math.nan)
        return self.comoment[j, l] / (self.count * (self.count - 1))

    def stderr(self, j: int = 0) -> torch.Tensor:
        """Standard error of the mean of quantity ``j`` (elements' shape)."""
        return self.covariance_of_mean(j).clamp_min(0.0).sqrt()


class MaskedMean:
    """The mask-weighted mean (1/N) sum_n f_n M_n per image and pixel from replicate groups, with the sequential
    (past-fitted) cell control variate of the module doc, and its standard error.

    Args:
        n_images: images sharing the masks. n_pixels: pixels (or features) per mask.
        group: draws per replicate (1 for iid draws, 2 antithetic, the stratum or the Sobol net size).
        basis: (n_cells, P) E[B_c M_ij] = p² + p (1 - p) w̄_c(ij) to switch the control variate on, or ``None``.
        p: cell probability (E[M_ij] = p).
        cv_after: masks in the past before the control variate is used (default ``CV_MASKS_PER_COEFFICIENT`` x
            (cells + 1)).
        full_covariance: keep the whole (P, P) covariance of the estimate (:meth:`covariance`; one image only, for
            small P such as keypoint features), so that its error can be propagated through a map of it.
    """

    def __init__(self, n_images: int, n_pixels: int, group: int, basis: torch.Tensor | None = None, p: float = 0.5,
                 device: torch.device | str | None = None, cv_after: int | None = None,
                 full_covariance: bool = False) -> None:
        self.n_images, self.n_pixels, self.group, self.p = n_images, n_pixels, int(group), float(p)
        self.full = bool(full_covariance)
        if self.full and n_images != 1:
            raise ValueError("full_covariance keeps one image's (P, P) covariance: explain one image at a time")
        self.moments = ReplicateMoments(n_pixels, (), device) if self.full \
            else ReplicateMoments(1, (n_images, n_pixels), device)
        self.n = 0
        self.basis = None if basis is None else basis.to(device=device, dtype=torch.float64)
        if self.basis is not None:
            d = self.basis.shape[0] + 1
            self.cv_after = CV_MASKS_PER_COEFFICIENT * d if cv_after is None else int(cv_after)
            self.xtx = torch.zeros(d, d, dtype=torch.float64, device=device)
            self.xts = torch.zeros(n_images, d, dtype=torch.float64, device=device)
        self.cv_masks = 0   # masks whose replicate used the control variate

    def coefficients(self) -> torch.Tensor | None:
        """(cells + 1, n_images) least-squares [a; beta] of the score on [1, cells] over the past (a small ridge
        keeps the solve defined); while the past is shorter than ``cv_after`` masks, the intercept alone (a = the
        past mean score, beta = 0: already removes the mean score x mask-coverage noise of independent masks);
        ``None`` before any past."""
        if self.basis is None or self.n == 0:
            return None
        d = self.xtx.shape[0]
        if self.n < self.cv_after:
            coef = torch.zeros(d, self.xts.shape[0], dtype=torch.float64, device=self.xts.device)
            coef[0] = self.xts[:, 0] / self.xtx[0, 0]
            return coef
        ridge = 1e-6 * max(1, self.n) * torch.eye(d, dtype=torch.float64, device=self.xtx.device)
        return torch.linalg.solve(self.xtx + ridge, self.xts.t())

    def add_block(self, cells: torch.Tensor | None, masks: torch.Tensor, scores: torch.Tensor) -> None:
        """Merge one aligned block of whole groups: ``cells`` (K, n_cells) (``None`` without control variate),
        ``masks`` (K, P), ``scores`` (n_images, K)."""
        k = int(masks.shape[0])
        if k % self.group:
            raise ValueError(f"internal error: a block of {k} draws is not whole groups of {self.group}")
        n_groups = k // self.group
        s = scores.to(torch.float64)
        m = masks.reshape(k, -1).to(device=s.device, dtype=torch.float64)
        coef = self.coefficients()
        r, offset = s, None
        if coef is not None:
            c = cells.to(device=s.device, dtype=torch.float64)
            a, beta = coef[0], coef[1:]                                 # (N,), (n_cells, N)
            r = s - a[:, None] - (c @ beta).t()
            offset = a[:, None] * self.p + beta.t() @ self.basis       # (N, P): E[a M + beta.B M]
            self.cv_masks += k
        r, m = r.view(self.n_images, n_groups, self.group), m.view(n_groups, self.group, -1)
        for a in range(0, n_groups, REPLICATE_SLICE):   # bounded memory: at most 8 replicates of (N, P) at once
            y = torch.einsum("ngk,gkp->gnp", r[:, a:a + REPLICATE_SLICE], m[a:a + REPLICATE_SLICE]) / self.group
            if offset is not None:
                y = y + offset
            self.moments.add(y[:, 0] if self.full else y.unsqueeze(1))
        if self.basis is not None:   # the regression sums include this block only after it was corrected
            x = torch.cat([torch.ones(k, 1, dtype=torch.float64, device=s.device),
                           cells.to(device=s.device, dtype=torch.float64)], 1)
            self.xtx += x.t() @ x
            self.xts += s @ x
        self.n += k

    @property
    def replicates(self) -> int:
        return self.moments.count

    def estimate(self) -> torch.Tensor:
        """(n_images, P) float64 estimate of E[f M]."""
        return self.moments.mean.unsqueeze(0) if self.full else self.moments.mean[0]

    def stderr(self) -> torch.Tensor:
        """(n_images, P) float64 standard error of :meth:`estimate`."""
        if self.full:
            return self.covariance().diagonal().clamp_min(0.0).sqrt().unsqueeze(0)
        return self.moments.stderr(0)

    def covariance(self) -> torch.Tensor:
        """(P, P) float64 covariance of the estimate from the replicates (``full_covariance`` only)."""
        if not self.full:
            raise RuntimeError("MaskedMean(full_covariance=False) keeps the per-pixel variances only")
        r = self.moments.count
        if r < 2:
            return torch.full_like(self.moments.comoment, math.nan)
        return self.moments.comoment / (r * (r - 1))


class SampleBlocks:
    """Per-image buffers that hand out each input's draws in aligned blocks of ``block`` (in draw order), whatever
    the model chunks: what makes per-sample statistics of gradient methods chunk-invariant."""

    def __init__(self, n_images: int, n_samples: int, block: int) -> None:
        self.n_samples, self.block = int(n_samples), int(block)
        self._rows: list[dict[int, Any]] = [{} for _ in range(n_images)]
        self._next = [0] * n_images

    def add(self, image: int, sample: int, row: Any) -> list[tuple[int, list[Any]]]:
        """Record ``row`` of draw ``sample`` of input ``image``; returns the blocks completed so far as
        ``(block index, rows in draw order)``."""
        rows = self._rows[image]
        rows[sample] = row
        done = []
        while True:
            b = self._next[image]
            start, stop = b * self.block, min((b + 1) * self.block, self.n_samples)
            if start >= self.n_samples or any(j not in rows for j in range(start, stop)):
                break
            done.append((b, [rows.pop(j) for j in range(start, stop)]))
            self._next[image] = b + 1
        return done


# ---------------------------------------------------------------------------------------------------------------
# stopping


def relative_error(estimate: torch.Tensor, stderr: torch.Tensor) -> torch.Tensor:
    """(N,) float64: the RMS standard error of each input's map over the noise-free spatial standard deviation of the
    map (module doc): sqrt(mean se²) / sqrt(max(0, var_map(estimate) - mean se²)); estimate, stderr: (N, ...).

    A map whose variation is all noise has relative error inf; an exactly known map (se = 0) has 0; a map whose
    standard error is undefined somewhere (NaN: too few independent draws to estimate it) has NaN, which never
    passes a stopping rule."""
    est = estimate.flatten(1).to(torch.float64)
    return relative_error_from_moments(est.var(1, unbiased=False), stderr.flatten(1).to(torch.float64).pow(2).mean(1))


def relative_error_from_moments(map_variance: torch.Tensor, mean_se2: torch.Tensor) -> torch.Tensor:
    """(N,) :func:`relative_error` from each map's spatial variance (N,) and mean squared standard error (N,): for
    maps known only through moments, e.g. a linear map H theta of an estimate theta with covariance C, whose
    pixel mean of se² is trace(C H^T H) / P (sift_rise's heatmap)."""
    se2 = mean_se2.to(torch.float64)
    signal = (map_variance.to(torch.float64) - se2).clamp_min(0.0)
    out = se2.sqrt() / signal.sqrt().clamp_min(1e-300)
    out = torch.where(signal > 0, out, torch.where(se2 > 0, torch.full_like(se2, math.inf), torch.zeros_like(se2)))
    return torch.where(torch.isnan(se2), torch.full_like(se2, math.nan), out)


class ToleranceStop:
    """The ``tol`` stopping rule of the module doc, and the progress-bar note showing the current error.

    Args:
        tol: relative standard error to stop at, or ``None`` (run to the cap; the error is still reported).
        cap: the budget (draws per input). unit: what a draw is called in messages (``"masks"``, ``"samples"``).
        method: the method's name, for the warning. evaluator: whose progress bar shows the error.
        group: draws per independent group (replicate): the rule waits for max(``MIN_REPLICATES``,
            ceil(``MIN_DRAWS`` / group)) groups, unless ``min_replicates`` is given.
    """

    def __init__(self, tol: float | None, cap: int, unit: str, method: str, evaluator: Any = None,
                 min_replicates: int | None = None, group: int = 1) -> None:
        self.tol, self.cap, self.unit, self.method = tol, int(cap), unit, method
        if min_replicates is None:
            min_replicates = max(MIN_REPLICATES, -(-MIN_DRAWS // max(1, int(group))))
        self.evaluator, self.min_replicates = evaluator, int(min_replicates)
        self.error: torch.Tensor | None = None
        self.replicates = 0

    def check(self, estimate: torch.Tensor, stderr: torch.Tensor, replicates: int) -> bool:
        """Record the relative error of ``estimate`` (N, ...) with ``stderr``; True when sampling may stop."""
        return self.check_error(relative_error(estimate, stderr), replicates)

    def check_error(self, error: torch.Tensor, replicates: int) -> bool:
        """:meth:`check` for a relative error (N,) computed by the caller (e.g. of a linear map of the estimate,
        :func:`relative_error_from_moments`)."""
        self.error = error
        self.replicates = int(replicates)
        worst = float(self.error.max()) if self.error.numel() else 0.0
        note = getattr(self.evaluator, "progress_note", None)
        if note is not None:
            note(f"rel.err {worst:.3g}" + (f" (tol {self.tol:g})" if self.tol is not None else ""))
        return self.tol is not None and replicates >= self.min_replicates and worst < self.tol

    def finish(self, used: int, stopped: bool) -> None:
        """Warn when ``tol`` was asked for and the cap came first."""
        if self.tol is None or stopped:
            return
        worst = float(self.error.max()) if self.error is not None and self.error.numel() else math.nan
        # stacklevel 6: warn_cap_reached, finish, _explain, Method.explain, SamplingMixin.explain, the caller
        warn_cap_reached(self.method, self.tol, self.cap, self.unit, worst, stacklevel=6,
                         groups=(self.replicates, self.min_replicates))


def warn_cap_reached(method: str, tol: float, cap: int, unit: str, worst: float, inputs: Sequence[int] = (),
                     stacklevel: int = 5, groups: tuple[int, int] | None = None) -> None:
    """The :class:`ToleranceNotReachedWarning` for a ``tol`` the cap did not reach (``worst``: the largest relative
    error left; ``inputs``: which inputs of the batch did not reach it, if not all share the draws; ``groups``:
    (independent groups drawn, groups the stopping rule needs), when known)."""
    which = f" for input(s) {list(inputs)}" if inputs else ""
    if math.isnan(worst):   # fewer independent draws than the standard error needs
        warnings.warn(f"{method}: the cap of {cap} {unit} was reached{which} before the standard error could be "
                      f"estimated (too few independent draws for tol={tol:g}); returning the estimate from {cap} "
                      f"{unit}, extras['stderr'] NaN. Raise the cap.", ToleranceNotReachedWarning,
                      stacklevel=stacklevel)
        return
    if worst < tol:   # the estimate reads below tol, but from too few independent groups to be trusted
        few = (f" with {groups[0]} independent groups of draws, fewer than the {groups[1]} needed to trust the error "
               "estimate" if groups else " before enough independent groups of draws to trust the error estimate")
        warnings.warn(f"{method}: the cap of {cap} {unit} was reached{which}{few} (it reads {worst:.3g} < "
                      f"tol={tol:g}); returning the "
                      f"estimate from {cap} {unit} with its standard error (extras['stderr']). Raise the cap.",
                      ToleranceNotReachedWarning, stacklevel=stacklevel)
        return
    warnings.warn(f"{method}: the cap of {cap} {unit} was reached{which} before the relative standard error fell "
                  f"below tol={tol:g} (it is {worst:.3g}); returning the estimate from {cap} {unit} with its standard "
                  "error (extras['stderr']). Raise the cap or tol.", ToleranceNotReachedWarning, stacklevel=stacklevel)


def gradient_rounds(evaluator: Any, total: int, make: Callable[[int, int], torch.Tensor],
                    score: Callable[[torch.Tensor, int, int], torch.Tensor], *, round_size: int | None,
                    sample_shape: Sequence[int], desc: str | None = None
                    ) -> "Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]":
    """:meth:`BatchedEvaluator.gradient_chunks` over items ``0..total`` in rounds of ``round_size`` items (``None``:
    one round). A caller that may stop at a round's blocks then wastes at most the rest of one round, instead of the
    rest of a model chunk of up to ``batch_size`` items per input."""
    step = total if not round_size else int(round_size)
    for a in range(0, total, step):
        b = min(total, a + step)
        for s0, s1, scores, grads in evaluator.gradient_chunks(
                b - a, lambda u, v, a=a: make(a + u, a + v), lambda out, u, v, a=a: score(out, a + u, a + v),
                sample_shape=sample_shape, desc=desc):
            yield a + s0, a + s1, scores, grads


class SamplingMixin:
    """For :class:`~pathxai.core.Method` subclasses that sample: ``explain`` also records ``meta["samples_used"]``
    (draws per explained input), ``meta["relative_error"]`` (per input, see :func:`relative_error`) and
    ``meta["tol_reached"]`` (whether every input reached ``tol``; ``None`` without ``tol``).

    Put it before :class:`Method` in the bases; ``_explain`` calls :meth:`_record_sampling`."""

    def _record_sampling(self, used: Sequence[int], error: torch.Tensor | Sequence[float] | None,
                         reached: bool | None) -> None:
        err = None if error is None else [float(e) for e in (error.tolist() if isinstance(error, torch.Tensor)
                                                             else error)]
        self.__dict__["_sampling_record"] = {"samples_used": [int(u) for u in used], "relative_error": err,
                                             "tol_reached": reached}

    def explain(self, x: torch.Tensor, target: Any = None) -> Any:
        self.__dict__.pop("_sampling_record", None)
        e = super().explain(x, target)  # type: ignore[misc]
        record = self.__dict__.pop("_sampling_record", None)
        if record is not None:
            e.meta.update(record)
        return e

    def _finish_sampling(self, used: Sequence[int], errors: Sequence[float], unreached: Sequence[int], cap: int,
                         unit: str, n_inputs: int) -> None:
        """Warn for the inputs that did not reach ``tol`` before ``cap`` (``unreached``: their indices; ``errors``:
        every input's final relative error) and record ``samples_used`` / ``relative_error`` / ``tol_reached``."""
        if unreached:
            warn_cap_reached(self.name, self.tol, cap, unit, max(errors[i] for i in unreached),  # type: ignore
                             unreached if len(unreached) < n_inputs else (), stacklevel=6)
        self._record_sampling(used, errors, None if self.tol is None else not unreached)  # type: ignore

    explain.__doc__ = ("Explain the batch ``x`` (see :meth:`pathxai.core.Method.explain`); ``meta`` also holds "
                       "``samples_used``, ``relative_error`` and ``tol_reached``.")
    __call__ = explain


__all__ = ["BLOCK", "MASK_SAMPLINGS", "MIN_DRAWS", "MIN_REPLICATES", "NOISE_SAMPLINGS", "BlockStream", "GaussianNoise",
           "MaskedMean", "ReplicateMoments", "SampleBlocks", "SamplingMixin", "ToleranceNotReachedWarning",
           "ToleranceStop", "binary_cells", "bilinear_weights", "check_sampling", "check_tol", "expected_cell_weights",
           "gradient_rounds", "relative_error", "relative_error_from_moments", "round_up",
           "smooth_masks", "warn_cap_reached"]
