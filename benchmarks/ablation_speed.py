"""Optimised ablation paths: the thesis schedule against the coarse-to-fine schedule, side by side in one process.

    OMP_NUM_THREADS=1 python benchmarks/ablation_speed.py --suite digits-clutter --n-images 40
    OMP_NUM_THREADS=1 python benchmarks/ablation_speed.py --suite photos --n-images 6 --batch-size 8 --image-batch 1

For every image batch (``--image-batch`` images), ``ablation_path`` runs with ``schedule="thesis"`` (Algorithm 2 as
published: the package's defaults before the faster schedule) and then with ``schedule="coarse_to_fine"``, both at the
method's defaults otherwise and on the same seed, so the two are timed under the same machine load. Per image:

* gradient evaluations: forward+backward model passes along the path(s), counted from the method's own extras
  (``levels``, ``level_passes``: n_level x V per pass); they sum to the evaluator's
  ``meta["gradient_evaluations"]``, which is checked;
* whether the coarse-to-fine *result* (its final, saturated path) scores at least the thesis' final P-up score, and
  whether it does so within half the thesis' gradient evaluations (the issue's criterion, per image);
* evaluations to reach the thesis' final score: the coarse-to-fine run's cumulative gradient evaluations at the
  first pass *on the full grid* whose score is at least the thesis' final P-up score (a coarse level's scores use its
  own time grid, so they do not count; that iterate need not be saturated yet, so this is optimistic), or at the end
  when only its final score reaches it; "not reached" otherwise;
* the final score, the saturation (Eq. 2.31), wall time;
* pointing (TorchRay pointing game against the suite's object masks, 15 px at 224 px scaled to the image side),
  deletion (to black, 50 steps, softmax probability of the label, normalisation "none") and insertion (from a blur of
  sigma 5 px at 224 px on photos, from black on digits) -- the conventions of ``pathxai evaluate``.

Summaries: per-image ratios coarse-to-fine / thesis (median, mean, and the ratio of the totals), the share of images
that reach the thesis' final score, and paired differences with their standard errors. Writes
``benchmarks/results/ablation_speed_<suite>.json`` (per image) and prints a markdown table;
``benchmarks/results/ablation_path.md`` is to quote it (the coordinator runs the full benchmark).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import pathxai as px
from pathxai import metrics as M
from pathxai.methods.ablation_path import AblationPath
from pathxai.methods.ablation_path.scores import SCORE_VARIANTS

OUT = Path(__file__).parent / "results"
SCHEDULES = ("thesis", "coarse_to_fine")
DEFAULT_BATCH = {"digits-clutter": 64, "photos": 8}


def per_pass_evaluations(extras: dict[str, Any], item: int, n_variants: int) -> list[tuple[int, bool]]:
    """``[(gradient evaluations of pass j, on the full grid?), ...]`` for one image, from the method's extras
    (passes run level after level; ``level_passes`` counts them per level)."""
    levels = extras["levels"]
    out: list[tuple[int, bool]] = []
    for li, ((n, _, _), count) in enumerate(zip(levels, extras["level_passes"][item].tolist())):
        out += [(n * n_variants, li == len(levels) - 1)] * count
    return out


def run_schedule(schedule: str, model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 seed: int, params: dict[str, Any]) -> tuple[Any, float]:
    method = AblationPath(model, schedule=schedule, batch_size=batch_size, seed=seed, progress=False, **params)
    start = time.perf_counter()
    e = method.explain(x, labels)
    return e, time.perf_counter() - start


def quality(model: torch.nn.Module, suite_name: str, x: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor,
            saliency: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
    """Per-image pointing hit, deletion and insertion AUC with ``pathxai evaluate``'s conventions."""
    scale = min(x.shape[-2:]) / 224.0
    pointing = M.pointing_game(saliency, masks, tolerance=15.0 * scale, classes=labels.tolist()).score.float()
    deletion = M.deletion(model, x, saliency, labels, steps=50, baseline="zero", batch_size=batch_size,
                          progress=False).score
    insertion = M.insertion(model, x, saliency, labels, steps=50,
                            baseline="blur" if suite_name == "photos" else "zero",
                            blur_sigma=max(1.0, 5.0 * scale), batch_size=batch_size, progress=False).score
    return {"pointing": pointing, "deletion": deletion.float(), "insertion": insertion.float()}


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of b - a and its standard error."""
    d = [bi - ai for ai, bi in zip(a, b)]
    sem = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    return statistics.mean(d), sem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=("digits-clutter", "photos"), default="digits-clutter")
    ap.add_argument("--n-images", type=int, default=None, help="default: 40 canvases / 6 photos")
    ap.add_argument("--batch-size", type=int, default=None, help="model evaluations per chunk (64 digits, 8 photos)")
    ap.add_argument("--image-batch", type=int, default=8, help="images per explain call (both schedules alike)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--params", type=json.loads, default={},
                    help='JSON of coarse_to_fine settings to try instead of the defaults, e.g. \'{"coarse_factor": 2}\'')
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default results/ablation_speed_<suite>.json)")
    args = ap.parse_args()
    n_images = args.n_images or (40 if args.suite == "digits-clutter" else 6)
    batch_size = args.batch_size or DEFAULT_BATCH[args.suite]

    suite = px.suites.load_suite(args.suite, n_images=n_images, seed=args.seed)
    model = suite.model()
    x_all, labels_all, _ = suite.batch()
    masks_all = suite.masks()
    names = [it.name for it in suite]
    n_variants = len(SCORE_VARIANTS["retaining"])  # the defaults' score, P-up

    rows: list[dict[str, Any]] = [{"image": nm, "label": int(lb)} for nm, lb in zip(names, labels_all.tolist())]
    saliency: dict[str, list[torch.Tensor]] = {s: [] for s in SCHEDULES}
    t_total = time.perf_counter()
    for start in range(0, len(names), args.image_batch):
        sl = slice(start, start + args.image_batch)
        x, labels = x_all[sl], labels_all[sl]
        runs = {}
        for schedule in SCHEDULES:  # interleaved: both under the same load
            e, seconds = run_schedule(schedule, model, x, labels, batch_size, args.seed,
                                      args.params if schedule == "coarse_to_fine" else {})
            runs[schedule] = e
            saliency[schedule].append(e.saliency().float())
            ex = e.extras
            counted = 0
            for j in range(x.shape[0]):
                per_pass = per_pass_evaluations(ex, j, n_variants)
                evals = sum(v for v, _ in per_pass)
                counted += evals
                row = rows[start + j]
                row[schedule] = {"gradient_evaluations": evals, "iterations": int(ex["iterations"][j]),
                                 "gradient_passes": int(ex["gradient_passes"][j]),
                                 "level_iterations": ex["level_iterations"][j].tolist(),
                                 "level_passes": ex["level_passes"][j].tolist(),
                                 "score": float(ex["score"][j]), "score_affine": float(ex["score_history"][j, 0]),
                                 "saturation": float(ex["saturation"][j]), "seconds": seconds / x.shape[0]}
            if counted != e.meta["gradient_evaluations"]:
                raise RuntimeError(f"per-image evaluation count {counted} != the evaluator's "
                                   f"{e.meta['gradient_evaluations']} ({schedule})")
        # evaluations the fast schedule needed to reach the thesis' final score
        fast = runs["coarse_to_fine"].extras
        for j in range(x.shape[0]):
            row = rows[start + j]
            goal = row["thesis"]["score"]
            reached, cumulative = None, 0
            for p, (evals, full_grid) in enumerate(per_pass_evaluations(fast, j, n_variants)):
                cumulative += evals
                if full_grid and float(fast["score_history"][j, p]) >= goal:
                    reached = cumulative
                    break
            if reached is None and row["coarse_to_fine"]["score"] >= goal:
                reached = cumulative
            row["coarse_to_fine"]["evaluations_to_reach_thesis_score"] = reached
        done = rows[start:start + x.shape[0]]
        print(f"images {start + 1}-{start + x.shape[0]} of {len(names)}: gradient evaluations "
              + ", ".join(f"{s} {sum(r[s]['gradient_evaluations'] for r in done)}" for s in SCHEDULES), flush=True)

    for schedule in SCHEDULES:
        q = quality(model, args.suite, x_all, labels_all, masks_all, torch.cat(saliency[schedule]), batch_size)
        for i, row in enumerate(rows):
            row[schedule].update({k: float(v[i]) for k, v in q.items()})

    def col(schedule: str, key: str) -> list[float]:
        return [r[schedule][key] for r in rows]

    ev_t, ev_f = col("thesis", "gradient_evaluations"), col("coarse_to_fine", "gradient_evaluations")
    ratios = [f / t for f, t in zip(ev_f, ev_t)]
    reach = [r["coarse_to_fine"]["evaluations_to_reach_thesis_score"] for r in rows]
    reach_ratio = [(rc / r["thesis"]["gradient_evaluations"]) if rc is not None else math.inf
                   for rc, r in zip(reach, rows)]
    sec_t, sec_f = col("thesis", "seconds"), col("coarse_to_fine", "seconds")
    summary = {
        "n_images": len(rows),
        "gradient_evaluations_mean": {"thesis": statistics.mean(ev_t), "coarse_to_fine": statistics.mean(ev_f)},
        "evaluation_ratio": {"of_totals": sum(ev_f) / sum(ev_t), "median": statistics.median(ratios),
                             "max": max(ratios)},
        "final_at_least_thesis": sum(r["coarse_to_fine"]["score"] >= r["thesis"]["score"] for r in rows),
        "final_at_least_thesis_within_half": sum(r["coarse_to_fine"]["score"] >= r["thesis"]["score"]
                                                 and ratio <= 0.5 for r, ratio in zip(rows, ratios)),
        "reached_thesis_score": sum(rc is not None for rc in reach),
        "reach_ratio_median": statistics.median(reach_ratio),
        "reached_within_half": sum(r <= 0.5 for r in reach_ratio),
        "seconds_per_image": {"thesis": statistics.mean(sec_t), "coarse_to_fine": statistics.mean(sec_f)},
    }
    for key in ("score", "saturation", "pointing", "deletion", "insertion"):
        a, b = col("thesis", key), col("coarse_to_fine", key)
        diff, sem = paired(a, b)
        summary[key] = {"thesis": statistics.mean(a), "coarse_to_fine": statistics.mean(b), "diff": diff, "sem": sem,
                        "better": sum((bi > ai) if key != "deletion" else (bi < ai) for ai, bi in zip(a, b)),
                        "worse": sum((bi < ai) if key != "deletion" else (bi > ai) for ai, bi in zip(a, b))}
    result = {"suite": args.suite, "model": suite.model_name, "batch_size": batch_size, "params": args.params,
              "image_batch": args.image_batch, "seed": args.seed, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "torch_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
              "wall_seconds": time.perf_counter() - t_total, "summary": summary, "images": rows}
    out = args.out or OUT / f"ablation_speed_{args.suite}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))

    s = summary
    print()
    print(f"{args.suite} ({suite.model_name}), {len(rows)} images, chunk {batch_size}, "
          f"{args.image_batch} image(s) per call, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
          + (f", coarse_to_fine with {args.params}" if args.params else ""))
    print()
    print("| | thesis | coarse_to_fine | paired difference (± s.e.) | images better / worse |")
    print("|---|---:|---:|---:|---:|")
    print(f"| gradient evaluations per image | {s['gradient_evaluations_mean']['thesis']:.0f} | "
          f"{s['gradient_evaluations_mean']['coarse_to_fine']:.0f} | ratio of totals "
          f"**{s['evaluation_ratio']['of_totals']:.2f}**, per image median {s['evaluation_ratio']['median']:.2f}, "
          f"max {s['evaluation_ratio']['max']:.2f} | |")
    print(f"| final P↑ >= the thesis' final P↑ | | {s['final_at_least_thesis']}/{len(rows)} | and within half the "
          f"thesis' evaluations: {s['final_at_least_thesis_within_half']}/{len(rows)} | |")
    print(f"| some full-grid iterate (saturated or not) reaches the thesis' final P↑ | | "
          f"{s['reached_thesis_score']}/{len(rows)} | within half the thesis' evaluations: "
          f"{s['reached_within_half']}/{len(rows)}; median evaluations to reach / thesis' "
          f"{s['reach_ratio_median']:.2f} | |")
    for key, label, fmt in (("score", "final P↑ score", ".4f"), ("saturation", "saturation (Eq. 2.31)", ".3f"),
                            ("pointing", "pointing ↑", ".3f"), ("deletion", "deletion ↓", ".4f"),
                            ("insertion", "insertion ↑", ".4f")):
        v = s[key]
        print(f"| {label} | {v['thesis']:{fmt}} | {v['coarse_to_fine']:{fmt}} | {v['diff']:+{fmt}} ± "
              f"{v['sem']:{fmt}} | {v['better']} / {v['worse']} |")
    print(f"| seconds per image | {s['seconds_per_image']['thesis']:.2f} | "
          f"{s['seconds_per_image']['coarse_to_fine']:.2f} | ratio "
          f"{s['seconds_per_image']['coarse_to_fine'] / s['seconds_per_image']['thesis']:.2f} | |")
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
