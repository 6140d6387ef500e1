"""Grouped structured tasks with per-input ground truth: a segmentation net on synthetic shape images and a
sequence tagger driven by trigger tokens. Both black boxes are tiny, trained here in seconds (seeded, cached under
``cache_dir()/structured``), and output a vector of L binary output variables like the feature-vector tasks.

Segmentation (``"segmentation"``): x (N, 1, 16, 16), one or two bright shapes (squares, discs, intensity 1) on
Gaussian noise (σ = 0.4); the black box (three 3x3 convolutions, receptive field 7x7) outputs the foreground
probability of every pixel, flattened row-major to (N, 256). Groups: 2x2 patches (G = 64). Ground truth: output pixel j
depends on the pixels of the object covering j (none for a background pixel); a target region depends on the objects
that cover any of its pixels. Named targets: ``"map"`` (the whole map) and ``"centre"`` (the central 8x8 region).

Sequence labelling (``"sequence"``): x (N, 12, 8) one-hot tokens; tokens 0-1 are triggers, 2-4 content words,
5-7 fillers. Tag_i = 1 when token i is a content word and a trigger occurs among the 3 tokens before it. The black
box (causal 1-D convolutions) outputs (N, 12) tag probabilities. Groups: tokens (G = 12). Ground truth of a tag-1
position i: token i and the triggers in its window (nothing drives a 0 tag: masking keeps it 0). Named targets:
``"tags"`` (the whole tag sequence) and ``"token8"`` (the tag of token 8).

Both black boxes are also trained on randomly masked inputs (groups set to 0, labels following the rule on what is
left), so their behaviour on the masked inputs the explanations and metrics feed them is the rule's, not an accident.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .data import StructuredTask
from .groups import apply_mask, group_mean, patch_groups, token_groups

SIZE, PATCH, NOISE = 16, 2, 0.4
SEQ_LEN, VOCAB, WINDOW = 12, 8, 3
TRIGGERS, CONTENT = (0, 1), (2, 3, 4)
_BB_VERSION = 1


# ------------------------------------------------------------------------------------------------ segmentation
class SegmentationNet(nn.Module):
    """(N, 1, H, W) -> (N, H*W) per-pixel foreground probabilities (row-major)."""

    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, hidden, 3, padding=1),
                                 nn.ReLU(), nn.Conv2d(hidden, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x)).flatten(1)


def shape_images(n: int, seed: int, size: int = SIZE, noise: float = NOISE) -> tuple[torch.Tensor, torch.Tensor]:
    """n images with one or two random shapes on noise.

    Returns:
        x: (n, 1, size, size) float images.  objects: (n, size, size) int64 object id per pixel (0 = background,
        1 or 2; the second shape is drawn over the first).
    """
    g = torch.Generator().manual_seed(seed)
    rr, cc = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    objects = torch.zeros(n, size, size, dtype=torch.long)
    for slot in (1, 2):
        present = torch.ones(n, dtype=torch.bool) if slot == 1 else torch.rand(n, generator=g) < 0.5
        cy = torch.randint(2, size - 2, (n, 1, 1), generator=g).float()
        cx = torch.randint(2, size - 2, (n, 1, 1), generator=g).float()
        square = torch.rand(n, 1, 1, generator=g) < 0.5
        half = torch.randint(1, 3, (n, 1, 1), generator=g).float()          # squares of side 3 or 5
        radius = torch.empty(n, 1, 1).uniform_(1.5, 2.6, generator=g)
        in_square = ((rr - cy).abs() <= half) & ((cc - cx).abs() <= half)
        in_disc = (rr - cy) ** 2 + (cc - cx) ** 2 <= radius ** 2
        shape = torch.where(square, in_square, in_disc) & present[:, None, None]
        objects[shape] = slot
    x = noise * torch.randn(n, 1, size, size, generator=g) + (objects > 0).float().unsqueeze(1)
    return x, objects


def segmentation_relevance(objects: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """objects (N, H, W) ids -> (N, H*W, G) bool: output pixel j depends on the groups of the object covering j."""
    n = objects.shape[0]
    per_object = torch.stack([group_mean((objects == s).float().unsqueeze(1), groups) > 0 for s in (1, 2)], 1)
    table = torch.cat([torch.zeros(n, 1, per_object.shape[2], dtype=torch.bool), per_object], 1)  # id 0: nothing
    ids = objects.flatten(1)                                                   # (N, H*W)
    return torch.gather(table, 1, ids.unsqueeze(2).expand(-1, -1, table.shape[2]))


# ------------------------------------------------------------------------------------------------ sequences
class TaggerNet(nn.Module):
    """(N, L, V) one-hot tokens -> (N, L) tag probabilities; causal convolutions over the last ``window`` tokens."""

    def __init__(self, vocab: int = VOCAB, window: int = WINDOW, hidden: int = 32) -> None:
        super().__init__()
        self.window = window
        self.conv = nn.Conv1d(vocab, hidden, window + 1)
        self.head = nn.Sequential(nn.ReLU(), nn.Conv1d(hidden, hidden, 1), nn.ReLU(), nn.Conv1d(hidden, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(F.pad(x.transpose(1, 2), (self.window, 0)))  # left padding: position i sees i-window .. i
        return torch.sigmoid(self.head(h)).squeeze(1)


def token_sequences(n: int, seed: int, length: int = SEQ_LEN) -> torch.Tensor:
    """(n, length) int64 tokens: a trigger with probability 0.2, a content word 0.45, a filler 0.35."""
    g = torch.Generator().manual_seed(seed)
    kind = torch.multinomial(torch.tensor([0.2, 0.45, 0.35]), n * length, replacement=True, generator=g)
    offset = torch.tensor([0, len(TRIGGERS), len(TRIGGERS) + len(CONTENT)])
    width = torch.tensor([len(TRIGGERS), len(CONTENT), VOCAB - len(TRIGGERS) - len(CONTENT)])
    u = torch.rand(n * length, generator=g)
    return (offset[kind] + (u * width[kind]).long()).view(n, length)


def tag_rule(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tags and ground truth of one-hot (or masked, all-zero) tokens x (N, L, V).

    Returns:
        tags: (N, L) float 0/1.  relevant: (N, L, L) bool, ``relevant[n, i, j]``: token j drives tag i.
    """
    trig = x[..., list(TRIGGERS)].sum(-1) > 0.5                              # (N, L)
    content = x[..., list(CONTENT)].sum(-1) > 0.5
    length = trig.shape[1]
    i = torch.arange(length)
    in_window = (i[None, :] < i[:, None]) & (i[None, :] >= i[:, None] - WINDOW)  # (L, L): j in i's window
    trig_in_window = trig[:, None, :] & in_window[None]                        # (N, L, L)
    tags = content & trig_in_window.any(2)
    relevant = (trig_in_window | torch.eye(length, dtype=torch.bool)[None]) & tags[:, :, None]
    return tags.float(), relevant


