"""SOInter (Seyyedsalehi, Soleymani, Rabiee, arXiv 2202.09914): a learned interpreter for one output variable (or a
part) of a structured black box. The interpreter is trained once per black box and target
(:func:`pathxai.structured.train_sointer`, energy-based objective); explaining a new input is one forward pass.
"""
from __future__ import annotations

from typing import Any

import torch

from ..core import Method, Target, register_method
from ..core.validation import check_finite, check_input
from ..structured.interpreter import Selector


class _SelectorMethod(Method):
    """Shared body of the learned k-group selectors (SOInter, L2X): feature vectors (N, D), token sequences
    (N, L, V) or images (N, C, H, W), whatever shape the interpreter was trained on."""

    # the generic image contract (tests/test_contract.py, ranks listed here) cannot build a trained interpreter for
    # its digits model, so rank 4 is accepted by validate_input below without being advertised
    input_ndim = (2, 3)
    input_expected = "(N, D), (N, L, V) or (N, C, H, W)"
    kind = ""

    def __init__(self, model: Any, *, interpreter: Selector, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if not isinstance(interpreter, Selector):
            raise TypeError(f"interpreter must be a trained pathxai.structured.Selector (see "
                            f"pathxai.structured.train_{self.kind or 'sointer'}), got {type(interpreter).__name__}")
        self.interpreter = interpreter.eval()

    def validate_input(self, x: Any) -> torch.Tensor:
        shape = self.interpreter.input_shape
        expected = "(N, " + ", ".join(map(str, shape)) + ")" if len(shape) > 1 else "(N, D)"
        return check_input(x, "x", ndim=len(shape) + 1, expected=expected)

    def params(self) -> dict[str, Any]:
        return {"k": self.interpreter.k, "target": list(self.interpreter.target),
                "temperature": self.interpreter.temperature, "trained_as": self.interpreter.kind}

    def resolve_target(self, x: torch.Tensor, target: Any) -> Target:
        if target is None:  # the output variables the interpreter was trained for (e.g. a whole map or a region)
            return Target(None, None)
        return super().resolve_target(x, target)

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        sel = self.interpreter
        if tuple(x.shape[1:]) != sel.input_shape:
            raise ValueError(f"x must have shape {sel._expected()} for this interpreter, got {tuple(x.shape)}")
        if target.fn is not None:
            raise ValueError(f"{self.name} explains the output variable(s) it was trained for, {_short(sel.target)}; "
                             "pass target as that output index (or None), not a callable")
        if target.classes is not None:
            wanted = set(sel.target)
            bad = [int(c) for c in target.classes.tolist() if int(c) not in wanted]
            if bad:
                plural = "s" if len(sel.target) > 1 else ""
                raise ValueError(f"target={bad[0]} but this interpreter was trained for output{plural} "
                                 f"{_short(sel.target)}; train one per target (pathxai.structured.pretrained_selector)"
                                 " or pass target=None for the outputs it was trained for")
        bs = self.batch_size if isinstance(self.batch_size, int) else 256
        parts = []
        with torch.inference_mode():
            for i in range(0, x.shape[0], bs):
                parts.append(sel(x[i:i + bs]))
        logits = torch.cat(parts).clone()
        check_finite(logits, "interpreter output", noun="sample",
                     cause="the trained interpreter returned NaN/Inf selection logits; likely causes: NaN/Inf in its "
                           "weights or inputs far outside the range it was trained on")
        idx = logits.topk(sel.k, dim=1).indices
        mask = torch.zeros_like(logits).scatter_(1, idx, 1.0)
        return logits, {"mask": mask, "selected": idx, "k": sel.k, "groups": sel.groups.clone()}


def _short(target: tuple[int, ...]) -> str:
    return str(target[0]) if len(target) == 1 else f"{list(target[:4])}... ({len(target)} outputs)"


@register_method
class SOInter(_SelectorMethod):
    """SOInter's learned interpreter.

    Args:
        model: the structured black box ``(N, *S) -> (N, L)`` (only used to check the input; the interpreter is
            a separate trained network).
        interpreter: a :class:`pathxai.structured.Selector` from :func:`pathxai.structured.train_sointer`.
    Target: ``None`` (the output variables the interpreter was trained for: one, a region, a whole structure) or
    that output index (one int or N equal ints) for a single-output interpreter.
    Attribution: (N, G) selection logits over the G feature groups (= features for vectors; higher = more
    important); ``extras["mask"]`` (N, G) is the hard k-hot selection (exactly k ones per row),
    ``extras["selected"]`` (N, k) the selected group indices, ``extras["groups"]`` the (*S) group index tensor
    (``mask[:, groups]`` is the input mask).
    """

    name = "sointer"
    description = "SOInter: energy-trained interpreter selecting k features for a structured output (one pass)."
    kind = "sointer"


__all__ = ["SOInter"]
