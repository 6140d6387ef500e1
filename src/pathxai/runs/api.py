"""``px.run`` (batch explanation into a resumable store) and ``px.load_run`` (its results as a table)."""
from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..core.placement import resolve_device
from ..core.validation import check_positive_int, check_seed
from .store import SETTINGS_KEYS, RunStore, _atomic_write, iter_chunks
from .work import RUN_METRICS, finite_or_none, plan_items

# configuration keys that change results: a resumed run must agree on them (``convert_modes`` may be switched on,
# see :func:`run`); keys outside this list (``trust_model_file``) are taken from the session that resumes
RESULT_KEYS = SETTINGS_KEYS + ("convert_modes",)
RUN_FORMAT = 2          # 2: every result file carries its own record (format 1 runs are read and resumed too)


def _weights_record(weights: str | Path | None) -> dict[str, str] | None:
    """The run's record of a weights file: its absolute path and SHA-256 (the content is what changes results)."""
    if weights is None:
        return None
    import hashlib

    path = Path(weights).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {weights} does not exist")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path), "sha256": digest.hexdigest()}


@dataclass
class RunTable:
    """The results of a run: one row per (item, method) with status, scores, timing and error.

    ``rows`` are dicts with keys ``item, method, status, error, seconds, store_seconds, label, source`` and one key
    per metric. :meth:`arrays` reads one result's arrays (random access), :meth:`summary` aggregates.
    """

    run_dir: Path
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    # one reader, opened on the first arrays() call (opening checks the whole index: once, not per call)
    _reader: RunStore | None = field(default=None, init=False, repr=False, compare=False)
    _reader_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Rows that are not ``done``: ``failed`` ones and ``corrupt`` ones (stored results that did not verify and
        are not served; a resume recomputes them), with the reason in ``error``."""
        return [r for r in self.rows if r["status"] != "done"]

    def arrays(self, item: str, method: str) -> dict[str, np.ndarray]:
        """Arrays stored for (item, method): attribution, saliency, extras_*, curve_*, input_uint8.

        The file is verified (path, size, SHA-256, embedded record) before anything is returned.

        Raises:
            KeyError: no such result or it failed; :class:`~pathxai.runs.store.CorruptResultError` (a KeyError)
                when the stored result does not verify.
        """
        with self._reader_lock:   # one connection shared by the threads that call arrays()
            if self._reader is None:
                self._reader = RunStore(self.run_dir, create=False)
            return self._reader.load_arrays(item, method)

    def close(self) -> None:
        """Close the index connection :meth:`arrays` opened (it is also closed when the table is freed)."""
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def summary(self) -> list[dict[str, Any]]:
        """One row per (method, metric): mean, std (population) and n over finished items; plus time per item;
        ``ci95`` ([low, high]: the 95 % BCa bootstrap interval of the mean over items, seeded with the run's seed,
        see :mod:`pathxai.stats`) and ``ci95_method``."""
        from .. import stats

        out = []
        seed = int(self.config.get("seed", 0) or 0)
        for method in self.config["methods"]:
            done = [r for r in self.rows if r["method"] == method and r["status"] == "done"]
            secs = [r["seconds"] for r in done if r["seconds"] is not None]   # None: adopted, timing unknown
            for metric in self.config["metrics"]:
                vals = np.array([r[metric] for r in done if r.get(metric) is not None], dtype=float)
                ci = stats.mean_ci(vals, seed=seed, stream=f"ci:{metric}:{method}")
                out.append({"method": method, "metric": metric, "n": int(len(vals)),
                            "mean": float(vals.mean()) if len(vals) else math.nan,
                            "std": float(vals.std()) if len(vals) else math.nan,
                            "seconds_per_item": float(np.mean(secs)) if secs else math.nan,
                            "ci95": ci.interval, "ci95_method": ci.method})
        return out

    def to_pandas(self) -> Any:
        """The rows as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(self.rows)


