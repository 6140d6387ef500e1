"""Throughput of ``pathxai run`` (images per minute) with RISE and IG on the photos suite: the local engine with 1
and 2 worker processes vs Ray with 2 CPUs; and the per-result overhead of the store and of each engine.

    OMP_NUM_THREADS=1 python benchmarks/run_throughput.py [--n-images 6] [--out benchmarks/results/runs.md]

Definitions (per (item, method) result):
- *explain time*: seconds a worker spends in the method and the metrics (``seconds`` in the index);
- *store overhead*: seconds the driver spends committing a result (serialise, write + fsync, rename, SQLite
  transaction), as a fraction of the explain time;
- *engine overhead*: ``wall x workers / sum(explain time) - 1``: the share of worker time not spent explaining
  (process / Ray start-up, model loading, transfers, idle tails), whole-run, start-up included;
- *steady-state overhead*: the same ratio between the moment every worker has delivered its first shard and the
  last commit (commit times from the index), so start-up and model loading are excluded; what remains is the
  per-item cost of the engine (scheduling, transfers, the driver's store commits) plus the idle tail of the last
  shard.
Every configuration explains the same items with the same seeds; the script checks that all three give identical
result files (same SHA-256).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pathxai as px  # noqa: E402


def steady_state_overhead(run_dir: Path, workers: int, gap: float = 0.5) -> float:
    """``window x workers / explain time in the window - 1``, the window running from the commit of the
    ``workers``-th shard (commits closer than ``gap`` s form one shard) to the last commit."""
    con = sqlite3.connect(str(run_dir / "index.sqlite"))
    try:
        rows = sorted(con.execute("SELECT finished_at, seconds FROM results WHERE status = 'done'"))
    finally:
        con.close()
    batches: list[list[tuple[float, float]]] = []
    for t, sec in rows:
        if batches and t - batches[-1][-1][0] < gap:
            batches[-1].append((t, sec))
        else:
            batches.append([(t, sec)])
    if len(batches) <= workers:
        return float("nan")
    start, end = batches[workers - 1][-1][0], batches[-1][-1][0]
    work = sum(sec for b in batches[workers:] for _, sec in b)
    return (end - start) * workers / work - 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-images", type=int, default=6)
    ap.add_argument("--rise-masks", type=int, default=500)
    ap.add_argument("--ig-steps", type=int, default=50)
    ap.add_argument("--steps", type=int, default=20, help="points of the insertion/deletion curves")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--shard-size", type=int, default=2)
    ap.add_argument("--configs", default="local1,local2,ray2")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "runs.md")
    args = ap.parse_args()
    params = {"rise": {"n_masks": args.rise_masks}, "ig": {"n_steps": args.ig_steps}}
    px.data.load_suite("photos", n_images=args.n_images)   # build (and cache) the suite outside the timings
    rows, hashes = [], {}
    tmp = Path(tempfile.mkdtemp(prefix="pathxai-bench-runs-"))
    try:
        for config in args.configs.split(","):
            engine, workers = ("ray", int(config[3:])) if config.startswith("ray") else ("local", int(config[5:]))
            out = tmp / config
            t0 = time.perf_counter()
            table = px.run("photos", ["rise", "ig"], out=out, n_images=args.n_images, engine=engine,
                           workers=workers, steps=args.steps, batch_size=args.batch_size, method_params=params,
                           shard_size=args.shard_size, progress=False)
            wall = time.perf_counter() - t0
            summary = json.loads((out / "summary.json").read_text())
            done = [r for r in table if r["status"] == "done"]
            explain = sum(r["seconds"] for r in done)
            n_items = len({r["item"] for r in done})
            per_method = {m: sum(r["seconds"] for r in done if r["method"] == m) / n_items for m in ("rise", "ig")}
            hashes[config] = sorted((r["item"], r["method"], r["sha256"]) for r in table)
            rows.append({"config": f"{engine}, {workers} {'CPUs' if engine == 'ray' else 'workers'}",
                         "wall": wall, "images_per_min": 60 * n_items / wall, "n_items": n_items,
                         "explain_per_result": explain / len(done), "per_method": per_method,
                         "store_per_result": summary["store_seconds_last_session"] / len(done),
                         "engine_overhead": wall * workers / explain - 1,
                         "steady_overhead": steady_state_overhead(out, workers), "failed": len(table.failed)})
            print(rows[-1], flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    same = len({json.dumps(h) for h in hashes.values()}) == 1
    lines = ["# `pathxai run` throughput (photos suite, RISE + IG)", "",
             "`OMP_NUM_THREADS=1 python benchmarks/run_throughput.py " + " ".join(sys.argv[1:]) + "` on "
             f"{platform.machine()} with {os.cpu_count()} cores (shared with other jobs), torch threads per worker "
             f"1; EfficientNet-Lite0 224 px; RISE n_masks={args.rise_masks}, IG n_steps={args.ig_steps}; metrics "
             f"insertion, deletion ({args.steps} steps) and pointing; batch_size={args.batch_size}. Each row is one "
             "fresh run, start-up included. Images/min counts an image as explained by both methods.", "",
             "| engine | images / min | wall s | explain s / result (RISE, IG per image) | store overhead | "
             "engine overhead (whole run) | steady-state overhead |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['images_per_min']:.1f} | {r['wall']:.1f} | "
                     f"{r['explain_per_result']:.2f} ({r['per_method']['rise']:.2f}, {r['per_method']['ig']:.2f}) | "
                     f"{100 * r['store_per_result'] / r['explain_per_result']:.2f} % "
                     f"({1000 * r['store_per_result']:.1f} ms) | {100 * r['engine_overhead']:.1f} % | "
                     f"{100 * r['steady_overhead']:.1f} % |")
    lines += ["", f"All configurations wrote identical result files (SHA-256): **{'yes' if same else 'NO'}**.", ""]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
