"""Structured-output explanation (SOInter, Seyyedsalehi et al., arXiv 2202.09914): tasks with ground truth,
energy networks E(x, y), the SOInter interpreter and the L2X selector, trained once and cached on disk.

    import pathxai as px
    task = px.structured.load_task("synthetic")
    energy = px.structured.pretrained_energy("synthetic")
    interp = px.structured.pretrained_selector("synthetic", target=3, k=3)            # SOInter
    e = px.get_method("sointer")(task.black_box, interpreter=interp).explain(task.x_test[:8], target=3)

Grouped tasks (``"segmentation"``: shape images, patches; ``"sequence"``: trigger-token tagging, tokens) take a
named target (``task.targets``: ``"map"`` / ``"centre"``, ``"tags"`` / ``"token8"``) or output indices, and
their feature groups travel with the task (``task.group_index``):

    task = px.structured.load_task("segmentation")
    interp = px.structured.pretrained_selector("segmentation", target="map")         # k from the named target
    e = px.get_method("sointer")(task.black_box, interpreter=interp).explain(task.x_test[:8])   # (8, 64) groups
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Sequence

import torch

from .data import StructuredTask, load_task, multilabel_task, synthetic_task
from .energy import (BaseEnergy, EnergyNet, GridEnergyNet, energy_margins, harden, load_energy, random_keep_masks,
                     train_energy)
from .groups import apply_mask, check_groups, expand_mask, group_mean, patch_groups, token_groups
from .interpreter import (Selector, check_k, check_target_outputs, gumbel_khot, hard_khot, l2x_khot, sointer_loss,
                          train_l2x, train_sointer)

_VERSION = 3

# training settings of the grouped tasks' nets (the vector tasks use the functions' defaults): chosen so each net
# trains in well under a minute on one busy core
_ENERGY_KWARGS = {"sequence": {"epochs": 10, "lr": 5e-3},
                  "segmentation": {"epochs": 3, "lr": 5e-3, "batch_size": 64}}
_SELECTOR_KWARGS = {"sequence": {"lr": 3e-3}, "segmentation": {"lr": 3e-3, "batch_size": 64}}
_SELECTOR_EPOCHS = {"segmentation": 1}  # 31 steps: measured post-hoc F1 0.977 vs 0.982 after 5 epochs


def _cache(name: str) -> Path:
    from ..models import cache_dir
    return cache_dir() / "structured" / f"{name}_v{_VERSION}_torch{torch.__version__.split('+')[0]}.pt"


def pretrained_energy(task: str, retrain: bool = False, **train_kwargs) -> BaseEnergy:
    """The energy net of a named task, trained once (seconds) and cached atomically under ``cache_dir()``."""
    path = _cache(f"energy_{task}")
    if path.exists() and not retrain and not train_kwargs:
        return load_energy(path)
    t = load_task(task)
    kwargs = {**_ENERGY_KWARGS.get(task, {}), **train_kwargs}
    net = train_energy(t.black_box, t.x_train, groups=t.groups, **kwargs)
    if not train_kwargs:
        net.save(path)
    return net


def resolve_task_target(task: StructuredTask, target: int | Sequence[int] | str,
                        k: int | None = None) -> tuple[tuple[int, ...], int, str]:
    """``(output indices, k, cache tag)`` of a task's target: a name from ``task.targets`` (its k unless ``k`` is
    given), an output index or a sequence of output indices (then ``k`` is required)."""
    if isinstance(target, str):
        if target not in task.targets:
            raise ValueError(f"unknown target {target!r} for task {task.name!r}; named targets: "
                             f"{', '.join(task.targets) or 'none (pass output indices)'}")
        outputs, k_default = task.targets[target]
        return outputs, check_k(k if k is not None else k_default, task.n_features), f"t{target}"
    if k is None:
        raise ValueError("k is required when target is given as output indices (only named targets suggest a k)")
    tgt = check_target_outputs(target, task.n_outputs)
    tag = "t" + ("-".join(map(str, tgt)) if len(tgt) <= 8 else f"{len(tgt)}x{zlib.crc32(str(tgt).encode()):08x}")
    return tgt, check_k(k, task.n_features), tag


def pretrained_selector(task: str, target: int | Sequence[int] | str, k: int | None = None, kind: str = "sointer",
                        temperature: float = 0.5, epochs: int | None = None, retrain: bool = False) -> Selector:
    """A trained SOInter interpreter (``kind="sointer"``) or L2X selector (``kind="l2x"``) for a named task's
    output variable(s) ``target`` (indices or a named target of the task) selecting ``k`` feature groups, cached on
    disk. ``epochs`` defaults to 5 (1 for the segmentation task, whose steps are costlier)."""
    t = load_task(task)
    epochs = epochs if epochs is not None else _SELECTOR_EPOCHS.get(task, 5)
    tgt, k, tag = resolve_task_target(t, target, k)
    if kind not in ("sointer", "l2x"):
        raise ValueError(f"kind must be 'sointer' or 'l2x', got {kind!r}")
    path = _cache(f"{kind}_{task}_{tag}_k{k}_tau{temperature}_ep{epochs}")
    if path.exists() and not retrain:
        return Selector.load(path)
    extra = {"groups": t.groups, **_SELECTOR_KWARGS.get(task, {})}
    if kind == "sointer":
        sel = train_sointer(t.black_box, pretrained_energy(task), t.x_train, tgt, k, temperature=temperature,
                            epochs=epochs, **extra)
    else:
        sel = train_l2x(t.black_box, t.x_train, tgt, k, temperature=temperature, epochs=epochs, **extra)
    sel.save(path)
    return sel


__all__ = ["BaseEnergy", "EnergyNet", "GridEnergyNet", "Selector", "StructuredTask", "apply_mask", "check_groups",
           "check_k", "check_target_outputs", "energy_margins", "expand_mask", "group_mean", "gumbel_khot",
           "hard_khot", "harden", "l2x_khot", "load_energy", "load_task", "multilabel_task", "patch_groups",
           "pretrained_energy", "pretrained_selector", "random_keep_masks", "resolve_task_target", "sointer_loss",
           "synthetic_task", "token_groups", "train_energy", "train_l2x", "train_sointer"]
