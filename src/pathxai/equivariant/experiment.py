"""The Section 7.4 experiment: train one architecture on synthetic cryo-EM data, record the curves, save the run.

Used by ``pathxai denoise train|eval`` and ``benchmarks/spiral_denoise.py``. A run directory holds
``config.json`` (this module's :class:`RunConfig`), ``history.csv`` (one row per epoch, epoch 0 = untrained),
``model.pt`` (the state dict) and ``curves.png``; every file is written atomically.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from fractions import Fraction
from pathlib import Path

import torch
from torch import nn

from .data import CryoEMConfig, CryoEMData, make_cryo_em
from .models import (
    CartesianDenoiser,
    SpiralDenoiser,
    count_parameters,
    steerable_denoiser,
)
from .train import EpochRecord, train_denoiser

ARCHS = ("spiral", "cartesian", "steerable")


def parse_snr(value: str | float) -> float:
    """``"1/64"``, ``"0.25"`` or a number -> positive float."""
    try:
        snr = float(Fraction(value)) if isinstance(value, str) else float(value)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"snr must be a positive number or fraction like 1/64, got {value!r}") from None
    if not (math.isfinite(snr) and snr > 0):
        raise ValueError(f"snr must be a positive number or fraction like 1/64, got {value!r}")
    return snr


@dataclass
class RunConfig:
    """Everything that defines a run (data, architecture, training). ``fields = 0`` picks the steerable network's
    number of regular fields so its parameter count is closest to the cartesian one's; ``prefilter`` (spiral and
    cartesian) is the input's Gaussian anti-aliasing blur in pixels (0 = the thesis' plain networks; on the
    cartesian network it is the control for the spiral's). ``n_val_molecules`` > 0 validates on that many held-out
    molecules (disjoint molecule seeds, see :mod:`.data`); 0 validates on the training molecules."""

    arch: str = "spiral"
    snr: float = 1 / 64
    size: int = 33
    n_train: int = 1500
    n_val: int = 300
    n_molecules: int = 8
    n_val_molecules: int = 8
    noise: str = "gaussian"
    epochs: int = 6
    batch_size: int = 32
    lr: float = 2e-3
    channels: int = 12
    depth: int = 5
    kernel_size: int = 3
    fields: int = 0
    rotations: int = 8
    augment: bool = False
    prefilter: float = 0.0
    seed: int = 0
    n_equivariance: int = 64

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        self.snr = parse_snr(self.snr)
        if not (isinstance(self.prefilter, (int, float)) and math.isfinite(self.prefilter) and self.prefilter >= 0):
            raise ValueError(f"prefilter must be a non-negative number of pixels, got {self.prefilter!r}")
        if self.arch == "steerable" and self.prefilter > 0:
            raise ValueError("prefilter applies to the spiral and cartesian networks, not to arch='steerable'")

    def data_config(self) -> CryoEMConfig:
        return CryoEMConfig(size=self.size, n_train=self.n_train, n_val=self.n_val, snr=self.snr,
                            n_molecules=self.n_molecules, n_val_molecules=self.n_val_molecules, noise=self.noise,
                            seed=self.seed)

    def label(self) -> str:
        pre = f"+blur{self.prefilter:g}" if self.prefilter > 0 else ""
        return self.arch + pre + ("+aug" if self.augment else "")

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d.setdefault("n_val_molecules", 0)   # runs saved before held-out validation molecules existed
        return cls(**d)


def matched_fields(channels: int, depth: int, kernel_size: int, rotations: int) -> int:
    """Number of regular fields that brings the steerable network's parameter count closest to the cartesian one's."""
    target = count_parameters(CartesianDenoiser(channels, depth, kernel_size))
    best, best_gap = 1, math.inf
    for k in range(1, 4 * channels // rotations + 4):
        gap = abs(count_parameters(steerable_denoiser(k, depth, kernel_size, rotations)) - target)
        if gap < best_gap:
            best, best_gap = k, gap
        elif gap > best_gap:
            break
    return best


def build_model(config: RunConfig, input_scale: float = 1.0) -> nn.Module:
    """The denoiser of ``config.arch``, initialised from ``config.seed`` (without touching the global RNG)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if config.arch == "spiral":
            return SpiralDenoiser(config.size, config.channels, config.depth, config.kernel_size,
                                  input_scale=input_scale, prefilter=config.prefilter)
        if config.arch == "cartesian":
            return CartesianDenoiser(config.channels, config.depth, config.kernel_size, input_scale=input_scale,
                                     prefilter=config.prefilter)
        k = config.fields or matched_fields(config.channels, config.depth, config.kernel_size, config.rotations)
        config.fields = k
        torch.manual_seed(config.seed)
        return steerable_denoiser(k, config.depth, config.kernel_size, config.rotations, input_scale=input_scale)


