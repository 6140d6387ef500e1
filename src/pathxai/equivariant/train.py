"""Training and the two measures the thesis tracks per epoch (Figures 7.7-7.9): denoising error and equivariance error.

Both are computed on the inscribed disc only (the images live on the disc, Section 7.1):

* MSE: mean over disc pixels of ``(F(x) - x_sig)^2``; reported also relative to the noisy input's MSE
  (``rel_mse``, < 1 means the denoiser helps) and relative to the clean signal's power (``nmse``; 1 is what the
  all-zero prediction scores, since clean images have unit power on the disc).
* Equivariance error: ``|(F(M R x) - m) - R (F(x) - m)| / |F(x) - m|`` on the disc, ``m`` the mean of ``F(x)`` on
  the disc, for a fixed seeded set of validation images and random angles, averaged; ``R`` is the noise-preserving rotation of :mod:`.rotation` and ``M`` the disc
  mask (the inputs live on the disc). ``equivariance`` uses the unit disc; ``equivariance_inner`` the disc of radius
  0.8. The outer ring carries a floor that no pixel-grid model escapes: near the rim a filter reaches outside the
  disc, and a rotated pixelated disc is not a pixelated disc. An ideal isotropic Gaussian blur (sigma = 1 px)
  applied to white noise scores about 0.2 on the unit disc and 0.02 on the inner disc at 33 px (see the benchmark).

  Why the denominator of the recorded errors is the output's *deviation* from its mean over the disc
  (``normalise="deviation"``) and not its norm ``|F(x)|`` (``normalise="norm"``, the measure recorded before and the
  default of :func:`equivariance_errors`, kept for comparison): a constant output is
  trivially equivariant, so ``|F(x)|`` rewards an output dominated by a constant -- an untrained network whose
  output is mostly its final bias scores near 0 whatever its layers do, and by how much depends on the random bias
  (its sign and size relative to the rest: one seed's "equivariant from the start" was that accident). Dividing by
  the deviation measures the non-equivariant part of the output against the part that carries structure. The mean
  ``m`` is subtracted before rotating as well (``|(F(M R x) - m) - R (F(x) - m)| / |F(x) - m|``), so a constant offset
  changes nothing: the zero-padded Fourier rotation of a constant image is not exactly constant near the rim, an
  artefact of ``R`` that must not be charged to the network. (Subtracting ``m`` leaves a small floor of its own for
  outputs with a nonzero mean -- the rotation's rim error on the constant ``-m`` where the signal is 0: the identity on
  clean 33-px images scores 0.014 on the disc and 0.005 on the inner disc -- against 185 on the disc for an output
  ``100 + 0.01 flip(x)`` if ``m`` is not subtracted.) An exactly constant output has no structure to be equivariant
  and scores NaN.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..core.seeding import item_generator
from .data import CryoEMData
from .rotation import rotate
from .spiral import disc_mask

INNER_RADIUS = 0.8
NORMALISATIONS = ("deviation", "norm")


@dataclass
class EpochRecord:
    """Metrics after ``epoch`` epochs (0 = before training); ``seconds`` is the epoch's training wall time."""

    epoch: int
    train_loss: float
    val_mse: float
    val_rel_mse: float
    val_nmse: float
    equivariance: float
    equivariance_inner: float
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def _check_model_input(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] != x.shape[3] or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, 1, H, H) with N >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got dtype {x.dtype}")


def _check_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.shape != (size, size) or mask.dtype != torch.bool:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a bool tensor of shape ({size}, {size}), got {shape}")
    return mask


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """``model(x)`` in eval mode, in chunks of ``batch_size``; ``(N, 1, H, H) -> (N, 1, H, H)``. Restores the mode."""
    _check_model_input("x", x)
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    finally:
        model.train(was_training)


