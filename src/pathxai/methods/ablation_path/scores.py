"""Path scores (thesis Part II, Sec. 2.3) as differentiable functions of the path, and their shared layout.

F is the explained scalar of the classifier (Eq. 1.3: the target-class probability, in [0, 1]). With the trapezoid
rule on {0, t_1..t_n, 1} (the fixed end slices evaluate F at the target image and at the baseline):

* retaining      P_up(phi)   = int_0^1 F(image(phi(t))) dt                               (Eq. 2.13)
* dissipating    P_down(phi) = 1 - int_0^1 F(image(phi(t))) dt                           (Eq. 2.14)
* contrastive    P_updown(phi) = P_up(phi) + P_down(1 - phi)                              (Eq. 2.15)
* straddling     P_up_down(phi_up, phi_down) = P_up(phi_up) + P_down(phi_down)
                                                 - penalty * int dt int dr |phi_up - phi_down|   (Eq. 2.16)

(1 - phi is the complementary mask path: it starts at the baseline and ends at the target; its time direction does
not matter for the integral.) Eq. 2.16 writes ``+ lambda ||phi_up - phi_down||`` with lambda "the degree to which the
distance is penalised"; here ``penalty = -lambda >= 0`` and the distance is the L1 one of Lemma 2. The thesis keeps
the pair close with the pinching tweak instead (penalty 0, the default).

Every score is ``sum_v [const_v + sign_v * (sum_k w_k F(mask_v(phi_{path_v}(t_k))) + w_end (F(x) + F(b)))]`` over a
small table of *variants* v; :data:`SCORE_VARIANTS` is that table, shared by the standalone functions here and the
batched optimiser, so both compute the same number and gradient.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .paths import blend, time_weights

ModelScore = Callable[[torch.Tensor], torch.Tensor]
"""``images (m, C, H, W) -> (m,)`` the explained scalar F of each image (e.g. the target-class probability)."""


@dataclass(frozen=True)
class Variant:
    """One family of evaluations a score needs: the masks ``phi`` of path ``path`` (or ``1 - phi`` when
    ``complement``), entering the score with ``sign``."""

    path: int
    complement: bool
    sign: float


SCORE_VARIANTS: dict[str, tuple[Variant, ...]] = {
    "retaining": (Variant(0, False, 1.0),),
    "dissipating": (Variant(0, False, -1.0),),
    "contrastive": (Variant(0, False, 1.0), Variant(0, True, -1.0)),
    "boundary_straddling": (Variant(0, False, 1.0), Variant(1, False, -1.0)),
}
SCORE_NAMES = tuple(SCORE_VARIANTS)
SCORE_ALIASES = {
    "retain": "retaining", "p_up": "retaining", "up": "retaining", "insertion": "retaining",
    "dissipate": "dissipating", "p_down": "dissipating", "down": "dissipating", "deletion": "dissipating",
    "contrast": "contrastive", "p_updown": "contrastive", "hybrid": "contrastive",
    "straddling": "boundary_straddling", "straddle": "boundary_straddling", "p_up_down": "boundary_straddling",
}


def canonical_score(name: str) -> str:
    """The canonical score name for ``name`` (or an alias such as ``"p_up"``, ``"contrast"``, ``"straddle"``)."""
    if not isinstance(name, str):
        raise TypeError(f"score must be a string, one of {', '.join(SCORE_NAMES)}; got {name!r}")
    key = name.strip().lower().replace("-", "_")
    key = SCORE_ALIASES.get(key, key)
    if key not in SCORE_VARIANTS:
        raise ValueError(f"score must be one of {', '.join(SCORE_NAMES)}, got {name!r}")
    return key


def n_paths(score: str) -> int:
    """How many paths the score optimises (2 for boundary straddling, else 1)."""
    return 1 + max(v.path for v in SCORE_VARIANTS[canonical_score(score)])


def assemble_score(score: str, slice_values: torch.Tensor, end_values: torch.Tensor) -> torch.Tensor:
    """The score from the F values it needs.

    Args:
        slice_values: ``(..., V, n)`` F at every variant's masks (order of :data:`SCORE_VARIANTS`).
        end_values: ``(..., 2)`` F(x) and F(baseline).
    Returns:
        ``(...)`` score (without the straddling distance penalty).
    """
    variants = SCORE_VARIANTS[canonical_score(score)]
    n = slice_values.shape[-1]
    w, w_end = time_weights(n, slice_values.dtype)
    ends = w_end * end_values.sum(-1)
    total = torch.zeros(slice_values.shape[:-2], dtype=slice_values.dtype)
    for j, v in enumerate(variants):
        integral = (slice_values[..., j, :] * w).sum(-1) + ends
        total = total + (1.0 if v.sign < 0 else 0.0) + v.sign * integral
    return total


def path_distance(up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """L1 distance of two paths, int dt int dr |phi_up - phi_down| (trapezoid; the fixed ends agree).

    ``(..., n, h, w) -> (...)``.
    """
    n = up.shape[-3]
    w, _ = time_weights(n, up.dtype)
    return ((up - down).abs().mean(dim=(-2, -1)) * w).sum(-1)


def _slice_values(f: ModelScore, x: torch.Tensor, baseline: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    out = f(blend(x, baseline, masks))
    if not isinstance(out, torch.Tensor) or out.shape != (masks.shape[0],):
        raise ValueError(f"f must map images (m, C, H, W) to scores of shape ({masks.shape[0]},), got "
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    return out


def _end_values(f: ModelScore, x: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    return f(torch.stack([x, baseline]))


def _score(name: str, f: ModelScore, x: torch.Tensor, baseline: torch.Tensor, paths: list[torch.Tensor]
           ) -> torch.Tensor:
    values = []
    for v in SCORE_VARIANTS[name]:
        phi = paths[v.path]
        values.append(_slice_values(f, x, baseline, 1.0 - phi if v.complement else phi))
    slices = torch.stack(values).to(torch.promote_types(values[0].dtype, paths[0].dtype))
    return assemble_score(name, slices, _end_values(f, x, baseline).to(slices.dtype))


def retaining_score(f: ModelScore, x: torch.Tensor, baseline: torch.Tensor, path: torch.Tensor) -> torch.Tensor:
    """P_up (Eq. 2.13): the time integral of F along the path -- the insertion-style "keep the class" score.

    Args:
        f: ``images (m, C, H, W) -> (m,)`` explained scalar, e.g. ``lambda im: model(im).softmax(1)[:, c]``.
        x, baseline: (C, H, W) target image and baseline.
        path: (n, h, w) interior slices (see :mod:`.paths`); gradients flow to it.
    Returns:
        0-dim tensor.
    """
    return _score("retaining", f, x, baseline, [path])


def dissipating_score(f: ModelScore, x: torch.Tensor, baseline: torch.Tensor, path: torch.Tensor) -> torch.Tensor:
    """P_down (Eq. 2.14) = 1 - int F dt: high when the class disappears early along the path."""
    return _score("dissipating", f, x, baseline, [path])


def contrastive_score(f: ModelScore, x: torch.Tensor, baseline: torch.Tensor, path: torch.Tensor) -> torch.Tensor:
    """P_updown (Eq. 2.15) = P_up(phi) + P_down(1 - phi): what phi keeps retains the class, and removing exactly
    that (the complementary masks) dissipates it."""
    return _score("contrastive", f, x, baseline, [path])


def boundary_straddling_score(f: ModelScore, x: torch.Tensor, baseline: torch.Tensor, up: torch.Tensor,
                              down: torch.Tensor, penalty: float = 0.0) -> torch.Tensor:
    """P_up_down (Eq. 2.16) = P_up(phi_up) + P_down(phi_down) - penalty * int int |phi_up - phi_down|."""
    s = _score("boundary_straddling", f, x, baseline, [up, down])
    if penalty:
        s = s - penalty * path_distance(up, down)
    return s


SCORE_FUNCTIONS = {
    "retaining": retaining_score,
    "dissipating": dissipating_score,
    "contrastive": contrastive_score,
    "boundary_straddling": boundary_straddling_score,
}
