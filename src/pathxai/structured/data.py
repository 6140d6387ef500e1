"""Structured-output tasks with known ground truth: feature vectors ``x`` (N, D) and a black box whose output is a
vector of L binary output variables (probabilities, (N, L)), with the truly relevant input features of every output.

- :func:`synthetic_task`: the paper's setting (SOInter, Sec. 5.1): outputs depend on a known subset of input
  features *and on other outputs*, so a feature can act on the target through another output variable.
- :func:`multilabel_task`: a multi-label task, each label with its own known features plus a label-correlation term.
- :func:`pathxai.structured.tasks.segmentation_task` and :func:`pathxai.structured.tasks.sequence_task`: a small
  segmentation net on shape images and a trigger-token tagger, whose inputs are grouped (patches, tokens) and whose
  ground truth is per sample.

Masking convention shared by the methods and metrics here: a feature that is not selected is set to 0 (the mean of
the standard-normal features), i.e. the paper's element-wise product ``x * mask``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from .groups import check_groups


@dataclass
class StructuredTask:
    """A structured black box with ground truth.

    Attributes:
        name: task name.
        black_box: ``(N, *S) -> (N, L)`` probabilities of the L binary output variables (S = (D,) for vectors).
        x_train: (N_train, *S) inputs for training interpreters / energy networks.
        x_test: (N_test, *S) held-out inputs.
        relevant: (L, G) bool, ``relevant[t, i]`` is True when feature group i truly influences output t
            (directly or through other outputs); or (N_test, L, G) when the ground truth differs per test input.
        groups: (*S) group index tensor (see :mod:`pathxai.structured.groups`); ``None`` = every feature a group.
        targets: named targets of the task, ``name -> (output indices, k)`` with the suggested number of groups
            to select (e.g. the whole map and a region of it).
    """

    name: str
    black_box: nn.Module
    x_train: torch.Tensor
    x_test: torch.Tensor
    relevant: torch.Tensor
    groups: torch.Tensor | None = None
    targets: dict[str, tuple[tuple[int, ...], int]] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        """Number of selectable feature groups G (= D for feature vectors)."""
        return int(self.relevant.shape[-1])

    @property
    def n_outputs(self) -> int:
        return int(self.relevant.shape[-2])

    @property
    def group_index(self) -> torch.Tensor:
        """(*S) int64 group of every input element."""
        return check_groups(self.groups, self.x_train.shape[1:])

    def relevant_for(self, target: int | Sequence[int]) -> torch.Tensor:
        """(N_test, G) bool: the groups truly relevant to any of the output variables ``target`` on each test
        input (a row may be all False when nothing drives the target on that input, e.g. a background region)."""
        from .interpreter import check_target_outputs
        tgt = list(check_target_outputs(target, self.n_outputs))
        if self.relevant.ndim == 2:
            return self.relevant[tgt].any(0).expand(self.x_test.shape[0], -1)
        return self.relevant[:, tgt].any(1)


class SyntheticChain(nn.Module):
    """The synthetic structured black box (D = 16 features, L = 5 outputs, slope ``s``):

    y0 = σ(s(x0 + x1)),  y1 = σ(s(x2 − x3)),  y2 = σ(s·x4·x5),
    y3 = σ(s(2y0 − 1 + x6)),  y4 = σ(s((2y1 − 1)(2y2 − 1) + x7 / 2));  x8..x15 are irrelevant noise.
    """

    relevant_sets = ((0, 1), (2, 3), (4, 5), (0, 1, 6), (2, 3, 4, 5, 7))
    n_features = 16

    def __init__(self, slope: float = 4.0) -> None:
        super().__init__()
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.slope
        y0 = torch.sigmoid(s * (x[:, 0] + x[:, 1]))
        y1 = torch.sigmoid(s * (x[:, 2] - x[:, 3]))
        y2 = torch.sigmoid(s * x[:, 4] * x[:, 5])
        y3 = torch.sigmoid(s * (2 * y0 - 1 + x[:, 6]))
        y4 = torch.sigmoid(s * ((2 * y1 - 1) * (2 * y2 - 1) + 0.5 * x[:, 7]))
        return torch.stack([y0, y1, y2, y3, y4], dim=1)


class MultiLabelNet(nn.Module):
    """Multi-label black box: label l fires on ``w_l · x[S_l] + x[a_l] x[b_l] + c · (2 y_{l-1} − 1) > 0``.

    Each label has 3 own features (S_l, disjoint), a product of two of them, and the odd labels also follow the
    previous label (label correlation), so for them ``relevant[l] = S_l ∪ relevant[l-1]``.
    """

    def __init__(self, n_features: int = 30, n_labels: int = 6, seed: int = 0, slope: float = 4.0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(n_features, generator=g)
        self.register_buffer("groups", perm[: 3 * n_labels].view(n_labels, 3))
        w = torch.randn(n_labels, 3, generator=g)
        w = w.sign() * (0.5 + w.abs().clamp(max=1.5))
        self.register_buffer("weights", w)
        self.register_buffer("chain", torch.arange(n_labels) % 2 == 1)
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        prev = None
        for l in range(self.groups.shape[0]):
            f = x[:, self.groups[l]]
            z = (f * self.weights[l]).sum(1) + f[:, 0] * f[:, 1]
            if bool(self.chain[l]) and prev is not None:
                z = z + 1.5 * (2 * prev - 1)
            prev = torch.sigmoid(self.slope * z)
            out.append(prev)
        return torch.stack(out, dim=1)


def _gaussian(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def synthetic_task(n_train: int = 4000, n_test: int = 500, seed: int = 0) -> StructuredTask:
    """The paper-style synthetic task: x ~ N(0, I_16), :class:`SyntheticChain` black box, known relevant sets."""
    bb = SyntheticChain().eval()
    d = SyntheticChain.n_features
    rel = torch.zeros(len(SyntheticChain.relevant_sets), d, dtype=torch.bool)
    for t, s in enumerate(SyntheticChain.relevant_sets):
        rel[t, list(s)] = True
    return StructuredTask("synthetic", bb, _gaussian(n_train, d, seed), _gaussian(n_test, d, seed + 1), rel)


def multilabel_task(n_features: int = 30, n_labels: int = 6, n_train: int = 4000, n_test: int = 500,
                    seed: int = 0) -> StructuredTask:
    """Multi-label task: :class:`MultiLabelNet` black box over x ~ N(0, I_D), relevant features per label known."""
    bb = MultiLabelNet(n_features, n_labels, seed).eval()
    rel = torch.zeros(n_labels, n_features, dtype=torch.bool)
    for l in range(n_labels):
        rel[l, bb.groups[l]] = True
        if bool(bb.chain[l]) and l > 0:
            rel[l] |= rel[l - 1]
    return StructuredTask("multilabel", bb, _gaussian(n_train, n_features, seed + 10),
                          _gaussian(n_test, n_features, seed + 11), rel)


def _grouped_tasks() -> dict:
    from .tasks import segmentation_task, sequence_task  # trained black boxes: imported on demand
    return {"segmentation": segmentation_task, "sequence": sequence_task}


TASKS = {"synthetic": synthetic_task, "multilabel": multilabel_task, "segmentation": None, "sequence": None}


def load_task(name: str) -> StructuredTask:
    """A task by name: ``"synthetic"``, ``"multilabel"``, ``"segmentation"`` or ``"sequence"``."""
    if name not in TASKS:
        raise ValueError(f"unknown structured task {name!r}; available: {', '.join(TASKS)}")
    make = TASKS[name] or _grouped_tasks()[name]
    return make()
