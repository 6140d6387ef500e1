"""Rotating images on the disc without changing their noise statistics.

An image rotation needs interpolation, and ordinary (bilinear) interpolation low-passes white noise: at SNR 1/64 a
denoiser fed a bilinearly rotated noisy image sees a different noise level and looks non-equivariant for that reason
alone. :func:`rotate` therefore rotates by exact quarter turns (``torch.rot90``) and the remaining angle in
``[-pi/4, pi/4]`` by three Fourier shears (Unser, Thevenaz & Yaroslavsky 1995; each shear shifts rows or columns by
a sub-pixel amount through an FFT phase ramp). Each shear is orthogonal for odd sizes (for even sizes the Nyquist
bin's phase is dropped), so rotated white noise is white noise of the same variance, and a band-limited image is
rotated with sinc interpolation. The shears treat the image as periodic; to keep the intermediate (sheared) images
from wrapping around, the image is zero-padded by half its size on each side first and cropped afterwards, so the
content of the inscribed disc is rotated exactly onto the disc (what lies outside the disc may partly be lost).

Angles are in radians, counter-clockwise with ``y`` up (:func:`pathxai.equivariant.spiral.pixel_points`).
"""
from __future__ import annotations

import math

import torch


def _shear(x: torch.Tensor, factor: torch.Tensor, axis: int) -> torch.Tensor:
    """Shift each line of ``x`` (``(B, H, W)``) along ``axis`` by ``factor * (coordinate of the line across it)`` pixels
    (periodic); ``factor`` has shape ``(B,)``, one shear per image.

    ``axis = -1``: row ``r`` (y = size/2 - r - 1/2) moves right by ``factor * y``.
    ``axis = -2``: column ``c`` (x = c + 1/2 - size/2) moves up (to smaller rows) by ``factor * x``.
    """
    n_along = x.shape[axis]
    n_across = x.shape[-2] if axis == -1 else x.shape[-1]
    pos = torch.arange(n_across, dtype=torch.float64) + 0.5 - n_across / 2
    f = factor.to(torch.float64)[:, None, None]
    k = torch.fft.rfftfreq(n_along, dtype=torch.float64)                   # cycles per pixel
    work = torch.float64 if x.dtype == torch.float64 else torch.float32    # float32 FFTs: errors ~1e-6
    if axis == -1:
        shift = f * (-pos)[None, :, None]                                  # (B, H, 1): y of each row, move right
        phase = torch.exp(-2j * math.pi * k[None, None, :] * shift)        # (B, H, W//2+1)
        out = torch.fft.irfft(torch.fft.rfft(x.to(work), dim=-1) * phase.to(work.to_complex()), n=n_along, dim=-1)
    else:
        shift = -f * pos[None, None, :]                                    # (B, 1, W): move up = towards row 0
        phase = torch.exp(-2j * math.pi * k[None, :, None] * shift)        # (B, H//2+1, W)
        out = torch.fft.irfft(torch.fft.rfft(x.to(work), dim=-2) * phase.to(work.to_complex()), n=n_along, dim=-2)
    return out.to(x.dtype)


def rotate(images: torch.Tensor, angle: float | torch.Tensor) -> torch.Tensor:
    """Rotate square images counter-clockwise about their centre.

    Args:
        images: ``(..., H, H)`` float tensor.
        angle: radians; a float for all images, or a tensor of shape ``(N,)`` with one angle per leading item
            (``images`` then has shape ``(N, ..., H, H)``).

    Returns:
        Tensor of the same shape and dtype.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim < 2 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must have shape (..., H, H) with square images, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a float tensor, got dtype {images.dtype}")
    if isinstance(angle, torch.Tensor) and angle.ndim > 0:
        if angle.ndim != 1 or images.ndim < 3 or angle.shape[0] != images.shape[0]:
            raise ValueError(f"angle must be a float or have shape (N,) = ({images.shape[0]},), "
                             f"got {tuple(angle.shape)}")
        angles = angle.detach().to(torch.float64).cpu()
    else:
        angles = torch.tensor([float(angle)], dtype=torch.float64)
    if not bool(torch.isfinite(angles).all()):
        raise ValueError(f"angle must be finite, got {angle}")
    per_item = angles.shape[0] > 1 or (isinstance(angle, torch.Tensor) and angle.ndim > 0)
    quarter = torch.round(angles / (math.pi / 2))
    rest = angles - quarter * (math.pi / 2)                                 # in [-pi/4, pi/4]
    quarter = quarter.long() % 4
    size = images.shape[-1]
    lead = images.shape[1:-2] if per_item else images.shape[:-2]
    x = images if per_item else images.unsqueeze(0)
    out = torch.empty_like(x)
    for q in range(4):                                                      # exact quarter turns, grouped
        sel = (quarter == q).nonzero().flatten()
        if sel.numel():
            out[sel] = torch.rot90(x[sel], k=q, dims=(-2, -1))              # counter-clockwise with y up
    if bool((rest.abs() > 1e-12).any()):
        n = x.shape[0]
        pad = size // 2
        m = int(torch.tensor(lead).prod()) if len(lead) else 1
        t = -torch.tan(rest / 2).repeat_interleave(m)
        b = torch.sin(rest).repeat_interleave(m)
        y = torch.nn.functional.pad(out.reshape(n * m, 1, size, size), (pad, pad, pad, pad))[:, 0]
        y = _shear(y, t, axis=-1)
        y = _shear(y, b, axis=-2)
        y = _shear(y, t, axis=-1)
        out = y[:, pad:pad + size, pad:pad + size].reshape(out.shape)
    return out if per_item else out[0]
