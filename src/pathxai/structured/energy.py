"""Energy network E(x, y) for a structured black box with L binary output variables (SOInter, Sec. 4.1).

E scores (input, structure) pairs; lower means more compatible. Architecture (a SPEN, Belanger & McCallum 2016, as the
paper uses): a local term ``-<y, U(x)>`` with U an MLP (D -> L) plus a global label-interaction term
``c · softplus(C y)`` and a joint term ``MLP([h(x), y])``. It is trained with the structured hinge loss
``max(0, Δ(ŷ, ȳ) + E(x, ŷ) − E(x, ȳ))`` (Δ = Hamming distance) where ŷ is the black box's own (hardened) output and ȳ
runs over negatives: single-variable flips, random flips at several rates and uniform random structures. Training
inputs include randomly masked copies of x (each feature kept with a random probability, masked features set to 0),
so the energy stays meaningful on the masked inputs SOInter feeds it (the paper fine-tunes E on masked inputs while
training the interpreter; we do both: pre-training on random masks here, and alternating interpreter and energy
steps in :func:`pathxai.structured.train_sointer`).

Grouped inputs (images (N, C, H, W) whose structure is the per-pixel map, token sequences (N, L, V) whose structure is
the tag sequence): :class:`GridEnergyNet`, the same three terms with convolutions instead of MLPs, so the energy is
local like the structures it scores (unary: per-position logits from x; global: a convolution over the label map,
i.e. learned label smoothness; joint: a convolution over [x, y]). Masking acts on feature groups (patches, tokens),
and when L is large the negatives are a random subset of the single flips plus random and contiguous-run flips.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.files import atomic_path
from ..core.validation import check_input, check_positive_int
from .groups import apply_mask, check_groups, n_groups


class BaseEnergy(nn.Module):
    """Common interface of the energy networks: ``forward(x, y) -> (N,)``, :meth:`check`, :meth:`save`."""

    n_outputs: int
    kind: str = ""

    def check(self, x: torch.Tensor, y: torch.Tensor) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _blob(self) -> dict[str, Any]:
        raise NotImplementedError

    def energies(self, x: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Energies of M structures per input: x (N, *S), ys (N, M, L) -> (N, M)."""
        m, l = ys.shape[1], ys.shape[2]
        return self(x.repeat_interleave(m, 0), ys.reshape(-1, l)).view(-1, m)

    def save(self, path: str | Path) -> None:
        """Save atomically (state dict + sizes + kind) to ``path``; reload with :func:`load_energy`."""
        _atomic_save({"state": self.state_dict(), "kind": self.kind, **self._blob()}, path)


