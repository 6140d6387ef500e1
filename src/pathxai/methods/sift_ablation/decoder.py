"""Feature cells and the differentiable decoder D(theta) (thesis Sec. 4.1.3, 4.2.3, 4.2.4).

For every layer T_l (stored at its level's resolution, :mod:`.scale_space`) each voxel (r, sigma_l) is assigned to
its nearest keypoint in the eta-weighted scale-space distance (Eq. 4.18-4.19; a k-d tree on (y, x, eta * sigma)).
The cell indicator chi_{i,l} is used as it is (``cells="partition"``, decoder version 1, Eq. 4.20-4.22) or
low-pass filtered at the layer's own sigma (``cells="smooth"``, decoder version 2, Eq. 4.26-4.27). Smooth cells are
made sparse by the soft cut-off of Eq. 4.37 and their lost mass redistributed by Eq. 4.39, so they are again a
partition of unity; where the remaining mass m is below 1e-3 (the thesis' guard) we fall back to the hard Voronoi
cell, which keeps D(1) = x exact instead of dropping that voxel.

Per level rho the cells and layers are pre-multiplied and summed over the level's layers into one sparse matrix
Z^rho (C h_rho w_rho, K) (Eq. 4.32-4.35, 4.40), and

    D(theta) = Z^0 theta + up(Z^1 theta + up(Z^2 theta))                                       (Eq. 4.41)

is linear in theta, batched (theta: (B, K)) and differentiable (sparse-dense products); D(1) = x, D(0) = 0
(the implicit baseline, Sec. 4.3.1). The homogeneous-field heatmap I(theta) of Eq. 4.46-4.47 uses the same cells
with T_l replaced by a constant C(sigma_l) (default 1 / (M + 1), uniform in log sigma), so I(1) = 1.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from ...core.baselines import gaussian_kernel1d
from .keypoints import Keypoints, detect_keypoints
from .scale_space import ScaleSpace, SigmaGrid, collapse_levels, decompose, level_shape, sigma_grid

CELL_KINDS = ("smooth", "partition")
_MIN_MASS = 1e-3  # Sec. 4.2.3B: guard on the remaining mass


def voxel_labels(keypoints: Keypoints, shape: tuple[int, int], level_hw: tuple[int, int], sigma: float,
                 eta: float) -> torch.Tensor:
    """Nearest keypoint (Eq. 4.19, distance 4.18) of every voxel of a layer stored at ``level_hw``: (h, w) int64.

    Voxel centres are mapped to input pixel coordinates the way bilinear resampling (align_corners=False) does.
    """
    h, w = level_hw
    sy, sx = shape[0] / h, shape[1] / w
    yy = (np.arange(h) + 0.5) * sy - 0.5
    xx = (np.arange(w) + 0.5) * sx - 0.5
    gy, gx = np.meshgrid(yy, xx, indexing="ij")
    pts = np.stack([gy.ravel(), gx.ravel(), np.full(gy.size, eta * sigma)], 1)
    kp = np.concatenate([keypoints.position.numpy(), eta * keypoints.sigma.numpy()[:, None]], 1)
    _, idx = cKDTree(kp).query(pts, k=1)
    return torch.from_numpy(np.asarray(idx, dtype=np.int64)).view(h, w)


def sparse_cells(labels: torch.Tensor, blur_sigma: float | None, sparsity: float, dtype: torch.dtype
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cells of one layer as sparse entries ``(cell (E,), pixel (E,), value (E,))``; values sum to 1 per pixel.

    ``blur_sigma=None``: the hard partition (Eq. 4.22). Otherwise chi~ = gamma_sigma * chi (Eq. 4.27), soft cut-off
    at ``sparsity`` (Eq. 4.37) and mass redistribution (Eq. 4.39), with the hard-cell fallback where the mass is
    below 1e-3.
    """
    h, w = labels.shape
    flat = labels.flatten()
    pix = torch.arange(h * w)
    if blur_sigma is None:
        return flat.clone(), pix, torch.ones(h * w, dtype=dtype)
    # each cell is blurred only on its bounding box grown by the kernel radius (reflect padding at the image border,
    # the same clipped kernel as core.baselines.gaussian_blur), so the cost follows the cells' sizes, not K * h * w
    k1 = gaussian_kernel1d(float(blur_sigma)).to(dtype)
    r_full = (k1.numel() - 1) // 2
    kernels = []
    for size in (h, w):
        r = min(r_full, size - 1)
        kk = k1[r_full - r:r_full + r + 1]
        kernels.append((r, kk / kk.sum()))
    (ry, ky), (rx, kx) = kernels
    padded = torch.nn.functional.pad(labels[None, None].to(torch.float64), (rx, rx, ry, ry), mode="reflect")[0, 0]
    padded = padded.round().long()
    n_lab = int(flat.max()) + 1
    yy_all = torch.arange(h).repeat_interleave(w)
    xx_all = torch.arange(w).repeat(h)
    big = torch.full((n_lab,), h + w, dtype=torch.long)
    ymin = big.scatter_reduce(0, flat, yy_all, "amin")
    ymax = torch.full((n_lab,), -1, dtype=torch.long).scatter_reduce(0, flat, yy_all, "amax")
    xmin = big.scatter_reduce(0, flat, xx_all, "amin")
    xmax = torch.full((n_lab,), -1, dtype=torch.long).scatter_reduce(0, flat, xx_all, "amax")
    rows, cols, vals = [], [], []
    mass = torch.zeros(h * w, dtype=dtype)
    for cell in (ymax >= 0).nonzero().flatten().tolist():
        y0, y1 = max(0, int(ymin[cell]) - ry), min(h, int(ymax[cell]) + ry + 1)  # output rows [y0, y1)
        x0, x1 = max(0, int(xmin[cell]) - rx), min(w, int(xmax[cell]) + rx + 1)
        win = (padded[y0:y1 + 2 * ry, x0:x1 + 2 * rx] == cell).to(dtype)[None, None]
        if ry:
            win = torch.nn.functional.conv2d(win, ky.view(1, 1, -1, 1))
        if rx:
            win = torch.nn.functional.conv2d(win, kx.view(1, 1, 1, -1))
        smooth = win[0, 0]
        if sparsity > 0:
            smooth = torch.where(smooth > sparsity, (smooth - sparsity) / (1.0 - sparsity), torch.zeros_like(smooth))
        yy, xx = smooth.nonzero(as_tuple=True)
        v = smooth[yy, xx]
        p = (yy + y0) * w + (xx + x0)
        rows.append(torch.full((p.numel(),), cell, dtype=torch.long))
        cols.append(p)
        vals.append(v)
        mass.index_add_(0, p, v)
    rows_t, cols_t, vals_t = torch.cat(rows), torch.cat(cols), torch.cat(vals)
    low = mass < _MIN_MASS
    keep = ~low[cols_t]
    rows_t, cols_t = rows_t[keep], cols_t[keep]
    vals_t = vals_t[keep] / mass[cols_t]  # Eq. 4.39: chi + chi (1 - m) / m = chi / m
    if bool(low.any()):
        lp = low.nonzero().flatten()
        rows_t, cols_t = torch.cat([rows_t, flat[lp]]), torch.cat([cols_t, lp])
        vals_t = torch.cat([vals_t, torch.ones(lp.numel(), dtype=dtype)])
    return rows_t, cols_t, vals_t


