"""Resource limits: refuse work whose cost is absurd before it starts, warn when it is merely large.

Every method estimates what an explanation will cost before it evaluates the model (:meth:`Method.cost`): the number
of **model evaluations** (samples sent through the model, forward-only or forward+backward: N inputs x steps, samples
or masks) and the **bytes** of the dense structures it allocates up front (quadrature rules, mask tables, per-pixel
statistics). :meth:`Method.explain` checks the estimate against the bounds below before any model call, and a
constructor refuses a setting whose cost for a single input already exceeds a bound (e.g. RELAX's ``tolerance=1e-6``,
about 2.6e12 masks). Metrics check their own estimates the same way. The memory the model's activations need per chunk
is not counted here: ``batch_size`` (and ``PATHXAI_MEMORY_BUDGET`` for ``"auto"``) bounds that.

Bounds, read from the environment at every check (so a running process can change them; ``inf`` lifts one):

==============================  ==============  =================================================================
``PATHXAI_MAX_EVALUATIONS``     ``1e8``         refuse: about 3 hours at 0.1 ms per evaluation (a small CNN),
                                                58 days at 50 ms (EfficientNet-Lite0 on 2 CPU cores)
``PATHXAI_WARN_EVALUATIONS``    ``1e7``         warn (:class:`ResourceLimitWarning`)
``PATHXAI_MAX_BYTES``           ``8 GiB``       refuse up-front allocations above this
``PATHXAI_WARN_BYTES``          ``1 GiB``       warn
==============================  ==============  =================================================================

In code, ``with pathxai.core.limits.override(max_evaluations=1e10): ...`` changes the bounds for the enclosed block
(this thread / task only). Refusals raise :class:`ResourceLimitError`, a ``ValueError`` whose message names the
parameter, the estimate, the bound and how to lift it.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Iterator

DEFAULT_MAX_EVALUATIONS = 1e8
DEFAULT_WARN_EVALUATIONS = 1e7
DEFAULT_MAX_BYTES = 8 * 2.0**30
DEFAULT_WARN_BYTES = 1 * 2.0**30

_ENV = {"max_evaluations": ("PATHXAI_MAX_EVALUATIONS", DEFAULT_MAX_EVALUATIONS),
        "warn_evaluations": ("PATHXAI_WARN_EVALUATIONS", DEFAULT_WARN_EVALUATIONS),
        "max_bytes": ("PATHXAI_MAX_BYTES", DEFAULT_MAX_BYTES),
        "warn_bytes": ("PATHXAI_WARN_BYTES", DEFAULT_WARN_BYTES)}


class ResourceLimitError(ValueError):
    """The estimated cost of a method or metric exceeds a bound of :mod:`pathxai.core.limits`."""


class ResourceLimitWarning(UserWarning):
    """The estimated cost of a method or metric exceeds a warning bound of :mod:`pathxai.core.limits`."""


@dataclass(frozen=True)
class Limits:
    """The bounds in force: model evaluations and bytes, each with a refusal and a warning level."""

    max_evaluations: float = DEFAULT_MAX_EVALUATIONS
    warn_evaluations: float = DEFAULT_WARN_EVALUATIONS
    max_bytes: float = DEFAULT_MAX_BYTES
    warn_bytes: float = DEFAULT_WARN_BYTES


@dataclass(frozen=True)
class Cost:
    """Estimated cost of one call, computed before any work.

    Attributes:
        evaluations: samples that will go through the model (forward or forward+backward); an estimate or a lower
            bound for adaptive methods.
        bytes: bytes of dense structures allocated up front (not the model's activations).
        param: the constructor parameter that scales the cost (e.g. ``"n_steps"``), for the message.
        value: that parameter's value.
        detail: how the estimate was formed, e.g. ``"3 inputs x 50 steps"``.
        bytes_param, bytes_value, bytes_detail: the same for the memory estimate, when another parameter drives it.
        hint: how to lower the cost, when "lower <param>" is not it (e.g. "raise tolerance").
    """

    evaluations: float = 0.0
    bytes: float = 0.0
    param: str | None = None
    value: Any = None
    detail: str = ""
    bytes_param: str | None = None
    bytes_value: Any = None
    bytes_detail: str = ""
    hint: str = ""


# overrides per thread / task, as an immutable tuple of (name, value) pairs
_OVERRIDE: contextvars.ContextVar[tuple[tuple[str, float], ...]] = contextvars.ContextVar("pathxai_limits",
                                                                                          default=())


def _parse(name: str, text: str) -> float:
    if text.strip().lower() in ("inf", "none", "off", "unlimited"):
        return math.inf
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be a number or 'inf', got {text!r}") from None
    if math.isnan(value) or value < 0:
        raise ValueError(f"environment variable {name} must be a number >= 0 or 'inf', got {text!r}")
    return value


def current() -> Limits:
    """The bounds in force: :func:`override` values, else the environment variables, else the defaults."""
    forced = dict(_OVERRIDE.get())
    values = {}
    for field_name, (env, default) in _ENV.items():
        if field_name in forced:
            values[field_name] = forced[field_name]
        else:
            text = os.environ.get(env)
            values[field_name] = default if text is None or not text.strip() else _parse(env, text)
    return Limits(**values)


@contextlib.contextmanager
def override(**bounds: float) -> Iterator[Limits]:
    """Change some bounds (``max_evaluations``, ``warn_evaluations``, ``max_bytes``, ``warn_bytes``) inside a block.

    Example: ``with override(max_evaluations=math.inf): method.explain(x)``. Yields the bounds in force.
    """
    unknown = sorted(set(bounds) - set(_ENV))
    if unknown:
        raise TypeError(f"unknown limit(s) {unknown}; expected some of {', '.join(_ENV)}")
    for key, value in bounds.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
            raise ValueError(f"{key} must be a number >= 0 (or math.inf), got {value!r}")
    token = _OVERRIDE.set(tuple({**dict(_OVERRIDE.get()), **{k: float(v) for k, v in bounds.items()}}.items()))
    try:
        yield current()
    finally:
        _OVERRIDE.reset(token)


def _fmt(value: float) -> str:
    return f"{value:.3g}" if value < 1e6 else f"{value:.2e}"


def _fmt_bytes(value: float) -> str:
    for unit, size in (("EiB", 2**60), ("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.0f} B"


def check(cost: Cost, what: str, *, warn: bool = True) -> Cost:
    """Refuse ``cost`` above the bounds in force, warn above the warning bounds; returns ``cost``.

    Args:
        cost: the estimate.
        what: who asks, for the message, e.g. ``"method 'ig'"``.
        warn: emit :class:`ResourceLimitWarning` above the warning bounds (construction-time checks do not: the
            real number of inputs is not known yet).
    Raises:
        ResourceLimitError: above ``max_evaluations`` or ``max_bytes``.
    """
    lim = current()
    setting = f" with {cost.param}={cost.value!r}" if cost.param else ""
    how = f" ({cost.detail})" if cost.detail else ""
    remedy = cost.hint or (f"lower {cost.param}" if cost.param else "")
    lower = f"{remedy} or explain fewer inputs per call" if remedy else "explain fewer inputs per call"
    if cost.evaluations > lim.max_evaluations:
        raise ResourceLimitError(
            f"{what}{setting} needs about {_fmt(cost.evaluations)} model evaluations{how}, above the limit of "
            f"{_fmt(lim.max_evaluations)} (PATHXAI_MAX_EVALUATIONS); {lower}, or lift the limit: set the environment "
            "variable PATHXAI_MAX_EVALUATIONS (a number or 'inf') or use "
            "`with pathxai.core.limits.override(max_evaluations=...)`")
    bsetting = f" with {cost.bytes_param}={cost.bytes_value!r}" if cost.bytes_param else setting
    bhow = f" ({cost.bytes_detail})" if cost.bytes_detail else ""
    bremedy = f"lower {cost.bytes_param}" if cost.bytes_param else (cost.hint or f"lower {cost.param or 'the setting'}")
    if cost.bytes > lim.max_bytes:
        raise ResourceLimitError(
            f"{what}{bsetting} would allocate about {_fmt_bytes(cost.bytes)} up front{bhow}, above the limit of "
            f"{_fmt_bytes(lim.max_bytes)} (PATHXAI_MAX_BYTES); {bremedy}, or lift the limit: set the environment "
            "variable PATHXAI_MAX_BYTES (bytes, or 'inf') or use "
            "`with pathxai.core.limits.override(max_bytes=...)`")
    if warn and cost.evaluations > lim.warn_evaluations:
        warnings.warn(f"{what}{setting} needs about {_fmt(cost.evaluations)} model evaluations{how} (warning bound "
                      f"{_fmt(lim.warn_evaluations)}, PATHXAI_WARN_EVALUATIONS); this may take very long",
                      ResourceLimitWarning, stacklevel=3)
    if warn and cost.bytes > lim.warn_bytes:
        warnings.warn(f"{what}{bsetting} allocates about {_fmt_bytes(cost.bytes)} up front{bhow} (warning bound "
                      f"{_fmt_bytes(lim.warn_bytes)}, PATHXAI_WARN_BYTES)", ResourceLimitWarning, stacklevel=3)
    return cost


__all__ = ["Cost", "DEFAULT_MAX_BYTES", "DEFAULT_MAX_EVALUATIONS", "DEFAULT_WARN_BYTES", "DEFAULT_WARN_EVALUATIONS",
           "Limits", "ResourceLimitError", "ResourceLimitWarning", "check", "current", "override"]
