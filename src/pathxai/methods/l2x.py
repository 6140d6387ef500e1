"""L2X (Chen, Song, Wainwright, Jordan 2018): a learned k-feature selector trained to maximise a variational bound
on the mutual information between the selected features and the black box's (target) output.

Training: :func:`pathxai.structured.train_l2x`; explaining is one forward pass, as for SOInter.
"""
from __future__ import annotations

from ..core import register_method
from .sointer import _SelectorMethod


@register_method
class L2X(_SelectorMethod):
    """L2X's learned selector on feature vectors (N, D), token sequences or images (grouped, as for SOInter).

    Args:
        model: the black box ``(N, *S) -> (N, L)``.
        interpreter: a :class:`pathxai.structured.Selector` from :func:`pathxai.structured.train_l2x`.
    Target: ``None`` (the outputs it was trained for) or that output index.
    Attribution: (N, G) selection logits; ``extras["mask"]`` the hard k-hot selection, ``extras["selected"]``.
    """

    name = "l2x"
    description = "L2X: learned k-feature selector (Gumbel-softmax, mutual-information bound), one pass."
    kind = "l2x"