def disc_mse(pred: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of ``(pred - clean)^2`` over the pixels where ``mask`` is true, over all images (shapes ``(N, 1, H, H)``)."""
    if pred.shape != clean.shape:
        raise ValueError(f"pred and clean must have the same shape, got {tuple(pred.shape)} and {tuple(clean.shape)}")
    _check_mask(mask, pred.shape[-1])
    return float(((pred - clean) ** 2)[..., mask].mean())


def equivariance_errors(model: nn.Module, x: torch.Tensor, angles: Sequence[float] | torch.Tensor,
                        masks: Sequence[torch.Tensor], input_mask: torch.Tensor | None = None,
                        batch_size: int = 64, normalise: str = "norm") -> list[float]:
    """Mean over images of ``|F(M R_a x) - R_a F(x)|_D / |F(x)|_D`` (``normalise="norm"``) or, with ``m`` the mean
    of ``F(x)`` over ``D``, of ``|(F(M R_a x) - m) - R_a (F(x) - m)|_D / |F(x) - m|_D`` (``normalise="deviation"``,
    what :func:`evaluate` and the training records use), with one angle ``a`` per image, for each of several
    measuring regions ``D``.

    Args:
        model: a denoiser ``(N, 1, H, H) -> (N, 1, H, H)``, evaluated in eval mode.
        x: ``(N, 1, H, H)`` inputs.
        angles: ``N`` angles in radians.
        masks: ``(H, H)`` bool masks of the regions ``D`` the error is measured on.
        input_mask: ``M``, applied to rotated inputs (``None``: no masking).
        normalise: ``"norm"`` (default): divide by ``|F(x)|_D`` -- an output dominated by a constant scores ~0
            whatever its non-constant part does; ``"deviation"``: subtract the output's mean over ``D`` and divide by
            its deviation, so a constant offset is neither rewarded nor charged with the rotation's rim error (NaN
            for an exactly constant output).

    Returns:
        One error per mask.
    """
    if normalise not in NORMALISATIONS:
        raise ValueError(f"normalise must be one of {', '.join(map(repr, NORMALISATIONS))}, got {normalise!r}")
    _check_model_input("x", x)
    angles = torch.as_tensor(angles, dtype=torch.float64).reshape(-1)
    if angles.shape[0] != x.shape[0]:
        raise ValueError(f"angles must have one angle per image, shape ({x.shape[0]},), got {tuple(angles.shape)}")
    masks = [_check_mask(m, x.shape[-1]) for m in masks]
    rx = rotate(x, angles)
    if input_mask is not None:
        rx = rx * _check_mask(input_mask, x.shape[-1])
    fx = predict(model, x, batch_size)
    frx = predict(model, rx, batch_size)
    rfx = rotate(fx, angles) if normalise == "norm" else None
    out = []
    for mask in masks:
        if normalise == "norm":
            num = ((frx - rfx) ** 2)[..., mask].sum(-1).sqrt().reshape(-1)
            den = (fx ** 2)[..., mask].sum(-1).sqrt().reshape(-1).clamp_min(1e-12)
        else:
            # subtract F(x)'s mean over D from both outputs before comparing: a constant is rotation-invariant in the
            # continuum, but the zero-padded rotation of a constant image is not exact near the rim, and that
            # artefact would otherwise be charged to the network in proportion to its offset
            mu = fx[..., mask].mean(-1)[..., None, None]                  # (N, 1, 1, 1)
            g = fx - mu
            num = (((frx - mu) - rotate(g, angles)) ** 2)[..., mask].sum(-1).sqrt().reshape(-1)
            den = (g ** 2)[..., mask].sum(-1).sqrt().reshape(-1)
            # a constant output (RMS deviation below ~100 float32 epsilons of its size) has no structure to be
            # equivariant: NaN, not 0 or inf
            tiny = 1e-5 * fx[..., mask].abs().amax(-1).reshape(-1) * math.sqrt(int(mask.sum())) + 1e-30
            den = torch.where(den > tiny, den, torch.full_like(den, float("nan")))
        out.append(float((num / den).mean()))
    return out


def equivariance_error(model: nn.Module, x: torch.Tensor, angles: Sequence[float] | torch.Tensor,
                       mask: torch.Tensor, batch_size: int = 64, mask_input: bool = True,
                       normalise: str = "norm") -> float:
    """Mean over images of ``|F(M R_a x) - R_a F(x)| / |F(x)|`` on ``mask`` (``(H, H)`` bool), one angle per image;
    ``normalise="deviation"`` divides by ``|F(x) - mean F(x)|`` instead (see :func:`equivariance_errors`).

    ``M`` is ``mask`` itself when ``mask_input`` (inputs live on the disc), else the identity.
    """
    return equivariance_errors(model, x, angles, [mask], mask if mask_input else None, batch_size, normalise)[0]


def equivariance_angles(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` seeded angles uniform in ``[0, 2 pi)`` (float64)."""
    return torch.rand(n, generator=item_generator(seed, "equivariance-angles", 0), dtype=torch.float64) * 2 * math.pi