def _level_matrix(cells: torch.Tensor, pixels: torch.Tensor, values: torch.Tensor, n_pix: int, k: int
                  ) -> torch.Tensor:
    """Sum duplicate (cell, pixel) entries (several layers of a level) into a CSR matrix (C n_pix, K).

    Args:
        cells, pixels: (E,) int64; values: (E, C) -- channel c of an entry goes to row c * n_pix + pixel.
    """
    c = values.shape[1]
    key = pixels * k + cells
    uniq, inverse = torch.unique(key, sorted=True, return_inverse=True)
    summed = torch.zeros(uniq.numel(), c, dtype=values.dtype).index_add_(0, inverse, values)
    pix, col = uniq // k, uniq % k
    counts = torch.bincount(pix, minlength=n_pix)
    crow = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    nnz = uniq.numel()
    crow_all = torch.cat([crow[:-1] + ch * nnz for ch in range(c)] + [torch.tensor([c * nnz])])
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow_all, col.repeat(c), summed.t().reshape(-1), (c * n_pix, k))


def _spmm(matrix: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``matrix (P, K) sparse @ theta.T`` -> (B, P), differentiable in theta (B, K)."""
    return torch.sparse.mm(matrix, theta.t().contiguous()).t()


@dataclass
class SiftDecoder:
    """The per-image decoder D^{Delta,kappa} (Eq. 4.14, 4.41) and the heatmap extraction I^kappa (Eq. 4.46).

    Attributes:
        keypoints: the image's K :class:`~.keypoints.Keypoints`.
        grid: the :class:`~.scale_space.SigmaGrid`.
        image_shape: (H, W); channels: C.
        matrices: per level rho, sparse CSR (C h_rho w_rho, K): Z^rho summed over the level's layers (Eq. 4.40).
        heat_matrices: per level rho, sparse CSR (h_rho w_rho, K): the cells weighted by C(sigma_l) (Eq. 4.46).
    """

    keypoints: Keypoints
    grid: SigmaGrid
    image_shape: tuple[int, int]
    channels: int
    matrices: list[torch.Tensor]
    heat_matrices: list[torch.Tensor]
    cells: str
    eta: float

    @property
    def n_features(self) -> int:
        """K, the number of keypoint features."""
        return len(self.keypoints)

    def _theta(self, theta: torch.Tensor) -> tuple[torch.Tensor, bool]:
        if not isinstance(theta, torch.Tensor):
            raise TypeError(f"theta must be a tensor of shape (K,) or (B, K) with K = {self.n_features}, "
                            f"got {type(theta).__name__}")
        single = theta.ndim == 1
        t = theta.unsqueeze(0) if single else theta
        if t.ndim != 2 or t.shape[1] != self.n_features:
            raise ValueError(f"theta must have shape (K,) or (B, K) with K = {self.n_features}, got "
                             f"{tuple(theta.shape)}")
        return t.to(device=self.device, dtype=self.matrices[0].dtype), single

    @property
    def device(self) -> torch.device:
        """Where the decoder's matrices are (and where it decodes)."""
        return self.matrices[0].device

    def to(self, device: torch.device | str) -> "SiftDecoder":
        """This decoder with its matrices on ``device`` (keypoints and grid stay as they are: host metadata).
        E_SIFT runs on the host (NumPy); decoding, the per-chunk work, runs where the model is."""
        return dataclasses.replace(self, matrices=[z.to(device) for z in self.matrices],
                                   heat_matrices=[z.to(device) for z in self.heat_matrices])

    def decode(self, theta: torch.Tensor) -> torch.Tensor:
        """D(theta): gains (K,) or (B, K) -> image (C, H, W) or (B, C, H, W), linear and differentiable."""
        t, single = self._theta(theta)
        levels = []
        for lvl, z in enumerate(self.matrices):
            h, w = level_shape(self.image_shape, lvl)
            levels.append(_spmm(z, t).reshape(t.shape[0], self.channels, h, w))
        out = collapse_levels(levels, self.image_shape)
        return out[0] if single else out

    __call__ = decode

    def heatmap(self, theta: torch.Tensor) -> torch.Tensor:
        """I^kappa(theta) of Eq. 4.46 (homogeneous field C(sigma) = 1/(M+1)): (K,) or (B, K) -> (H, W) or
        (B, H, W); I(1) = 1 everywhere."""
        t, single = self._theta(theta)
        levels = []
        for lvl, z in enumerate(self.heat_matrices):
            h, w = level_shape(self.image_shape, lvl)
            levels.append(_spmm(z, t).reshape(t.shape[0], h, w))
        out = collapse_levels(levels, self.image_shape)
        return out[0] if single else out

    def feature_weights(self, chunk: int = 64) -> torch.Tensor:
        """W_j = ||D(e_j)||_2 (Eq. 4.45) for every feature: (K,) float64."""
        k = self.n_features
        out = torch.empty(k, dtype=torch.float64, device=self.device)
        eye = torch.eye(k, dtype=self.matrices[0].dtype, device=self.device)
        for s in range(0, k, chunk):
            out[s:s + chunk] = self.decode(eye[s:s + chunk]).flatten(1).norm(dim=1).double()
        return out

    def nnz(self) -> int:
        """Stored non-zeros of the decoder matrices."""
        return sum(int(z.values().numel()) for z in self.matrices)


def build_decoder(space: ScaleSpace, keypoints: Keypoints, *, eta: float = 4.0, cells: str = "smooth",
                  sparsity: float = 0.01, heat_exponent: float = 0.0) -> SiftDecoder:
    """The decoder of a decomposed image from its layers and keypoints (Sec. 4.1.3, 4.2.3-4.2.4).

    ``heat_exponent`` alpha sets the homogeneous field of the heatmap (Eq. 4.47) to C(sigma_l) proportional to
    sigma_l^-alpha, normalised to sum 1 over the layers (0 = uniform in log sigma; larger values favour the fine,
    spatially localised cells).
    """
    if cells not in CELL_KINDS:
        raise ValueError(f"cells must be one of {CELL_KINDS}, got {cells!r}")
    if not eta > 0:
        raise ValueError(f"eta must be > 0, got {eta}")
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must lie in [0, 1), got {sparsity}")
    grid, shape = space.grid, space.image_shape
    dtype = space.layers[0].dtype
    c = space.layers[0].shape[0]
    k = len(keypoints)
    field = grid.centres.to(dtype) ** (-float(heat_exponent))
    field = field / field.sum()
    entries: dict[int, list] = {}
    heat: dict[int, list] = {}
    for l, layer in enumerate(space.layers):
        lvl = int(grid.levels[l])
        hw = level_shape(shape, lvl)
        factor = shape[0] / hw[0]
        sigma = float(grid.centres[l])
        labels = voxel_labels(keypoints, shape, hw, sigma, eta)
        rows, pix, vals = sparse_cells(labels, None if cells == "partition" else sigma / factor, sparsity, dtype)
        n_pix = hw[0] * hw[1]
        t = layer.reshape(c, n_pix)
        entries.setdefault(lvl, []).append((rows, pix, vals[:, None] * t[:, pix].t()))
        heat.setdefault(lvl, []).append((rows, pix, (vals * field[l])[:, None]))
    matrices, heat_matrices = [], []
    for lvl in range(int(grid.levels.max()) + 1):
        hw = level_shape(shape, lvl)
        n_pix = hw[0] * hw[1]
        parts = entries.get(lvl, [])
        if parts:
            r, p, v = (torch.cat(z) for z in zip(*parts))
            hr, hp, hv = (torch.cat(z) for z in zip(*heat[lvl]))
        else:
            r = p = hr = hp = torch.zeros(0, dtype=torch.long)
            v, hv = torch.zeros(0, c, dtype=dtype), torch.zeros(0, 1, dtype=dtype)
        matrices.append(_level_matrix(r, p, v, n_pix, k))
        heat_matrices.append(_level_matrix(hr, hp, hv, n_pix, k))
    return SiftDecoder(keypoints, grid, shape, c, matrices, heat_matrices, cells, float(eta))


def sift_decompose(x: torch.Tensor, *, sigma_min: float = 0.8, octave_steps: int = 3, sigma_max: float | None = None,
                   n_levels: int = 3, contrast_threshold: float = 0.01, edge_ratio: float = 10.0,
                   max_keypoints: int = 300, eta: float = 4.0, cells: str = "smooth", sparsity: float = 0.01,
                   heat_exponent: float = 0.0) -> SiftDecoder:
    """E_SIFT followed by the decoder set-up for one image ``x`` (C, H, W): returns D^{Delta,kappa}.

    ``D(torch.ones(K))`` reproduces ``x`` (to float rounding in x's dtype); see :func:`build_decoder`.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 3 or not x.is_floating_point():
        raise ValueError(f"x must be a float tensor of shape (C, H, W), got "
                         f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
    grid = sigma_grid(tuple(x.shape[-2:]), sigma_min=sigma_min, octave_steps=octave_steps, sigma_max=sigma_max,
                      n_levels=n_levels)
    space = decompose(x, grid)
    kp = detect_keypoints(x, grid, contrast_threshold=contrast_threshold, edge_ratio=edge_ratio,
                          max_keypoints=max_keypoints)
    return build_decoder(space, kp, eta=eta, cells=cells, sparsity=sparsity, heat_exponent=heat_exponent)
