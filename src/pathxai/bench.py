"""Benchmark harness: overhead ratios against raw model passes, and peak memory as the work grows.

Speed is reported as a ratio against a reference measured in the same process, interleaved with the method's runs
(median of repeats): these machines are shared and noisy, ratios survive that, seconds do not.

- **overhead ratio**: a method's wall time divided by the time of the same number of plain model evaluations
  (forward-only and forward+backward, as the method's ``meta`` counts them) at the fastest chunk size for the model
  (swept once per model and mode), on the same input shape. 1.0 is the physical limit; anything above is the method's own work (masks, projections, bookkeeping).
- **memory growth**: peak resident memory above the starting point while the method runs with its cost parameter
  (``Method.cost_param``: steps, samples, masks) at 1x and 10x, each in a fresh process (a warm allocator would
  hide growth). Streaming methods stay flat.
"""
from __future__ import annotations

import gc
import math
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from .core import get_method
from .core.evaluator import evaluation_mode


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Context manager sampling this process's resident memory every ``interval`` s; ``.peak`` is the growth
    (bytes) above the value at entry. Linux only (reads /proc/self/statm)."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes() - self.start)
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        gc.collect()
        self.start = _rss_bytes()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes() - self.start)


def plain_passes(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, n_forward: int, n_gradient: int,
                 chunk: int, gradient_chunk: int | None = None) -> None:
    """Run ``n_forward`` inference passes in chunks of ``chunk`` and ``n_gradient`` forward+backward passes (input
    gradient) in chunks of ``gradient_chunk`` (default ``chunk``), of inputs shaped like ``x[:1]``: the reference a
    method's overhead is measured against."""
    sample = x[:1]
    gradient_chunk = chunk if gradient_chunk is None else gradient_chunk
    with evaluation_mode(model):
        with torch.inference_mode():
            for s in range(0, n_forward, chunk):
                model(sample.expand(min(chunk, n_forward - s), *sample.shape[1:]).contiguous())
        for s in range(0, n_gradient, gradient_chunk):
            batch = sample.expand(min(gradient_chunk, n_gradient - s), *sample.shape[1:]).clone().requires_grad_(True)
            out = model(batch)
            torch.autograd.grad(out[:, 0].sum() if out.ndim == 2 else out.sum(), batch)


CHUNK_CANDIDATES = (1, 2, 4, 8, 16, 32)
_FASTEST: dict[tuple[int, tuple[int, ...], bool, tuple[int, ...]], int] = {}


def fastest_chunk(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, gradient: bool, *,
                  candidates: Sequence[int] = CHUNK_CANDIDATES, samples: int = 32, repeats: int = 3) -> int:
    """The chunk size with the lowest time per sample for plain passes of inputs shaped like ``x[:1]`` (inference
    forward, or forward+backward when ``gradient``): the reference chunk of the overhead ratio, so a method that
    picks a slow chunk size pays for it. ``samples`` evaluations per candidate (at least one chunk); the candidates
    are timed round-robin ``repeats`` times (so a burst of load on a shared machine hits them all) and each keeps
    its best time. Cached per model, input shape, mode and candidates for the process.
    """
    cands = tuple(sorted({int(c) for c in candidates}))
    key = (id(model), tuple(x.shape[1:]), gradient, cands)
    if key not in _FASTEST:
        per_sample = {c: math.inf for c in cands}
        for _ in range(repeats):
            for c in cands:
                n = max(samples, c)
                t0 = time.perf_counter()
                plain_passes(model, x, 0 if gradient else n, n if gradient else 0, c)
                per_sample[c] = min(per_sample[c], (time.perf_counter() - t0) / n)
        _FASTEST[key] = min(per_sample, key=per_sample.__getitem__)
    return _FASTEST[key]


@dataclass
class OverheadResult:
    method: str
    seconds: float
    reference_seconds: float
    forward_evaluations: int
    gradient_evaluations: int
    chunk_size: int
    params: dict[str, Any] = field(default_factory=dict)
    reference_chunks: tuple[int, int] = (0, 0)
    # forward-only methods: median over runs of wall time ÷ the model's own forward time inside the same run --
    # immune to the machine's speed drifting between the method's runs and the reference's
    in_run_ratio: float | None = None

    @property
    def ratio(self) -> float:
        return self.seconds / self.reference_seconds


