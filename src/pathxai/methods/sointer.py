"""SOInter (Seyyedsalehi, Soleymani, Rabiee, arXiv 2202.09914): a learned interpreter for one output variable (or a
part) of a structured black box. The interpreter is trained once per black box and target
(:func:`pathxai.structured.train_sointer`, energy-based objective); explaining a new input is one forward pass.
"""
from __future__ import annotations

from typing import Any

import torch

from ..core import Method, Target, register_method
from ..structured.interpreter import Selector


class _SelectorMethod(Method):
    """Shared body of the learned k-feature selectors (SOInter, L2X) on feature vectors (N, D)."""

    input_ndim = (2,)
    input_expected = "(N, D)"
    kind = ""

    def __init__(self, model: Any, *, interpreter: Selector, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if not isinstance(interpreter, Selector):
            raise TypeError(f"interpreter must be a trained pathxai.structured.Selector (see "
                            f"pathxai.structured.train_{self.kind or 'sointer'}), got {type(interpreter).__name__}")
        self.interpreter = interpreter.eval()

    def params(self) -> dict[str, Any]:
        return {"k": self.interpreter.k, "target": list(self.interpreter.target),
                "temperature": self.interpreter.temperature, "trained_as": self.interpreter.kind}

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        sel = self.interpreter
        if x.shape[1] != sel.n_features:
            raise ValueError(f"x must have shape (N, {sel.n_features}) for this interpreter, got {tuple(x.shape)}")
        if target.classes is None:
            raise ValueError(f"{self.name} explains the output variable(s) it was trained for, {list(sel.target)}; "
                             "pass target as that output index, not a callable")
        wanted = set(sel.target)
        if len(wanted) == 1:
            bad = [int(c) for c in target.classes.tolist() if int(c) not in wanted]
            if bad:
                raise ValueError(f"target={bad[0]} but this interpreter was trained for output {sel.target[0]}; "
                                 "train one per target output (pathxai.structured.pretrained_selector)")
        bs = self.batch_size if isinstance(self.batch_size, int) else 256
        parts = []
        with torch.inference_mode():
            for i in range(0, x.shape[0], bs):
                parts.append(sel(x[i:i + bs]))
        logits = torch.cat(parts).clone()
        idx = logits.topk(sel.k, dim=1).indices
        mask = torch.zeros_like(logits).scatter_(1, idx, 1.0)
        return logits, {"mask": mask, "selected": idx, "k": sel.k}


@register_method
class SOInter(_SelectorMethod):
    """SOInter's learned interpreter.

    Args:
        model: the structured black box ``(N, D) -> (N, L)`` (only used to check the input; the interpreter is
            a separate trained network).
        interpreter: a :class:`pathxai.structured.Selector` from :func:`pathxai.structured.train_sointer`.
    Target: the output index the interpreter was trained for (one int or N equal ints).
    Attribution: (N, D) selection logits (higher = more important); ``extras["mask"]`` (N, D) is the hard k-hot
    selection (exactly k ones per row), ``extras["selected"]`` (N, k) the selected feature indices.
    """

    name = "sointer"
    description = "SOInter: energy-trained interpreter selecting k features for a structured output (one pass)."
    kind = "sointer"


__all__ = ["SOInter"]