def load_run(run_dir: str | Path, *, verify_hashes: bool = True) -> RunTable:
    """Open a run directory written by :func:`run` and return its results table.

    Every ``done`` result is verified against its file first (see :mod:`pathxai.runs.store`); one that does not
    verify is listed with status ``corrupt`` and the reason in ``error``, without scores. An unreadable index is
    rebuilt from the result files when no writer holds the run.

    Args:
        verify_hashes: also hash every result file (reads every byte). With False, the path, size and the record
            embedded in each file are still checked (fast on very large runs); :meth:`RunTable.arrays` always
            verifies the hash of what it returns.
    """
    run_dir = Path(run_dir)
    if not isinstance(verify_hashes, bool):
        raise TypeError(f"verify_hashes must be True or False, got {verify_hashes!r}")
    with RunStore(run_dir, create=False) as store:
        config = store.read_config() or {}
        rows = []
        for r in store.rows(verify=True, hashes=verify_hashes):
            row = {"item": r["item"], "method": r["method"], "status": r["status"], "error": r["error"],
                   "seconds": r["seconds"], "store_seconds": r["store_seconds"], "label": r["label"],
                   "source": r["source"], "target": r["meta"].get("target"), "note": r["meta"].get("note"),
                   "file": r["file"], "sha256": r["sha256"]}
            for metric in config.get("metrics", []):
                row[metric] = r["scores"].get(metric)
            rows.append(row)
    return RunTable(run_dir, config, rows)


