"""Functional Fisher information (FI) attributions (Gat, Calderon, Reichart & Hazan, ICML 2022).

The explained function is the softmax probability of the target, ``f(z) = p(y | z) >= 0``. The log-Sobolev inequality
bounds its functional entropy under a Gaussian measure ``mu = N(x, Sigma)`` by the functional Fisher information,

    Ent_mu(f) <= 1/2 I_mu(f),   I_mu(f) = E_{z~mu}[ <Sigma grad f(z), grad f(z)> / f(z) ]          (paper Eq. 10-11)

and FI scores feature i by its term of that sum (Eq. 13, with the division by f). The authors' public code
(github.com/nitaytech/FunctionalExplanation, ``fi_code/fi.py``) divides by f too: ``functional_information`` averages
``grads ** 2 / outputs`` and ``covariance_functional_information`` averages ``cov_grads * grads / outputs``. Their f
is ``outputs_activation_func(model(z))``: the raw output unless the caller passes an activation (their demo notebook
passes ``torch.nn.Softmax``), and their SmoothGrad, SmoothGrad-Squared and VarGrad are computed from the same
gradients of the same f -- so compare FI with those methods on one function (benchmarks/fi_table.py does, for the
softmax and for the logit):

    independent form (Eq. 9, Sigma = sigma^2 I for the sampling):   a_i = E_{z~N(x, sigma^2 I)}[ (d_i f(z))^2 / f(z) ]
    covariance form (Eq. 13):                                       a_i = E_{z~N(x, Sigma)}[ (Sigma grad f(z))_i d_i f(z) / f(z) ]

So the covariance form with ``Sigma = sigma^2 I`` is ``sigma^2`` times the independent form (same draws); a per-sample
constant that changes no ranking. Both are computed from the gradient of ``log f`` for numerical stability:
``(d_i f)^2 / f = f (d_i log f)^2``, exact for ``f > 0``. A callable target returns ``log f`` (any real score, e.g. a
logit or a log-probability): ``f = exp(score)``.

Covariances (all ``Sigma = A A^T`` with a factor ``A`` used to sample ``z = x + A eps``, ``eps ~ N(0, I)``):

- :class:`IsotropicCovariance` -- ``sigma^2 I``.
- :class:`DenseCovariance` -- an exact ``d x d`` matrix (estimated from data with :meth:`DenseCovariance.fit`), for
  small inputs (digits at 28x28: d = 784) and for tests.
- :class:`ConvCovariance` -- the structured estimate for full images and waveforms: a *stationary* covariance that is
  shared by all channels and has no cross-channel terms, ``Sigma = H H^T`` with ``H`` the zero-padded convolution by a
  small symmetric filter ``h`` (k x k for images, k for 1-D signals). ``A eps = h * eps`` and
  ``Sigma g = H^T``-then-``H`` are two convolutions, so memory is O(k^2) instead of O(d^2), and ``Sigma`` is positive
  semi-definite by construction. :meth:`ConvCovariance.fit` takes the power spectrum of the centred data, its square
  root is the spectrum of ``h`` (a zero-phase spectral factorisation), cropped to k x k. ``ConvCovariance.dense()``
  gives the exact same ``Sigma`` as a matrix, so tests compare both forms.
- :class:`TokenCovariance` -- for text (N, L, D): one D x D covariance of token embeddings shared by all positions
  (the paper's choice, Appendix B), ``Sigma = I_L (x) Sigma_D``.
- :class:`ClassCovariance` -- one covariance per class (the paper estimates Sigma per explained class).

Scale: with ``covariance_scale="relative"`` (default) the covariance is rescaled per sample so that its mean variance
``trace(Sigma) / d`` equals ``(noise_level * (max x - min x))^2``; ``"absolute"`` uses Sigma as given. The paper
states no noise level. ``noise_level = 0.15`` of the value range is SmoothGrad's convention (Smilkov et al. 2017
recommend 10-20 %; pathxai's SmoothGrad uses the same rule), chosen here so that FI and the SmoothGrad family see the
same noise. The authors' code has a different 0.15: its ``var_spread = 0.15`` multiplies a *variance* -- without a
covariance it samples ``N(x, 0.15 Var(x) I)``, ``Var(x)`` the variance of the sample's own values (noise std about
0.39 std(x)); with a covariance it samples ``N(x, 0.15 Sigma)`` (the Cholesky factor times sqrt(0.15)) while the
score's ``Sigma grad f`` uses Sigma unscaled.

Feature subsets (Corollary 4.2): ``subset`` (a bool mask of the input's sample shape) explains only those features,
sampling them from the Gaussian conditioned on the other features fixed at their values in x:
``z_1 ~ N(x_1, Sigma_11 - Sigma_12 Sigma_22^-1 Sigma_21)``, ``z_2 = x_2`` (Eq. 15 with ``z_2 = x_2``, Eq. 17). The
conditional covariance is formed densely (exact), which needs ``d <= max_dense`` for correlated covariances; the
isotropic one conditions trivially at any size.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from ..core import Method, Target, accumulate_rows, item_generator, item_gradients, register_method
from ..core.sampling import (NOISE_SAMPLINGS, GaussianNoise, ReplicateMoments, SampleBlocks, SamplingMixin,
                             ToleranceStop, check_sampling, check_tol, gradient_rounds, relative_error, round_up)
from ..core.validation import check_fraction, check_positive_int

MAX_DENSE = 8192
#: draws per independent group (replicate) for each noise sampling (:mod:`pathxai.core.sampling`)
NOISE_GROUPS = {"mc": 1, "antithetic": 2, "sobol": 8}
NOISE_BLOCK = 8   # samples per aligned statistics block; the stopping rule is checked after each


class Covariance:
    """A Gaussian covariance ``Sigma = A A^T`` over inputs of one sample shape.

    Subclasses implement :meth:`factor_apply` (``A eps``), :meth:`apply` (``Sigma g``) and :meth:`dense`.
    Covariances are immutable: methods never change them in place.
    """

    #: shape of one sample, e.g. (C, H, W); ``None`` = any
    shape: tuple[int, ...] | None = None

    def factor_apply(self, eps: torch.Tensor) -> torch.Tensor:
        """``A eps`` for a batch ``eps`` (n, *shape) -> (n, *shape)."""
        raise NotImplementedError

    def apply(self, g: torch.Tensor) -> torch.Tensor:
        """``Sigma g`` for a batch ``g`` (n, *shape) -> (n, *shape)."""
        raise NotImplementedError

    def mean_variance(self, shape: Sequence[int]) -> float:
        """``trace(Sigma) / d`` for inputs of sample ``shape``."""
        raise NotImplementedError

    def dense(self, shape: Sequence[int]) -> torch.Tensor:
        """The exact (d, d) float64 matrix for inputs of sample ``shape`` (d = prod(shape))."""
        d = math.prod(shape)
        if d > MAX_DENSE:
            raise ValueError(f"a dense covariance of inputs of shape {tuple(shape)} needs a {d} x {d} matrix; "
                             f"at most d = {MAX_DENSE} is formed")
        eye = torch.eye(d, dtype=torch.float64).view((d,) + tuple(shape))
        return self.apply(eye).reshape(d, d)

    def conditional(self, subset: torch.Tensor) -> "Covariance":
        """The covariance of the features in ``subset`` (bool, sample shape) given the others fixed (Eq. 15);
        as a covariance of the full shape that is zero outside ``subset``."""
        shape = tuple(subset.shape)
        sigma = self.dense(shape)
        m = subset.reshape(-1)
        s11 = sigma[m][:, m]
        if bool((~m).any()):
            s12 = sigma[m][:, ~m]
            s22 = sigma[~m][:, ~m]
            jitter = 1e-10 * float(s22.diagonal().mean().clamp_min(1e-30))
            s22 = s22 + jitter * torch.eye(s22.shape[0], dtype=s22.dtype)
            s11 = s11 - s12 @ torch.linalg.solve(s22, s12.T)
        d = m.numel()
        full = torch.zeros(d, d, dtype=torch.float64)
        idx = m.nonzero().squeeze(1)
        full[idx.unsqueeze(1), idx.unsqueeze(0)] = (s11 + s11.T) / 2
        return DenseCovariance(full, shape=shape)


class IsotropicCovariance(Covariance):
    """``Sigma = std^2 I`` (optionally restricted to a bool ``mask`` of the sample shape: zero elsewhere)."""

    def __init__(self, std: float = 1.0, mask: torch.Tensor | None = None) -> None:
        if not std > 0 or not math.isfinite(std):
            raise ValueError(f"std must be > 0, got {std}")
        self.std = float(std)
        self.mask = None if mask is None else mask.detach().clone().bool()
        self.shape = None if mask is None else tuple(mask.shape)

    def factor_apply(self, eps: torch.Tensor) -> torch.Tensor:
        out = eps * self.std
        return out if self.mask is None else out * self.mask.to(out)

    def apply(self, g: torch.Tensor) -> torch.Tensor:
        out = g * self.std ** 2
        return out if self.mask is None else out * self.mask.to(out)

    def mean_variance(self, shape: Sequence[int]) -> float:
        frac = 1.0 if self.mask is None else float(self.mask.double().mean())
        return self.std ** 2 * frac

    def conditional(self, subset: torch.Tensor) -> "Covariance":
        mask = subset.bool() if self.mask is None else subset.bool() & self.mask
        return IsotropicCovariance(self.std, mask)


class DenseCovariance(Covariance):
    """An exact ``d x d`` covariance over inputs of sample ``shape`` (d = prod(shape)).

    Args:
        matrix: (d, d) symmetric positive semi-definite ``Sigma``; the sampling factor is its Cholesky factor
            (with a tiny jitter if needed) unless ``factor`` is given.
        factor: (d, d) ``A`` with ``Sigma = A A^T`` (then ``matrix`` may be ``None``).
        shape: sample shape, e.g. (1, 28, 28).
    """

    def __init__(self, matrix: torch.Tensor | None = None, *, factor: torch.Tensor | None = None,
                 shape: Sequence[int]) -> None:
        self.shape = tuple(int(s) for s in shape)
        d = math.prod(self.shape)
        if factor is not None:
            factor = factor.detach().to(torch.float64).clone()
            if factor.shape != (d, d):
                raise ValueError(f"factor must have shape ({d}, {d}) for sample shape {self.shape}, "
                                 f"got {tuple(factor.shape)}")
            if matrix is None:
                matrix = factor @ factor.T
        if matrix is None:
            raise ValueError("give the covariance matrix or its factor")
        matrix = matrix.detach().to(torch.float64).clone()
        if matrix.shape != (d, d):
            raise ValueError(f"covariance must have shape ({d}, {d}) for sample shape {self.shape}, "
                             f"got {tuple(matrix.shape)}")
        if not torch.isfinite(matrix).all():
            raise ValueError("covariance contains NaN/Inf")
        if (matrix - matrix.T).abs().max() > 1e-8 * matrix.abs().max().clamp_min(1e-30):
            raise ValueError("covariance must be symmetric")
        self.matrix = matrix
        if factor is None:
            factor = _psd_factor(matrix)
        self.factor = factor

    @classmethod
    def fit(cls, data: torch.Tensor, *, jitter: float = 1e-4) -> "DenseCovariance":
        """Empirical covariance of ``data`` (M, *shape) plus ``jitter * mean variance`` on the diagonal (the paper's
        "small noise on the diagonal", Appendix B, so Sigma is positive definite)."""
        flat = data.detach().to(torch.float64).flatten(1)
        centred = flat - flat.mean(0)
        sigma = centred.T @ centred / max(flat.shape[0] - 1, 1)
        sigma += jitter * float(sigma.diagonal().mean().clamp_min(1e-12)) * torch.eye(sigma.shape[0],
                                                                                     dtype=torch.float64)
        return cls(sigma, shape=data.shape[1:])

    def factor_apply(self, eps: torch.Tensor) -> torch.Tensor:
        return (eps.flatten(1) @ self.factor.to(eps).T).view_as(eps)

    def apply(self, g: torch.Tensor) -> torch.Tensor:
        return (g.flatten(1) @ self.matrix.to(g)).view_as(g)

    def mean_variance(self, shape: Sequence[int]) -> float:
        return float(self.matrix.diagonal().mean())

    def dense(self, shape: Sequence[int]) -> torch.Tensor:
        return self.matrix.clone()


def _psd_factor(matrix: torch.Tensor) -> torch.Tensor:
    """A factor ``A`` with ``A A^T = matrix`` (Cholesky; eigen-decomposition for singular PSD matrices)."""
    chol, info = torch.linalg.cholesky_ex(matrix)
    if int(info) == 0:
        return chol.contiguous()
    evals, evecs = torch.linalg.eigh(matrix)
    if float(evals.min()) < -1e-8 * float(evals.abs().max()):
        raise ValueError(f"covariance is not positive semi-definite (smallest eigenvalue {float(evals.min()):.3g})")
    return (evecs * evals.clamp_min(0).sqrt()).contiguous()


class ConvCovariance(Covariance):
    """Stationary covariance ``Sigma = H H^T``, ``H`` = zero-padded convolution with a symmetric odd-sized filter,
    applied to every channel alike (no cross-channel covariance).

    Args:
        kernel: (k, k) filter for (C, H, W) images or (k,) for (C, T) signals; k odd.
    """

    def __init__(self, kernel: torch.Tensor) -> None:
        kernel = kernel.detach().to(torch.float64).clone()
        if kernel.ndim not in (1, 2) or any(s % 2 == 0 for s in kernel.shape):
            raise ValueError(f"kernel must be (k,) or (k, k) with k odd, got shape {tuple(kernel.shape)}")
        if not torch.isfinite(kernel).all():
            raise ValueError("kernel contains NaN/Inf")
        self.kernel = kernel

    @property
    def spatial_ndim(self) -> int:
        return self.kernel.ndim

    def _conv(self, t: torch.Tensor, transpose: bool) -> torch.Tensor:
        nd = self.spatial_ndim
        if t.ndim < nd + 1:
            raise ValueError(f"a {nd}-D ConvCovariance needs inputs (n, C, {'H, W' if nd == 2 else 'T'}), "
                             f"got shape {tuple(t.shape)}")
        lead = t.shape[:-nd]
        flat = t.reshape((-1, 1) + tuple(t.shape[-nd:]))
        w = self.kernel.to(t).view((1, 1) + tuple(self.kernel.shape))   # t's device and dtype
        pad = tuple(s // 2 for s in self.kernel.shape)
        if nd == 2:
            out = (F.conv_transpose2d if transpose else F.conv2d)(flat, w, padding=pad)
        else:
            out = (F.conv_transpose1d if transpose else F.conv1d)(flat, w, padding=pad)
        return out.reshape(tuple(lead) + tuple(t.shape[-nd:]))

    #: spatial sizes up to this use a cached (P, P) operator matrix (a matmul beats a 1-channel convolution there)
    matrix_below: int = 4096

    def _operators(self, spatial: tuple[int, ...], dtype: torch.dtype,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached ``(H^T, Sigma)`` as (P, P) matrices for inputs of ``spatial`` shape, on ``device`` (derived data
        only: the kernel itself is never changed)."""
        cache = self.__dict__.setdefault("_op_cache", {})
        key = (spatial, dtype, str(device))
        if key not in cache:
            p = math.prod(spatial)
            eye = torch.eye(p, dtype=torch.float64).view((p,) + spatial)
            h_t = self._conv(eye, transpose=False).reshape(p, p)  # row j = H e_j = column j of H, i.e. H^T
            cache[key] = (h_t.to(device=device, dtype=dtype), (h_t.T @ h_t).to(device=device, dtype=dtype))
        return cache[key]

    def _matmul(self, t: torch.Tensor, which: int) -> torch.Tensor:
        spatial = tuple(t.shape[-self.spatial_ndim:])
        op = self._operators(spatial, t.dtype, t.device)[which]
        return (t.reshape(-1, op.shape[0]) @ op).view_as(t)

    def factor_apply(self, eps: torch.Tensor) -> torch.Tensor:
        if math.prod(eps.shape[-self.spatial_ndim:]) <= self.matrix_below:
            return self._matmul(eps, 0)
        return self._conv(eps, transpose=False)

    def apply(self, g: torch.Tensor) -> torch.Tensor:
        if math.prod(g.shape[-self.spatial_ndim:]) <= self.matrix_below and g.dtype != torch.float64:
            return self._matmul(g, 1)
        return self._conv(self._conv(g, transpose=True), transpose=False)

    def mean_variance(self, shape: Sequence[int]) -> float:
        ones = torch.ones((1,) + tuple(shape[-self.spatial_ndim:]), dtype=torch.float64)
        # diag(H H^T)_p = sum of squared filter taps that land inside the image for output p
        var = self._conv_sq(ones)
        return float(var.mean())

    def _conv_sq(self, ones: torch.Tensor) -> torch.Tensor:
        sq = ConvCovariance.__new__(ConvCovariance)
        sq.kernel = self.kernel ** 2
        return sq._conv(ones, transpose=False)

    @classmethod
    def fit(cls, data: torch.Tensor, *, size: int = 9) -> "ConvCovariance":
        """Estimate the stationary covariance of ``data`` (M, C, H, W) or (M, C, T) and factor it into a
        ``size``-tap symmetric filter (zero-phase square root of the averaged power spectrum, cropped).

        The data are centred by their mean over the M samples (pass one class's data for a class covariance)."""
        if size % 2 == 0 or size < 1:
            raise ValueError(f"size must be an odd positive int, got {size}")
        nd = 2 if data.ndim == 4 else 1
        if data.ndim not in (3, 4):
            raise ValueError(f"data must be (M, C, H, W) or (M, C, T), got shape {tuple(data.shape)}")
        x = data.detach().to(torch.float64)
        x = x - x.mean(0, keepdim=True)
        spatial = x.shape[-nd:]
        n_pix = math.prod(spatial)
        fft_shape = tuple(2 * s for s in spatial)  # zero padding: linear (not circular) autocorrelation
        dims = tuple(range(-nd, 0))
        power = (torch.fft.rfftn(x, s=fft_shape, dim=dims).abs() ** 2).flatten(0, -nd - 1).mean(0) / n_pix
        root = torch.fft.irfftn(power.sqrt(), s=fft_shape, dim=dims)
        root = torch.fft.fftshift(root, dim=dims)
        centre = tuple(s // 2 for s in fft_shape)
        r = size // 2
        sl = tuple(slice(c - r, c + r + 1) for c in centre)
        kernel = root[sl]
        kernel = (kernel + kernel.flip(tuple(range(kernel.ndim)))) / 2
        return cls(kernel)


class TokenCovariance(Covariance):
    """Covariance of the last axis shared by all leading positions, no cross-position terms:
    ``Sigma = I_L (x) Sigma_D`` for (L, D) token embeddings (the paper's text choice, Appendix B).

    Args:
        matrix: (D, D) positive semi-definite covariance of one token's embedding.
    """

    def __init__(self, matrix: torch.Tensor) -> None:
        matrix = matrix.detach().to(torch.float64).clone()
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"matrix must be (D, D), got shape {tuple(matrix.shape)}")
        if not torch.isfinite(matrix).all():
            raise ValueError("matrix contains NaN/Inf")
        self.matrix = matrix
        self.factor = _psd_factor(matrix)

    def factor_apply(self, eps: torch.Tensor) -> torch.Tensor:
        return eps @ self.factor.to(eps).T

    def apply(self, g: torch.Tensor) -> torch.Tensor:
        return g @ self.matrix.to(g)

    def mean_variance(self, shape: Sequence[int]) -> float:
        return float(self.matrix.diagonal().mean())

    @classmethod
    def fit(cls, data: torch.Tensor, *, jitter: float = 1e-4) -> "TokenCovariance":
        """Covariance of the token vectors of ``data`` (M, L, D) (all positions pooled), plus ``jitter`` times the
        mean variance on the diagonal."""
        v = data.detach().to(torch.float64).reshape(-1, data.shape[-1])
        v = v - v.mean(0)
        sigma = v.T @ v / max(v.shape[0] - 1, 1)
        sigma += jitter * float(sigma.diagonal().mean().clamp_min(1e-12)) * torch.eye(sigma.shape[0],
                                                                                     dtype=torch.float64)
        return cls(sigma)


