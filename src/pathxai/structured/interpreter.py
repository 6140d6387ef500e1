"""The SOInter interpreter (Sec. 4.2 of the paper) and the L2X selector (Chen et al. 2018), with their training.

Both are a network W_α: x (N, D) -> logits (N, D) followed by a Gumbel-softmax k-hot unit; at test time the unit is
the hard top-k of the logits (exactly k features, no noise), so explaining a new input is one forward pass.

Relaxations:
- SOInter: :func:`gumbel_khot`, a Gumbel-perturbed soft top-k (sigmoid of the perturbed logits around the threshold
  that makes the row sum k): every relaxed sample lies in (0, 1)^D and sums to k, so the expected number of
  selected features is k (the paper says "Gumbel-Softmax" without fixing the k-hot construction; successive
  softmaxes or L2X's max over k samples do not keep the sum at k).
- L2X: :func:`l2x_khot`, the original element-wise max over k independent Gumbel-softmax samples.

SOInter objective (our reading of the paper's interpreter loss, for target output variables T): with z the sampled
k-hot, x̃ = x ⊙ z, ŷ the black box's hardened output on x and ŷ^{¬T} the same with the target variables flipped,
    L(α) = softplus(E(x̃, [ŷ_T, ỹ_{−T}]) − E(x̃, [¬ŷ_T, ỹ_{−T}]))
i.e. the energy of the black box's ŷ_T on the masked input must stay low relative to the alternative target values,
plus the paper's hinge on the black box's own masked prediction ỹ (Fig. 2), weight ``hinge_weight`` (default 1):
    + 1[ỹ_T ≠ ŷ_T] · max(0, 1 + E(x̃, [ŷ_T, ỹ_{−T}]) − E(x̃, ỹ)).
The energy net is fine-tuned on the interpreter's masked inputs between interpreter steps (the paper alternates).

Decision where the paper is vague: the forward pass uses the *straight-through* k-hot (the hard top-k of the
Gumbel-perturbed logits, gradient of the relaxation). With the plain relaxed mask the energy net is queried at
inputs scaled by fractional masks, which it never saw; in our measurements its input gradients there pointed *away*
from the relevant features (median rank 15 of 16 on the synthetic task), while the straight-through version recovers
them exactly (see tests/test_sointer.py and benchmarks/results/sointer.md).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.validation import check_input, check_positive_int
from .energy import EnergyNet, _atomic_save, energy_step, harden


def check_k(k: int, n_features: int) -> int:
    """Validate k against the number of features D: an int with 1 <= k <= D."""
    k = check_positive_int(k, "k")
    if k > n_features:
        raise ValueError(f"k={k} is larger than the number of features D={n_features}; expected 1 <= k <= {n_features}")
    return k


def check_target_outputs(target: int | Sequence[int], n_outputs: int) -> tuple[int, ...]:
    """Normalise a target selecting output variables: an int or a non-empty sequence of indices in [0, L)."""
    if isinstance(target, bool):
        raise TypeError(f"target must be an output index or a sequence of indices, got {target!r}")
    idx = (int(target),) if isinstance(target, int) else tuple(int(t) for t in target)
    if len(idx) == 0:
        raise ValueError(f"target selects no output variable (got an empty selection); select at least one of the "
                         f"{n_outputs} outputs")
    bad = [t for t in idx if not 0 <= t < n_outputs]
    if bad:
        raise ValueError(f"target output index {bad[0]} out of range: the structure has {n_outputs} output "
                         f"variables, expected 0 <= index < {n_outputs}")
    return tuple(sorted(set(idx)))


def hard_khot(logits: torch.Tensor, k: int) -> torch.Tensor:
    """(N, D) logits -> (N, D) 0/1 mask with exactly k ones (the top k; ties broken by index)."""
    check_k(k, logits.shape[1])
    idx = logits.topk(k, dim=1).indices
    return torch.zeros_like(logits).scatter_(1, idx, 1.0)


def gumbel_khot(logits: torch.Tensor, k: int, temperature: float, generator: torch.Generator | None = None,
                straight_through: bool = False) -> torch.Tensor:
    """Relaxed k-hot sample (N, D) in (0, 1) whose rows sum to k (to ~1e-5): a Gumbel-perturbed soft top-k.

    With s = logits + Gumbel noise, z_i = σ((s_i − θ) / temperature) where the threshold θ solves Σ_i z_i = k
    (bisection without gradient, then one Newton step with gradient, which gives θ its implicit-function
    derivative). As temperature -> 0, z tends to the hard top-k of s. ``straight_through=True`` returns that hard
    top-k (exactly k ones) in the forward pass with the relaxation's gradient (straight-through Gumbel estimator),
    so whatever consumes the mask is only queried at binary-masked inputs.
    """
    check_k(k, logits.shape[1])
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    u = torch.rand(logits.shape, generator=generator).clamp_(1e-10, 1 - 1e-7).to(logits.dtype)
    s = logits - torch.log(-torch.log(u))
    with torch.no_grad():
        lo = s.min(1, keepdim=True).values - 30 * temperature
        hi = s.max(1, keepdim=True).values + 30 * temperature
        for _ in range(60):
            mid = (lo + hi) / 2
            too_many = torch.sigmoid((s - mid) / temperature).sum(1, keepdim=True) > k
            lo = torch.where(too_many, mid, lo)
            hi = torch.where(too_many, hi, mid)
        theta0 = (lo + hi) / 2
    z0 = torch.sigmoid((s - theta0) / temperature)
    slope = (z0 * (1 - z0)).sum(1, keepdim=True) / temperature
    theta = theta0 + (z0.sum(1, keepdim=True) - k) / slope.clamp_min(1e-12)
    z = torch.sigmoid((s - theta) / temperature)
    if straight_through:
        hard = torch.zeros_like(logits).scatter_(1, s.detach().topk(k, dim=1).indices, 1.0)
        return _StraightThrough.apply(z, hard)
    return z


class _StraightThrough(torch.autograd.Function):
    """Forward: the hard mask, bit-exact 0/1. Backward: the gradient passes to the relaxed mask unchanged."""

    @staticmethod
    def forward(ctx, soft: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return hard.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None


def l2x_khot(logits: torch.Tensor, k: int, temperature: float, generator: torch.Generator | None = None
             ) -> torch.Tensor:
    """L2X's relaxation (Chen et al. 2018): element-wise max over k independent Gumbel-softmax samples (N, D)."""
    check_k(k, logits.shape[1])
    n, d = logits.shape
    u = torch.rand((n, k, d), generator=generator).clamp_(1e-10, 1 - 1e-7)
    samples = F.softmax((logits.unsqueeze(1) - torch.log(-torch.log(u))) / temperature, dim=2)
    return samples.max(dim=1).values