def evaluate(model: nn.Module, data: CryoEMData, n_equivariance: int = 64, seed: int = 0,
             batch_size: int = 64) -> dict[str, float]:
    """Validation ``val_mse``, ``val_rel_mse``, ``val_nmse`` and ``equivariance`` / ``equivariance_inner`` (on the
    first ``n_equivariance`` validation images with seeded angles; normalised by the output's deviation, see
    :func:`equivariance_errors`) of ``model`` on ``data``."""
    mask = data.mask
    pred = predict(model, data.val_noisy, batch_size)
    mse = disc_mse(pred, data.val_clean, mask)
    noisy_mse = disc_mse(data.val_noisy, data.val_clean, mask)
    power = float((data.val_clean ** 2)[..., mask].mean())
    n_eq = min(int(n_equivariance), data.val_noisy.shape[0])
    inner = torch.from_numpy(disc_mask(mask.shape[-1], INNER_RADIUS))
    eq = equivariance_errors(model, data.val_noisy[:n_eq], equivariance_angles(n_eq, seed), [mask, inner],
                             mask, batch_size, normalise="deviation") if n_eq > 0 else [float("nan")] * 2
    return {"val_mse": mse, "val_rel_mse": mse / noisy_mse, "val_nmse": mse / power, "equivariance": eq[0],
            "equivariance_inner": eq[1]}


def train_denoiser(model: nn.Module, data: CryoEMData, epochs: int = 5, batch_size: int = 32, lr: float = 2e-3,
                   augment: bool = False, seed: int = 0, n_equivariance: int = 64,
                   on_epoch: Callable[[EpochRecord], None] | None = None) -> list[EpochRecord]:
    """Train ``model`` with Adam on the disc MSE to the clean images; evaluate before training and after each epoch.

    Args:
        augment: rotate each training pair by a fresh random angle every epoch (the thesis' Figure 7.9 setting),
            with the noise-preserving rotation (so augmented noise is still white with the same variance), then
            mask the noisy image to the disc again.
        seed: drives the batch order and augmentation angles (the model's initialisation is the caller's).
        on_epoch: called with each :class:`EpochRecord` as it is produced (for progress output).

    Returns:
        ``epochs + 1`` records, the first for the untrained model.
    """
    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("n_equivariance", n_equivariance)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if epochs < 0 or batch_size < 1 or n_equivariance < 0:
        raise ValueError(f"need epochs >= 0, batch_size >= 1, n_equivariance >= 0; got {epochs}, {batch_size}, "
                         f"{n_equivariance}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be positive, got {lr!r}")
    if not isinstance(data, CryoEMData):
        raise TypeError(f"data must be a CryoEMData, got {type(data).__name__}")
    mask = data.mask
    n = data.train_noisy.shape[0]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * math.ceil(n / batch_size)))
    history = [EpochRecord(0, float("nan"), seconds=0.0, **evaluate(model, data, n_equivariance, seed))]
    if on_epoch is not None:
        on_epoch(history[0])
    for epoch in range(1, epochs + 1):
        gen = item_generator(seed, "train-epoch", epoch)
        order = torch.randperm(n, generator=gen)
        noisy, clean = data.train_noisy, data.train_clean
        t0 = time.perf_counter()
        if augment:
            angles = torch.rand(n, generator=gen, dtype=torch.float64) * 2 * math.pi
            noisy, clean = rotate(noisy, angles) * mask, rotate(clean, angles)
        model.train()
        total, count = 0.0, 0
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            if idx.numel() < 2:          # batch norm needs two samples
                continue
            pred = model(noisy[idx])
            loss = ((pred - clean[idx]) ** 2)[..., mask].mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * idx.numel()
            count += idx.numel()
        seconds = time.perf_counter() - t0
        rec = EpochRecord(epoch, total / max(count, 1), seconds=seconds, **evaluate(model, data, n_equivariance, seed))
        history.append(rec)
        if on_epoch is not None:
            on_epoch(rec)
    model.eval()
    return history