def run(data: str | Path, methods: Sequence[str], *, out: str | Path, model: str | None = None,
        metrics: Sequence[str] = ("insertion", "deletion", "pointing"), engine: str = "local", workers: int = 1,
        ray_address: str | None = None, labels: str | Path | None = None, n_images: int | None = None,
        seed: int = 0, batch_size: int = 16, steps: int = 20, shard_size: int = 4,
        method_params: dict[str, dict[str, Any]] | None = None, threads_per_worker: int = 1,
        convert_modes: bool = False, trust_model_file: bool = False, weights: str | Path | None = None,
        device: str = "auto", progress: bool | None = None) -> RunTable:
    """Explain every item of DATA with every method, score it, and commit each result to the store in ``out``.

    Running again with the same ``out`` resumes: finished (item, method) pairs whose stored result verifies are
    skipped; failed ones, and stored results that are missing, damaged or do not match the index, are computed
    again, so an interrupted run ends with every pair exactly once.

    Args:
        data: a folder of images (optionally with ``labels.csv`` / ``labels.json``) or a suite name
            (``photos``, ``digits``, ``digits-clutter``).
        methods: registered method names. method_params: ``{method: {param: value}}``.
        model: a bundled model name or a ``.pt`` file (default for a suite: the suite's model).
        metrics: any of ``insertion``, ``deletion``, ``pointing`` (pointing needs masks or boxes).
        engine: ``local`` or ``ray``. workers: processes (local) or Ray actors / CPUs (ray), >= 1.
        ray_address: an existing Ray cluster; default starts a local Ray instance.
        seed: in [0, 2**63). batch_size: model evaluations per pass (an integer >= 1, so results are bit-for-bit
            reproducible).
        steps: points of the insertion/deletion curves (>= 1). shard_size: items per unit of scheduled work
            (>= 1; lowered when there would be fewer than two shards per worker).
        threads_per_worker: torch threads per worker (>= 1; fixed so that every engine computes the same bytes).
        convert_modes: convert image files whose mode does not match the model's channels (grey, palette, RGBA
            for an RGB model; colour for a grey model) and note it; by default such an item is recorded as failed
            with the reason. It may be switched on when resuming (the failed items are retried and converted);
            switching it off on a run started with it is refused, since converted results would stay in the run.
        weights: a local weights file for a ``timm:``/``torchvision:`` model (see :func:`pathxai.models.load`);
            its SHA-256 is a result-changing setting (a resumed run refuses other weights).
        device: where the workers run the model: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``,
            ``mps``; Ray actors request a GPU when it is CUDA. Not a result-changing setting: results computed on
            different devices differ by floating-point rounding, and each result's record names its device.
        trust_model_file: allow ``model`` to be a pickled ``.pt`` file that is loaded with full unpickling (runs
            code from the file: only for files you trust). Recorded in ``run.json``; it does not change results.
    Returns:
        the :class:`RunTable` of the whole run (also ``summary.json`` in ``out``).
    Raises:
        ValueError / TypeError: a bad argument (named, with the accepted range), or ``out`` holds a run with other
            result-changing settings. RunLockedError: another process is writing ``out``.
    """
    from ..core import get_method

    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer for reproducible runs, got {batch_size!r}")
    workers = check_positive_int(workers, "workers")
    shard_size = check_positive_int(shard_size, "shard_size")
    steps = check_positive_int(steps, "steps")
    seed = check_seed(seed)
    threads_per_worker = check_positive_int(threads_per_worker, "threads_per_worker")
    if n_images is not None:
        n_images = check_positive_int(n_images, "n_images")
    for name, flag in (("convert_modes", convert_modes), ("trust_model_file", trust_model_file)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    bad = [m for m in metrics if m not in RUN_METRICS]
    if bad:
        raise ValueError(f"unknown metric(s) {bad}; available: {', '.join(RUN_METRICS)}")
    methods = [get_method(m).name for m in methods]
    if not methods:
        raise ValueError("methods must name at least one method")
    desc, items = plan_items(data, labels=labels, n_images=n_images, seed=seed)
    model_name = model or desc.get("model")
    if model_name is None:
        raise ValueError("--model is required when DATA is a folder of images")
    config = {"data": desc, "model": str(model_name), "methods": methods,
              "method_params": {k: v for k, v in (method_params or {}).items() if k in methods},
              "metrics": list(metrics), "steps": steps, "seed": seed, "batch_size": batch_size,
              "threads_per_worker": threads_per_worker, "convert_modes": bool(convert_modes),
              "trust_model_file": bool(trust_model_file), "pathxai_run_format": RUN_FORMAT,
              "weights": _weights_record(weights), "device": str(resolve_device(device))}
    config = json.loads(json.dumps(config))   # the form it has in run.json (tuples -> lists)
    store = RunStore(out)
    try:
        previous = store.read_config()
        if previous is not None:
            previous.setdefault("convert_modes", False)   # runs written before the option existed
            diff = [k for k in SETTINGS_KEYS if json.dumps(previous.get(k), sort_keys=True)
                    != json.dumps(config[k], sort_keys=True)]
            if diff:
                raise ValueError(f"{out} holds a run with different settings ({', '.join(diff)}); "
                                 "use another --out or the same settings to resume")
            if previous["convert_modes"] and not config["convert_modes"]:
                raise ValueError(f"{out} was run with convert_modes=True (--convert-modes) and holds results of "
                                 "converted images; resume it with convert_modes=True or use another --out")
            # switching convert_modes on is allowed: items done without it are unchanged by it, and the items
            # that failed for their image mode are retried below, now converted
            config = {**previous, "convert_modes": config["convert_modes"],
                      "trust_model_file": config["trust_model_file"], "device": config["device"]}
        store.write_config(config)   # also (re)writes the index's copy of run.json
        store.add_items((it.item_id, it.position, it.source, it.label,
                         {"boxes": it.boxes, **({"error": it.error} if it.error else {})}) for it in items)
        crash = os.environ.get("PATHXAI_RUNS_CRASH_AFTER")
        store.crash_after = int(crash) if crash else None
        finished = store.finished()   # verified results only; the rest is (re)computed
        invalid = dict(store.invalid)
        todo = [(it, [m for m in methods if (it.item_id, m) not in finished]) for it in items]
        todo = [(it, ms) for it, ms in todo if ms]
        if workers > 1:   # enough shards to keep every worker busy (results do not depend on sharding)
            shard_size = max(1, min(shard_size, math.ceil(len(todo) / (2 * workers))))
        shards = list(iter_chunks(todo, shard_size))
        n_pairs = sum(len(ms) for _, ms in todo)
        bar = _progress(n_pairs, len(items) * len(methods) - n_pairs, progress)
        t0 = time.perf_counter()
        if engine == "local":
            from .engines import run_local

            stream = run_local(config, shards, workers)
        else:
            from .engines import run_ray

            stream = run_ray(config, shards, workers, ray_address)
        store_total = 0.0
        committed = 0
        for records in stream:
            for rec in records:
                store_total += store.commit(rec)
                committed += 1
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        wall = time.perf_counter() - t0
        if committed != n_pairs:   # an engine that loses work must not look like a finished run
            raise RuntimeError(f"the {engine} engine returned {committed} of the {n_pairs} planned results; "
                               "run again with the same --out to compute the rest")
        rebuilt = (str(store.rebuilt_from), store.rebuild_reason) if store.rebuilt_from is not None else None
    finally:
        store.close()
    table = load_run(out)
    _write_summary(Path(out), table, engine=engine, workers=workers, wall=wall, n_pairs=committed,
                   store_seconds=store_total, invalid=invalid, rebuilt=rebuilt)
    return table


def _progress(total: int, initial: int, progress: bool | None) -> Any:
    import sys

    if progress is False or (progress is None and not sys.stderr.isatty()):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total + initial, initial=initial, unit="result", desc="pathxai run")