@dataclass
class RunResult:
    config: RunConfig
    history: list[EpochRecord]
    model: nn.Module
    n_parameters: int
    input_scale: float


def input_scale_of(data: CryoEMData) -> float:
    """Standard deviation of the noisy training images on the disc (the inputs are divided by it)."""
    return float(data.train_noisy[..., data.mask].std())


def run(config: RunConfig, data: CryoEMData | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None) -> RunResult:
    """Generate the data (unless given), build the model and train it; returns the history and the trained model."""
    if data is None:
        data = make_cryo_em(config.data_config())
    scale = input_scale_of(data)
    model = build_model(config, scale)
    history = train_denoiser(model, data, epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                             augment=config.augment, seed=config.seed, n_equivariance=config.n_equivariance,
                             on_epoch=on_epoch)
    return RunResult(config, history, model, count_parameters(model), scale)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def history_csv(history: list[EpochRecord], extra: dict | None = None) -> str:
    """CSV text of a history, one row per epoch, with ``extra`` columns (e.g. arch, snr) prepended."""
    extra = extra or {}
    buf = io.StringIO()
    cols = list(extra) + list(history[0].to_dict()) if history else list(extra)
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for rec in history:
        w.writerow({**extra, **rec.to_dict()})
    return buf.getvalue()


def read_history(path: str | Path) -> list[EpochRecord]:
    """Read ``history.csv`` back into records."""
    names = [f.name for f in fields(EpochRecord)]
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [EpochRecord(**{k: (int(r[k]) if k == "epoch" else float(r[k])) for k in names}) for r in rows]


def save_run(out_dir: str | Path, result: RunResult) -> Path:
    """Write ``config.json``, ``history.csv``, ``model.pt`` and ``curves.png`` into ``out_dir``; returns it."""
    from .plots import plot_curves

    out = Path(out_dir)
    meta = {"config": asdict(result.config), "n_parameters": result.n_parameters,
            "input_scale": result.input_scale}
    _atomic_write_bytes(out / "config.json", json.dumps(meta, indent=2).encode())
    _atomic_write_bytes(out / "history.csv", history_csv(result.history).encode())
    buf = io.BytesIO()
    torch.save(result.model.state_dict(), buf)
    _atomic_write_bytes(out / "model.pt", buf.getvalue())
    plot_curves({result.config.label(): result.history}, out / "curves.png",
                title=f"{result.config.label()}, SNR {Fraction(result.config.snr).limit_denominator(1000)}")
    return out


def load_run(run_dir: str | Path) -> tuple[RunConfig, nn.Module, list[EpochRecord]]:
    """Load a run saved by :func:`save_run`: its config, the trained model (eval mode) and its history."""
    d = Path(run_dir)
    if not (d / "config.json").is_file():
        raise ValueError(f"run_dir {str(d)!r} has no config.json (not a run directory written by `denoise train`)")
    meta = json.loads((d / "config.json").read_text())
    config = RunConfig.from_dict(meta["config"])
    model = build_model(config, float(meta.get("input_scale", 1.0)))
    model.load_state_dict(torch.load(d / "model.pt", map_location="cpu", weights_only=True))
    model.eval()
    return config, model, read_history(d / "history.csv")


def time_training_step(model: nn.Module, data: CryoEMData, batch_size: int = 32, steps: int = 5) -> dict[str, float]:
    """Median wall time of a training step (forward, backward, Adam) and the share spent in sparse resampling."""
    from .resample import ResampleTimer

    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, y = data.train_noisy[:batch_size], data.train_clean[:batch_size]
    model.train()
    times, shares = [], []
    for i in range(steps + 1):
        ResampleTimer.reset(True)
        t0 = time.perf_counter()
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        if i:                                   # skip the warm-up step
            times.append(dt)
            shares.append(ResampleTimer.seconds / dt)
    ResampleTimer.reset(False)
    times.sort()
    shares.sort()
    return {"step_seconds": times[len(times) // 2], "resample_share": shares[len(shares) // 2]}