class _ForwardTimer:
    """Sums the wall time of an ``nn.Module``'s top-level forward calls through hooks (the model is not wrapped,
    so methods see it unchanged)."""

    def __init__(self, model: Any) -> None:
        self.seconds = 0.0
        self._t0 = 0.0
        self._handles = []
        if isinstance(model, torch.nn.Module):
            self._handles = [model.register_forward_pre_hook(self._pre), model.register_forward_hook(self._post)]

    def _pre(self, *_: Any) -> None:
        self._t0 = time.perf_counter()

    def _post(self, *_: Any) -> None:
        self.seconds += time.perf_counter() - self._t0

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def overhead_ratio(name: str, model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, target: Any = None,
                   *, repeats: int = 3, batch_size: int | str = "auto", reference_chunk: int | None = None,
                   **params: Any) -> OverheadResult:
    """Median wall time of ``get_method(name)(model, **params).explain(x, target)`` over ``repeats`` runs, against
    the same numbers of plain forward and forward+backward passes at the fastest chunk size for this model
    (:func:`fastest_chunk`, or ``reference_chunk`` for both), runs interleaved. One warm-up run settles ``auto``.

    Args:
        x: (N, ...) inputs; the method explains all of them, the reference replays passes of ``x[:1]``'s shape.
    """
    method = get_method(name)(model, batch_size=batch_size, progress=False, **params)
    warm = method.explain(x, target)
    chunk = max(warm.meta["chunk_sizes"]) if warm.meta["chunk_sizes"] else 1
    n_fwd, n_grad = warm.meta["forward_evaluations"], warm.meta["gradient_evaluations"]
    # the method's own chunk sizes are candidates too: the reference is never slower than replaying its choice
    cands = sorted(set(CHUNK_CANDIDATES) | set(warm.meta["chunk_sizes"]))
    fwd_chunk = reference_chunk or (fastest_chunk(model, x, False, candidates=cands) if n_fwd else 1)
    grad_chunk = reference_chunk or (fastest_chunk(model, x, True, candidates=cands) if n_grad else 1)
    ours, ref, inside = [], [], []
    for _ in range(repeats):
        timer = _ForwardTimer(model) if n_grad == 0 else None
        t0 = time.perf_counter()
        method.explain(x, target)
        ours.append(time.perf_counter() - t0)
        if timer is not None:
            timer.close()
            inside.append(timer.seconds)
        t0 = time.perf_counter()
        plain_passes(model, x, n_fwd, n_grad, fwd_chunk, grad_chunk)
        ref.append(time.perf_counter() - t0)
    in_run = statistics.median(o / t for o, t in zip(ours, inside)) if inside and all(inside) else None
    return OverheadResult(name, statistics.median(ours), statistics.median(ref), n_fwd, n_grad, chunk,
                          method.params(), (fwd_chunk if n_fwd else 0, grad_chunk if n_grad else 0), in_run)


@dataclass
class MemoryResult:
    method: str
    cost_param: str
    values: tuple[int, int]
    peak_bytes: tuple[int, int]

    @property
    def growth(self) -> float:
        """Peak at 10x over peak at 1x (1.0 = flat)."""
        return self.peak_bytes[1] / max(self.peak_bytes[0], 1)


def _peak_of_one_explanation(name: str, model: Any, x: torch.Tensor, target: Any, batch_size: int | str,
                             params: dict[str, Any]) -> int:
    """Peak RSS growth (bytes) while the method explains once, measured in this process (run it in a fresh one:
    see :func:`memory_growth`)."""
    method = get_method(name)(model, batch_size=batch_size, progress=False, **params)
    with PeakRSS() as rss:
        method.explain(x, target)
    return rss.peak


def _measure_in_fresh_process(name: str, model: Any, x: torch.Tensor, target: Any, batch_size: int | str,
                              params: dict[str, Any]) -> int:
    """:func:`_peak_of_one_explanation` in a new spawned process (a warm allocator would hide growth)."""
    import multiprocessing

    pool = multiprocessing.get_context("spawn").Pool(1)
    try:
        return pool.apply(_peak_of_one_explanation, (name, model, x, target, batch_size, params))
    finally:   # apply() has returned or raised: the worker is idle, so a clean shutdown never waits
        pool.close()
        pool.join()


def memory_growth(name: str, model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, target: Any = None,
                  *, base: int | None = None, batch_size: int | str = 4,
                  report: Callable[[str], None] | None = None, **params: Any) -> MemoryResult | None:
    """Peak RSS growth with the method's cost parameter at ``base`` and ``10 * base``; ``None`` if it has none.

    ``report`` (e.g. ``print``) receives one line before and one after each measurement: the two fresh processes
    take minutes on a large model, and a silent phase that long looks hung.

    Each value is measured in a fresh (spawned) process: in a warm process the allocator reuses pages a previous
    run left resident, which hides growth. The model, inputs and parameters are pickled to the child, so they must
    be picklable (bundled models are). One explanation per value; its peak includes one-time lazy initialisation
    (the same at both values).
    """
    cls = get_method(name)
    param = getattr(cls, "cost_param", None)
    if param is None:
        return None
    if base is None:
        base = int(params.pop(param, None) or 20)
    params.pop(param, None)
    peaks = []
    for k, value in enumerate((base, 10 * base), start=1):
        if report is not None:
            report(f"{name} {param}={value} ({k}/2): measuring peak memory in a fresh process ...")
        t0 = time.perf_counter()
        peaks.append(_measure_in_fresh_process(name, model, x, target, batch_size, {**params, param: value}))
        if report is not None:
            report(f"{name} {param}={value} ({k}/2): peak RSS growth {peaks[-1] / 2**20:.1f} MiB "
                   f"({time.perf_counter() - t0:.0f} s)")
    return MemoryResult(name, param, (base, 10 * base), (peaks[0], peaks[1]))


def format_overheads(rows: Sequence[OverheadResult]) -> str:
    """Markdown table of overhead results."""
    lines = ["| method | seconds | plain passes (s) | ratio | in-run ratio | forward evals | gradient evals | "
             "method's chunk | reference chunk (fwd / grad) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ref = " / ".join(str(c) if c else "-" for c in r.reference_chunks)
        inside = f"{r.in_run_ratio:.3f}" if r.in_run_ratio is not None else "-"
        lines.append(f"| {r.method} | {r.seconds:.3f} | {r.reference_seconds:.3f} | {r.ratio:.2f} | {inside} | "
                     f"{r.forward_evaluations} | {r.gradient_evaluations} | {r.chunk_size} | {ref} |")
    return "\n".join(lines)


def format_memory(rows: Sequence[MemoryResult]) -> str:
    """Markdown table of memory results."""
    lines = ["| method | parameter | 1x → 10x | peak RSS growth at 1x (MiB) | at 10x (MiB) | ratio |",
             "|---|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.method} | {r.cost_param} | {r.values[0]} → {r.values[1]} | {r.peak_bytes[0] / 2**20:.1f} "
                     f"| {r.peak_bytes[1] / 2**20:.1f} | {r.growth:.2f} |")
    return "\n".join(lines)
