"""Rotation-equivariant denoising of cryo-EM images with spiral convolutions (thesis Part IV, chapters 6-7).

    import pathxai.equivariant as eq
    data = eq.make_cryo_em(size=33, n_train=1500, n_val=300, snr=1/64)        # chapter 6: synthetic projections
    model = eq.SpiralDenoiser(33, channels=12, depth=5)                       # Section 7.3
    history = eq.train_denoiser(model, data, epochs=6)                        # Section 7.4: MSE + equivariance
    history[-1].val_rel_mse, history[-1].equivariance

Pieces: :mod:`.spiral` (spiral sampling, ribbon; 7.3.1-7.3.2), :mod:`.resample` (Delaunay/barycentric sparse
resampling; 7.3.2-7.3.3), :mod:`.models` (spiral, cartesian and e2cnn steerable denoisers), :mod:`.data` (synthetic
cryo-EM; chapter 6), :mod:`.rotation` (noise-preserving image rotation), :mod:`.train` (training, MSE and
equivariance error), :mod:`.experiment` (runs as used by ``pathxai denoise`` and the benchmark).

Attributes load lazily (PEP 562), so ``pathxai denoise --help`` does not import SciPy's spatial module or e2cnn.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "data": ["CryoEMConfig", "CryoEMData", "Molecule", "make_cryo_em", "random_molecule"],
    "models": ["CartesianDenoiser", "GaussianBlur", "SpiralConv", "SpiralDenoiser", "count_parameters",
               "spiral_resamplers", "steerable_denoiser"],
    "experiment": ["RunConfig", "RunResult", "load_run", "run", "save_run", "time_training_step"],
    "resample": ["Resampler", "barycentric_matrix"],
    "rotation": ["rotate"],
    "spiral": ["SpiralGeometry", "disc_mask", "isotropic_n_spls", "pixel_points", "ribbon_points",
               "spiral_parameters", "spiral_points"],
    "train": ["EpochRecord", "disc_mse", "equivariance_angles", "equivariance_error", "equivariance_errors",
              "evaluate", "predict", "train_denoiser"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = ["CartesianDenoiser", "CryoEMConfig", "CryoEMData", "EpochRecord", "GaussianBlur", "Molecule", "Resampler",
           "RunConfig", "RunResult", "SpiralConv", "SpiralDenoiser", "SpiralGeometry", "barycentric_matrix",
           "count_parameters", "disc_mask", "disc_mse", "equivariance_angles", "equivariance_error",
           "equivariance_errors", "evaluate", "isotropic_n_spls", "load_run", "make_cryo_em", "pixel_points",
           "predict", "random_molecule", "ribbon_points", "rotate", "run", "save_run", "spiral_parameters",
           "spiral_points", "spiral_resamplers", "steerable_denoiser", "time_training_step", "train_denoiser"]
assert sorted(__all__) == sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'pathxai.equivariant' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
