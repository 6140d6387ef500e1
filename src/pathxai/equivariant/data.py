"""Synthetic cryo-EM projections (thesis chapter 6): random 3-D "molecules" seen from random orientations, plus noise.

Like the thesis' data ("a simple static density projection", Section 6.1) this is a projection of a density, not a
simulation of the phase-contrast imaging (Remark 29). A molecule is a chain of Gaussian blobs (a random walk in 3-D, so
it looks like a folded chain of domains rather than a cloud), centred on its centre of mass and scaled to fit a ball
of radius ``extent`` < 1, so every projection is centred on, and lies inside, the unit disc. A sample is the
projection along ``z`` of the molecule under a rotation drawn uniformly from SO(3), rendered analytically at the pixel
centres: a 3-D Gaussian of mass ``m`` and width ``s`` projects to the 2-D Gaussian ``m / (2 pi s^2) exp(-|p|^2 / 2 s^2)``.
Since the orientation is uniform on SO(3), the data distribution is invariant under in-plane rotations, which is
what makes a rotation-equivariant denoiser the right model (Section 6.2).

The images live on the disc (Section 7.1): noisy images are zero outside it (a circular mask, as is common for
particle images), so no model gains anything from pixels a rotation cannot carry along. Clean images are (up to
Gaussian tails) zero there anyway. Each clean image is scaled to unit mean power over the disc, so the signal-to-noise ratio (the power ratio
``E|x_sig|^2 / E|x_noise|^2`` on the disc, the cryo-EM convention) is exact per image:

* ``noise="gaussian"`` (chapter 7): ``x = x_sig + sqrt(1/snr) * N(0, 1)`` at every pixel.
* ``noise="poisson"`` (Section 6.3): electron counts ``c ~ Poisson(dose * exp(-contrast * x_sig))`` (the molecule
  attenuates the beam), read out as ``x = (1 - c / dose) / contrast``, with ``dose = snr / contrast**2`` electrons per
  pixel so that the noise variance away from the molecule is ``1/snr`` as in the Gaussian case. At ``snr = 1/64`` and
  ``contrast = 0.1`` that is 1.6 electrons per pixel, a realistic low dose; the noise is signal-dependent and discrete.

Everything is seeded per item (:mod:`pathxai.core.seeding`): sample ``i`` of a split is the same whatever the split's
size. With ``n_val_molecules = 0`` training and validation samples show the same ``n_molecules`` molecules (as in a
real data set, many copies of few molecules) under different orientations and noise; with ``n_val_molecules = k > 0``
the validation samples show ``k`` *held-out* molecules instead, molecules ``n_molecules .. n_molecules + k - 1`` of the
same seeded stream, disjoint from the training ones, so validation measures generalisation to unseen molecules
(the training split is the same either way).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from ..core.seeding import numpy_rng
from .spiral import disc_mask, pixel_points


@dataclass(frozen=True)
class Molecule:
    """A 3-D density: ``centres`` ``(K, 3)``, ``widths`` ``(K,)`` and ``masses`` ``(K,)`` of Gaussian blobs."""

    centres: np.ndarray
    widths: np.ndarray
    masses: np.ndarray

    def project(self, rotation: np.ndarray, size: int) -> np.ndarray:
        """The projection along ``z`` of the rotated density on a ``size x size`` pixel grid, ``(size, size)`` float64."""
        c = self.centres @ np.asarray(rotation, dtype=np.float64).T        # rotated centres (K, 3)
        p = pixel_points(size)                                             # (P, 2)
        d2 = ((p[:, None, :] - c[None, :, :2]) ** 2).sum(-1)               # (P, K)
        amp = self.masses / (2 * math.pi * self.widths ** 2)
        img = (amp[None, :] * np.exp(-d2 / (2 * self.widths[None, :] ** 2))).sum(1)
        return img.reshape(size, size)


def random_molecule(rng: np.random.Generator, n_blobs: tuple[int, int] = (8, 20), extent: float = 0.75,
                    width_range: tuple[float, float] = (0.05, 0.11)) -> Molecule:
    """A random chain of Gaussian blobs, centred on its centre of mass and fitting the ball of radius ``extent``.

    ``extent`` bounds ``|centre| + 2 * width`` of every blob (before scaling widths are in units of the unit disc).
    """
    lo, hi = n_blobs
    if not (1 <= lo <= hi):
        raise ValueError(f"n_blobs must be (min, max) with 1 <= min <= max, got {n_blobs}")
    if not (0.0 < extent < 1.0):
        raise ValueError(f"extent must be in (0, 1), got {extent}")
    k = int(rng.integers(lo, hi + 1))
    steps = rng.normal(size=(k, 3))
    steps /= np.linalg.norm(steps, axis=1, keepdims=True)
    centres = np.cumsum(steps * rng.uniform(0.6, 1.0, size=(k, 1)), axis=0)   # unit-ish steps: a folded chain
    widths = rng.uniform(*width_range, size=k)
    masses = widths ** 3 * rng.uniform(0.5, 1.5, size=k)                       # mass ~ volume
    centres -= (masses[:, None] * centres).sum(0) / masses.sum()
    # scale the chain so that the blobs (2 widths out) fit the ball of radius `extent`
    reach = np.linalg.norm(centres, axis=1)
    scale = (extent - 2 * widths.max()) / max(reach.max(), 1e-9)
    return Molecule(centres * scale, widths, masses)


@dataclass(frozen=True)
class CryoEMConfig:
    """Parameters of :func:`make_cryo_em`; the defaults are the benchmark's (``benchmarks/spiral_denoise.py``)."""

    size: int = 41
    n_train: int = 2000
    n_val: int = 500
    snr: float = 1 / 64
    n_molecules: int = 8
    n_val_molecules: int = 0
    n_blobs: tuple[int, int] = (8, 20)
    noise: str = "gaussian"
    contrast: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("size", "n_train", "n_val", "n_molecules", "n_val_molecules", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {type(v).__name__}")
        if self.size < 8:
            raise ValueError(f"size must be >= 8, got {self.size}")
        if self.n_train < 1 or self.n_val < 1 or self.n_molecules < 1:
            raise ValueError(f"n_train, n_val and n_molecules must be >= 1, got "
                             f"{self.n_train}, {self.n_val}, {self.n_molecules}")
        if self.n_val_molecules < 0:
            raise ValueError(f"n_val_molecules must be >= 0 (0 = validate on the training molecules), got "
                             f"{self.n_val_molecules}")
        if not (isinstance(self.snr, (int, float)) and math.isfinite(self.snr) and self.snr > 0):
            raise ValueError(f"snr must be a positive finite number, got {self.snr!r}")
        if self.noise not in ("gaussian", "poisson"):
            raise ValueError(f"noise must be 'gaussian' or 'poisson', got {self.noise!r}")
        if not (0.0 < self.contrast <= 1.0):
            raise ValueError(f"contrast must be in (0, 1], got {self.contrast}")
        object.__setattr__(self, "n_blobs", tuple(int(b) for b in self.n_blobs))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CryoEMData:
    """Clean and noisy images, ``(N, 1, size, size)`` float32 tensors, for the training and validation splits.

    Noisy images are zero outside the disc ``mask``."""

    config: CryoEMConfig
    train_clean: torch.Tensor
    train_noisy: torch.Tensor
    val_clean: torch.Tensor
    val_noisy: torch.Tensor
    mask: torch.Tensor = field(repr=False)        # (size, size) bool: the inscribed disc

    @property
    def noise_std(self) -> float:
        """Nominal noise standard deviation ``sqrt(1/snr)`` (signal power is 1 on the disc)."""
        return math.sqrt(1.0 / self.config.snr)


def make_molecules(config: CryoEMConfig) -> list[Molecule]:
    """The ``config.n_molecules`` molecules of the training split (and of the validation split when
    ``config.n_val_molecules == 0``)."""
    return [random_molecule(numpy_rng(config.seed, "cryo-molecule", i), config.n_blobs)
            for i in range(config.n_molecules)]


def make_val_molecules(config: CryoEMConfig) -> list[Molecule]:
    """The molecules the validation split shows: the training ones when ``config.n_val_molecules == 0``, else the
    held-out molecules ``n_molecules .. n_molecules + n_val_molecules - 1`` of the same seeded stream."""
    if config.n_val_molecules == 0:
        return make_molecules(config)
    first = config.n_molecules
    return [random_molecule(numpy_rng(config.seed, "cryo-molecule", i), config.n_blobs)
            for i in range(first, first + config.n_val_molecules)]


def _sample(config: CryoEMConfig, molecules: list[Molecule], split: str, i: int,
            mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rng = numpy_rng(config.seed, f"cryo-{split}", i)
    mol = molecules[int(rng.integers(len(molecules)))]
    rot = Rotation.random(random_state=rng).as_matrix()
    clean = mol.project(rot, config.size)
    clean /= math.sqrt(float((clean[mask] ** 2).mean()))                     # unit power on the disc
    if config.noise == "gaussian":
        noisy = clean + math.sqrt(1.0 / config.snr) * rng.standard_normal(clean.shape)
    else:
        dose = config.snr / config.contrast ** 2
        counts = rng.poisson(dose * np.exp(-config.contrast * clean))
        noisy = (1.0 - counts / dose) / config.contrast
    return clean, noisy * mask


def make_cryo_em(config: CryoEMConfig | None = None, **overrides: object) -> CryoEMData:
    """Generate a seeded synthetic cryo-EM data set; see the module docstring for the model.

    ``make_cryo_em(size=33, n_train=500, snr=1/4)`` overrides fields of the default :class:`CryoEMConfig`.
    Returns a :class:`CryoEMData` whose tensors have shape ``(N, 1, size, size)``.
    """
    if config is None:
        config = CryoEMConfig(**overrides)  # type: ignore[arg-type]
    elif overrides:
        config = CryoEMConfig(**{**config.to_dict(), **overrides})  # type: ignore[arg-type]
    if not isinstance(config, CryoEMConfig):
        raise TypeError(f"config must be a CryoEMConfig, got {type(config).__name__}")
    molecules = {"train": make_molecules(config), "val": make_val_molecules(config)}
    mask = disc_mask(config.size)
    out = {}
    for split, n in (("train", config.n_train), ("val", config.n_val)):
        pairs = [_sample(config, molecules[split], split, i, mask) for i in range(n)]
        out[f"{split}_clean"] = torch.from_numpy(np.stack([p[0] for p in pairs])[:, None]).float()
        out[f"{split}_noisy"] = torch.from_numpy(np.stack([p[1] for p in pairs])[:, None]).float()
    return CryoEMData(config=config, mask=torch.from_numpy(mask), **out)
