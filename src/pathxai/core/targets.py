"""Target specifications: which scalar of the model output a method explains.

A user passes ``target`` as an int class, one int per sample, ``None`` (the predicted class) or a callable mapping the
model output ``(n, ...)`` to ``(n,)`` scores. :func:`resolve_target` turns any of these into a :class:`Target`, whose
:meth:`Target.score` picks the explained scalar from the output of any chunk of evaluations.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence, Union

import torch

from .validation import TARGET_SCORE_CAUSE, check_finite, check_model_output

TargetLike = Union[int, Sequence[int], torch.Tensor, Callable[[torch.Tensor], torch.Tensor], None]
ScoreKind = Literal["output", "softmax", "log_softmax"]


@dataclass(frozen=True)
class Target:
    """A resolved target for a batch of N samples.

    Attributes:
        classes: (N,) int64 class per sample, or ``None`` for a callable target.
        fn: callable ``output (n, ...) -> (n,)`` for structured / representation outputs, else ``None``.
    """

    classes: torch.Tensor | None
    fn: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def n(self) -> int:
        return -1 if self.classes is None else int(self.classes.shape[0])

    def subset(self, index: torch.Tensor | slice) -> "Target":
        """The target restricted to samples ``index`` (callables are row-wise, so they are kept as they are)."""
        if self.classes is None:
            return self
        return Target(self.classes[index], None)

    def score(self, output: torch.Tensor, sample_index: torch.Tensor | None = None,
              kind: ScoreKind = "output") -> torch.Tensor:
        """Pick the explained scalar for each row of ``output``.

        Args:
            output: model output for a chunk, shape (n, K) for classifiers or (n, ...) for callables.
            sample_index: (n,) index of the explained sample each row belongs to (rows of one chunk may mix samples,
                e.g. several path steps of several images). ``None`` means row i is sample i.
            kind: ``"output"`` (the raw output, e.g. a logit), ``"softmax"`` or ``"log_softmax"`` over dim 1.
        Returns:
            (n,) scores, differentiable w.r.t. ``output``.
        Raises:
            NonFiniteError: (a ``ValueError``) when a callable target returns NaN/Inf scores.
        """
        if self.fn is not None:
            if kind != "output":
                raise ValueError(f"score kind {kind!r} needs a class target; a callable target scores the raw output")
            scores = self.fn(output)
            if not isinstance(scores, torch.Tensor) or scores.shape != (output.shape[0],):
                got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
                raise ValueError(f"target callable must map the model output of shape {tuple(output.shape)} to "
                                 f"scores of shape ({output.shape[0]},), got {got}")
            # rows are checked against the model output first: a finite output with a NaN score is the target's doing
            check_finite(scores, "target score", cause=TARGET_SCORE_CAUSE, ids=sample_index,
                         noun="item" if sample_index is None else "explained sample")
            return scores
        if output.ndim != 2:
            raise ValueError(f"a class target needs a model output of shape (N, num_classes), got shape "
                             f"{tuple(output.shape)}; pass a callable target for other outputs")
        classes = self.classes.to(output.device)   # the work's device: no host/device mixing in the indexing
        if sample_index is not None:
            classes = classes[sample_index.to(output.device)]
        if classes.shape[0] != output.shape[0]:
            raise ValueError(f"target has {classes.shape[0]} entries for a model output of {output.shape[0]} rows")
        if int(classes.max()) >= output.shape[1]:
            raise ValueError(f"target class {int(classes.max())} is out of range for a model output of shape "
                             f"{tuple(output.shape)}: expected 0 <= target < {output.shape[1]}")
        if kind == "softmax":
            output = output.softmax(dim=1)
        elif kind == "log_softmax":
            output = output.log_softmax(dim=1)
        elif kind != "output":
            raise ValueError(f"kind must be 'output', 'softmax' or 'log_softmax', got {kind!r}")
        return output.gather(1, classes.view(-1, 1)).squeeze(1)


def _as_class_tensor(target: Any, n: int) -> torch.Tensor:
    if isinstance(target, bool):
        raise TypeError(f"target must be an int, a sequence of N={n} ints, None or a callable, got a bool")
    if isinstance(target, int):
        classes = torch.full((n,), target, dtype=torch.long)
    else:
        classes = torch.as_tensor(target) if not isinstance(target, torch.Tensor) else target
        if classes.ndim == 0:
            classes = classes.reshape(1).expand(n)
        if torch.is_floating_point(classes) or classes.dtype == torch.bool or torch.is_complex(classes):
            raise TypeError(f"target must hold integer class indices, got dtype {classes.dtype}")
        if classes.ndim != 1 or classes.shape[0] != n:
            raise ValueError(f"target must be an int or have shape (N,) = ({n},) (one class per sample), "
                             f"got shape {tuple(classes.shape)}")
        classes = classes.to(dtype=torch.long, device="cpu").clone()
    if n and int(classes.min()) < 0:
        raise ValueError(f"target must be >= 0 (a class index), got {int(classes.min())}")
    return classes


def resolve_target(target: TargetLike, n: int, predict: Callable[[], torch.Tensor] | None = None,
                   num_classes: int | None = None) -> Target:
    """Turn a user-facing ``target`` into a :class:`Target` for N samples.

    Args:
        target: int, sequence/tensor of N ints, ``None`` (predicted class) or callable ``output (n, ...) -> (n,)``.
        n: number of samples N.
        predict: returns the model output (N, K) for the batch; called only when ``target`` is ``None``.
        num_classes: when known, class targets are range-checked against it here.
    """
    if callable(target) and not isinstance(target, torch.Tensor):
        return Target(None, target)
    if target is None:
        if predict is None:
            raise ValueError("target=None (the predicted class) needs the model output; pass an explicit target")
        out = check_model_output(predict(), n)
        if out.ndim != 2:
            raise ValueError(f"target=None picks the arg-max class and needs a model output of shape "
                             f"(N, num_classes), got {tuple(out.shape)}; pass a callable target instead")
        return Target(out.argmax(dim=1).to(torch.long).cpu(), None)
    if isinstance(target, str):
        raise TypeError(f"target must be an int, a sequence of N={n} ints, None or a callable, got the string "
                        f"{target!r} (class names are resolved by the CLI and px.models)")
    classes = _as_class_tensor(target, n)
    if num_classes is not None and int(classes.max()) >= num_classes:
        raise ValueError(f"target class {int(classes.max())} is out of range: the model has {num_classes} "
                         f"outputs, expected 0 <= target < {num_classes}")
    return Target(classes, None)
