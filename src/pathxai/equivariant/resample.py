"""Linear resampling between point sets through a Delaunay triangulation (thesis Section 7.3.2-7.3.3).

:func:`barycentric_matrix` builds, once per geometry, the sparse matrix ``A`` (``n_target x n_source``) such that
``A @ f(source)`` is the piecewise-linear interpolant of ``f`` on the Delaunay triangulation of the source points,
evaluated at the target points: each row holds the barycentric coordinates of the target in its triangle (at most three
non-zeros, summing to 1). Targets outside the convex hull of the sources (the ribbon's outer row beyond the rim,
image corners) take the value at the nearest point of the hull boundary, linearly interpolated along that boundary
edge: the analogue of replicate padding (the thesis' Remark 31 leaves the outside undefined). So the matrix is
non-negative, its rows sum to 1, and it reproduces linear functions exactly at every target inside the hull.

:class:`Resampler` applies such a matrix to the last dimension of a tensor, with a hand-written backward
(``A.T @ grad``) so training never densifies it.
"""
from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
import torch
from scipy.spatial import Delaunay
from threadpoolctl import threadpool_limits


def _check_points(name: str, points: object) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (n, 2), got {tuple(arr.shape)}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or Inf")
    return arr


def barycentric_matrix(source: np.ndarray, target: np.ndarray, prune: float = 0.0) -> sp.csr_matrix:
    """Sparse ``(n_target, n_source)`` matrix of linear interpolation from ``source`` to ``target`` points.

    Args:
        source: ``(n_source, 2)`` points carrying the values (at least 3, not all collinear).
        target: ``(n_target, 2)`` points to evaluate at.
        prune: weights below this are dropped and the row renormalised (the thesis' footnote 4: ribbon points on a
            neighbouring winding's centre line mostly interpolate between two points). 0 keeps the exact matrix.

    Returns:
        A CSR matrix with at most 3 non-zeros per row, each row summing to 1.
    """
    src = _check_points("source", source)
    tgt = _check_points("target", target)
    if src.shape[0] < 3:
        raise ValueError(f"source needs at least 3 points for a triangulation, got shape {tuple(src.shape)}")
    if not (0.0 <= prune < 1.0 / 3.0):
        raise ValueError(f"prune must be in [0, 1/3), got {prune}")
    # A regular pixel grid is a degenerate (co-circular) point set on which Qhull's point location crawls; a fixed,
    # tiny jitter (1e-9 of the extent) makes the triangulation generic without changing any weight beyond ~1e-9.
    scale = float(np.ptp(src, axis=0).max()) or 1.0
    jitter = np.random.default_rng(12345).normal(0.0, 1e-9 * scale, src.shape)
    # Qhull's point location computes one tiny LAPACK solve per triangle; a multi-threaded BLAS turns that into
    # seconds of thread spinning on a busy machine, so BLAS is held to one thread here.
    with threadpool_limits(limits=1, user_api="blas"):
        tri = Delaunay(src + jitter)
        simplex = tri.find_simplex(tgt)
        transform = tri.transform
    n_t = tgt.shape[0]
    cols = np.zeros((n_t, 3), dtype=np.int64)
    vals = np.zeros((n_t, 3), dtype=np.float64)

    inside = simplex >= 0
    if inside.any():
        s = simplex[inside]
        trans = transform[s]                                          # (m, 3, 2)
        b = np.einsum("nij,nj->ni", trans[:, :2, :], tgt[inside] - trans[:, 2, :])
        bary = np.concatenate([b, 1.0 - b.sum(axis=1, keepdims=True)], axis=1)
        bary = np.clip(bary, 0.0, None)                                    # rounding at edges
        vals[inside] = bary / bary.sum(axis=1, keepdims=True)
        cols[inside] = tri.simplices[s]

    outside = np.flatnonzero(~inside)
    if outside.size:
        edges = tri.convex_hull                                           # (E, 2) vertex pairs
        a = src[edges[:, 0]]
        d = src[edges[:, 1]] - a                                          # (E, 2)
        dd = np.maximum((d * d).sum(axis=1), 1e-300)
        for start in range(0, outside.size, 2048):                        # bound memory: chunk x E
            idx = outside[start:start + 2048]
            p = tgt[idx][:, None, :] - a[None, :, :]                      # (c, E, 2)
            t = np.clip((p * d[None]).sum(-1) / dd[None], 0.0, 1.0)       # (c, E)
            dist = ((p - t[..., None] * d[None]) ** 2).sum(-1)
            e = dist.argmin(axis=1)
            te = t[np.arange(idx.size), e]
            cols[idx, 0] = edges[e, 0]
            cols[idx, 1] = edges[e, 1]
            cols[idx, 2] = edges[e, 0]
            vals[idx, 0] = 1.0 - te
            vals[idx, 1] = te
            vals[idx, 2] = 0.0

    if prune > 0.0:
        vals = np.where(vals < prune, 0.0, vals)
        vals /= vals.sum(axis=1, keepdims=True)
    rows = np.repeat(np.arange(n_t), 3)
    mat = sp.csr_matrix((vals.ravel(), (rows, cols.ravel())), shape=(n_t, src.shape[0]))
    mat.sum_duplicates()
    mat.eliminate_zeros()
    return mat