class ClassCovariance:
    """One covariance per class: ``covariances[c]`` explains target class ``c``."""

    def __init__(self, covariances: Mapping[int, Covariance]) -> None:
        self.covariances = {int(k): v for k, v in covariances.items()}

    def __getitem__(self, c: int) -> Covariance:
        if int(c) not in self.covariances:
            raise ValueError(f"no covariance for class {int(c)}; classes with one: {sorted(self.covariances)}")
        return self.covariances[int(c)]

    @classmethod
    def fit(cls, data: torch.Tensor, labels: torch.Tensor, kind: str = "conv", **kwargs: Any) -> "ClassCovariance":
        """Fit one covariance per label value: ``kind`` = ``"conv"``, ``"dense"`` or ``"token"`` (the ``fit`` of
        :class:`ConvCovariance`, :class:`DenseCovariance`, :class:`TokenCovariance`)."""
        fitter = _FITTERS[kind]
        return cls({int(c): fitter(data[labels == c], **kwargs) for c in labels.unique()})


def fit_covariance(data: torch.Tensor, labels: torch.Tensor | None = None, kind: str = "conv",
                   **kwargs: Any) -> Covariance | ClassCovariance:
    """Estimate a covariance from ``data`` (M, *shape): global if ``labels`` is None, else one per class."""
    if labels is not None:
        return ClassCovariance.fit(data, labels, kind, **kwargs)
    return _FITTERS[kind](data, **kwargs)


