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
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..core.validation import check_input, check_positive_int


class EnergyNet(nn.Module):
    """E(x, y): x (N, D), y (N, L) in [0, 1] -> energies (N,)."""

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

    def save(self, path: str | Path) -> None:
        """Save atomically (state dict + sizes) to ``path``."""
        _atomic_save({"state": self.state_dict(), "n_features": self.n_features, "n_outputs": self.n_outputs,
                      "hidden": self.hidden}, path)

    @classmethod
    def load(cls, path: str | Path) -> "EnergyNet":
        blob = torch.load(path, map_location="cpu", weights_only=True)
        net = cls(int(blob["n_features"]), int(blob["n_outputs"]), int(blob["hidden"]))
        net.load_state_dict(blob["state"])
        return net.eval()


def _atomic_save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".pt")
    os.close(fd)
    torch.save(obj, tmp)
    os.replace(tmp, path)  # atomic: concurrent readers never see half a file


def harden(y: torch.Tensor) -> torch.Tensor:
    """Binary structure from output probabilities (N, L): 1.0 where y >= 0.5."""
    return (y >= 0.5).to(torch.float32)


def random_keep_masks(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    """(n, d) binary masks; each row keeps every feature with its own probability drawn from U(0.05, 1)."""
    p = torch.empty(n, 1).uniform_(0.05, 1.0, generator=g)
    return (torch.rand(n, d, generator=g) < p).float()


def negatives(y_hat: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Negative structures for each row of y_hat (n, L): returns (n, M, L) with M = L + 4 (every single flip,
    flips at rates 0.2 and 0.5, a uniform random structure and the complement)."""
    n, l = y_hat.shape
    single = (y_hat.unsqueeze(1) + torch.eye(l).unsqueeze(0)) % 2
    flips = [(y_hat + (torch.rand(n, l, generator=g) < r).float()) % 2 for r in (0.2, 0.5)]
    rand = (torch.rand(n, l, generator=g) < 0.5).float()
    return torch.cat([single] + [f.unsqueeze(1) for f in flips] + [rand.unsqueeze(1), (1 - y_hat).unsqueeze(1)], 1)


def train_energy(black_box: Callable[[torch.Tensor], torch.Tensor], x_train: torch.Tensor, *, epochs: int = 15,
                 batch_size: int = 128, lr: float = 2e-3, hidden: int = 64, seed: int = 0,
                 mask_fraction: float = 0.5) -> EnergyNet:
    """Train an :class:`EnergyNet` on the black box's outputs (structured hinge loss, see the module docstring).

    Args:
        black_box: ``(n, D) -> (n, L)`` output probabilities.
        x_train: (N, D) inputs; each batch also gets ``mask_fraction`` of randomly masked copies.
    """
    x_train = check_input(x_train, "x_train", ndim=2, expected="(N, D)")
    check_positive_int(epochs, "epochs")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    with torch.no_grad():
        n_out = black_box(x_train[:1]).shape[1]
    net = EnergyNet(x_train.shape[1], n_out, hidden)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    n = x_train.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            x = x_train[perm[i:i + batch_size]]
            n_mask = int(round(mask_fraction * x.shape[0]))
            x = torch.cat([x, x[:n_mask] * random_keep_masks(n_mask, x.shape[1], g)])
            energy_step(net, opt, black_box, x, g)
    return net.eval()


def energy_step(net: EnergyNet, opt: torch.optim.Optimizer, black_box: Callable[[torch.Tensor], torch.Tensor],
                x: torch.Tensor, g: torch.Generator) -> float:
    """One structured-hinge step of the energy net on inputs x (b, D) labelled by the black box; returns the loss."""
    with torch.no_grad():
        y_hat = harden(black_box(x))
    neg = negatives(y_hat, g)                                    # (b, M, L)
    m, n_out = neg.shape[1], neg.shape[2]
    delta = (neg - y_hat.unsqueeze(1)).abs().sum(2)             # (b, M)
    e_pos = net(x, y_hat)                                        # (b,)
    e_neg = net(x.repeat_interleave(m, 0), neg.reshape(-1, n_out)).view(-1, m)
    loss = torch.relu(delta + e_pos.unsqueeze(1) - e_neg).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


@torch.no_grad()
def energy_margins(net: EnergyNet, black_box: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """Held-out check of an energy net: per input, E(x, ȳ) − E(x, ŷ) for random structures and for ŷ with one
    variable flipped (positive = the black box's ŷ ranks below). Returns ``{"random": (N,), "flip": (N,)}``,
    the flip margin being the smallest over the L single flips."""
    g = torch.Generator().manual_seed(seed)
    y_hat = harden(black_box(x))
    e = net(x, y_hat)
    rand = (torch.rand(y_hat.shape, generator=g) < 0.5).float()
    l = y_hat.shape[1]
    single = (y_hat.unsqueeze(1) + torch.eye(l).unsqueeze(0)) % 2
    e_flip = net(x.repeat_interleave(l, 0), single.reshape(-1, l)).view(-1, l)
    return {"random": net(x, rand) - e, "flip": e_flip.min(1).values - e}
