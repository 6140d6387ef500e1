"""Structured-output explanation (SOInter, Seyyedsalehi et al., arXiv 2202.09914): tasks with ground truth,
energy networks E(x, y), the SOInter interpreter and the L2X selector, trained once and cached on disk.

    import pathxai as px
    task = px.structured.load_task("synthetic")
    energy = px.structured.pretrained_energy("synthetic")
    interp = px.structured.pretrained_selector("synthetic", target=3, k=3)            # SOInter
    e = px.get_method("sointer")(task.black_box, interpreter=interp).explain(task.x_test[:8], target=3)
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from .data import StructuredTask, load_task, multilabel_task, synthetic_task
from .energy import EnergyNet, energy_margins, harden, train_energy
from .interpreter import (Selector, check_k, check_target_outputs, gumbel_khot, hard_khot, l2x_khot, sointer_loss,
                          train_l2x, train_sointer)

_VERSION = 3


def _cache(name: str) -> Path:
    from ..models import cache_dir
    return cache_dir() / "structured" / f"{name}_v{_VERSION}_torch{torch.__version__.split('+')[0]}.pt"


def pretrained_energy(task: str, retrain: bool = False, **train_kwargs) -> EnergyNet:
    """The energy net of a named task, trained once (seconds) and cached atomically under ``cache_dir()``."""
    path = _cache(f"energy_{task}")
    if path.exists() and not retrain and not train_kwargs:
        return EnergyNet.load(path)
    t = load_task(task)
    net = train_energy(t.black_box, t.x_train, **train_kwargs)
    if not train_kwargs:
        net.save(path)
    return net


def pretrained_selector(task: str, target: int | Sequence[int], k: int, kind: str = "sointer",
                        temperature: float = 0.5, epochs: int = 5, retrain: bool = False) -> Selector:
    """A trained SOInter interpreter (``kind="sointer"``) or L2X selector (``kind="l2x"``) for a named task's
    output variable(s) ``target`` selecting ``k`` features, cached on disk."""
    t = load_task(task)
    tgt = check_target_outputs(target, t.n_outputs)
    check_k(k, t.n_features)
    if kind not in ("sointer", "l2x"):
        raise ValueError(f"kind must be 'sointer' or 'l2x', got {kind!r}")
    path = _cache(f"{kind}_{task}_t{'-'.join(map(str, tgt))}_k{k}_tau{temperature}_ep{epochs}")
    if path.exists() and not retrain:
        return Selector.load(path)
    if kind == "sointer":
        sel = train_sointer(t.black_box, pretrained_energy(task), t.x_train, tgt, k, temperature=temperature,
                            epochs=epochs)
    else:
        sel = train_l2x(t.black_box, t.x_train, tgt, k, temperature=temperature, epochs=epochs)
    sel.save(path)
    return sel


__all__ = ["EnergyNet", "Selector", "StructuredTask", "check_k", "check_target_outputs", "energy_margins",
           "gumbel_khot", "hard_khot", "harden", "l2x_khot", "load_task", "multilabel_task", "pretrained_energy",
           "pretrained_selector", "sointer_loss", "synthetic_task", "train_energy", "train_l2x", "train_sointer"]