_FITTERS = {"conv": ConvCovariance.fit, "dense": DenseCovariance.fit, "token": TokenCovariance.fit}


@register_method
class FunctionalInformation(SamplingMixin, Method):
    """Functional Fisher information attributions (Gat et al., ICML 2022); see the module docstring for the math.

    Args:
        n_samples: Gaussian samples per input (default 100); the cap with ``tol``.
        noise_level: sigma as a fraction of each input's value range (max - min); 0.15 = SmoothGrad's
            convention (the paper gives no value; the authors' code scales a variance by 0.15 instead).
        covariance: ``None`` (independent form, Eq. 9), a :class:`Covariance`, or a :class:`ClassCovariance`
            (covariance form, Eq. 13, with the covariance of each sample's target class).
        covariance_scale: ``"relative"`` (rescale Sigma to mean variance ``(noise_level * range)^2``) or
            ``"absolute"`` (use Sigma as given).
        subset: bool mask of the sample shape: explain only these features, conditioning on the others
            (Corollary 4.2); attributions outside the subset are 0.
    Attribution: (N, *sample shape); (N, C, H, W) for images, saliency = sum over channels.
        sampling: how eps ~ N(0, I) is drawn (:mod:`pathxai.core.sampling`): ``"mc"`` (iid, bit for bit earlier
            versions' results), ``"antithetic"`` (pairs eps, -eps, so z = x +- A eps) or ``"sobol"`` (scrambled
            Sobol nets of 8 draws through the inverse normal CDF; at most 21,201 features). Default: see
            :attr:`sampling_default`. Non-``"mc"`` samplings round ``n_samples`` up to whole groups (2 or 8).
        tol: stop each input once the relative standard error of its attribution (RMS standard error over the map's
            noise-free spatial SD, :func:`pathxai.core.sampling.relative_error`) is below ``tol``, checked every 8
            samples; ``n_samples`` is the cap.
    Extras: ``"information"`` (N,) the Monte Carlo functional Fisher information (sum of the attribution; the
    log-Sobolev bound is ``Ent <= information / 2``), ``"noise_std"`` (N,) sigma per sample, ``"mean_f"`` (N,),
    ``"stderr"`` (N, *sample shape) the attribution's standard error from the same samples (independent groups:
    one draw for ``"mc"``, a pair, a Sobol net). ``meta``: ``samples_used`` (per input), ``relative_error``,
    ``tol_reached``.
    """

    name = "fi"
    description = "Functional Fisher information (Gat et al. 2022): E[(Sigma grad f)_i grad_i f / f] over Gaussian noise."
    stochastic = True
    cost_param = "n_samples"
    saliency_reduction = "sum"
    input_ndim = (2, 3, 4)
    input_expected = "(N, C, H, W) or (N, L, D) or (N, C, T) or (N, D)"
    #: the default ``sampling``: the most accurate measured on the digits-clutter CNN (benchmarks/results/sampling.md)
    sampling_default = "mc"

    def __init__(self, model: Any, *, n_samples: int = 100, noise_level: float = 0.15,
                 covariance: Covariance | ClassCovariance | None = None, covariance_scale: str = "relative",
                 subset: torch.Tensor | None = None, sampling: str | None = None, tol: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.sampling = check_sampling(self.sampling_default if sampling is None else sampling, NOISE_SAMPLINGS)
        self.group = NOISE_GROUPS[self.sampling]
        self.tol = check_tol(tol)
        self.n_samples = round_up(check_positive_int(n_samples, "n_samples"), self.group)
        self.noise_level = check_fraction(noise_level, "noise_level", high=10.0)
        # sigma 0 leaves no noise to average over (the relative scale would report a misleading "constant sample")
        if self.noise_level == 0 and covariance_scale != "absolute":
            raise ValueError(f"noise_level must lie in (0.0, 10.0], got {noise_level}")
        if covariance is not None and not isinstance(covariance, (Covariance, ClassCovariance)):
            raise TypeError(f"covariance must be None, a Covariance or a ClassCovariance, got "
                            f"{type(covariance).__name__}")
        if covariance_scale not in ("relative", "absolute"):
            raise ValueError(f"covariance_scale must be 'relative' or 'absolute', got {covariance_scale!r}")
        if covariance is None and covariance_scale == "absolute":
            raise ValueError("covariance_scale='absolute' needs a covariance")
        self.covariance = covariance
        self.covariance_scale = covariance_scale
        if subset is not None:
            if not isinstance(subset, torch.Tensor) or subset.dtype != torch.bool:
                raise TypeError("subset must be a bool tensor of the sample shape")
            if not bool(subset.any()):
                raise ValueError("subset selects no feature")
            subset = subset.detach().clone()
        self.subset = subset

    def params(self) -> dict[str, Any]:
        cov = self.covariance
        return {"n_samples": self.n_samples, "noise_level": self.noise_level,
                "covariance": None if cov is None else type(cov).__name__,
                "covariance_scale": self.covariance_scale,
                "subset": None if self.subset is None else int(self.subset.sum()), "sampling": self.sampling,
                "tol": self.tol}

    def _covariances(self, x: torch.Tensor, target: Target) -> tuple[list[Covariance], torch.Tensor]:
        """One covariance object per sample (shared objects) and the per-sample scale c with Sigma_i = c_i^2 Sigma."""
        n, shape = x.shape[0], tuple(x.shape[1:])
        flat = x.flatten(1)
        sigma = (flat.amax(1) - flat.amin(1)) * self.noise_level  # (N,)
        if (sigma <= 0).any() and self.covariance_scale == "relative":
            raise ValueError("x has a constant sample (max == min): the noise scale relative to its range is 0")
        cov = self.covariance
        if isinstance(cov, ClassCovariance):
            if target.classes is None:
                raise ValueError("a ClassCovariance needs class targets, not a callable target")
            base = [cov[int(c)] for c in target.classes]
        else:
            base = [cov if cov is not None else IsotropicCovariance(1.0)] * n
        if self.subset is not None and tuple(self.subset.shape) != shape:
            raise ValueError(f"subset must have the sample shape {shape}, got {tuple(self.subset.shape)}")
        cache: dict[int, tuple[Covariance, float]] = {}
        covs, scale = [], torch.ones(n, dtype=torch.float64)
        noise_std = torch.zeros(n, dtype=torch.float64)
        for i, c in enumerate(base):
            if id(c) not in cache:
                mv = c.mean_variance(shape)
                cache[id(c)] = (c.conditional(self.subset) if self.subset is not None else c, mv)
            cc, mv = cache[id(c)]
            covs.append(cc)
            if self.covariance_scale == "relative":
                if not mv > 0:   # e.g. a covariance fitted on one image: every centred sample is 0
                    raise ValueError(f"covariance has zero mean variance for inputs of shape {shape} (was it fitted "
                                     "on a single sample?); fit it on several samples, or use "
                                     "covariance_scale='absolute'")
                scale[i] = float(sigma[i]) / math.sqrt(mv)
            noise_std[i] = float(scale[i]) * math.sqrt(mv)
        self._noise_std = noise_std
        return covs, scale

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        n, shape = x.shape[0], tuple(x.shape[1:])
        covs, scale = self._covariances(x, target)
        c = scale.to(x)
        kind = "output" if target.fn is not None else "log_softmax"
        groups: dict[int, list[int]] = {}
        for i, cv in enumerate(covs):
            groups.setdefault(id(cv), []).append(i)

        def per_group(s: torch.Tensor, op: str, t: torch.Tensor) -> torch.Tensor:
            out = torch.empty_like(t)
            for ids in groups.values():
                sel = torch.isin(s, torch.tensor(ids))
                if sel.any():
                    cv = covs[ids[0]]
                    out[sel] = cv.factor_apply(t[sel]) if op == "factor" else cv.apply(t[sel])
            return out

        def build(s: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            # drawn in float32 whatever x's dtype: the same noise, so the same explanation, for a float64 input
            eps = torch.stack([torch.randn(shape, device=x.device,
                                           generator=item_generator(self.seed, "fi", int(i) * self.n_samples + int(j),
                                                                    x.device))
                               for i, j in zip(s, k)]).to(x.dtype)
            return x[s] + c[s].view((-1,) + (1,) * len(shape)) * per_group(s, "factor", eps)

        moments = [ReplicateMoments(1, shape, x.device) for _ in range(n)]
        blocks = SampleBlocks(n, self.n_samples, NOISE_BLOCK)

        def add_row(i: int, j: int, value: torch.Tensor) -> list[ReplicateMoments]:
            """Buffer one sample's term; merge its block of replicates when complete (returns the merged)."""
            done = []
            for _, rows in blocks.add(i, j, value):
                moments[i].add(torch.stack(rows).view(-1, self.group, 1, *shape).mean(1))
                done.append(moments[i])
            return done

        if self.sampling == "mc" and self.tol is None:
            # the paper's estimator over all inputs at once, exactly as earlier versions computed it
            total = torch.zeros_like(x)
            f_total = torch.zeros(n, dtype=x.dtype, device=x.device)
            for s, kk, log_f, g in item_gradients(self.evaluator, target, n, self.n_samples, build, sample_shape=shape,
                                                  score_kind=kind, desc=self.name):
                f = log_f.exp()  # g = grad log f, so (Sigma grad f)_i grad_i f / f = f (Sigma g)_i g_i
                weight = f if self.covariance is None else f * c[s] ** 2
                rows = per_group(s, "apply", g) * g
                accumulate_rows(total, s, rows, weights=weight)
                accumulate_rows(f_total, s, f)
                for row in range(rows.shape[0]):
                    add_row(int(s[row]), int(kk[row]), rows[row] * weight[row])
            attribution = total / self.n_samples
            stderr = torch.stack([moments[i].stderr(0) for i in range(n)])
            self._record_sampling([self.n_samples] * n, relative_error(attribution, stderr), None)
            return attribution, {"information": attribution.flatten(1).sum(1), "noise_std": self._noise_std,
                                 "mean_f": f_total / self.n_samples, "stderr": stderr.to(x.dtype)}

        estimates, errors, mean_f, used, final_error, unreached = [], [], [], [], [], []
        for i in range(n):
            stop = ToleranceStop(self.tol, self.n_samples, "samples", self.name, self.evaluator, group=self.group)
            noise = None if self.sampling == "mc" else GaussianNoise(self.seed, "fi", i, shape, self.sampling,
                                                                     self.group, x.device)
            total_i = torch.zeros_like(x[i])
            f_sum, count, stopped = torch.zeros((), dtype=x.dtype, device=x.device), 0, False

            def make(start: int, stop_: int, i: int = i, noise: GaussianNoise | None = noise) -> torch.Tensor:
                j = torch.arange(start, stop_)
                if noise is None:
                    eps = torch.stack([torch.randn(shape, device=x.device, generator=item_generator(
                        self.seed, "fi", i * self.n_samples + int(jj), x.device)) for jj in j])
                else:
                    eps = noise.draws(j)
                return x[i:i + 1] + c[i] * covs[i].factor_apply(eps.to(x.dtype))

            def score(out: torch.Tensor, start: int, stop_: int, i: int = i) -> torch.Tensor:
                return target.score(out, torch.full((stop_ - start,), i, dtype=torch.long), kind=kind)  # type: ignore

            for start, stop_, log_f, g in gradient_rounds(self.evaluator, self.n_samples, make, score,
                                                          round_size=None if self.tol is None else 2 * NOISE_BLOCK,
                                                          sample_shape=shape, desc=self.name):
                f = log_f.exp()
                weight = f if self.covariance is None else f * c[i] ** 2
                rows = covs[i].apply(g) * g
                for row in range(rows.shape[0]):
                    value = rows[row] * weight[row]
                    total_i += value
                    f_sum += f[row]
                    count += 1
                    for mom in add_row(i, start + row, value):
                        est = total_i / count if self.sampling == "mc" else mom.mean[0]
                        if stop.check(est[None], mom.stderr(0)[None], mom.count):
                            stopped = True
                            break
                    if stopped:
                        break
                if stopped:
                    break
            est = total_i / count if self.sampling == "mc" else moments[i].mean[0]
            se = moments[i].stderr(0)
            estimates.append(est)
            errors.append(se)
            mean_f.append(f_sum / count)
            used.append(count)
            final_error.append(float(relative_error(est[None], se[None])[0]))
            if self.tol is not None and not stopped:
                unreached.append(i)
        self._finish_sampling(used, final_error, unreached, self.n_samples, "samples", n)
        attribution = torch.stack(estimates).to(x.dtype)
        return attribution, {"information": attribution.flatten(1).sum(1), "noise_std": self._noise_std,
                             "mean_f": torch.stack(mean_f), "stderr": torch.stack(errors).to(x.dtype)}