class Selector(nn.Module):
    """W_α: x (N, D) -> selection logits (N, D), plus the metadata of what it was trained for.

    Attributes:
        k: features selected per input.  target: the explained output variables.  kind: "sointer" or "l2x".
    """

    def __init__(self, n_features: int, k: int, target: Sequence[int], kind: str = "sointer", hidden: int = 100,
                 temperature: float = 0.5) -> None:
        super().__init__()
        self.n_features, self.k, self.target, self.kind = n_features, check_k(k, n_features), tuple(target), kind
        self.hidden, self.temperature = hidden, temperature
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"x must have shape (N, {self.n_features}) for this interpreter, got {tuple(x.shape)}")
        return self.net(x)

    def select(self, x: torch.Tensor) -> torch.Tensor:
        """Test-time selection: (N, D) 0/1 mask with exactly k ones."""
        return hard_khot(self(x), self.k)

    def save(self, path: str | Path) -> None:
        _atomic_save({"state": self.net.state_dict(), "n_features": self.n_features, "k": self.k,
                      "target": list(self.target), "kind": self.kind, "hidden": self.hidden,
                      "temperature": self.temperature}, path)

    @classmethod
    def load(cls, path: str | Path) -> "Selector":
        b = torch.load(path, map_location="cpu", weights_only=True)
        sel = cls(int(b["n_features"]), int(b["k"]), [int(t) for t in b["target"]], str(b["kind"]),
                  int(b["hidden"]), float(b["temperature"]))
        sel.net.load_state_dict(b["state"])
        return sel.eval()


def _flip(y: torch.Tensor, target: Sequence[int]) -> torch.Tensor:
    out = y.clone()
    out[:, list(target)] = 1 - out[:, list(target)]
    return out


def sointer_loss(selector: Selector, energy: EnergyNet, black_box: Callable[[torch.Tensor], torch.Tensor],
                 x: torch.Tensor, generator: torch.Generator | None = None, hinge_weight: float = 1.0,
                 straight_through: bool = True) -> torch.Tensor:
    """The SOInter interpreter loss on a batch x (N, D) (see the module docstring); a scalar."""
    t = list(selector.target)
    z = gumbel_khot(selector(x), selector.k, selector.temperature, generator, straight_through=straight_through)
    xm = x * z
    with torch.no_grad():
        y_hat = harden(black_box(x))
        y_tilde = harden(black_box(xm))
        differs = (y_tilde[:, t] != y_hat[:, t]).any(1).float()
    # the non-target variables come from the black box on the masked input (ỹ_{-T}, as in the paper's Fig. 2)
    y_pos = y_tilde.clone()
    y_pos[:, t] = y_hat[:, t]
    e_hat = energy(xm, y_pos)
    contrast = F.softplus(e_hat - energy(xm, _flip(y_pos, t)))
    if hinge_weight == 0:
        return contrast.mean()
    hinge = differs * torch.relu(1 + e_hat - energy(xm, y_tilde))
    return (contrast + hinge_weight * hinge).mean()


