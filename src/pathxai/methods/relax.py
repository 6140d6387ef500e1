"""RELAX and U-RELAX (Wickstrøm et al., "RELAX: Representation Learning Explainability", IJCV 2023).

RELAX explains a *representation* ``h = f(x)`` -- any encoder, no labels -- by masking the input at random and
measuring how similar the representation of each masked copy stays to ``h``:

    importance   R_ij = E_M[ s(h, f(x ⊙ M)) M_ij ]                       (Eq. 1), estimated by Eq. 2 below
    uncertainty  U_ij = spread of s(h, f(x ⊙ M)) over the masks that keep pixel (i, j)   (Eq. 8-9)

With N masks M_1..M_N, s_n = s(h, h̄_n), and the per-pixel sums  W_ij = Σ_n M_ij(n)  (Algorithm 1's "sum of masks"),
R^w_ij = Σ_n s_n M_ij(n) / W_ij (the running mean of Eq. 12) and  S_ij = Σ_n M_ij(n) (s_n - R^w_ij)²  (the running sum
of Eq. 13), the two estimators this module offers are:

``estimator="mean"`` (default; Eq. 2, Theorem 1 applies; Eq. 9's 1/N normalisation)
    R̄_ij = (1/N) Σ_n s_n M_ij(n) = R^w_ij W_ij / N
    Ū_ij = (1/N) Σ_n (s_n - R^w_ij)² M_ij(n) = S_ij / N
``estimator="weighted"`` (Eq. 12-13 / Algorithm 1 / Theorem 3's Parzen estimate; what the authors' ``relax-xai``
package returns, up to its un-normalised uncertainty)
    R_ij = R^w_ij,   U_ij = S_ij / W_ij  (Algorithm 1 divides by W_ij - 1, relax-xai not at all: per-pixel scales
    that agree to O(1/W) and do not change U-RELAX's threshold much)

The paper is not self-consistent here. Eq. 2 is a plain mean, while the one-pass update it says all experiments use
(Eq. 12, Algorithm 1) is a mask-weighted mean; both are offered (E[M_ij] = p for every pixel with these masks, so
``weighted`` ≈ ``mean`` / p). And Eq. 9 centres s_n on R̄_ij of Eq. 2, which is not a mean of the s_n (it is ≈ p
times one): read literally, (s_n - R̄_ij)² measures how far s is from p·s, not the spread of s, and the result is
nearly constant over the image (U-RELAX then keeps all or nothing). Every uncertainty here is therefore centred, as
Eq. 13 / Algorithm 1 centre it, on the weighted mean R^w_ij -- the spread of the similarity among the masks that keep
the pixel -- and normalised by N (Eq. 9) or by W_ij (weighted). Both come out of the same one-pass statistics
(W, R^w, S), updated with
Welford's / West's (1979) weighted recurrence -- Eq. 12-13 -- in *blocks* of 64 masks: each block's statistics are
computed in float64 (shifted sums) and merged into the running ones with Chan et al.'s parallel form of the same
recurrence (block size 1 is Eq. 12-13 verbatim). Blocks are aligned to mask indices, not to model batches, so results
do not depend on ``batch_size`` or on how the masks were split into forward passes, memory does not grow with the
number of masks, and the accumulation costs a few matrix products per 64 masks instead of a Python loop per mask.

Masks (paper Sec. 3.1, from RISE): an h x w grid (``grid``, default 7 = the paper's h = w = 7) of Bernoulli(p) cells
(``p``, default 0.5), bilinearly upsampled to ((h+1) C_H, (w+1) C_W) with cell C = ceil(H / h), and cropped to H x W
at a uniformly random shift in [0, C). Each mask is made on the fly from its own generator derived from ``seed``, in
blocks, and one mask is shared by all images of the batch (items are laid out mask-major, so the masked copies of
several images go through one forward pass). ``sampling`` picks how masks are drawn *jointly*; every option keeps each
single mask distributed exactly as the paper's, so both estimators keep their expectation (Eq. 2 stays unbiased):

- ``"stratified"`` (default): in each aligned group of ``stratum`` = K masks (default 8; one shift for the group),
  each grid cell is kept in exactly floor(p·K) or ceil(p·K) of the K masks (randomised rounding, so P(kept) = p
  exactly), in an independent random order per cell. Σ_n M_ij(n) over a group is then (nearly) the constant p·K,
  which removes the mask-coverage noise from Eq. 2. ``n_masks`` is rounded up to a multiple of K (3000 already is).
- ``"iid"`` (the paper): independent masks. Theorem 1 is stated for these.
- ``"antithetic"``: masks 2k and 2k+1 share one uniform field u and one shift, cells u < p and 1 - u < p (for
  p = 0.5, a mask and its complement); ``n_masks`` is rounded up to even.

Why stratified by default: with iid masks, Eq. 2's estimate carries the noise of Σ_n M_ij(n) / N around p multiplied
by the mean similarity (≈ 0.6-0.95 for real encoders), which dominates its error: at 256 masks the RMS per-pixel
standard deviation (in Eq. 12 units) is 0.038 for iid Eq. 2, 0.0022 for the iid mask-weighted estimate (what relax-xai
computes), 0.0021 antithetic and 0.0015 stratified on the clutter SimCLR encoder (0.028 / 0.0078 / 0.0064 / 0.0052 on
the digits CNN features). Stratified Eq. 2 is unbiased (tested against the exact expectation on an enumerable mask
space) and needs ~2-3x fewer masks than the weighted iid estimate for the same error.

``control_variate`` (Eq. 2 only; ``"auto"``, the default, turns it on from 200 masks at grid 7) further removes
the part of the similarity that is linear in the mask's
cells -- a regression on the grid² binary cells, cross-fitted on two halves of the masks so the estimate stays exactly
unbiased, with the exact expectation of the fitted part added back (:class:`CellControlVariate`). The similarity is
~80 % linear in the cells on our encoders; the error for a given number of masks drops a further 1.3-1.7x (RMS), at
the price of a fixed (2, grid², pixels) float64 buffer and one more matrix product per 64 masks.

Text: inputs (N, L, D) of token embeddings are masked per token with Bernoulli(p) (binary masks, no grid; the three
``sampling`` options apply per token). ``baseline=0`` (default) turns a removed token into a zero row, which the
encoders of :mod:`pathxai.models.encoders` drop through the attention mask; pass the encoder's pad-token embedding
as ``baseline`` to replace removed tokens by [PAD] instead. Attribution (N, L).

Theorem 1 (:func:`masks_needed`, :func:`error_bound`): with s in [0, 1] (cosine similarity of non-negative, e.g.
post-ReLU, representations), N >= ln(2/δ) / (2 t²) masks give |R̄_ij - R_ij| < t with probability >= 1 - δ for the
``mean`` estimator with iid masks (Hoeffding / McDiarmid; tested). For stratified masks the N/K group means are
independent and bounded, so the theorem holds with N/K in place of N; empirically their error is far *below* the iid
error (see above), so the iid N is a conservative choice for them too. Note: t = 0.01, δ = 0.01 needs 26,492 masks;
the paper's 3,000 masks guarantee t ≈ 0.030 at δ = 0.01 (its Sec. 3.1 claims 0.01).

U-RELAX (Sec. 3.3, Eq. 10-11): importance where Ū_ij < ε, 0 elsewhere, with ε = γ · mean(Ū) or γ · median(Ū) over the
image's pixels (default: median, γ = 1.0, the paper's choice from Sec. 5.4). See :func:`u_relax`.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence, Union

import torch
import torch.nn.functional as F

from ..core import Method, Target, item_outputs, register_method
from ..core.limits import Cost
from ..core.sampling import (BLOCK, BlockStream, MaskedMean, ReplicateMoments, SamplingMixin, ToleranceStop,
                             bilinear_weights as _bilinear_weights, check_tol, expected_cell_weights, relative_error,
                             smooth_masks)
from ..core.validation import check_finite_float, check_fraction, check_model_output, check_positive_int

SimilarityLike = Union[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]

SAMPLINGS = ("iid", "antithetic", "stratified", "mc")   # "mc" (every sampling method's plain Monte Carlo) = "iid"
ESTIMATORS = ("mean", "weighted")
AGGREGATIONS = ("median", "mean")
PAPER_N_MASKS = 3000
CV_MASKS_PER_COEFFICIENT = 2  # control_variate="auto": masks per half and per coefficient before it is used


# ---------------------------------------------------------------------------------------------------------------
# Theorem 1


def masks_needed(tolerance: float, delta: float = 0.01, value_range: float = 1.0) -> int:
    """Theorem 1: the number of masks N with P(|R̄_ij - R_ij| >= tolerance) <= delta for every pixel.

    N = ceil(ln(2 / delta) · value_range² / (2 · tolerance²)) (Hoeffding; the paper's Eq. 4 has value_range = 1,
    the range of s · M for s in [0, 1]). For the cosine similarity of representations that can be negative, the
    range of s is [-1, 1]: pass ``value_range=2``.

    Args:
        tolerance: absolute error t > 0 of the importance of one pixel.
        delta: failure probability in (0, 1).
        value_range: b - a for the similarity s in [a, b].
    """
    t = check_fraction(tolerance, "tolerance", low=0.0, high=math.inf, inclusive=False)
    d = check_fraction(delta, "delta", inclusive=False)
    r = check_fraction(value_range, "value_range", low=0.0, high=math.inf, inclusive=False)
    return max(1, math.ceil(math.log(2.0 / d) * r * r / (2.0 * t * t) - 1e-9))


def error_bound(n_masks: int, delta: float = 0.01, value_range: float = 1.0) -> float:
    """Theorem 1 inverted: the error t that N masks guarantee with probability 1 - delta, sqrt(ln(2/δ)/(2N))·range."""
    n = check_positive_int(n_masks, "n_masks")
    d = check_fraction(delta, "delta", inclusive=False)
    r = check_fraction(value_range, "value_range", low=0.0, high=math.inf, inclusive=False)
    return r * math.sqrt(math.log(2.0 / d) / (2.0 * n))


# ---------------------------------------------------------------------------------------------------------------
# masks


def relax_masks(index: torch.Tensor, seed: int, shape: tuple[int, ...], grid: int = 7, p: float = 0.5,
                sampling: str = "iid", stratum: int = 8, stream: str = "relax",
                device: torch.device | str | None = None) -> torch.Tensor:
    """RELAX masks number ``index`` (n,) for inputs of spatial ``shape``: (n, *shape) in [0, 1].

    ``shape`` = (H, W): the paper's smooth masks (``grid`` x ``grid`` Bernoulli(p) cells, bilinear upsampling to
    (grid + 1) · ceil(size / grid), crop at a random shift in [0, cell)); ``shape`` = (L,): binary per-token masks.
    ``sampling``: ``"iid"``, ``"antithetic"`` or ``"stratified"`` (groups of ``stratum`` masks), see the module doc.
    """
    return masks_and_cells(index, seed, shape, grid, p, sampling, stratum, stream, device)[0]


def masks_and_cells(index: torch.Tensor, seed: int, shape: tuple[int, ...], grid: int = 7, p: float = 0.5,
                    sampling: str = "iid", stratum: int = 8, stream: str = "relax",
                    device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`relax_masks` and the binary cells they were made from: ``(masks (n, *shape), cells (n, n_cells))``
    with n_cells = grid² for images (row-major) and L for tokens, both float32 on ``device``
    (:func:`pathxai.core.sampling.smooth_masks`; ``"mc"`` is ``"iid"``).

    The random draws (cells, shifts) are tiny and made on the host, so every device gets the same masks; the
    upsampling runs on ``device``."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    grid, p = check_positive_int(grid, "grid"), check_fraction(p, "p")
    stratum = check_positive_int(stratum, "stratum")
    return smooth_masks(index, seed, shape, grid, p, "iid" if sampling == "mc" else sampling, stratum, stream,
                        device)


# ---------------------------------------------------------------------------------------------------------------
# similarity


def cosine_similarity(h: torch.Tensor, h_masked: torch.Tensor) -> torch.Tensor:
    """Eq. 3: <h, h̄> / (‖h‖ ‖h̄‖) row by row; (n, D), (n, D) -> (n,). Zero vectors give 0."""
    return F.cosine_similarity(h, h_masked, dim=1, eps=1e-12)


def dot_similarity(h: torch.Tensor, h_masked: torch.Tensor) -> torch.Tensor:
    """<h, h̄> row by row (a linear kernel; not bounded, so Theorem 1 does not apply)."""
    return (h * h_masked).sum(1)


SIMILARITIES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cosine": cosine_similarity, "dot": dot_similarity}


def resolve_similarity(similarity: SimilarityLike) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A similarity name (``"cosine"``, ``"dot"``) or a callable ``(h (n, D), h_masked (n, D)) -> (n,)``."""
    if callable(similarity):
        return similarity
    if isinstance(similarity, str) and similarity.lower() in SIMILARITIES:
        return SIMILARITIES[similarity.lower()]
    raise ValueError(f"similarity must be one of {', '.join(SIMILARITIES)} or a callable (h, h_masked) -> (n,), "
                     f"got {similarity!r}")