class EnergyNet(BaseEnergy):
    """E(x, y): x (N, D), y (N, L) in [0, 1] -> energies (N,)."""

    kind = "vector"

    def __init__(self, n_features: int, n_outputs: int, hidden: int = 64) -> None:
        super().__init__()
        self.n_features, self.n_outputs, self.hidden = n_features, n_outputs, hidden
        self.unary = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                   nn.Linear(hidden, n_outputs))
        self.glob = nn.Sequential(nn.Linear(n_outputs, 16), nn.Softplus(), nn.Linear(16, 1))
        self.joint_x = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU())
        self.joint = nn.Sequential(nn.Linear(hidden + n_outputs, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def check(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Raise a ValueError unless x is (N, D) and y is (N, L) for this network's D and L."""
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"energy net expects x of shape (N, {self.n_features}), got {tuple(x.shape)}")
        if y.ndim != 2 or y.shape != (x.shape[0], self.n_outputs):
            raise ValueError(f"energy net output shape does not fit: it scores structures of shape "
                             f"(N, {self.n_outputs}), got y of shape {tuple(y.shape)} for x of shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.check(x, y)
        local = -(y * self.unary(x)).sum(1)
        return local + self.glob(y).squeeze(1) + self.joint(torch.cat([self.joint_x(x), y], 1)).squeeze(1)

    def _blob(self) -> dict[str, Any]:
        return {"n_features": self.n_features, "n_outputs": self.n_outputs, "hidden": self.hidden}

    @classmethod
    def load(cls, path: str | Path) -> "EnergyNet":
        blob = torch.load(path, map_location="cpu", weights_only=True)
        net = cls(int(blob["n_features"]), int(blob["n_outputs"]), int(blob["hidden"]))
        net.load_state_dict(blob["state"])
        return net.eval()


class GridEnergyNet(BaseEnergy):
    """E(x, y) for structures laid out on the input's grid.

    - images: ``input_shape = (C, H, W)``, x (N, C, H, W), y (N, H*W) the row-major per-pixel map;
    - sequences: ``input_shape = (L, V)``, x (N, L, V) token vectors, y (N, L) the per-token tags.
    Returns energies (N,).
    """

    kind = "grid"

    def __init__(self, input_shape: Sequence[int], hidden: int = 16) -> None:
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.hidden = hidden
        if len(self.input_shape) == 3:
            conv, k, ch = nn.Conv2d, 3, self.input_shape[0]
            self.grid = self.input_shape[1:]
        elif len(self.input_shape) == 2:
            # kernel 5: two layers see 4 tokens either side, enough for windowed taggers
            conv, k, ch = nn.Conv1d, 5, self.input_shape[1]
            self.grid = self.input_shape[:1]
        else:
            raise ValueError(f"input_shape must be (C, H, W) or (L, V), got {self.input_shape}")
        self.n_outputs = int(torch.tensor(self.grid).prod())
        pad = k // 2
        self.unary = nn.Sequential(conv(ch, hidden, k, padding=pad), nn.ReLU(), conv(hidden, hidden, k, padding=pad),
                                   nn.ReLU(), conv(hidden, hidden, k, padding=pad), nn.ReLU(), conv(hidden, 1, 1))
        self.glob = nn.Sequential(conv(1, 8, k, padding=pad), nn.Softplus(), conv(8, 1, 1))
        # few joint channels: this term is evaluated once per scored structure (x's half once per input)
        self.joint = nn.Sequential(conv(ch + 1, 4, k, padding=pad), nn.ReLU(), conv(4, 1, 1))

    def _expected(self) -> str:
        return "(N, " + ", ".join(map(str, self.input_shape)) + ")"

    def check(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Raise a ValueError unless x is (N, *input_shape) and y is (N, L) with L the grid size."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"energy net expects x of shape {self._expected()}, got {tuple(x.shape)}")
        if y.ndim != 2 or y.shape != (x.shape[0], self.n_outputs):
            raise ValueError(f"energy net output shape does not fit: it scores structures of shape "
                             f"(N, {self.n_outputs}) (the {'x'.join(map(str, self.grid))} grid flattened), got y of "
                             f"shape {tuple(y.shape)} for x of shape {tuple(x.shape)}")

    def _x_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The parts that depend on x only: unary map (N, 1, *grid) and the x half of the joint layer
        (N, hidden, *grid). The joint layer's first convolution is linear in [x, y], so it splits into a conv of x
        plus a conv of y: scoring many structures per input then costs one pass over x."""
        xc = x if len(self.input_shape) == 3 else x.transpose(1, 2)    # sequences: tokens' vectors as channels
        first = self.joint[0]
        ch = xc.shape[1]
        jx = first._conv_forward(xc, first.weight[:, :ch], first.bias)
        return self.unary(xc), jx

    def _score(self, unary: torch.Tensor, jx: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Energies for y (B, L) given x terms already expanded to B rows."""
        ym = y.view(y.shape[0], 1, *self.grid)
        first = self.joint[0]
        jy = first._conv_forward(ym, first.weight[:, -1:], None)
        joint = self.joint[2](self.joint[1](jx + jy))
        return (-(ym * unary).flatten(1).sum(1) + self.glob(ym).flatten(1).sum(1) + joint.flatten(1).sum(1))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.check(x, y)
        return self._score(*self._x_terms(x), y)

    def energies(self, x: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Energies of M structures per input: x (N, *S), ys (N, M, L) -> (N, M), x's terms computed once."""
        n, m, l = ys.shape
        self.check(x, ys[:, 0])
        unary, jx = self._x_terms(x)
        rep = lambda t: t.unsqueeze(1).expand(n, m, *t.shape[1:]).reshape(n * m, *t.shape[1:])  # noqa: E731
        return self._score(rep(unary), rep(jx), ys.reshape(n * m, l)).view(n, m)

    def _blob(self) -> dict[str, Any]:
        return {"input_shape": list(self.input_shape), "hidden": self.hidden}


def load_energy(path: str | Path) -> BaseEnergy:
    """Load an energy net saved with ``save`` (either kind)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("kind", "vector") == "vector":
        return EnergyNet.load(path)
    net = GridEnergyNet([int(s) for s in blob["input_shape"]], int(blob["hidden"]))
    net.load_state_dict(blob["state"])
    return net.eval()


def _atomic_save(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:  # concurrent readers never see half a file
        torch.save(obj, tmp)


def harden(y: torch.Tensor) -> torch.Tensor:
    """Binary structure from output probabilities (N, L): 1.0 where y >= 0.5."""
    return (y >= 0.5).to(torch.float32)


def random_keep_masks(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    """(n, d) binary masks; each row keeps every feature with its own probability drawn from U(0.05, 1)."""
    p = torch.empty(n, 1).uniform_(0.05, 1.0, generator=g)
    return (torch.rand(n, d, generator=g) < p).float()


def negatives(y_hat: torch.Tensor, g: torch.Generator, max_single: int = 16) -> torch.Tensor:
    """Negative structures for each row of y_hat (n, L): returns (n, M, L).

    L <= ``max_single``: M = L + 4 (every single flip, flips at rates 0.2 and 0.5, a uniform random structure and
    the complement). Larger L: ``max_single`` random single flips, flips at rates 0.02, 0.1, 0.2, 0.5, two flipped
    contiguous runs (a run of the flattened map, i.e. part of a row; a stretch of a sequence), a uniform random
    structure and the complement (M = max_single + 8)."""
    n, l = y_hat.shape
    if l <= max_single:
        single = (y_hat.unsqueeze(1) + torch.eye(l).unsqueeze(0)) % 2
        flips = [(y_hat + (torch.rand(n, l, generator=g) < r).float()) % 2 for r in (0.2, 0.5)]
    else:
        pos = torch.rand(n, l, generator=g).topk(max_single, dim=1).indices                  # distinct positions
        single = (y_hat.unsqueeze(1) + F.one_hot(pos, l).float()) % 2
        flips = [(y_hat + (torch.rand(n, l, generator=g) < r).float()) % 2 for r in (0.02, 0.1, 0.2, 0.5)]
        idx = torch.arange(l)
        for _ in range(2):
            start = torch.randint(0, l, (n, 1), generator=g)
            length = torch.randint(2, max(3, l // 8), (n, 1), generator=g)
            flips.append((y_hat + ((idx >= start) & (idx < start + length)).float()) % 2)
    rand = (torch.rand(n, l, generator=g) < 0.5).float()
    return torch.cat([single] + [f.unsqueeze(1) for f in flips] + [rand.unsqueeze(1), (1 - y_hat).unsqueeze(1)], 1)


def train_energy(black_box: Callable[[torch.Tensor], torch.Tensor], x_train: torch.Tensor, *, epochs: int = 15,
                 batch_size: int = 128, lr: float = 2e-3, hidden: int | None = None, seed: int = 0,
                 mask_fraction: float = 0.5, groups: torch.Tensor | None = None) -> BaseEnergy:
    """Train an energy net on the black box's outputs (structured hinge loss, see the module docstring).

    Args:
        black_box: ``(n, *S) -> (n, L)`` output probabilities.
        x_train: (N, D) feature vectors (-> :class:`EnergyNet`, ``hidden`` default 64), or (N, C, H, W) images /
            (N, L, V) token sequences (-> :class:`GridEnergyNet`, ``hidden`` default 16); each batch also gets
            ``mask_fraction`` of randomly masked copies.
        groups: (*S) feature groups that masking removes together (default: every feature of a vector).
    """
    x_train = check_input(x_train, "x_train", ndim=(2, 3, 4), expected="(N, D), (N, L, V) or (N, C, H, W)")
    check_positive_int(epochs, "epochs")
    groups = check_groups(groups, x_train.shape[1:])
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    with torch.no_grad():
        n_out = black_box(x_train[:1]).shape[1]
    if x_train.ndim == 2:
        net: BaseEnergy = EnergyNet(x_train.shape[1], n_out, hidden or 64)
    else:
        net = GridEnergyNet(x_train.shape[1:], hidden or 16)
        if net.n_outputs != n_out:
            raise ValueError(f"the black box returns (N, {n_out}) for x of shape {tuple(x_train.shape)}; a grid "
                             f"energy net scores one output per grid position, expected (N, {net.n_outputs})")
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    n = x_train.shape[0]
    n_groups_ = n_groups(groups)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            x = x_train[perm[i:i + batch_size]]
            n_mask = int(round(mask_fraction * x.shape[0]))
            x = torch.cat([x, apply_mask(x[:n_mask], random_keep_masks(n_mask, n_groups_, g), groups)])
            energy_step(net, opt, black_box, x, g)
    return net.eval()


def energy_step(net: BaseEnergy, opt: torch.optim.Optimizer, black_box: Callable[[torch.Tensor], torch.Tensor],
                x: torch.Tensor, g: torch.Generator) -> float:
    """One structured-hinge step of the energy net on inputs x (b, *S) labelled by the black box; returns the loss."""
    with torch.no_grad():
        y_hat = harden(black_box(x))
    neg = negatives(y_hat, g)                                    # (b, M, L)
    delta = (neg - y_hat.unsqueeze(1)).abs().sum(2)             # (b, M)
    e_pos = net(x, y_hat)                                        # (b,)
    e_neg = net.energies(x, neg)                                 # (b, M)
    loss = torch.relu(delta + e_pos.unsqueeze(1) - e_neg).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


@torch.no_grad()
def energy_margins(net: BaseEnergy, black_box: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                   seed: int = 0, max_flips: int = 64) -> dict[str, torch.Tensor]:
    """Held-out check of an energy net: per input, E(x, ȳ) − E(x, ŷ) for random structures and for ŷ with one
    variable flipped (positive = the black box's ŷ ranks below). Returns ``{"random": (N,), "flip": (N,)}``,
    the flip margin being the smallest over the L single flips (over ``max_flips`` random ones when L is larger)."""
    g = torch.Generator().manual_seed(seed)
    y_hat = harden(black_box(x))
    e = net(x, y_hat)
    rand = (torch.rand(y_hat.shape, generator=g) < 0.5).float()
    n, l = y_hat.shape
    if l <= max_flips:
        single = (y_hat.unsqueeze(1) + torch.eye(l).unsqueeze(0)) % 2
    else:
        pos = torch.rand(n, l, generator=g).topk(max_flips, dim=1).indices
        single = (y_hat.unsqueeze(1) + F.one_hot(pos, l).float()) % 2
    e_flip = net.energies(x, single)
    return {"random": net(x, rand) - e, "flip": e_flip.min(1).values - e}