def train_sointer(black_box: Callable[[torch.Tensor], torch.Tensor], energy: EnergyNet, x_train: torch.Tensor,
                  target: int | Sequence[int], k: int, *, temperature: float = 0.5, epochs: int = 20,
                  batch_size: int = 128, lr: float = 1e-3, hidden: int = 100, seed: int = 0,
                  energy_lr: float = 1e-3, hinge_weight: float = 1.0, straight_through: bool = True) -> Selector:
    """Train the SOInter interpreter for the output variable(s) ``target``, alternating with energy-net steps on the
    masked inputs (``energy_lr=0`` freezes the energy net). The fine-tuned copy of the energy net is attached to the
    returned selector as ``.energy``; the ``energy`` argument is not modified.

    Args:
        black_box: ``(n, D) -> (n, L)`` output probabilities.  energy: a trained :class:`EnergyNet` for it.
        x_train: (N, D).  k: features selected per input (1 <= k <= D).  temperature: Gumbel-softmax temperature.
    """
    x_train = check_input(x_train, "x_train", ndim=2, expected="(N, D)")
    with torch.no_grad():
        n_out = black_box(x_train[:1]).shape[1]
    energy.check(x_train[:1], torch.zeros(1, n_out))
    tgt = check_target_outputs(target, n_out)
    check_positive_int(epochs, "epochs")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    sel = Selector(x_train.shape[1], k, tgt, "sointer", hidden, temperature)
    energy = copy.deepcopy(energy).train()       # fine-tuned alongside the interpreter; the caller's net is untouched
    opt = torch.optim.Adam(sel.parameters(), lr=lr)
    opt_e = torch.optim.Adam(energy.parameters(), lr=energy_lr)
    n = x_train.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            x = x_train[perm[i:i + batch_size]]
            energy.requires_grad_(False)
            loss = sointer_loss(sel, energy, black_box, x, g, hinge_weight, straight_through)
            opt.zero_grad()
            loss.backward()
            opt.step()
            energy.requires_grad_(True)
            if energy_lr > 0:
                # the paper alternates: the energy net learns the black box on the inputs the interpreter now masks,
                # so the interpreter cannot exploit energy errors off the data (hard masks of the noisy selection)
                with torch.no_grad():
                    u = torch.rand(x.shape, generator=g).clamp_(1e-10, 1 - 1e-7)
                    xm = x * hard_khot(sel(x) - torch.log(-torch.log(u)), sel.k)
                energy_step(energy, opt_e, black_box, torch.cat([x, xm]), g)
    sel.__dict__["energy"] = energy.eval()  # plain attribute, not a submodule: not saved with the selector
    return sel.eval()


def train_l2x(black_box: Callable[[torch.Tensor], torch.Tensor], x_train: torch.Tensor, target: int | Sequence[int],
              k: int, *, temperature: float = 0.5, epochs: int = 20, batch_size: int = 128, lr: float = 1e-3,
              hidden: int = 100, seed: int = 0) -> Selector:
    """L2X (Chen et al. 2018): jointly train a selector and an approximator q(y_T | x ⊙ z) to maximise the
    likelihood of the black box's hardened target outputs (its variational mutual-information bound); each target
    output variable is treated independently (L2X has no notion of the other outputs)."""
    x_train = check_input(x_train, "x_train", ndim=2, expected="(N, D)")
    with torch.no_grad():
        n_out = black_box(x_train[:1]).shape[1]
    tgt = list(check_target_outputs(target, n_out))
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    d = x_train.shape[1]
    sel = Selector(d, k, tgt, "l2x", hidden, temperature)
    approx = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                           nn.Linear(hidden, len(tgt)))
    opt = torch.optim.Adam(list(sel.parameters()) + list(approx.parameters()), lr=lr)
    n = x_train.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            x = x_train[perm[i:i + batch_size]]
            with torch.no_grad():
                y = harden(black_box(x))[:, tgt]
            z = l2x_khot(sel(x), k, temperature, g)
            loss = F.binary_cross_entropy_with_logits(approx(x * z), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return sel.eval()
