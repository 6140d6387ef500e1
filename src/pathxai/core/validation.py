"""Input checks shared by every method and metric.

Every check raises a ``ValueError`` or ``TypeError`` whose message names the argument, what was seen and what was
expected, so a user never has to guess which of five tensors had the wrong shape.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import numpy as np
import torch


def _shape_str(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def check_input(x: Any, name: str = "x", *, ndim: int | Sequence[int] | None = None,
                expected: str = "(N, C, H, W)") -> torch.Tensor:
    """Validate a batch of model inputs and return it as a CPU-contiguous float tensor view.

    Args:
        x: tensor of shape ``expected`` (``N >= 1``), floating point, finite.
        name: argument name used in error messages.
        ndim: allowed rank(s); ``None`` accepts any rank >= 2.
        expected: human-readable expected shape for messages.
    Returns:
        ``x`` unchanged when it already is a floating tensor (no copy).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {expected}, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a floating-point tensor of shape {expected}, got dtype {x.dtype} "
                        f"with shape {_shape_str(x.shape)}; convert with x.float()")
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim) if ndim is not None else None
    if allowed is not None and x.ndim not in allowed:
        raise ValueError(f"{name} must have shape {expected} ({' or '.join(map(str, allowed))} dims), "
                         f"got shape {_shape_str(x.shape)} ({x.ndim} dims)")
    if allowed is None and x.ndim < 2:
        raise ValueError(f"{name} must have shape {expected} with a leading batch dimension, "
                         f"got shape {_shape_str(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch: shape {_shape_str(x.shape)}, expected {expected} with N >= 1")
    if x.numel() == 0:
        raise ValueError(f"{name} has a zero-sized dimension: shape {_shape_str(x.shape)}, expected {expected}")
    if not torch.isfinite(x).all():
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {n_bad} NaN/Inf value(s) (shape {_shape_str(x.shape)}); "
                         "inputs must be finite")
    return x


def check_model_output(out: Any, n: int, name: str = "model output") -> torch.Tensor:
    """Check that a model returned a tensor with one row per input sample.

    Args:
        out: what the model returned for a batch of ``n`` inputs; expected a tensor of shape ``(n, ...)``.
    """
    if isinstance(out, (tuple, list)) and len(out) > 0 and isinstance(out[0], torch.Tensor):
        raise TypeError(f"{name} must be a single torch.Tensor of shape (N, ...), got a {type(out).__name__} "
                        "of tensors; wrap the model so that it returns one tensor")
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, ...), got {type(out).__name__}")
    if out.ndim == 0 or out.shape[0] != n:
        raise ValueError(f"{name} must have shape (N, ...) with N = {n} (one row per input), "
                         f"got shape {_shape_str(out.shape)}")
    return out


def check_saliency(saliency: Any, x: torch.Tensor, name: str = "saliency") -> torch.Tensor:
    """Validate a per-pixel map for image inputs ``x`` of shape (N, C, H, W): accepts (N, H, W) or (N, 1, H, W)."""
    if not isinstance(saliency, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, H, W), got {type(saliency).__name__}")
    n, _, h, w = x.shape
    if saliency.ndim == 4 and saliency.shape[1] == 1:
        saliency = saliency[:, 0]
    if saliency.ndim != 3 or tuple(saliency.shape) != (n, h, w):
        raise ValueError(f"{name} must have shape (N, H, W) = {_shape_str((n, h, w))} to match x of shape "
                         f"{_shape_str(x.shape)}, got {_shape_str(saliency.shape)}")
    if not torch.is_floating_point(saliency):
        raise TypeError(f"{name} must be floating point, got dtype {saliency.dtype}")
    if not torch.isfinite(saliency).all():
        raise ValueError(f"{name} contains NaN/Inf values (shape {_shape_str(saliency.shape)})")
    return saliency


def _is_number(value: Any) -> bool:
    """A real number (Python or NumPy int/float, a 0-dim real tensor), not a bool."""
    if isinstance(value, bool):
        return False
    if isinstance(value, torch.Tensor):
        return value.ndim == 0 and not value.dtype.is_complex and value.dtype != torch.bool
    return isinstance(value, numbers.Real)


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, torch.Tensor):
        return value.ndim == 0 and not torch.is_floating_point(value) and not value.dtype.is_complex \
            and value.dtype != torch.bool
    return isinstance(value, numbers.Integral)


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    left = "(" if low_open or low == -math.inf else "["
    right = ")" if high_open or high == math.inf else "]"
    return f"{left}{low:g}, {high:g}{right}"


