"""``px.run`` (batch explanation into a resumable store) and ``px.load_run`` (its results as a table)."""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .store import RunStore, _atomic_write, iter_chunks
from .work import RUN_METRICS, finite_or_none, plan_items

# configuration keys that change results: a resumed run must agree on them
RESULT_KEYS = ("data", "model", "methods", "method_params", "metrics", "steps", "seed", "batch_size",
               "threads_per_worker", "convert_modes")


@dataclass
class RunTable:
    """The results of a run: one row per (item, method) with status, scores, timing and error.

    ``rows`` are dicts with keys ``item, method, status, error, seconds, store_seconds, label, source`` and one key
    per metric. :meth:`arrays` reads one result's arrays (random access), :meth:`summary` aggregates.
    """

    run_dir: Path
    config: dict[str, Any]
    rows: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Rows whose status is ``failed`` (with the reason in ``error``)."""
        return [r for r in self.rows if r["status"] == "failed"]

    def arrays(self, item: str, method: str) -> dict[str, np.ndarray]:
        """Arrays stored for (item, method): attribution, saliency, extras_*, curve_*, input_uint8."""
        with RunStore(self.run_dir, create=False) as store:
            return store.load_arrays(item, method)

    def summary(self) -> list[dict[str, Any]]:
        """One row per (method, metric): mean, std (population) and n over finished items; plus time per item."""
        out = []
        for method in self.config["methods"]:
            done = [r for r in self.rows if r["method"] == method and r["status"] == "done"]
            secs = [r["seconds"] for r in done]
            for metric in self.config["metrics"]:
                vals = np.array([r[metric] for r in done if r.get(metric) is not None], dtype=float)
                out.append({"method": method, "metric": metric, "n": int(len(vals)),
                            "mean": float(vals.mean()) if len(vals) else math.nan,
                            "std": float(vals.std()) if len(vals) else math.nan,
                            "seconds_per_item": float(np.mean(secs)) if secs else math.nan})
        return out

    def to_pandas(self) -> Any:
        """The rows as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(self.rows)


def load_run(run_dir: str | Path) -> RunTable:
    """Open a run directory written by :func:`run` and return its results table."""
    run_dir = Path(run_dir)
    with RunStore(run_dir, create=False) as store:
        config = store.read_config() or {}
        rows = []
        for r in store.rows():
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
        convert_modes: bool = False, progress: bool | None = None) -> RunTable:
    """Explain every item of DATA with every method, score it, and commit each result to the store in ``out``.

    Running again with the same ``out`` resumes: finished (item, method) pairs are skipped, failed ones retried,
    so an interrupted run ends with every pair exactly once.

    Args:
        data: a folder of images (optionally with ``labels.csv`` / ``labels.json``) or a suite name
            (``photos``, ``digits``, ``digits-clutter``).
        methods: registered method names. method_params: ``{method: {param: value}}``.
        model: a bundled model name or a ``.pt`` file (default for a suite: the suite's model).
        metrics: any of ``insertion``, ``deletion``, ``pointing`` (pointing needs masks or boxes).
        engine: ``local`` or ``ray``. workers: processes (local) or Ray actors / CPUs (ray).
        ray_address: an existing Ray cluster; default starts a local Ray instance.
        batch_size: model evaluations per pass (an integer, so results are bit-for-bit reproducible).
        steps: points of the insertion/deletion curves. shard_size: items per unit of scheduled work (lowered
            when there would be fewer than two shards per worker).
        threads_per_worker: torch threads per worker (fixed so that every engine computes the same bytes).
        convert_modes: convert image files whose mode does not match the model's channels (grey, palette, RGBA
            for an RGB model; colour for a grey model) and note it; by default such an item is recorded as failed
            with the reason.
    Returns:
        the :class:`RunTable` of the whole run (also ``summary.json`` in ``out``).
    """
    from ..core import get_method

    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer for reproducible runs, got {batch_size!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
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
              "pathxai_run_format": 1}
    store = RunStore(out)
    try:
        previous = store.read_config()
        if previous is not None:
            previous.setdefault("convert_modes", False)   # runs written before the option existed
            diff = [k for k in RESULT_KEYS if json.dumps(previous.get(k), sort_keys=True)
                    != json.dumps(json.loads(json.dumps(config[k])), sort_keys=True)]
            if diff:
                raise ValueError(f"{out} holds a run with different settings ({', '.join(diff)}); "
                                 "use another --out or the same settings to resume")
        else:
            store.write_config(config)
        store.add_items((it.item_id, it.position, it.source, it.label,
                         {"boxes": it.boxes, **({"error": it.error} if it.error else {})}) for it in items)
        crash = os.environ.get("PATHXAI_RUNS_CRASH_AFTER")
        store.crash_after = int(crash) if crash else None
        finished = store.finished()
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
        for records in stream:
            for rec in records:
                store_total += store.commit(rec)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        wall = time.perf_counter() - t0
    finally:
        store.close()
    table = load_run(out)
    _write_summary(Path(out), table, engine=engine, workers=workers, wall=wall, n_pairs=n_pairs,
                   store_seconds=store_total)
    return table


def _progress(total: int, initial: int, progress: bool | None) -> Any:
    import sys

    if progress is False or (progress is None and not sys.stderr.isatty()):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total + initial, initial=initial, unit="result", desc="pathxai run")


def _write_summary(out: Path, table: RunTable, *, engine: str, workers: int, wall: float, n_pairs: int,
                   store_seconds: float) -> None:
    summary = {"run_dir": str(out), "engine": engine, "workers": workers, "wall_seconds_last_session": wall,
               "results_computed_last_session": n_pairs, "store_seconds_last_session": store_seconds,
               "n_items": len({r["item"] for r in table.rows}), "n_done": sum(r["status"] == "done" for r in table),
               "n_failed": len(table.failed),
               "failed": [{"item": r["item"], "method": r["method"], "error": r["error"]} for r in table.failed],
               "notes": sorted({f"{r['item']}: {r['note']}" for r in table if r.get("note")}),
               "table": [{k: finite_or_none(v) if isinstance(v, float) else v for k, v in row.items()}
                         for row in table.summary()]}
    _atomic_write(out / "summary.json", json.dumps(summary, indent=1).encode())


def format_summary(table: RunTable) -> str:
    """A short text summary: counts, the methods x metrics table, failed items with reasons."""
    lines = [f"{len({r['item'] for r in table})} items x {len(table.config.get('methods', []))} methods: "
             f"{sum(r['status'] == 'done' for r in table)} done, {len(table.failed)} failed"]
    for row in table.summary():
        lines.append(f"  {row['method']:<16} {row['metric']:<10} {row['mean']:.4f} ± {row['std']:.4f} "
                     f"(n={row['n']}, {row['seconds_per_item']:.3f} s/item)")
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
