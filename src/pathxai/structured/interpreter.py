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

Grouped inputs (images, token sequences): the selection is k-hot over feature *groups* (patches, tokens; see
:mod:`pathxai.structured.groups`), and x̃ = x with the unselected groups set to 0. The interpreter network is then a
small convolutional net with coordinate channels (``backbone="conv"``) whose per-position logits are averaged over
each group; with many target variables (a region of a map, a whole tag sequence) the contrast term uses
``n_contrast`` random single flips of the target variables instead of flipping all of them at once (that negative is
trivially far from ŷ and gives no gradient).

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
from .energy import BaseEnergy, _atomic_save, energy_step, harden
from .groups import apply_mask, check_groups, group_mean, n_groups


def check_k(k: int, n_features: int) -> int:
    """Validate k against the number of features (or feature groups) D: an int with 1 <= k <= D."""
    k = check_positive_int(k, "k")
    if k > n_features:
        raise ValueError(f"k={k} is larger than the number of features D={n_features} (feature groups of the input); "
                         f"expected 1 <= k <= {n_features}")
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


class _GridNet(nn.Module):
    """Per-position logits of an image (C, H, W) -> (N, H, W) or a token sequence (L, V) -> (N, L): three
    convolutions over the input plus coordinate channels (so the selection may depend on where a group is)."""

    def __init__(self, input_shape: tuple[int, ...], hidden: int) -> None:
        super().__init__()
        self.input_shape = input_shape
        if len(input_shape) == 3:
            conv, k, ch = nn.Conv2d, 3, input_shape[0] + 2
        elif len(input_shape) == 2:
            conv, k, ch = nn.Conv1d, 5, input_shape[1] + 1
        else:
            raise ValueError(f"backbone='conv' needs inputs (N, C, H, W) or (N, L, V), got input_shape {input_shape}")
        p = k // 2
        self.net = nn.Sequential(conv(ch, hidden, k, padding=p), nn.ReLU(), conv(hidden, hidden, k, padding=p),
                                 nn.ReLU(), conv(hidden, hidden, k, padding=p), nn.ReLU(), conv(hidden, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if x.ndim == 4:
            h, w = x.shape[2:]
            ys = torch.linspace(-1, 1, h).view(1, 1, h, 1).expand(n, 1, h, w)
            xs = torch.linspace(-1, 1, w).view(1, 1, 1, w).expand(n, 1, h, w)
            return self.net(torch.cat([x, ys, xs], 1))[:, 0]
        pos = torch.linspace(-1, 1, x.shape[1]).view(1, 1, -1).expand(n, 1, x.shape[1])
        return self.net(torch.cat([x.transpose(1, 2), pos], 1))[:, 0]


class Selector(nn.Module):
    """W_α: x (N, *S) -> selection logits (N, G) over feature groups, plus the metadata of what it was trained for.

    Args:
        n_features: G, the number of feature groups (= D for feature vectors).
        input_shape: S, per-sample input shape (default ``(n_features,)``, a feature vector).
        groups: (*S) group index tensor (default: every feature of a vector its own group).
        backbone: ``"mlp"`` (flattened input) or ``"conv"`` (images / token sequences, per-position logits
            averaged over each group).
    Attributes:
        k: groups selected per input.  target: the explained output variables.  kind: "sointer" or "l2x".
    """

    def __init__(self, n_features: int, k: int, target: Sequence[int], kind: str = "sointer", hidden: int = 100,
                 temperature: float = 0.5, *, input_shape: Sequence[int] | None = None,
                 groups: torch.Tensor | None = None, backbone: str = "mlp") -> None:
        super().__init__()
        self.n_features, self.k, self.target, self.kind = n_features, check_k(k, n_features), tuple(target), kind
        self.hidden, self.temperature, self.backbone = hidden, temperature, backbone
        self.input_shape = tuple(int(s) for s in input_shape) if input_shape is not None else (n_features,)
        self.register_buffer("groups", check_groups(groups, self.input_shape), persistent=False)
        if n_groups(self.groups) != n_features:
            raise ValueError(f"groups number {n_groups(self.groups)} feature groups, but n_features={n_features}")
        d = int(torch.tensor(self.input_shape).prod())
        if backbone == "mlp":
            self.net: nn.Module = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                                nn.Linear(hidden, n_features))
        elif backbone == "conv":
            self.net = _GridNet(self.input_shape, hidden)
        else:
            raise ValueError(f"backbone must be 'mlp' or 'conv', got {backbone!r}")

    def _expected(self) -> str:
        return "(N, " + ", ".join(map(str, self.input_shape)) + ")"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.input_shape or x.ndim < 2:
            raise ValueError(f"x must have shape {self._expected()} for this interpreter, got {tuple(x.shape)}")
        if self.backbone == "mlp":
            return self.net(x.flatten(1))
        site = self.net(x)                                    # (N, H, W) or (N, L)
        elem = site.unsqueeze(1) if x.ndim == 4 else site.unsqueeze(2)
        return group_mean(elem.expand_as(x), self.groups)

    def mask_input(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (N, *S) with the groups not selected in ``mask`` (N, G) set to 0."""
        return apply_mask(x, mask, self.groups)

    def select(self, x: torch.Tensor) -> torch.Tensor:
        """Test-time selection: (N, G) 0/1 mask with exactly k ones."""
        return hard_khot(self(x), self.k)

    def save(self, path: str | Path) -> None:
        _atomic_save({"state": self.net.state_dict(), "n_features": self.n_features, "k": self.k,
                      "target": list(self.target), "kind": self.kind, "hidden": self.hidden,
                      "temperature": self.temperature, "input_shape": list(self.input_shape),
                      "groups": self.groups, "backbone": self.backbone}, path)

    @classmethod
    def load(cls, path: str | Path) -> "Selector":
        b = torch.load(path, map_location="cpu", weights_only=True)
        sel = cls(int(b["n_features"]), int(b["k"]), [int(t) for t in b["target"]], str(b["kind"]),
                  int(b["hidden"]), float(b["temperature"]), input_shape=b.get("input_shape"),
                  groups=b.get("groups"), backbone=str(b.get("backbone", "mlp")))
        sel.net.load_state_dict(b["state"])
        return sel.eval()


def _flip(y: torch.Tensor, target: Sequence[int]) -> torch.Tensor:
    out = y.clone()
    out[:, list(target)] = 1 - out[:, list(target)]
    return out


def _contrast_flips(y: torch.Tensor, target: Sequence[int], n_contrast: int, g: torch.Generator | None
                    ) -> torch.Tensor:
    """(N, M, L) alternatives to y: all target variables flipped (one target variable: M = 1), or ``n_contrast``
    random single flips among the target variables."""
    t = torch.as_tensor(list(target))
    if len(t) == 1:
        return _flip(y, target).unsqueeze(1)
    m = min(n_contrast, len(t))
    pick = t[torch.rand(y.shape[0], len(t), generator=g).topk(m, dim=1).indices]       # (N, m) distinct targets
    return (y.unsqueeze(1) + F.one_hot(pick, y.shape[1]).to(y.dtype)) % 2


def sointer_loss(selector: Selector, energy: BaseEnergy, black_box: Callable[[torch.Tensor], torch.Tensor],
                 x: torch.Tensor, generator: torch.Generator | None = None, hinge_weight: float = 1.0,
                 straight_through: bool = True, n_contrast: int = 8) -> torch.Tensor:
    """The SOInter interpreter loss on a batch x (N, *S) (see the module docstring); a scalar."""
    t = list(selector.target)
    z = gumbel_khot(selector(x), selector.k, selector.temperature, generator, straight_through=straight_through)
    xm = selector.mask_input(x, z)
    with torch.no_grad():
        y_hat = harden(black_box(x))
        y_tilde = harden(black_box(xm))
        differs = (y_tilde[:, t] != y_hat[:, t]).any(1).float()
    # the non-target variables come from the black box on the masked input (ỹ_{-T}, as in the paper's Fig. 2)
    y_pos = y_tilde.clone()
    y_pos[:, t] = y_hat[:, t]
    e_hat = energy(xm, y_pos)
    alt = _contrast_flips(y_pos, t, n_contrast, generator)
    contrast = F.softplus(e_hat.unsqueeze(1) - energy.energies(xm, alt)).mean(1)
    if hinge_weight == 0:
        return contrast.mean()
    hinge = differs * torch.relu(1 + e_hat - energy(xm, y_tilde))
    return (contrast + hinge_weight * hinge).mean()


def _prepare(black_box: Callable[[torch.Tensor], torch.Tensor], x_train: torch.Tensor,
             groups: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    x_train = check_input(x_train, "x_train", ndim=(2, 3, 4), expected="(N, D), (N, L, V) or (N, C, H, W)")
    groups = check_groups(groups, x_train.shape[1:])
    with torch.no_grad():
        n_out = black_box(x_train[:1]).shape[1]
    return x_train, groups, n_out


def _default_backbone(x: torch.Tensor) -> str:
    return "mlp" if x.ndim == 2 else "conv"


def train_sointer(black_box: Callable[[torch.Tensor], torch.Tensor], energy: BaseEnergy, x_train: torch.Tensor,
                  target: int | Sequence[int], k: int, *, temperature: float = 0.5, epochs: int = 20,
                  batch_size: int = 128, lr: float = 1e-3, hidden: int | None = None, seed: int = 0,
                  energy_lr: float = 1e-3, hinge_weight: float = 1.0, straight_through: bool = True,
                  groups: torch.Tensor | None = None, backbone: str | None = None, n_contrast: int = 8) -> Selector:
    """Train the SOInter interpreter for the output variable(s) ``target``, alternating with energy-net steps on the
    masked inputs (``energy_lr=0`` freezes the energy net). The fine-tuned copy of the energy net is attached to the
    returned selector as ``.energy``; the ``energy`` argument is not modified.

    Args:
        black_box: ``(n, *S) -> (n, L)`` output probabilities.  energy: a trained energy net for it.
        x_train: (N, D) vectors, (N, L, V) token sequences or (N, C, H, W) images.
        target: output index or indices (e.g. a region of a map).  k: groups selected per input (1 <= k <= G).
        groups: (*S) feature groups (default: every feature of a vector).  temperature: Gumbel-softmax temperature.
        backbone: interpreter network, ``"mlp"`` (default for vectors) or ``"conv"`` (default otherwise);
            ``hidden`` its width (default 100 for the MLP, 16 channels for the conv net).
    """
    x_train, groups, n_out = _prepare(black_box, x_train, groups)
    energy.check(x_train[:1], torch.zeros(1, n_out))
    tgt = check_target_outputs(target, n_out)
    check_positive_int(epochs, "epochs")
    backbone = backbone or _default_backbone(x_train)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    sel = Selector(n_groups(groups), k, tgt, "sointer", hidden or (100 if backbone == "mlp" else 16), temperature,
                   input_shape=x_train.shape[1:], groups=groups, backbone=backbone)
    energy = copy.deepcopy(energy).train()       # fine-tuned alongside the interpreter; the caller's net is untouched
    opt = torch.optim.Adam(sel.parameters(), lr=lr)
    opt_e = torch.optim.Adam(energy.parameters(), lr=energy_lr)
    n = x_train.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            x = x_train[perm[i:i + batch_size]]
            energy.requires_grad_(False)
            loss = sointer_loss(sel, energy, black_box, x, g, hinge_weight, straight_through, n_contrast)
            opt.zero_grad()
            loss.backward()
            opt.step()
            energy.requires_grad_(True)
            if energy_lr > 0:
                # the paper alternates: the energy net learns the black box on the inputs the interpreter now masks,
                # so the interpreter cannot exploit energy errors off the data (hard masks of the noisy selection)
                with torch.no_grad():
                    logits = sel(x)
                    u = torch.rand(logits.shape, generator=g).clamp_(1e-10, 1 - 1e-7)
                    xm = sel.mask_input(x, hard_khot(logits - torch.log(-torch.log(u)), sel.k))
                energy_step(energy, opt_e, black_box, torch.cat([x, xm]), g)
    sel.__dict__["energy"] = energy.eval()  # plain attribute, not a submodule: not saved with the selector
    return sel.eval()


def _approximator(input_shape: tuple[int, ...], n_out: int, hidden: int, backbone: str) -> nn.Module:
    """L2X's variational approximator q(y | x ⊙ z): an MLP, or for grids a conv net with one logit per position."""
    if backbone == "mlp":
        d = int(torch.tensor(input_shape).prod())
        return nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                             nn.Linear(hidden, n_out))
    grid = _GridNet(input_shape, hidden)
    return nn.Sequential(grid, nn.Flatten())


def train_l2x(black_box: Callable[[torch.Tensor], torch.Tensor], x_train: torch.Tensor, target: int | Sequence[int],
              k: int, *, temperature: float = 0.5, epochs: int = 20, batch_size: int = 128, lr: float = 1e-3,
              hidden: int | None = None, seed: int = 0, groups: torch.Tensor | None = None,
              backbone: str | None = None) -> Selector:
    """L2X (Chen et al. 2018): jointly train a selector and an approximator q(y_T | x ⊙ z) to maximise the
    likelihood of the black box's hardened target outputs (its variational mutual-information bound); each target
    output variable is treated independently (L2X has no notion of the other outputs). Grouped inputs as in
    :func:`train_sointer`; the approximator of a grid predicts every position and is read at the targets."""
    x_train, groups, n_out = _prepare(black_box, x_train, groups)
    tgt = list(check_target_outputs(target, n_out))
    backbone = backbone or _default_backbone(x_train)
    hidden = hidden or (100 if backbone == "mlp" else 16)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    shape = tuple(x_train.shape[1:])
    sel = Selector(n_groups(groups), k, tgt, "l2x", hidden, temperature, input_shape=shape, groups=groups,
                   backbone=backbone)
    approx = _approximator(shape, len(tgt), hidden, backbone)
    read = (lambda out: out) if backbone == "mlp" else (lambda out: out[:, tgt])  # noqa: E731
    opt = torch.optim.Adam(list(sel.parameters()) + list(approx.parameters()), lr=lr)
    n = x_train.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            x = x_train[perm[i:i + batch_size]]
            with torch.no_grad():
                y = harden(black_box(x))[:, tgt]
            z = l2x_khot(sel(x), k, temperature, g)
            loss = F.binary_cross_entropy_with_logits(read(approx(sel.mask_input(x, z))), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return sel.eval()