def check_positive_int(value: Any, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """Return ``value`` as an int, raising if it is not an integer in [``minimum``, ``maximum``].

    Python ints, NumPy integers and 0-dim integer tensors are accepted; bools and floats (even ``3.0``) are not.
    """
    accepted = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    if not _is_integer(value):
        raise TypeError(f"{name} must be an integer {accepted}, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be an integer {accepted}, got {value}")
    return value


def check_finite_float(value: Any, name: str, *, low: float = -math.inf, high: float = math.inf,
                       low_open: bool = False, high_open: bool = False) -> float:
    """Return ``value`` as a finite float in the interval from ``low`` to ``high`` (ends open when asked).

    NaN and +-Inf are always refused: NaN passes no comparison, so an ``x > 0``-style check alone lets it through.
    """
    accepted = "a finite number" + ("" if low == -math.inf and high == math.inf
                                    else f" in {_interval(low, high, low_open, high_open)}")
    if not _is_number(value):
        raise TypeError(f"{name} must be {accepted}, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be {accepted}, got {value}")
    if (value < low or (low_open and value == low)) or (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {accepted}, got {value}")
    return value


def check_positive_float(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a finite float > 0 (>= 0 with ``allow_zero``): sigmas, step sizes, tolerances."""
    return check_finite_float(value, name, low=0.0, low_open=not allow_zero)


def check_fraction(value: Any, name: str, *, low: float = 0.0, high: float = 1.0,
                   inclusive: bool = True) -> float:
    """Return ``value`` as a finite float in [low, high] (or (low, high) when not inclusive); NaN/Inf are refused
    even when ``high`` is ``math.inf``."""
    if not _is_number(value):
        raise TypeError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    value = float(value)
    ok = low <= value <= high if inclusive else low < value < high
    if not ok or not math.isfinite(value):
        interval = f"[{low}, {high}]" if inclusive else f"({low}, {high})"
        raise ValueError(f"{name} must lie in {interval}, got {value}")
    return value


def check_choice(value: Any, name: str, choices: Sequence[Any]) -> Any:
    """Return ``value`` if it is one of ``choices`` (strings, ``None`` or bools), else raise ``ValueError``
    listing them. Strings match exactly (case-sensitive); ``None`` and bools match by identity, so ``0`` is not
    ``False``."""
    for c in choices:
        if value is c or (isinstance(c, str) and isinstance(value, str) and value == c):
            return value
    raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")


def check_bool(value: Any, name: str) -> bool:
    """Return ``value`` as a bool: ``True``/``False`` (also NumPy bools, and the ints 0 and 1).

    Anything else is refused, notably strings: ``"False"`` is truthy and would silently switch an option on.
    """
    if isinstance(value, (bool, np.bool_)) or (_is_integer(value) and int(value) in (0, 1)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


SEED_LIMIT = 2**63


def check_seed(seed: Any, name: str = "seed") -> int:
    """Return ``seed`` as an int in [0, 2**63), raising otherwise.

    Seeds are mixed modulo 2**64 (:func:`pathxai.core.seeding.item_seed`), so a larger or negative seed would
    silently alias another one (2**70 would give seed 0's results); refusing them keeps distinct seeds distinct.
    """
    if not _is_integer(seed):
        raise TypeError(f"{name} must be an integer in [0, 2**63), got {seed!r} ({type(seed).__name__})")
    seed = int(seed)
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{name} must be an integer in [0, 2**63), got {seed}")
    return seed


class ModelNotSupportedError(ValueError):
    """A method cannot explain this model as built (its architecture, not the input or the parameters): e.g.
    DeepLIFT on GELU / LayerNorm without ``strict=False``, attention rollout on a CNN, Grad-CAM without a layer to
    use. A ``ValueError``, so ``except ValueError`` catches it; :func:`pathxai.evaluate` records it as the method's
    refusal and goes on with the other methods."""


class NonFiniteError(ValueError):
    """A model output, target score or gradient came back NaN/Inf (a ``ValueError``, so ``except ValueError`` catches
    it). Raised by the shared evaluator instead of letting NaN flow silently into an attribution."""


MODEL_OUTPUT_CAUSE = ("the model itself returned non-finite values for finite inputs; likely causes: NaN/Inf in its "
                      "weights (a diverged training run), an overflow (float16, exp of a large logit), a log or a "
                      "division by zero inside the model, or inputs far outside the range it was trained on")
TARGET_SCORE_CAUSE = ("the callable target turned a finite model output into NaN/Inf; likely causes: a log or a "
                      "division by zero, or a sqrt of a negative value, in the target function")
GRADIENT_CAUSE = ("the model's output and target score were finite but their gradient w.r.t. the input is not; "
                  "likely causes: an operation with an undefined gradient at this input (sqrt or norm at 0, "
                  "pow with a fractional exponent at 0) or an overflow in the backward pass")


def check_finite(values: torch.Tensor, what: str, *, cause: str, first_item: int = 0, context: str = "",
                 ids: torch.Tensor | None = None, noun: str = "item") -> None:
    """Raise :class:`NonFiniteError` if ``values`` (n, ...) holds NaN/Inf, naming the affected items.

    One ``isfinite().all()`` on the fast path; the items are only located when something is wrong.

    Args:
        values: one row per item.
        what: e.g. ``"model output"``, ``"target score"``, ``"gradient"``.
        cause: the likely cause, for the message.
        first_item: index of row 0 among all items of the evaluation (items are numbered across chunks).
        context: e.g. ``" (in the integrated gradients evaluations)"``.
        ids: (n,) number of each row to report instead (e.g. the explained sample each row belongs to).
        noun: what a row is called in the message (``"item"``, ``"sample"``).
    """
    if not values.is_floating_point() and not values.is_complex():
        return
    if bool(torch.isfinite(values).all()):
        return
    bad = ~torch.isfinite(values.detach())
    if bad.ndim:
        rows = bad.reshape(bad.shape[0], -1).any(1).nonzero().flatten().cpu()
    else:
        rows = torch.zeros(1, dtype=torch.long)
    numbers_ = torch.unique(ids.detach().cpu().reshape(-1)[rows]) if ids is not None else rows + first_item
    shown = ", ".join(str(int(i)) for i in numbers_[:8]) + (", ..." if numbers_.numel() > 8 else "")
    raise NonFiniteError(f"{what} contains NaN/Inf for {numbers_.numel()} {noun}(s) [{shown}]{context}: {cause}")