def masked_similarities(similarity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], h: torch.Tensor,
                        out: Any) -> torch.Tensor:
    """s(h_n, h̄_n) for one chunk of masked inputs, checked: ``h`` (n, D) float64 representations of the unmasked
    inputs, ``out`` the model output for the masked ones (n, ...) -> (n,) float64."""
    out = check_model_output(out, h.shape[0]).flatten(1).to(torch.float64)
    if out.shape[1] != h.shape[1]:
        raise ValueError(f"model output must have the same size for masked and unmasked inputs: "
                         f"{h.shape[1]} vs {out.shape[1]}")
    sims = similarity(h, out)
    if not isinstance(sims, torch.Tensor) or sims.shape != (h.shape[0],):
        raise ValueError(f"similarity must return shape ({h.shape[0]},) for representations of shape "
                         f"{tuple(out.shape)}, got {getattr(sims, 'shape', type(sims).__name__)}")
    if not torch.isfinite(sims).all():
        raise ValueError("similarity returned NaN/Inf values")
    return sims.to(torch.float64)


# ---------------------------------------------------------------------------------------------------------------
# streaming statistics


class MaskedMoments:
    """One-pass weighted mean and spread of per-mask scores s_n with per-pixel weights M_n (Eq. 12-13).

    Keeps, per image and pixel, W = Σ M, R^w = Σ s M / W and S = Σ M (s - R^w)², in float64. :meth:`add_block` merges
    the statistics of a block of masks with Chan et al.'s parallel form of West's weighted update; a block of one
    mask is Eq. 12-13 verbatim. Memory is O(images x pixels), whatever the number of masks.

    Args:
        n_images: images explained together (they share the masks).
        n_pixels: pixels (or tokens) per mask.
        device: where the masks and scores are (the statistics stay there).
    """

    def __init__(self, n_images: int, n_pixels: int, device: torch.device | str | None = None) -> None:
        self.n = 0
        self.weight = torch.zeros(n_pixels, dtype=torch.float64, device=device)
        self.mean = torch.zeros(n_images, n_pixels, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(n_images, n_pixels, dtype=torch.float64, device=device)

    def add_block(self, masks: torch.Tensor, scores: torch.Tensor) -> None:
        """Merge a block: ``masks`` (K, P) shared by all images, ``scores`` (n_images, K).

        The block sums are one matrix product in the masks' dtype (float32 masks: ~1e-8 absolute error on sums of 64
        terms of scores centred on their block mean); everything after is float64.
        """
        k = int(masks.shape[0])
        m = masks.reshape(k, -1)
        s = scores.to(torch.float64)
        shift = s.mean(1, keepdim=True)                    # shifted sums: no cancellation in the block variance
        d = s - shift
        n_img = s.shape[0]
        # one pass over the block's masks: [1; d; d²] @ M gives Σ M, Σ M (s - c), Σ M (s - c)² for every image
        lhs = torch.cat([torch.ones(1, k, dtype=torch.float64, device=d.device), d, d * d]).to(m.dtype)
        sums = (lhs @ m).to(torch.float64)
        w_b, s1, s2 = sums[0], sums[1:n_img + 1], sums[n_img + 1:]
        safe = torch.where(w_b > 0, w_b, torch.ones_like(w_b))
        mean_b = torch.where(w_b > 0, shift + s1 / safe, torch.zeros_like(s1))
        m2_b = torch.where(w_b > 0, (s2 - s1 * s1 / safe).clamp_min(0.0), torch.zeros_like(s1))
        w_new = self.weight + w_b
        safe_new = torch.where(w_new > 0, w_new, torch.ones_like(w_new))
        delta = mean_b - self.mean
        self.mean = torch.where(w_new > 0, self.mean + delta * (w_b / safe_new), self.mean)
        self.m2 = self.m2 + m2_b + delta * delta * (self.weight * w_b / safe_new)
        self.weight = w_new
        self.n += int(masks.shape[0])

    def estimates(self, estimator: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
        """(importance, uncertainty), each (n_images, P) float64: ``"mean"`` (Σ s M / N, Σ M (s - R^w)² / N) or
        ``"weighted"`` (R^w = Σ s M / Σ M, Σ M (s - R^w)² / Σ M); see the module doc."""
        if self.n == 0:
            raise RuntimeError("no masks were added")
        if estimator == "weighted":
            safe = torch.where(self.weight > 0, self.weight, torch.ones_like(self.weight))
            return self.mean.clone(), torch.where(self.weight > 0, self.m2 / safe, torch.zeros_like(self.m2))
        if estimator != "mean":
            raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
        return self.mean * self.weight / self.n, self.m2 / self.n


class CellControlVariate:
    """Eq. 2 with a cross-fitted regression control variate on the mask cells (unbiased, streaming).

    The similarity is close to linear in the binary cells B (n_cells of them) a mask was made from (out-of-sample
    R² ≈ 0.8 on our encoders). With ŝ(B) = a + β·B fitted by least squares, Eq. 2 is estimated as

        R̂_ij = (1/N) Σ_n (s_n - ŝ(B_n)) M_ij(n) + E[ŝ(B) M_ij],   E[ŝ M_ij] = a p + Σ_c β_c (p² + p(1-p) w̄_c(ij))

    (:func:`expected_cell_weights`), which only leaves the residual's noise. To keep it exactly unbiased the masks
    are split in two folds (alternate groups of ``group`` masks) and each fold is corrected with the coefficients
    fitted on the other one. Kept per fold: XᵀX, Xᵀs (X = [1, B]), Σ s M, Σ M and Σ B ⊗ M ((n_cells, P), shared by
    all images) -- memory independent of the number of masks (2 x 49 x 224² float64 = 39 MB at 224 x 224).
    """

    def __init__(self, n_images: int, n_cells: int, n_pixels: int, group: int,
                 device: torch.device | str | None = None) -> None:
        d = n_cells + 1
        self.group = group
        self.count = [0, 0]
        self.xtx = torch.zeros(2, d, d, dtype=torch.float64, device=device)
        self.xts = torch.zeros(2, n_images, d, dtype=torch.float64, device=device)
        self.s1 = torch.zeros(2, n_images, n_pixels, dtype=torch.float64, device=device)
        self.w = torch.zeros(2, n_pixels, dtype=torch.float64, device=device)
        self.t = torch.zeros(2, n_cells, n_pixels, dtype=torch.float64, device=device)

    def add_block(self, mask_index: torch.Tensor, cells: torch.Tensor, masks: torch.Tensor,
                  scores: torch.Tensor) -> None:
        """``mask_index`` (K,), ``cells`` (K, n_cells), ``masks`` (K, P), ``scores`` (n_images, K)."""
        fold = (mask_index // self.group) % 2
        n_img = scores.shape[0]
        for f in (0, 1):
            sel = fold == f
            k = int(sel.sum())
            if k == 0:
                continue
            c = cells[sel].to(torch.float64)
            x = torch.cat([torch.ones(k, 1, dtype=torch.float64, device=c.device), c], 1)
            sc = scores[:, sel].to(torch.float64)
            self.xtx[f] += x.t() @ x
            self.xts[f] += sc @ x
            m = masks[sel]
            lhs = torch.cat([torch.ones(1, k, dtype=torch.float64, device=sc.device), sc, c.t()]).to(m.dtype)
            sums = (lhs @ m).to(torch.float64)
            self.w[f] += sums[0]
            self.s1[f] += sums[1:n_img + 1]
            self.t[f] += sums[n_img + 1:]
            self.count[f] += k

    def coefficients(self, fold: int) -> torch.Tensor:
        """(n_cells + 1, n_images) least-squares [a; β] fitted on ``fold`` (a small ridge keeps it defined)."""
        d = self.xtx.shape[1]
        if self.count[fold] == 0:
            return torch.zeros(d, self.xts.shape[1], dtype=torch.float64, device=self.xts.device)
        ridge = 1e-6 * max(1, self.count[fold]) * torch.eye(d, dtype=torch.float64, device=self.xtx.device)
        return torch.linalg.solve(self.xtx[fold] + ridge, self.xts[fold].t())

    def importance(self, expected_weights: torch.Tensor, p: float) -> torch.Tensor:
        """(n_images, P) float64 control-variate estimate of Eq. 2."""
        n_total = sum(self.count)
        total = torch.zeros_like(self.s1[0])
        basis = p * p + p * (1 - p) * expected_weights.to(total)   # (n_cells, P): E[B_c M_ij]
        for g in (0, 1):
            if self.count[g] == 0:
                continue
            coef = self.coefficients(1 - g)
            a, beta = coef[0], coef[1:]                       # (n_images,), (n_cells, n_images)
            expected = a[:, None] * p + beta.t() @ basis
            total += self.s1[g] - a[:, None] * self.w[g] - beta.t() @ self.t[g] + self.count[g] * expected
        return total / n_total


class ImportanceStderr:
    """Standard error of RELAX's importance from the same masks (:mod:`pathxai.core.sampling`).

    The groups of masks (one iid mask, an antithetic pair, a stratum) are independent replicates. ``"mean"``
    (Eq. 2): the replicate formula on the group means (1/K) Σ s M of :class:`~pathxai.core.sampling.MaskedMean`.
    When the control variate is on, the *returned* standard error is that of RELAX's cross-fitted estimate
    (:meth:`RELAX._cross_fitted_stderr`, one pass over the masks made again at the end); while streaming (the
    ``tol`` checks) the replicates are corrected with the *past-fitted* cell regression instead (coefficients must
    be known when a block arrives): an estimator of the same importance whose early blocks use fewer (or no) past
    masks, so its standard error is at least the cross-fitted one's and ``tol`` errs on the side of more masks.
    ``"weighted"``
    (Eq. 12, a ratio R = Σ s M / Σ M): the delta method on the replicate moments of (Σ s M, Σ M),
    Var(R) ≈ (C_AA - 2 R C_AB + R² C_BB) / B̄².
    """

    def __init__(self, n_images: int, n_pixels: int, group: int, estimator: str, basis: torch.Tensor | None,
                 p: float, device: torch.device | str | None = None) -> None:
        self.estimator, self.group, self.n_images = estimator, group, n_images
        if estimator == "mean":
            self.mean = MaskedMean(n_images, n_pixels, group, basis, p, device)
        else:
            self.ratio = ReplicateMoments(2, (n_images, n_pixels), device)

    def add_block(self, cells: torch.Tensor, masks: torch.Tensor, scores: torch.Tensor) -> None:
        """One aligned block: ``cells`` (K, n_cells), ``masks`` (K, P), ``scores`` (n_images, K)."""
        if self.estimator == "mean":
            self.mean.add_block(cells, masks, scores)
            return
        k = masks.shape[0]
        g = k // self.group
        m = masks.to(torch.float64).view(g, self.group, -1)
        num = torch.einsum("ngk,gkp->gnp", scores.to(torch.float64).view(self.n_images, g, self.group), m) / self.group
        den = m.mean(1).unsqueeze(1).expand_as(num)
        self.ratio.add(torch.stack([num, den], 1))

    @property
    def replicates(self) -> int:
        return self.mean.replicates if self.estimator == "mean" else self.ratio.count

    def estimate(self) -> torch.Tensor:
        """(n_images, P) the importance the standard error belongs to (float64)."""
        if self.estimator == "mean":
            return self.mean.estimate()
        num, den = self.ratio.mean[0], self.ratio.mean[1]
        return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))

    def stderr(self) -> torch.Tensor:
        """(n_images, P) float64 standard error of the importance."""
        if self.estimator == "mean":
            return self.mean.stderr()
        r = self.estimate()
        den = self.ratio.mean[1]
        var = self.ratio.covariance_of_mean(0) - 2 * r * self.ratio.covariance_of_mean(0, 1) \
            + r * r * self.ratio.covariance_of_mean(1)
        safe = torch.where(den > 0, den, torch.ones_like(den))
        return torch.where(den > 0, var.clamp_min(0.0).sqrt() / safe, torch.zeros_like(var))


class RelaxSample(NamedTuple):
    """What :meth:`RELAX.sample` streamed: the statistics and the standard error of the importance."""

    moments: MaskedMoments
    representation: torch.Tensor
    mean_similarity: torch.Tensor
    control_variate: "CellControlVariate | None"
    stderr: torch.Tensor
    used: int
    stopped: bool


# ---------------------------------------------------------------------------------------------------------------
# U-RELAX


def u_relax(importance: torch.Tensor, uncertainty: torch.Tensor, gamma: float = 1.0,
            aggregation: str = "median") -> tuple[torch.Tensor, torch.Tensor]:
    """U-RELAX (Eq. 10-11): keep the importance where the uncertainty is below ε, zero elsewhere.

    ε = γ · median(U) (``aggregation="median"``, the paper's choice) or γ · mean(U) (Eq. 11), over each sample's
    pixels (all axes but the first).

    Args:
        importance, uncertainty: (N, ...) maps of the same shape (e.g. a RELAX explanation's attribution and
            ``extras["uncertainty"]``).
    Returns:
        (filtered importance (N, ...), thresholds ε (N,)).
    """
    if not isinstance(importance, torch.Tensor) or not isinstance(uncertainty, torch.Tensor):
        raise TypeError("importance and uncertainty must be torch.Tensors of shape (N, ...)")
    if importance.shape != uncertainty.shape or importance.ndim < 2:
        raise ValueError(f"importance and uncertainty must have the same shape (N, ...), got "
                         f"{tuple(importance.shape)} and {tuple(uncertainty.shape)}")
    g = check_fraction(gamma, "gamma", low=0.0, high=math.inf)
    flat = uncertainty.flatten(1)
    if aggregation == "median":
        eps = g * flat.median(dim=1).values
    elif aggregation == "mean":
        eps = g * flat.mean(dim=1)
    else:
        raise ValueError(f"aggregation must be 'median' or 'mean', got {aggregation!r}")
    keep = uncertainty < eps.view((-1,) + (1,) * (uncertainty.ndim - 1))
    return torch.where(keep, importance, torch.zeros_like(importance)), eps


# ---------------------------------------------------------------------------------------------------------------
# the methods


@register_method
class RELAX(SamplingMixin, Method):
    """RELAX: importance of each pixel (or token) for an encoder's representation, with its uncertainty.

    The model is an encoder ``x (n, ...) -> representation (n, ...)`` (flattened to (n, D)); no target is taken.

    Args:
        n_masks: masks N (default 3000, the paper's; or pick it from ``tolerance``/``delta`` by Theorem 1).
        tolerance, delta: when ``tolerance`` is given, ``n_masks = masks_needed(tolerance, delta)`` (Theorem 1;
            CLI: ``-p tolerance=0.02 -p delta=0.05``). Giving both ``n_masks`` and ``tolerance`` is an error.
        grid: mask cells per side h = w (paper: 7). p: probability that a cell is kept (paper: 0.5).
        similarity: ``"cosine"`` (Eq. 3, the paper's), ``"dot"`` or a callable ``(h, h_masked) -> (n,)``.
        estimator: ``"mean"`` (Eq. 2 / Eq. 9) or ``"weighted"`` (Eq. 12-13, Algorithm 1, relax-xai).
        sampling: ``"stratified"`` (default), ``"iid"`` (the paper's masks) or ``"antithetic"`` (see the module
            doc); ``"mc"``, the name every sampling method uses for its paper's plain Monte Carlo, is ``"iid"`` with
            the control variate off unless ``control_variate=True`` (Eq. 2 as written). Stratified / antithetic
            round ``n_masks`` up to a multiple of ``stratum`` / 2.
        stratum: masks per stratum for ``sampling="stratified"`` (a divisor of 64).
        baseline: what masked-out inputs become: x ⊙ M + baseline ⊙ (1 - M). 0 (the paper's zeros), a number,
            or a tensor broadcastable to one input (C, H, W) / (L, D).
        control_variate: estimate Eq. 2 with the cross-fitted cell-regression control variate
            (:class:`CellControlVariate`): unbiased, ~2x fewer masks for the same error. ``"auto"`` (default):
            on for ``estimator="mean"`` once there are enough masks to fit it (≥ 4 (cells + 1): 200 masks at
            grid 7, so on at the paper's 3,000), see :meth:`uses_control_variate`.
        tol: stop once the importance's relative standard error (:func:`pathxai.core.sampling.relative_error`:
            RMS standard error over the map's noise-free spatial SD, checked every 64 masks) is below ``tol`` for every
            input; ``n_masks`` (or Theorem 1's N from ``tolerance``) is then the cap (a warning says when it is
            reached first). ``None`` (default): run all ``n_masks``.
    Attribution: (N, 1, H, W) importance for images, (N, L) for token inputs (N, L, D).
    Extras: ``uncertainty`` (same shape), ``stderr`` (same shape: the importance's standard error from the same
    masks, see :meth:`sample`), ``mask_weight`` (H, W) or (L,) = Σ_n M_n, ``mean_similarity`` (N,),
    ``representation`` (N, D), ``error_bound`` (Theorem 1's t at ``delta`` for this N; meaningful for ``mean``).
    ``meta``: ``samples_used`` (masks per input), ``relative_error``, ``tol_reached``.
    """

    name = "relax"
    description = "RELAX: importance for a representation (no labels) from masked-input similarities, with uncertainty."
    needs_target = False
    stochastic = True
    input_ndim = (3, 4)
    input_expected = "(N, C, H, W) or (N, L, D)"
    cost_param = "n_masks"

    def __init__(self, model: Any, *, n_masks: int | None = None, tolerance: float | None = None,
                 delta: float = 0.01, grid: int = 7, p: float = 0.5, similarity: SimilarityLike = "cosine",
                 estimator: str = "mean", sampling: str = "stratified", stratum: int = 8,
                 baseline: float | torch.Tensor = 0.0, control_variate: bool | str = "auto", tol: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.delta = check_fraction(delta, "delta", inclusive=False)
        self.tol = check_tol(tol)
        if not isinstance(control_variate, bool) and control_variate != "auto":
            raise TypeError(f"control_variate must be True, False or 'auto', got {control_variate!r}")
        if control_variate is True and estimator != "mean":
            raise ValueError("control_variate=True estimates Eq. 2: it needs estimator='mean'")
        self.control_variate = control_variate
        if tolerance is not None:
            if n_masks is not None:
                raise ValueError(f"pass either n_masks ({n_masks}) or tolerance ({tolerance}) (Theorem 1 picks "
                                 "n_masks from tolerance and delta), not both")
            self.tolerance: float | None = check_fraction(tolerance, "tolerance", high=math.inf, inclusive=False)
            self.n_masks = masks_needed(self.tolerance, self.delta)
        else:
            self.tolerance = None
            self.n_masks = check_positive_int(PAPER_N_MASKS if n_masks is None else n_masks, "n_masks")
        self.grid = check_positive_int(grid, "grid")
        self.p = check_fraction(p, "p", inclusive=False)
        self.similarity = similarity
        self._similarity = resolve_similarity(similarity)
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
        self.estimator = estimator
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
        # "mc" is the paper's plain Monte Carlo under the name every sampling method uses: iid masks and, unless asked
        # for explicitly, no control variate (Eq. 2 as written). Stored as "iid", so that subclasses that draw RELAX's
        # masks themselves (sift_relax) see one of their three samplings, and params() says what runs
        self.sampling = "iid" if sampling == "mc" else sampling
        if sampling == "mc" and self.control_variate == "auto":
            self.control_variate = False
        self.stratum = check_positive_int(stratum, "stratum", minimum=2)
        if BLOCK % self.stratum:
            raise ValueError(f"stratum must divide {BLOCK} (2, 4, 8, 16, 32 or 64), got {stratum}")
        self.n_masks = -(-self.n_masks // self.group) * self.group  # whole groups: a partial one would be unbalanced
        if isinstance(baseline, bool) or not isinstance(baseline, (int, float, torch.Tensor)):
            raise TypeError(f"baseline must be a number or a tensor broadcastable to one input, got "
                            f"{type(baseline).__name__}")
        if isinstance(baseline, torch.Tensor):
            if torch.is_floating_point(baseline) and not bool(torch.isfinite(baseline.detach()).all()):
                raise ValueError("baseline contains NaN/Inf values")
        else:
            check_finite_float(baseline, "baseline")  # NaN would turn every masked input into NaN
        self.baseline = baseline

    def cost(self, input_shape: Sequence[int] | None) -> Cost:
        """N x n_masks forward evaluations (+ N for the representations); memory: the per-pixel statistics (float64,
        per image), one block of masks and their cells, and, with the control variate, its (cells x pixels) sums."""
        n = 1 if input_shape is None else int(input_shape[0])
        evaluations = n * (self.n_masks + 1)
        detail = f"{n} input(s) x {self.n_masks} masks"
        if input_shape is None or len(input_shape) not in (3, 4):
            return Cost(evaluations=evaluations, param=self._cost_name(), value=self._cost_value(), detail=detail,
                        hint=self._cost_hint())
        if len(input_shape) == 4:
            h, w = int(input_shape[2]), int(input_shape[3])
            pixels, cells = h * w, self.grid * self.grid
            cell_h, cell_w = math.ceil(h / self.grid), math.ceil(w / self.grid)
            masks = 4.0 * BLOCK * ((h + w) * self.grid * 2 + 2 * pixels) \
                + 4.0 * self.grid * (self.grid + 1) * (cell_h + cell_w)
        else:
            pixels = cells = int(input_shape[1])
            masks = 8.0 * BLOCK * pixels
        # MaskedMoments (3 per image and pixel + the weight), the stderr's replicate moments (2, or 4 for the
        # weighted ratio) and one block's replicate values
        k = 2 if self.estimator == "weighted" else 1
        memory = 8.0 * (3 * n * pixels + pixels) + masks + 16.0 * (self.group + BLOCK) * cells \
            + 8.0 * n * pixels * (k + k * k + k * BLOCK // self.group)
        if self.uses_control_variate(cells):
            d = cells + 1
            memory += 16.0 * (d * d + n * d + n * pixels + pixels + cells * pixels) + 8.0 * cells * pixels
            memory += 8.0 * (d * d + n * d + cells * pixels)   # the stderr's past-fitted control variate
        return Cost(evaluations=evaluations, bytes=memory, param=self._cost_name(), value=self._cost_value(),
                    detail=detail, bytes_param="grid" if len(input_shape) == 4 else None, bytes_value=self.grid,
                    hint=self._cost_hint())

    def _cost_hint(self) -> str:
        return "raise tolerance (or delta)" if self.tolerance is not None else ""

    def _cost_name(self) -> str:
        return "tolerance" if self.tolerance is not None else "n_masks"

    def _cost_value(self) -> Any:
        return self.tolerance if self.tolerance is not None else self.n_masks

    def uses_control_variate(self, n_cells: int) -> bool:
        """Whether the control variate is on for inputs with ``n_cells`` mask cells (grid² or tokens).

        ``"auto"`` turns it on for the ``mean`` estimator when each cross-fitting half has at least
        ``CV_MASKS_PER_COEFFICIENT`` masks per regression coefficient (n_cells + 1): with fewer, the fitted
        coefficients are noisy enough to cancel the gain (measured, grid 7 = 50 coefficients: no gain at 32 masks
        per half; ~1.4x lower RMS error than stratified sampling alone at 128-160 per half, on EfficientNet-Lite0
        features and on the clutter SimCLR encoder; benchmarks/results/relax.md).
        """
        if self.control_variate == "auto":
            return self.estimator == "mean" and self.n_masks >= 2 * CV_MASKS_PER_COEFFICIENT * (n_cells + 1)
        return bool(self.control_variate)

    def params(self) -> dict[str, Any]:
        return {"n_masks": self.n_masks, "tolerance": self.tolerance, "tol": self.tol, "delta": self.delta,
                "grid": self.grid,
                "p": self.p, "similarity": self.similarity if isinstance(self.similarity, str) else "callable",
                "estimator": self.estimator, "sampling": self.sampling,
                **({"stratum": self.stratum} if self.sampling == "stratified" else {}),
                "control_variate": self.control_variate,
                "baseline": self.baseline if not isinstance(self.baseline, torch.Tensor) else "tensor"}

    # -------------------------------------------------------------------------------------------------------------
    def _baseline_for(self, x: torch.Tensor) -> torch.Tensor | None:
        b = self.baseline
        if isinstance(b, torch.Tensor):
            b = b.detach().to(x)   # x's device and dtype
            try:
                torch.broadcast_shapes(b.shape, x.shape[1:])
            except RuntimeError:
                raise ValueError(f"baseline must be broadcastable to one input of shape {tuple(x.shape[1:])}, got "
                                 f"shape {tuple(b.shape)}") from None
            if len(b.shape) > len(x.shape) - 1:
                raise ValueError(f"baseline must be broadcastable to one input of shape {tuple(x.shape[1:])}, got "
                                 f"shape {tuple(b.shape)}")
            if not torch.isfinite(b).all():
                raise ValueError("baseline contains NaN/Inf values")
            return None if not bool(b.any()) else b
        return None if float(b) == 0.0 else torch.tensor(float(b), dtype=x.dtype, device=x.device)

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's representation of ``x``: (N, D) float64 (one forward pass per sample)."""
        out = check_model_output(self.evaluator.forward(x, desc="representation"), x.shape[0])
        return out.flatten(1).to(torch.float64)

    @property
    def group(self) -> int:
        """Masks per independent group (replicate): 1 iid, 2 antithetic, ``stratum`` stratified."""
        return {"iid": 1, "mc": 1, "antithetic": 2, "stratified": self.stratum}[self.sampling]

    def statistics(self, x: torch.Tensor
                   ) -> tuple[MaskedMoments, torch.Tensor, torch.Tensor, CellControlVariate | None]:
        """Run the masks: ``(moments over (N, P), representation (N, D), mean similarity (N,), control-variate
        sums or None)`` (the first four fields of :meth:`sample`)."""
        return tuple(self.sample(x))[:4]  # type: ignore[return-value]

    def sample(self, x: torch.Tensor) -> "RelaxSample":
        """Run the masks (until ``tol`` is met, or all ``n_masks``) and keep every statistic: a :class:`RelaxSample`
        (moments over (N, P), representation (N, D), mean similarity (N,), control-variate sums or None, the
        importance's standard error (N, P) float64, masks used, whether ``tol`` stopped the sampling)."""
        n = x.shape[0]
        spatial = tuple(x.shape[2:]) if x.ndim == 4 else (x.shape[1],)
        n_pix = math.prod(spatial)
        h = self.representation(x)
        base = self._baseline_for(x)
        moments = MaskedMoments(n, n_pix, x.device)
        n_cells = self.grid * self.grid if x.ndim == 4 else n_pix
        use_cv = self.uses_control_variate(n_cells)
        cv = CellControlVariate(n, n_cells, n_pix, self.group, x.device) if use_cv else None
        basis = (self.p * self.p + self.p * (1 - self.p) * expected_cell_weights(spatial, self.grid)) if use_cv \
            else None
        errors = ImportanceStderr(n, n_pix, self.group, self.estimator, basis, self.p, x.device)
        stop = ToleranceStop(self.tol, self.n_masks, "masks", self.name, self.evaluator, group=self.group)
        sim_sum = torch.zeros(n, dtype=torch.float64, device=x.device)
        stream = BlockStream(n, self.n_masks, lambda idx: masks_and_cells(idx, self.seed, spatial, self.grid, self.p,
                                                                          self.sampling, self.stratum,
                                                                          device=x.device))

        def build(items: torch.Tensor) -> torch.Tensor:
            m = stream.rows(items // n).to(x.dtype)
            m = m.unsqueeze(1) if x.ndim == 4 else m.unsqueeze(-1)   # (k, 1, H, W) or (k, L, 1)
            xs = x[items % n]
            return xs * m if base is None else xs * m + base * (1 - m)

        stopped = False
        kept: list[tuple[torch.Tensor, torch.Tensor]] = []   # (mask indices, scores) for the cross-fitted stderr
        for items, out in item_outputs(self.evaluator, self.n_masks * n, build, sample_shape=x.shape[1:],
                                       desc=self.name):
            sims = masked_similarities(self._similarity, h[items % n], out)
            for idx, (masks_b, cells_b), buf in stream.add(items % n, items // n, sims):
                moments.add_block(masks_b.reshape(len(idx), n_pix), buf)
                if cv is not None:
                    cv.add_block(idx, cells_b, masks_b.reshape(len(idx), n_pix), buf)
                    kept.append((idx, buf))
                errors.add_block(cells_b, masks_b.reshape(len(idx), n_pix), buf)
                sim_sum += buf.sum(1)
                if stop.check(errors.estimate(), errors.stderr(), errors.replicates):
                    stopped = True
                    break
            if stopped:
                break   # the rest of the last model chunk (< batch_size items) is discarded
        stream.close(stopped)
        used = moments.n
        stop.finish(used, stopped)
        stderr = errors.stderr() if cv is None else self._cross_fitted_stderr(cv, kept, spatial, basis, x.device)
        error = stop.error if cv is None else relative_error(
            cv.importance(expected_cell_weights(spatial, self.grid), self.p), stderr)
        self._record_sampling([used] * n, error, None if self.tol is None else stopped)
        return RelaxSample(moments, h, sim_sum / used, cv, stderr, used, stopped)

    def _cross_fitted_stderr(self, cv: "CellControlVariate", kept: list[tuple[torch.Tensor, torch.Tensor]],
                             spatial: tuple[int, ...], basis: torch.Tensor, device: torch.device) -> torch.Tensor:
        """(N, P) standard error of the cross-fitted control-variate estimate, exactly as it was computed: with the
        final coefficients of each fold (fitted on the other fold), every group's corrected mean
        Y_g = (1/K) Σ_n (s_n - a - β·B_n) M_n + E[(a + β·B) M] is a replicate whose average *is* the returned
        importance, and the replicate formula gives its standard error (coefficients treated as fixed, as usual
        for cross-fitting). The masks are made again from the seed (no model call); only the scores were kept."""
        coefs = [cv.coefficients(0), cv.coefficients(1)]
        expect = [c[0][:, None] * self.p + c[1:].t() @ basis.to(device=device, dtype=torch.float64) for c in coefs]
        moments: ReplicateMoments | None = None
        for idx, scores in kept:
            masks, cells = masks_and_cells(idx, self.seed, spatial, self.grid, self.p, self.sampling, self.stratum,
                                           device=device)
            k, g = len(idx), len(idx) // self.group
            m = masks.reshape(k, -1).to(torch.float64)
            c = cells.to(device=device, dtype=torch.float64)
            fold = ((idx // self.group) % 2).to(device)
            s = scores.to(torch.float64)
            r = torch.empty_like(s)
            off = torch.empty(g, s.shape[0], m.shape[1], dtype=torch.float64, device=device)
            for f in (0, 1):
                sel = fold == f
                coef = coefs[1 - f]                     # each fold corrected with the other fold's fit
                r[:, sel] = s[:, sel] - coef[0][:, None] - (c[sel] @ coef[1:]).t()
                off[sel.view(g, self.group)[:, 0]] = expect[1 - f]
            y = torch.einsum("ngk,gkp->gnp", r.view(s.shape[0], g, self.group), m.view(g, self.group, -1)) \
                / self.group + off
            if moments is None:
                moments = ReplicateMoments(1, y.shape[1:], device)
            moments.add(y.unsqueeze(1))
        return moments.stderr(0) if moments is not None else torch.zeros(0)

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        run = self.sample(x)
        moments, h, mean_sim, cv = run.moments, run.representation, run.mean_similarity, run.control_variate
        importance, uncertainty = moments.estimates(self.estimator)
        if cv is not None:
            spatial = tuple(x.shape[2:]) if x.ndim == 4 else (x.shape[1],)
            importance = cv.importance(expected_cell_weights(spatial, self.grid), self.p)
        shape = (x.shape[0], 1, *x.shape[2:]) if x.ndim == 4 else (x.shape[0], x.shape[1])
        importance = importance.reshape(shape).to(x.dtype)
        uncertainty = uncertainty.reshape(shape).to(x.dtype)
        extras = {"uncertainty": uncertainty, "stderr": run.stderr.reshape(shape).to(x.dtype),
                  "mask_weight": moments.weight.reshape(shape[2:] if x.ndim == 4 else shape[1:]).to(x.dtype),
                  "mean_similarity": mean_sim.to(x.dtype), "representation": h.to(x.dtype),
                  "error_bound": error_bound(run.used, self.delta)}
        return self._finish(importance, uncertainty, extras)

    def _finish(self, importance: torch.Tensor, uncertainty: torch.Tensor,
                extras: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        return importance, extras


@register_method
class URELAX(RELAX):
    """U-RELAX (Sec. 3.3): RELAX importance with the uncertain pixels (Ū ≥ ε) set to 0.

    Args:
        gamma: γ in ε = γ · aggregate(Ū) (paper: 1.0). aggregation: ``"median"`` (paper) or ``"mean"`` (Eq. 11).
        Other arguments as :class:`RELAX`.
    Attribution: like RELAX. Extras: RELAX's plus ``importance`` (unfiltered), ``threshold`` (N,) ε.
    """

    name = "u_relax"
    description = "U-RELAX: RELAX importance with pixels of above-threshold uncertainty removed."

    def __init__(self, model: Any, *, gamma: float = 1.0, aggregation: str = "median", **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.gamma = check_fraction(gamma, "gamma", low=0.0, high=math.inf)
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be 'median' or 'mean', got {aggregation!r}")
        self.aggregation = aggregation

    def params(self) -> dict[str, Any]:
        return {**super().params(), "gamma": self.gamma, "aggregation": self.aggregation}

    def _finish(self, importance: torch.Tensor, uncertainty: torch.Tensor,
                extras: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        filtered, eps = u_relax(importance, uncertainty, self.gamma, self.aggregation)
        return filtered, {**extras, "importance": importance, "threshold": eps}


__all__ = ["RELAX", "URELAX", "BlockStream", "CellControlVariate", "ImportanceStderr", "MaskedMoments", "RelaxSample", "cosine_similarity",
           "expected_cell_weights", "masks_and_cells", "masked_similarities", "dot_similarity", "error_bound",
           "masks_needed", "relax_masks", "resolve_similarity", "u_relax"]