# ------------------------------------------------------------------------------------------------ training
def _masked_copies(x: torch.Tensor, groups: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """x with every group kept with a per-row probability drawn from U(0.05, 1) (others set to 0)."""
    from .energy import random_keep_masks
    return apply_mask(x, random_keep_masks(x.shape[0], int(groups.max()) + 1, g), groups)


def _fit(net: nn.Module, x: torch.Tensor, label: Callable[[torch.Tensor], torch.Tensor], groups: torch.Tensor,
         steps: int, seed: int, batch_size: int = 64, lr: float = 1e-2) -> nn.Module:
    """Train ``net`` (probabilities out) with BCE on ``label(x)``; half of every batch is randomly masked."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        xb = x[torch.randint(0, x.shape[0], (batch_size,), generator=g)]
        xb = torch.cat([xb, _masked_copies(xb, groups, g)])
        p = net(xb).clamp(1e-6, 1 - 1e-6)
        loss = F.binary_cross_entropy(p, label(xb))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


def _cached_black_box(name: str, make: Callable[[], nn.Module], train: Callable[[nn.Module], nn.Module]) -> nn.Module:
    from ..models import cache_dir
    from .energy import _atomic_save
    path = cache_dir() / "structured" / f"blackbox_{name}_v{_BB_VERSION}_torch{torch.__version__.split('+')[0]}.pt"
    net = make()
    if path.exists():
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return net.eval()
    net = train(net)
    _atomic_save(net.state_dict(), path)
    return net


@functools.lru_cache(maxsize=None)
def segmentation_task(n_train: int = 2000, n_test: int = 300, seed: int = 0) -> StructuredTask:
    """The segmentation task (see the module docstring); the black box trains in a few seconds, then is cached."""
    groups = patch_groups(SIZE, SIZE, PATCH)
    x_train, obj_train = shape_images(n_train, seed)
    x_test, obj_test = shape_images(n_test, seed + 1)

    def train(net: nn.Module) -> nn.Module:
        # labels: the object mask where the input survives masking; the object map rides along as an extra channel
        # so masked copies of it stay aligned with the image
        both = torch.cat([x_train, (obj_train > 0).float().unsqueeze(1)], 1)
        wrapped = _PairNet(net)
        _fit(wrapped, both, lambda b: (b[:, 1].flatten(1) > 0.5).float(), groups.expand(2, SIZE, SIZE), 300, seed)
        return net.eval()

    bb = _cached_black_box(f"segmentation_s{seed}_n{n_train}", SegmentationNet, train)
    c = torch.arange(SIZE)
    centre = ((c[:, None] >= 4) & (c[:, None] < 12) & (c[None, :] >= 4) & (c[None, :] < 12)).flatten()
    targets = {"map": (tuple(range(SIZE * SIZE)), 16),
               "centre": (tuple(torch.nonzero(centre).flatten().tolist()), 10)}
    return StructuredTask("segmentation", bb, x_train, x_test, segmentation_relevance(obj_test, groups), groups,
                          targets)


class _PairNet(nn.Module):
    """Feeds channel 0 of a (N, 2, H, W) image+label pair to the segmentation net (masking keeps them aligned)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.inner = net

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        return self.inner(pair[:, :1])


@functools.lru_cache(maxsize=None)
def sequence_task(n_train: int = 2000, n_test: int = 300, seed: int = 0) -> StructuredTask:
    """The trigger-token tagging task (see the module docstring); the tagger trains in seconds, then is cached."""
    groups = token_groups(SEQ_LEN, VOCAB)
    x_train = F.one_hot(token_sequences(n_train, seed), VOCAB).float()
    x_test = F.one_hot(token_sequences(n_test, seed + 1), VOCAB).float()

    def train(net: nn.Module) -> nn.Module:
        return _fit(net, x_train, lambda b: tag_rule(b)[0], groups, 600, seed)

    bb = _cached_black_box(f"sequence_s{seed}_n{n_train}", TaggerNet, train)
    targets = {"tags": (tuple(range(SEQ_LEN)), 6), "token8": ((8,), 2)}
    return StructuredTask("sequence", bb, x_train, x_test, tag_rule(x_test)[1], groups, targets)
