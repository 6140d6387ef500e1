"""Denoisers that map ``(N, 1, H, H)`` noisy images to ``(N, 1, H, H)`` clean estimates (thesis Section 7.3.3).

* :class:`SpiralDenoiser`: the thesis' spiral CNN. Every layer resamples its input onto the spiral ribbon with one
  precomputed sparse matrix (:mod:`.resample`) and runs a standard ``conv2d`` on the ``(rows, n_spls)`` ribbon, valid
  across the ribbon and zero-padded along the spiral, giving values on the spiral again. The first layer reads the
  pixel grid, the output is interpolated back to the pixel grid. ReLU and batch norm between convolutions.
* :class:`CartesianDenoiser`: the same stack of ``k x k`` convolutions on the pixel grid (same parameter count).
* :func:`steerable_denoiser`: a C_N-steerable CNN from ``e2cnn`` (optional dependency), the external reference.

All predict the clean signal directly (not the noise) and take an ``input_scale`` that divides the input (set it to
the noisy images' standard deviation so the first layer sees unit-scale data; it commutes with rotations).
"""
from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from .resample import Resampler, barycentric_matrix
from .spiral import SpiralGeometry


def _check_arch_args(channels: int, depth: int, kernel_size: int) -> None:
    for name, v in (("channels", channels), ("depth", depth), ("kernel_size", kernel_size)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    if depth < 2:
        raise ValueError(f"depth must be >= 2 (input and output convolutions), got {depth}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}")


def _check_images(x: torch.Tensor, size: int | None = None) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] != x.shape[3] or (size is not None and x.shape[2] != size):
        want = f"(N, 1, {size}, {size})" if size is not None else "(N, 1, H, H)"
        raise ValueError(f"x must have shape {want}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a float tensor, got dtype {x.dtype}")


@lru_cache(maxsize=16)
def spiral_resamplers(geometry: SpiralGeometry) -> dict[str, Resampler]:
    """The three matrices a spiral network needs, built once per geometry and shared by all layers and models.

    ``"image_to_ribbon"`` ``(rows*n_spls, H*H)``, ``"spiral_to_ribbon"`` ``(rows*n_spls, n_spls)``,
    ``"spiral_to_image"`` ``(H*H, n_spls)``; also ``"image_to_spiral"`` ``(n_spls, H*H)``.
    """
    g = geometry
    ribbon = g.ribbon().reshape(-1, 2)
    shape = (g.rows, g.n_spls)
    return {
        "image_to_ribbon": Resampler(barycentric_matrix(g.pixels(), ribbon), shape),
        "spiral_to_ribbon": Resampler(barycentric_matrix(g.spiral(), ribbon), shape),
        "spiral_to_image": Resampler(barycentric_matrix(g.spiral(), g.pixels()), (g.image_size, g.image_size)),
        "image_to_spiral": Resampler(barycentric_matrix(g.pixels(), g.spiral())),
    }


class GaussianBlur(nn.Module):
    """Isotropic Gaussian low-pass of ``(..., H, W)`` images with standard deviation ``sigma`` pixels, applied in the
    Fourier domain (so it commutes with the Fourier rotation of :mod:`.rotation`). ``sigma = 0`` is the identity."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        if not (isinstance(sigma, (int, float)) and sigma >= 0):
            raise ValueError(f"sigma must be a non-negative number, got {sigma!r}")
        self.sigma = float(sigma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sigma == 0:
            return x
        h, w = x.shape[-2:]
        ky = torch.fft.fftfreq(h, dtype=x.dtype)[:, None]
        kx = torch.fft.rfftfreq(w, dtype=x.dtype)[None, :]
        gain = torch.exp(-2 * torch.pi ** 2 * self.sigma ** 2 * (kx ** 2 + ky ** 2))
        return torch.fft.irfft2(torch.fft.rfft2(x) * gain, s=(h, w))

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


class SpiralConv(nn.Module):
    """One spiral convolution: resample ``(N, C_in, n_source)`` onto the ribbon, ``conv2d`` it to ``(N, C_out, n_spls)``.

    The kernel is ``rows x rows``: valid across the ``rows``-high ribbon (output height 1), zero-padded along the
    spiral (output length ``n_spls``).
    """

    def __init__(self, in_channels: int, out_channels: int, resampler: Resampler, bias: bool = True) -> None:
        super().__init__()
        rows = resampler.out_shape[0]
        if len(resampler.out_shape) != 2:
            raise ValueError(f"resampler must produce a (rows, n_spls) ribbon, got out_shape {resampler.out_shape}")
        self.resample = resampler
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=rows, padding=(0, rows // 2), bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(N, C_in, n_source)`` -> ``(N, C_out, n_spls)``."""
        return self.conv(self.resample(x)).squeeze(2)


