"""One batched model evaluator that every method and metric uses.

Methods describe their work as ``total`` items (e.g. N images x K path steps) and a function that builds the inputs
of items ``start:stop``; the evaluator decides how many items go through the model at once. A single knob,
``batch_size``, caps that number and so bounds peak memory. Its default ``"auto"`` finds the fastest chunk size for
the model and sample shape by timing the first chunks of real work (sizes 1, 2, 4, ... each timed twice, stopping once
a size is clearly slower than the best), so the probe costs no extra model evaluations; the choice is cached per
(model, sample shape, forward/gradient) for the rest of the process. On a 2-core CPU the fastest chunk is small
(EfficientNet-Lite0 forward+backward: ~50 ms/image in chunks of 4, ~125 ms/image in chunks of 32).

Results never depend on the chunking beyond float32 rounding of the model itself: methods accumulate per item in item
order (see :func:`accumulate_rows`). With an integer ``batch_size`` results are bit-for-bit reproducible.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from .files import atomic_write_text
from .placement import (Placement, as_logits, free_device_memory, is_out_of_memory, model_placement, to_model_input,
                        widen_output)
from .validation import (GRADIENT_CAUSE, MODEL_OUTPUT_CAUSE, TARGET_SCORE_CAUSE, check_finite,
                         check_model_output, check_positive_int)

AUTO = "auto"
_CANDIDATE_SIZES = (1, 2, 4, 8, 16, 32, 64)
# A size whose per-sample time exceeds the best seen by this factor ends the probe: on CPUs the per-sample time is
# flat for small chunks and grows for large ones, so stopping early costs little and exploring far costs a lot.
_SLOWER_FACTOR = 1.10
_TIMINGS_PER_SIZE = 2
_TIE_FACTOR = 1.05


def default_memory_budget(device: torch.device | None = None) -> int:
    """Bytes the evaluator may use for activations of one chunk: ``PATHXAI_MEMORY_BUDGET``, else on a CUDA device
    half of its free memory (``torch.cuda.mem_get_info``), else 1/4 of free RAM (CPU, and MPS's unified memory)."""
    env = os.environ.get("PATHXAI_MEMORY_BUDGET")
    if env:
        try:
            value = float(env)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 1:
            raise ValueError(f"environment variable PATHXAI_MEMORY_BUDGET must be a number of bytes >= 1, got {env!r}")
        return int(value)
    if device is not None and device.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(device)
        return max(64 * 2**20, int(free) // 2)
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return max(256 * 2**20, min(int(pages) // 4, 8 * 2**30))
    except (ValueError, OSError, AttributeError):
        return 2 * 2**30


@dataclass
class _AutoProbe:
    """Chunk-size probe state for one (model, sample shape, mode).

    Sizes from 1 up to ``max_size`` are timed upwards until one is clearly slower than the best; the smallest size
    within ``_TIE_FACTOR`` of the best wins (on these CPUs per-sample time is flat for small chunks and grows for
    large ones, so a near-tie at a large size is usually noise that will not hold). A choice remembered on disk only
    caps ``max_size`` at twice that size: every new process re-checks the smaller sizes rather than trusting it,
    because a probe taken while the machine was loaded can pick a size that is slow on a quiet machine, and a blindly
    trusted cache would keep that choice forever.
    """

    max_size: int
    warm: bool = False
    chosen: int | None = None
    per_sample: dict[int, float] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)

    def candidates(self) -> list[int]:
        return [s for s in _CANDIDATE_SIZES if s <= self.max_size] or [1]

    def next_size(self) -> int:
        if self.chosen is not None:
            return self.chosen
        if not self.warm:
            return 1
        for size in self.candidates():
            if self.counts.get(size, 0) < _TIMINGS_PER_SIZE:
                return size
        return self._choose()

    def record(self, size: int, seconds: float) -> None:
        if self.chosen is not None:
            return
        if not self.warm:  # the first call pays allocator and kernel warm-up: not representative
            self.warm = True
            return
        per = seconds / size
        self.per_sample[size] = min(per, self.per_sample.get(size, float("inf")))
        self.counts[size] = self.counts.get(size, 0) + 1
        if self.counts[size] >= _TIMINGS_PER_SIZE:
            best = min(self.per_sample.values())
            remaining = [s for s in self.candidates() if self.counts.get(s, 0) < _TIMINGS_PER_SIZE]
            if self.per_sample[size] > _SLOWER_FACTOR * best or not remaining:
                self._choose()

    def _choose(self) -> int:
        if not self.per_sample:
            self.chosen = 1
        else:
            best = min(self.per_sample.values())
            self.chosen = min(s for s, t in self.per_sample.items() if t <= _TIE_FACTOR * best)
        return self.chosen


# Probe state per model, dropped when the model is garbage collected.
_PROBES: "weakref.WeakKeyDictionary[Any, dict[tuple, _AutoProbe]]" = weakref.WeakKeyDictionary()
_PROBES_BY_ID: dict[int, dict[tuple, _AutoProbe]] = {}


def _probe_table(model: Any) -> dict[tuple, _AutoProbe]:
    try:
        return _PROBES.setdefault(model, {})
    except TypeError:  # not weak-referenceable
        return _PROBES_BY_ID.setdefault(id(model), {})


def clear_auto_cache(disk: bool = False) -> None:
    """Forget every cached automatic chunk size (in this process; also on disk with ``disk=True``)."""
    _PROBES.clear()
    _PROBES_BY_ID.clear()
    if disk and _disk_cache_path() is not None:
        _disk_cache_path().unlink(missing_ok=True)  # type: ignore[union-attr]


def _disk_cache_path() -> "Path | None":
    if os.environ.get("PATHXAI_NO_DISK_CACHE"):
        return None
    root = Path(os.environ.get("PATHXAI_CACHE", Path.home() / ".cache" / "pathxai"))
    return root / "chunk_sizes.json"


def model_fingerprint(model: Any) -> str | None:
    """Identifies a model across processes for the chunk-size cache: class, parameter count and sum."""
    if not isinstance(model, torch.nn.Module):
        return None
    params = list(model.parameters())
    with torch.no_grad():
        total = float(sum(p.double().sum() for p in params)) if params else 0.0
    name = getattr(model, "model_name", type(model).__qualname__)
    return f"{type(model).__module__}.{type(model).__qualname__}:{name}:{sum(p.numel() for p in params)}:{total:.6e}"


def _disk_key(model: Any, key: tuple) -> str | None:
    fp = model_fingerprint(model)
    if fp is None:
        return None
    return f"{fp}|shape={list(key[0])}|grad={key[1]}|threads={torch.get_num_threads()}|torch={torch.__version__}"


def _load_disk_choice(model: Any, key: tuple) -> int | None:
    path, dkey = _disk_cache_path(), _disk_key(model, key)
    if path is None or dkey is None or not path.exists():
        return None
    try:
        value = json.loads(path.read_text()).get(dkey)
    except (OSError, ValueError):
        return None
    return int(value) if isinstance(value, int) and value >= 1 else None


def _save_disk_choice(model: Any, key: tuple, size: int) -> None:
    path, dkey = _disk_cache_path(), _disk_key(model, key)
    if path is None or dkey is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        table = json.loads(path.read_text()) if path.exists() else {}
        table[dkey] = int(size)
        atomic_write_text(path, json.dumps(table, indent=0))  # parallel processes never see half a file
    except (OSError, ValueError):
        pass  # the cache is an optimisation only


def estimate_sample_bytes(model: Any, sample: torch.Tensor,
                          call: Callable[[torch.Tensor], Any] | None = None) -> int | None:
    """Bytes of activations one sample produces in a forward pass (sum over leaf modules' outputs), or ``None``.

    Args:
        sample: (1, ...) input.
        call: how to run the model on ``sample`` (default ``model(sample)``; the evaluator passes its own call,
            which puts the sample on the model's device and dtype).
    """
    if not isinstance(model, torch.nn.Module):
        return None
    total = [0]

    def hook(_module: torch.nn.Module, _inp: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            total[0] += out.numel() * out.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not any(True for _ in m.children())]
    try:
        with torch.inference_mode():
            (call or model)(sample)
    finally:
        for h in handles:
            h.remove()
    return total[0] + sample.numel() * sample.element_size()


class GradientUnavailableError(RuntimeError):
    """A gradient method cannot differentiate the model here (inference mode, or an output without autograd graph).

    A ``RuntimeError``: the inputs are fine, the calling context or the model is not differentiable."""


PERTURBATION_HINT = ("gradient methods need an output that depends differentiably on the input; explain this model "
                     "with a perturbation method instead (e.g. occlusion, rise, lime, kernel_shap)")


def _context(desc: str | None) -> str:
    return f" (in the {desc} evaluations)" if desc else ""


def check_gradients_possible(desc: str | None = None) -> None:
    """Raise :class:`GradientUnavailableError` under ``torch.inference_mode()``, which ``torch.enable_grad()``
    cannot lift (tensors made there never record autograd history). ``torch.no_grad()`` is fine: the evaluator
    enables grad itself."""
    if torch.is_inference_mode_enabled():
        raise GradientUnavailableError(
            f"gradients are unavailable{_context(desc)}: explain was called inside torch.inference_mode(), which "
            "torch.enable_grad() cannot lift; call explain outside torch.inference_mode() (torch.no_grad() is fine)")


def _no_graph_message(out: torch.Tensor | None, desc: str | None) -> str:
    if out is not None and not out.requires_grad:
        what = ("the model output does not require grad: the model detaches it, converts through NumPy, or runs "
                "under torch.no_grad()/inference_mode internally, so it does not depend differentiably on the input")
    elif out is not None:
        what = ("the target score does not require grad although the model output does: the callable target "
                "detaches the output (e.g. .detach(), .item(), NumPy)")
    else:
        what = "the model output does not depend differentiably on the input (its autograd graph does not reach it)"
    return f"cannot compute gradients{_context(desc)}: {what}; {PERTURBATION_HINT}"


def check_batch_size(batch_size: Any) -> int | str:
    """Validate the ``batch_size`` knob: a positive int or ``"auto"``."""
    if isinstance(batch_size, str) and batch_size == AUTO:
        return AUTO
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be a positive int or 'auto', got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or 'auto', got {batch_size}")
    return batch_size


@contextlib.contextmanager
def evaluation_mode(model: Any) -> Iterator[None]:
    """Put an ``nn.Module`` in eval mode with frozen parameters; restore both afterwards.

    Explanations of a model in training mode would depend on the batch (batch norm) and on chance (dropout);
    freezing parameters stops autograd from keeping what parameter gradients would need.
    """
    if not isinstance(model, torch.nn.Module):
        yield
        return
    modes = {m: m.training for m in model.modules()}
    grads = {p: p.requires_grad for p in model.parameters()}
    model.eval()
    for p in grads:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode
        for p, flag in grads.items():
            p.requires_grad_(flag)


def accumulate_rows(acc: torch.Tensor, index: torch.Tensor, rows: torch.Tensor,
                    weights: torch.Tensor | None = None) -> None:
    """``acc[index[j]] += weights[j] * rows[j]`` for j in order, one row at a time.

    Adding rows one by one in item order makes the floating-point sum independent of how items were chunked, which
    keeps results bit-for-bit identical across ``batch_size`` values (a batched ``index_add_`` would not be).

    Args:
        acc: (M, ...) accumulator, updated in place.
        index: (n,) rows of ``acc`` to add to.
        rows: (n, ...) values.
        weights: optional (n,) scalar weight per row.
    """
    for j in range(rows.shape[0]):
        row = rows[j] if weights is None else rows[j] * weights[j]
        acc[int(index[j])] += row


class OutOfMemoryBackoffWarning(UserWarning):
    """A chunk ran out of memory and was retried in halves; the smaller size is kept for the model and shape."""


# Chunk-size caps learnt from out-of-memory errors, per model and (sample shape, gradient?): the evaluator never
# again tries a chunk that failed, in this process.
_OOM_CAPS: "weakref.WeakKeyDictionary[Any, dict[tuple, int]]" = weakref.WeakKeyDictionary()
_OOM_CAPS_BY_ID: dict[int, dict[tuple, int]] = {}


def _oom_caps(model: Any) -> dict[tuple, int]:
    try:
        return _OOM_CAPS.setdefault(model, {})
    except TypeError:  # not weak-referenceable
        return _OOM_CAPS_BY_ID.setdefault(id(model), {})


class BatchedEvaluator:
    """Runs a model over many inputs in chunks of at most ``batch_size`` samples and counts evaluations.

    The model is called where it lives: each chunk is moved to the model's device and cast to its dtype, a structured
    output (``ModelOutput``, dict, tuple) is unwrapped to its logits, and a float16/bfloat16 output is widened to
    float32 before it is scored. A chunk that runs out of memory (``torch.OutOfMemoryError`` on a GPU, the CPU
    allocator's ``RuntimeError``) is retried in halves -- nothing was handed to the caller for it yet, so no work is
    lost or counted twice -- and the smaller size is kept for that model and input shape (a warning says so once).

    Args:
        model: callable ``(n, ...) -> (n, ...)`` tensor, usually an ``nn.Module``.
        batch_size: positive int (max samples per forward or forward+backward) or ``"auto"``.
        progress: show a tqdm bar for long runs; ``None`` = only when stderr is a terminal.
        memory_budget: bytes of activations a chunk may use in ``"auto"`` mode (default :func:`default_memory_budget`
            of the model's device).
    Attributes:
        n_forward: samples evaluated forward-only (under inference mode).
        n_gradient: samples evaluated forward + backward.
        placement: the model's device and dtype (refreshed by :meth:`refresh_placement`).
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], batch_size: int | str = AUTO,
                 progress: bool | None = None, memory_budget: int | None = None) -> None:
        if not callable(model):
            raise TypeError(f"model must be callable (an nn.Module or a function), got {type(model).__name__}")
        self.model = model
        self.batch_size = check_batch_size(batch_size)
        self.progress = progress
        self.memory_budget = None if memory_budget is None else check_positive_int(memory_budget, "memory_budget")
        self.placement: Placement = model_placement(model)
        self.n_forward = 0
        self.n_gradient = 0
        self.n_probe = 0
        self.chunk_sizes_used: set[int] = set()
        self._chunk_seconds: float | None = None   # set by forward_chunks / gradient_chunks, read by chunks()
        self._chunk_split = False                  # the current chunk was split after running out of memory

    # ------------------------------------------------------------------ placement
    def refresh_placement(self) -> Placement:
        """Re-read the model's device and dtype (the user may have moved the model since the method was built)."""
        self.placement = model_placement(self.model)
        return self.placement

    def work_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` detached, on the model's device (re-read now), in the work dtype: the widest of x's, the model's
        and float32 (accumulators never run in float16/bfloat16)."""
        placement = self.refresh_placement()
        return x.detach().to(device=placement.device or x.device, dtype=placement.work_dtype(x.dtype))

    @property
    def model_name(self) -> str:
        return str(getattr(self.model, "model_name", type(self.model).__name__))

    def call_model(self, inputs: torch.Tensor) -> torch.Tensor:
        """The model's output for ``inputs`` (n, ...): on the model's device and dtype, unwrapped to one tensor,
        widened to float32 if the model computes in float16/bfloat16, and to the inputs' dtype if that is wider
        (a float64 input is explained in float64 around a float32 model). Differentiable; no checks, no counting."""
        out = widen_output(as_logits(self.model(to_model_input(inputs, self.placement)), self.model_name))
        if out.is_floating_point() and inputs.is_floating_point():
            wide = torch.promote_types(out.dtype, inputs.dtype)
            if wide != out.dtype:
                out = out.to(wide)
        return out

    def checked_forward(self, desc: str, first_item: int, fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                        depends_on: str = "the input") -> Callable[[torch.Tensor], torch.Tensor]:
        """A forward for code that runs the model itself (Captum): :meth:`call_model`, checked as the evaluator's
        own chunks are (one tensor per input, finite, differentiable when grad is on), then the callable target
        ``fn`` if any. ``desc`` names the method in errors, ``first_item`` the batch offset of the inputs it gets,
        ``depends_on`` what the output must depend on (e.g. a hooked layer's activations)."""
        def forward(inp: torch.Tensor) -> torch.Tensor:
            out = check_model_output(self.call_model(inp), inp.shape[0])
            check_finite(out, "model output", cause=MODEL_OUTPUT_CAUSE, first_item=first_item,
                         context=_context(desc))
            if torch.is_grad_enabled() and not out.requires_grad:
                raise GradientUnavailableError(
                    f"cannot compute gradients{_context(desc)}: the model output does not require grad: the model "
                    "detaches it, converts through NumPy, or runs under torch.no_grad()/inference_mode internally, "
                    f"so it does not depend differentiably on {depends_on}; {PERTURBATION_HINT}")
            return out if fn is None else fn(out)
        return forward

    # ------------------------------------------------------------------ accounting
    def reset_counts(self) -> None:
        self.n_forward = self.n_gradient = self.n_probe = 0
        self.chunk_sizes_used = set()

    @property
    def n_evaluations(self) -> int:
        """Samples that went through the model (forward-only plus forward+backward), probes excluded."""
        return self.n_forward + self.n_gradient

    def count(self, n: int, grad: bool) -> None:
        """Record ``n`` samples evaluated outside :meth:`forward_chunks` / :meth:`gradient_chunks` (e.g. by Captum)."""
        if grad:
            self.n_gradient += n
        else:
            self.n_forward += n

    # ------------------------------------------------------------------ chunking
    @staticmethod
    def _key(sample_shape: Sequence[int], grad: bool) -> tuple:
        return (tuple(int(s) for s in sample_shape), bool(grad))

    def _probe(self, sample_shape: Sequence[int], grad: bool,
               example: Callable[[], torch.Tensor] | None) -> _AutoProbe:
        table = _probe_table(self.model)
        key = self._key(sample_shape, grad)
        probe = table.get(key)
        if probe is None:
            cached = _load_disk_choice(self.model, key)
            max_size = _CANDIDATE_SIZES[-1]
            if example is not None:
                per_sample = estimate_sample_bytes(self.model, example()[:1], self.call_model)
                self.n_probe += 1
                if per_sample:
                    factor = 3 if grad else 1  # saved activations plus their gradients
                    budget = self.memory_budget or default_memory_budget(self.placement.device)
                    max_size = max(1, min(max_size, budget // (factor * per_sample)))
            if cached is not None:
                max_size = min(max_size, 2 * cached)
            cap = _oom_caps(self.model).get(key)
            if cap is not None:
                max_size = min(max_size, cap)
            probe = table[key] = _AutoProbe(max_size=max_size)
        return probe

    def chunks(self, total: int, *, grad: bool, sample_shape: Sequence[int] = (),
               example: Callable[[], torch.Tensor] | None = None, desc: str | None = None
               ) -> Iterator[tuple[int, int]]:
        """Yield ``(start, stop)`` ranges covering ``range(total)``, each at most ``batch_size`` long.

        In ``"auto"`` mode the time of each chunk tunes the size: the building of its inputs and the model call as
        :meth:`forward_chunks` / :meth:`gradient_chunks` report it, else all the time the caller spends on it; pass
        ``sample_shape`` (shape of one model input) so that the choice is cached per shape, and ``example`` (returns a
        (1, ...) input; called once per new shape) to bound the size by the memory budget. A size that ran out of
        memory before (for this model and shape) is never used again. Evaluations are not counted here: see
        :meth:`count`. Callers that run the model themselves should use :meth:`map_chunks`, which also retries a
        chunk that runs out of memory.
        """
        if total <= 0:
            return
        probe = self._probe(sample_shape, grad, example) if self.batch_size == AUTO else None
        caps = _oom_caps(self.model)
        key = self._key(sample_shape, grad)
        show = self.shows_progress
        bar = tqdm(total=total, desc=desc or ("gradients" if grad else "forward"), unit="eval", leave=False,
                   disable=not show, delay=2.0)
        self._progress_bar = bar   # for progress_note while the caller consumes the chunks
        start = 0
        try:
            while start < total:
                size = probe.next_size() if probe is not None else self.batch_size
                size = min(int(size), caps.get(key, int(size)))
                stop = min(total, start + size)
                t0 = time.perf_counter()
                self._chunk_seconds = None
                self._chunk_split = False
                yield start, stop
                if not self._chunk_split:
                    self.chunk_sizes_used.add(stop - start)
                # the model evaluations' own time when the caller reported it: the consumer's work between chunks
                # can be lumpy (e.g. statistics merged every 64 masks) and would bias the comparison of sizes
                elapsed = self._chunk_seconds if self._chunk_seconds is not None else time.perf_counter() - t0
                if probe is not None and stop - start == size and probe.chosen is None and not self._chunk_split:
                    probe.record(size, elapsed)
                    if probe.chosen is not None:
                        _save_disk_choice(self.model, key, probe.chosen)
                bar.update(stop - start)
                start = stop
        finally:
            bar.close()
            self._progress_bar = None

    @property
    def shows_progress(self) -> bool:
        """Whether chunks run under a progress bar: ``progress`` when set, else when stderr is a terminal."""
        return bool(self.progress) if self.progress is not None else sys.stderr.isatty()

    def progress_note(self, text: str) -> None:
        """Show ``text`` after the running progress bar (e.g. a sampling method's current relative error); a no-op
        when no bar is shown."""
        bar = getattr(self, "_progress_bar", None)
        if bar is not None and not bar.disable:
            bar.set_postfix_str(text, refresh=False)

    def _with_backoff(self, start: int, stop: int, work: Callable[[int, int], Any], grad: bool,
                      sample_shape: Sequence[int], desc: str | None) -> Iterator[tuple[int, int, Any]]:
        """``(a, b, work(a, b))`` over ``start..stop``: the whole range, or -- when ``work`` runs out of memory --
        its halves, recursively, in order. ``work`` must have no lasting effect before it returns."""
        pending = [(start, stop)]
        while pending:
            a, b = pending.pop(0)
            failed = False
            try:
                result = work(a, b)
            except Exception as err:  # noqa: BLE001 - only out-of-memory errors are retried
                if not is_out_of_memory(err) or b - a <= 1:
                    raise
                failed = True
            if not failed:
                if self._chunk_split:
                    self.chunk_sizes_used.add(b - a)
                yield a, b, result
                continue
            # out of the except block: the traceback (and the tensors its frames hold) is gone before the retry
            free_device_memory(self.placement.device)
            half = (b - a + 1) // 2
            self._remember_oom(b - a, half, grad, sample_shape, desc)
            self._chunk_split = True
            pending[:0] = [(a, a + half), (a + half, b)]

    def _remember_oom(self, size: int, half: int, grad: bool, sample_shape: Sequence[int], desc: str | None) -> None:
        key = self._key(sample_shape, grad)
        caps = _oom_caps(self.model)
        if caps.get(key, size + 1) > half:
            first = not caps   # one warning per model, whatever the shape or kind of evaluation
            caps[key] = half
            probe = _probe_table(self.model).get(key)
            if probe is not None:   # "auto": never probe or choose a size that failed
                probe.max_size = min(probe.max_size, half)
                if probe.chosen is not None and probe.chosen > half:
                    probe.chosen = half
            if first:
                where = self.placement.device or "the input's device"
                warnings.warn(f"out of memory on {where} in a chunk of {size} {'gradient' if grad else 'forward'} "
                              f"evaluations{_context(desc)} of {self.model_name}: retrying in chunks of at most "
                              f"{half}, kept for this model and input shape (pass batch_size={half} or smaller to "
                              "skip the retry)", OutOfMemoryBackoffWarning, stacklevel=4)

    def map_chunks(self, total: int, fn: Callable[[int, int], Any], *, grad: bool, sample_shape: Sequence[int],
                   desc: str | None = None) -> Iterator[tuple[int, int, Any]]:
        """``(start, stop, fn(start, stop))`` over chunks of ``range(total)``, for callers that run the model
        themselves (e.g. through Captum); a chunk that runs out of memory is retried in halves (see the class doc).
        ``fn`` must count its evaluations (:meth:`count`) only once it succeeds."""
        for start, stop in self.chunks(total, grad=grad, sample_shape=sample_shape, desc=desc):
            yield from self._with_backoff(start, stop, fn, grad, sample_shape, desc)

    # ------------------------------------------------------------------ evaluation
    def _call(self, inputs: torch.Tensor, first_item: int = 0, desc: str | None = None) -> torch.Tensor:
        """The model output for ``inputs`` (n, ...), checked: one tensor with n rows, all finite.

        ``first_item`` numbers the rows among all items of the evaluation, for the error message.
        """
        out = check_model_output(self.call_model(inputs), inputs.shape[0])
        # one isfinite per chunk: a NaN output would otherwise flow silently into an attribution or a metric
        check_finite(out, "model output", cause=MODEL_OUTPUT_CAUSE, first_item=first_item, context=_context(desc))
        return out

    def forward_chunks(self, total: int, make_batch: Callable[[int, int], torch.Tensor], *,
                       sample_shape: Sequence[int], desc: str | None = None
                       ) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Evaluate items ``0..total`` forward-only under inference mode, chunk by chunk.

        Args:
            make_batch: ``(start, stop) -> (stop - start, *sample_shape)`` inputs of those items.
        Yields:
            ``(start, stop, output)`` with ``output`` the model output (stop - start, ...), a normal tensor.
        Raises:
            NonFiniteError: (a ``ValueError``) when the model returns NaN/Inf for some item.
        """
        example = lambda: make_batch(0, 1).detach()  # noqa: E731

        def work(start: int, stop: int) -> torch.Tensor:
            inputs = make_batch(start, stop)
            with torch.inference_mode():
                out = self._call(inputs, start, desc)
            return out.clone()  # a normal tensor: usable with autograd and in-place ops later

        for start, stop in self.chunks(total, grad=False, sample_shape=sample_shape, example=example, desc=desc):
            t0 = time.perf_counter()
            done = list(self._with_backoff(start, stop, work, False, sample_shape, desc))
            self._chunk_seconds = time.perf_counter() - t0
            for a, b, out in done:
                self.n_forward += b - a
                yield a, b, out

    def gradient_chunks(self, total: int, make_batch: Callable[[int, int], Any],
                        score: Callable[[torch.Tensor, int, int], torch.Tensor], *,
                        sample_shape: Sequence[int], desc: str | None = None
                        ) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
        """Evaluate items with gradients, chunk by chunk.

        Grad mode is switched on here, so callers may run under ``torch.no_grad()``; ``torch.inference_mode()``
        cannot be lifted that way and is refused.

        Args:
            make_batch: ``(start, stop) -> inputs`` (gradient w.r.t. the inputs), or ``-> (inputs, wrt)`` where
                ``inputs`` was built from the leaf tensor ``wrt`` (which must require grad) inside this call.
            score: ``(output, start, stop) -> (stop - start,)`` scalar per item; items must not interact.
        Yields:
            ``(start, stop, scores, grads)``: detached (n,) scores and the gradient of each item's score w.r.t.
            its input (or ``wrt``), in the input's dtype.
        Raises:
            GradientUnavailableError: under ``torch.inference_mode()``, or when the score does not depend
                differentiably on the input (a model that detaches its output or goes through NumPy).
            NonFiniteError: when the model output, the score or the gradient is NaN/Inf for some item.
        """
        if total > 0:
            check_gradients_possible(desc)

        def example() -> torch.Tensor:
            with torch.no_grad():
                built = make_batch(0, 1)
            return (built[0] if isinstance(built, tuple) else built).detach()

        def work(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.enable_grad():
                built = make_batch(start, stop)
                if isinstance(built, tuple):
                    inputs, wrt = built
                    if not wrt.requires_grad:
                        raise ValueError("make_batch returned (inputs, wrt) but wrt does not require grad")
                else:
                    inputs = wrt = built.detach().requires_grad_(True)
                out = self._call(inputs, start, desc)
                scores = score(out, start, stop)
                if scores.shape != (stop - start,):
                    raise ValueError(f"score must return shape ({stop - start},), got {tuple(scores.shape)}")
                check_finite(scores, "target score", cause=TARGET_SCORE_CAUSE, first_item=start,
                             context=_context(desc))
                if not scores.requires_grad:
                    raise GradientUnavailableError(_no_graph_message(out, desc))
                (grads,) = torch.autograd.grad(scores.sum(), wrt, allow_unused=True)
                if grads is None:  # the graph exists but does not reach the input
                    raise GradientUnavailableError(_no_graph_message(None, desc))
            check_finite(grads, "gradient of the target score w.r.t. the input", cause=GRADIENT_CAUSE,
                         first_item=start, context=_context(desc))
            return scores.detach(), grads

        for start, stop in self.chunks(total, grad=True, sample_shape=sample_shape, example=example, desc=desc):
            t0 = time.perf_counter()
            done = list(self._with_backoff(start, stop, work, True, sample_shape, desc))
            self._chunk_seconds = time.perf_counter() - t0
            for a, b, (scores, grads) in done:
                self.n_gradient += b - a
                yield a, b, scores, grads

    def forward(self, x: torch.Tensor, desc: str | None = None) -> torch.Tensor:
        """Model output for all of ``x`` (N, ...), evaluated in chunks under inference mode. Returns (N, ...)."""
        parts = [out for _, _, out in self.forward_chunks(x.shape[0], lambda a, b: x[a:b],
                                                          sample_shape=x.shape[1:], desc=desc)]
        return torch.cat(parts, dim=0)