def _to_torch_csr(mat: sp.csr_matrix, dtype: torch.dtype) -> torch.Tensor:
    mat = mat.tocsr()
    return torch.sparse_coo_tensor(torch.from_numpy(np.vstack(mat.nonzero()).astype(np.int64)),
                                   torch.from_numpy(mat[mat.nonzero()].A1).to(dtype), size=mat.shape).coalesce()


class ResampleTimer:
    """Accumulates wall time spent in :class:`Resampler` forward and backward passes while ``enabled``."""

    enabled: bool = False
    seconds: float = 0.0
    calls: int = 0

    @classmethod
    def reset(cls, enabled: bool = True) -> None:
        cls.enabled, cls.seconds, cls.calls = enabled, 0.0, 0

    @classmethod
    def add(cls, dt: float) -> None:
        cls.seconds += dt
        cls.calls += 1


def _spmm(mat: sp.csr_matrix, x2d: torch.Tensor) -> torch.Tensor:
    """``mat @ x2d`` for a CPU tensor ``x2d`` of shape ``(n_source, M)`` (SciPy's CSR kernel: on CPU it is several times
    faster than ``torch.sparse.mm`` for these thin matrices)."""
    data = x2d.detach().numpy()
    m = mat if mat.dtype == data.dtype else mat.astype(data.dtype)
    return torch.from_numpy(np.ascontiguousarray(m @ data))


class _SparseApply(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x2d: torch.Tensor, mat: sp.csr_matrix, mat_t: sp.csr_matrix) -> torch.Tensor:  # type: ignore[override]
        t0 = time.perf_counter() if ResampleTimer.enabled else 0.0
        ctx.mat_t = mat_t
        out = _spmm(mat, x2d)
        if ResampleTimer.enabled:
            ResampleTimer.add(time.perf_counter() - t0)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        t0 = time.perf_counter() if ResampleTimer.enabled else 0.0
        g = _spmm(ctx.mat_t, grad.contiguous())
        if ResampleTimer.enabled:
            ResampleTimer.add(time.perf_counter() - t0)
        return g, None, None


class Resampler(torch.nn.Module):
    """Applies a fixed ``(n_target, n_source)`` sparse matrix to the last dimension: ``(..., n_source) -> (..., n_target)``.

    The matrix and its transpose are kept as SciPy CSR matrices (float32 and float64 copies); the backward pass
    multiplies by the transpose. CPU only (the project's target); other devices use ``torch.sparse.mm``.
    """

    def __init__(self, matrix: sp.spmatrix, out_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        if not sp.issparse(matrix) or matrix.ndim != 2:
            raise TypeError(f"matrix must be a 2-D scipy sparse matrix, got {type(matrix).__name__}")
        self.n_target, self.n_source = matrix.shape
        self.out_shape = tuple(out_shape) if out_shape is not None else (self.n_target,)
        if int(np.prod(self.out_shape)) != self.n_target:
            raise ValueError(f"out_shape {self.out_shape} does not hold n_target = {self.n_target} values")
        self.matrix = sp.csr_matrix(matrix, dtype=np.float64)
        self._mats = {np.dtype(np.float64): (self.matrix, self.matrix.T.tocsr())}
        m32 = self.matrix.astype(np.float32)
        self._mats[np.dtype(np.float32)] = (m32, m32.T.tocsr())

    @property
    def nnz(self) -> int:
        return int(self.matrix.nnz)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(..., n_source)`` float tensor -> ``(..., *out_shape)``."""
        if x.shape[-1] != self.n_source:
            raise ValueError(f"x must have last dimension n_source = {self.n_source}, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a float tensor, got dtype {x.dtype}")
        lead = x.shape[:-1]
        x2d = x.reshape(-1, self.n_source).t().contiguous()                # (n_source, M)
        if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
            mat, mat_t = self._mats[np.dtype(np.float32 if x.dtype == torch.float32 else np.float64)]
            out = _SparseApply.apply(x2d, mat, mat_t)                      # (n_target, M)
        else:
            out = torch.sparse.mm(_to_torch_csr(self.matrix, x.dtype).to(x.device), x2d)
        return out.t().reshape(*lead, *self.out_shape)

    def extra_repr(self) -> str:
        return f"n_source={self.n_source}, out_shape={self.out_shape}, nnz={self.nnz}"