class SpiralDenoiser(nn.Module):
    """The spiral CNN denoiser (thesis Section 7.3): ``(N, 1, H, H) -> (N, 1, H, H)``.

    Args:
        image_size: ``H``.
        channels: width of the hidden layers.
        depth: number of spiral convolutions (>= 2).
        kernel_size: ribbon height = kernel size, 3 or 5 in the thesis.
        n_wind, n_spls: spiral parameters; default ``H // 2`` windings and ``round(pi * n_wind**2)`` samples, i.e. as
            dense as the pixel grid and equally spaced along and across the spiral.
        input_scale: the input is divided by this.
        prefilter: standard deviation (pixels) of an isotropic Gaussian low-pass applied to the input before it is
            read onto the ribbon (anti-aliasing; 0 = none, the thesis' plain version). Linear interpolation of
            white noise at points that sit differently on the pixel grid is not rotation-covariant; a mild
            prefilter makes the read-in nearly so.
    """

    def __init__(self, image_size: int, channels: int = 16, depth: int = 5, kernel_size: int = 3,
                 n_wind: int | None = None, n_spls: int | None = None, input_scale: float = 1.0,
                 prefilter: float = 0.0) -> None:
        super().__init__()
        _check_arch_args(channels, depth, kernel_size)
        self.prefilter = GaussianBlur(prefilter)
        self.geometry = SpiralGeometry(image_size, n_wind, n_spls, rows=kernel_size)
        res = spiral_resamplers(self.geometry)
        self.input_scale = float(input_scale)
        layers: list[nn.Module] = [SpiralConv(1, channels, res["image_to_ribbon"], bias=False),
                                   nn.BatchNorm1d(channels), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [SpiralConv(channels, channels, res["spiral_to_ribbon"], bias=False),
                       nn.BatchNorm1d(channels), nn.ReLU()]
        layers.append(SpiralConv(channels, 1, res["spiral_to_ribbon"]))
        self.body = nn.Sequential(*layers)
        self.to_image = res["spiral_to_image"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, self.geometry.image_size)
        n = x.shape[0]
        s = self.body(self.prefilter(x).reshape(n, 1, -1) / self.input_scale)    # (N, 1, n_spls)
        return self.to_image(s)                                         # (N, 1, H, H)


class CartesianDenoiser(nn.Module):
    """A plain CNN on the pixel grid with the same layer structure as :class:`SpiralDenoiser`:
    ``(N, 1, H, W) -> (N, 1, H, W)``, ``k x k`` convolutions with zero padding, batch norm and ReLU.

    ``prefilter``: standard deviation (pixels) of the same isotropic Gaussian low-pass :class:`SpiralDenoiser` can
    apply to its input (0 = none). It is the control for the spiral network's prefilter: the blur alone, without
    the spiral, makes a network's first layer see a smoother, more nearly rotation-covariant input.
    """

    def __init__(self, channels: int = 16, depth: int = 5, kernel_size: int = 3, input_scale: float = 1.0,
                 prefilter: float = 0.0) -> None:
        super().__init__()
        _check_arch_args(channels, depth, kernel_size)
        self.prefilter = GaussianBlur(prefilter)
        self.input_scale = float(input_scale)
        pad = kernel_size // 2
        layers: list[nn.Module] = [nn.Conv2d(1, channels, kernel_size, padding=pad, bias=False),
                                   nn.BatchNorm2d(channels), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(channels, channels, kernel_size, padding=pad, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU()]
        layers.append(nn.Conv2d(channels, 1, kernel_size, padding=pad))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x)
        return self.body(self.prefilter(x) / self.input_scale)


class _SteerableWrapper(nn.Module):
    def __init__(self, body: nn.Module, in_type: object, input_scale: float) -> None:
        super().__init__()
        self.body = body
        self.in_type = in_type
        self.input_scale = float(input_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from e2cnn import nn as enn

        _check_images(x)
        return self.body(enn.GeometricTensor(x / self.input_scale, self.in_type)).tensor


def steerable_denoiser(fields: int = 6, depth: int = 5, kernel_size: int = 3, rotations: int = 8,
                       input_scale: float = 1.0) -> nn.Module:
    """A C_N-steerable CNN (``e2cnn``, ``gspaces.Rot2dOnR2(rotations)``): ``(N, 1, H, W) -> (N, 1, H, W)``.

    Hidden layers carry ``fields`` regular-representation fields (``fields * rotations`` channels), with
    ``InnerBatchNorm`` and ``ReLU``; input and output are scalar (trivial) fields, so the network is exactly
    equivariant to rotations by multiples of ``2 pi / rotations`` in the continuum (and to quarter turns on the grid).
    Needs ``pip install e2cnn==0.2.3``.
    """
    _check_arch_args(fields, depth, kernel_size)
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from e2cnn import gspaces
            from e2cnn import nn as enn
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the steerable denoiser needs e2cnn: pip install e2cnn==0.2.3") from err
    gspace = gspaces.Rot2dOnR2(N=rotations)
    scalar = enn.FieldType(gspace, [gspace.trivial_repr])
    hidden = enn.FieldType(gspace, fields * [gspace.regular_repr])
    pad = kernel_size // 2
    layers: list[nn.Module] = [enn.R2Conv(scalar, hidden, kernel_size, padding=pad, bias=False),
                               enn.InnerBatchNorm(hidden), enn.ReLU(hidden)]
    for _ in range(depth - 2):
        layers += [enn.R2Conv(hidden, hidden, kernel_size, padding=pad, bias=False),
                   enn.InnerBatchNorm(hidden), enn.ReLU(hidden)]
    last = enn.R2Conv(hidden, scalar, kernel_size, padding=pad)
    with torch.no_grad():
        # e2cnn's He-style initialisation makes the scalar output ~4x the target's scale at the start (an initial
        # loss ~17x the cartesian CNN's); shrink the last layer so all three networks start from comparable outputs.
        last.weights.mul_(0.1)
    layers.append(last)
    return _SteerableWrapper(enn.SequentialModule(*layers), scalar, input_scale)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