def _write_summary(out: Path, table: RunTable, *, engine: str, workers: int, wall: float, n_pairs: int,
                   store_seconds: float, invalid: dict[tuple[str, str], str],
                   rebuilt: tuple[str, str | None] | None) -> None:
    summary = {"run_dir": str(out), "engine": engine, "workers": workers, "wall_seconds_last_session": wall,
               "results_computed_last_session": n_pairs, "store_seconds_last_session": store_seconds,
               "n_items": len({r["item"] for r in table.rows}), "n_done": sum(r["status"] == "done" for r in table),
               "n_failed": len(table.failed),
               "failed": [{"item": r["item"], "method": r["method"], "status": r["status"], "error": r["error"]}
                          for r in table.failed],
               "rejected_on_resume": [{"item": i, "method": m, "reason": why}
                                      for (i, m), why in sorted(invalid.items())],
               "index_rebuilt": None if rebuilt is None else {"corrupt_index_kept_as": rebuilt[0],
                                                              "reason": rebuilt[1]},
               "notes": sorted({f"{r['item']}: {r['note']}" for r in table if r.get("note")}),
               "table": [{k: finite_or_none(v) if isinstance(v, float)
                          else [finite_or_none(u) for u in v] if isinstance(v, list) else v for k, v in row.items()}
                         for row in table.summary()]}
    _atomic_write(out / "summary.json", json.dumps(summary, indent=1).encode())


def format_summary(table: RunTable) -> str:
    """A short text summary: counts, the methods x metrics table, failed items with reasons."""
    corrupt = sum(r["status"] == "corrupt" for r in table)
    lines = [f"{len({r['item'] for r in table})} items x {len(table.config.get('methods', []))} methods: "
             f"{sum(r['status'] == 'done' for r in table)} done, {len(table.failed)} failed"
             + (f" ({corrupt} stored results did not verify)" if corrupt else "")]
    for row in table.summary():
        lo, hi = row["ci95"]
        lines.append(f"  {row['method']:<16} {row['metric']:<10} {row['mean']:.4f} ± {row['std']:.4f} "
                     + (f"[95% CI {lo:.4f}, {hi:.4f}] " if math.isfinite(lo) else "")
                     + f"(n={row['n']}, {row['seconds_per_item']:.3f} s/item)")
    if table.failed:
        lines.append("failed:")
        seen = set()
        for r in table.failed:
            if (r["item"], r["error"]) in seen:
                continue
            seen.add((r["item"], r["error"]))
            lines.append(f"  {r['item']}: {r['error']}")
    notes = sorted({f"{r['item']}: {r['note']}" for r in table if r.get("note")})
    if notes:
        lines.append("notes:")
        lines += [f"  {n}" for n in notes]
    return "\n".join(lines)
