"""Optimised ablation paths vs IG, Grad-CAM, RISE and occlusion with metrics that do not favour them by construction.

    OMP_NUM_THREADS=1 python benchmarks/ablation_path_eval.py --suite photos            # 60 photos (~2 h, 1 core)
    OMP_NUM_THREADS=1 python benchmarks/ablation_path_eval.py --suite digits-clutter    # 300 canvases (~2 h)
    (the two can run at the same time, one per core; each rewrites ablation_path.md from what is saved)
    OMP_NUM_THREADS=1 python benchmarks/ablation_path_eval.py --report                  # rewrite the .md only
    OMP_NUM_THREADS=1 python benchmarks/ablation_path_eval.py --tiny --out /tmp/ap      # smoke run (minutes)

Why. The ablation path's default score P↑ (thesis Eq. 2.13) *is* the insertion curve from the method's blurred
baseline, and RISE's insertion metric also starts from a blurred image: a method that optimises a score cannot be
said to "win" on that score. So, beside the circular insertion from blur (kept, labelled, for comparison), every
method is scored with: the pointing game (does the map's maximum hit the object; no model calls), deletion to black
(the opposite curve, which P↑ does not optimise), insertion from **black** and insertion from **noise** (seeded
uniform noise in each image's value range, ``baseline="uniform"``): the same ranking of pixels, a start the path was
not optimised for.

Each ``--suite`` run explains the suite's items with ``pathxai.evaluate`` (same protocol as ``pathxai evaluate``:
the suite label is explained; softmax score; 50-step curves; the pointing tolerance of 15 px at 224 px scaled to the
image), adds the three insertion variants, and saves everything to ``<out>/ablation_path_<suite>/`` (``items.csv``,
``summary.json`` with 95 % BCa bootstrap CIs, paired Wilcoxon comparisons Holm-corrected per metric, and the best
method or "tied"; ``table.md``; curves and heatmaps). Then ``<out>/ablation_path.md`` is rewritten from the saved
``summary.json`` of every suite measured so far, with the verdicts computed from those statistics.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

import pathxai as px
from pathxai import metrics as M

METHODS = ["ablation_path", "ig", "gradcam", "rise", "occlusion"]
SUITES = {"photos": 60, "digits-clutter": 300}
# RISE's default 4000 masks would take ~2 min per 224 px photo on 1 core; 1000 as in the photos evaluation so far
METHOD_PARAMS = {"photos": {"rise": {"n_masks": 1000}}, "digits-clutter": {}}
INSERTIONS = [("insertion_black", "zero"), ("insertion_noise", "uniform"), ("insertion_blur", "blur")]
METRICS = ["pointing", "deletion", "insertion_black", "insertion_noise", "insertion_blur"]
LABELS = {"pointing": "pointing ↑", "deletion": "deletion (to black) ↓", "insertion_black": "insertion from black ↑",
          "insertion_noise": "insertion from noise ↑", "insertion_blur": "insertion from blur ↑ (circular)"}
TINY = {"n_images": {"photos": 2, "digits-clutter": 6}, "steps": 8,
        "params": {"ablation_path": {"n_steps": 4, "min_iterations": 1, "max_iterations": 2},
                   "rise": {"n_masks": 64}}}


def run_suite(suite: str, n_images: int, steps: int, params: dict, out: Path, seed: int, batch_size) -> Path:
    """Explain and score one suite; save the result directory; return it."""
    t0 = time.time()
    r = px.evaluate(suite, METHODS, ["deletion", "pointing"], n_images=n_images, seed=seed, steps=steps,
                    method_params=params, batch_size=batch_size, progress=False)
    x, labels = r.images, torch.tensor(r.labels)
    model = px.data.load_suite(suite, n_images=1, seed=seed).model()
    blur_sigma = max(1.0, 5.0 * min(x.shape[-2:]) / 224.0)   # evaluate's blur (sigma 5 px at 224 px)
    for name in METHODS:
        for metric, baseline in INSERTIONS:
            res = M.insertion(model, x, r.saliency[name], labels, steps=steps, baseline=baseline,
                              blur_sigma=blur_sigma, batch_size=batch_size, progress=False)
            r.scores[(name, metric)] = res.score
            r.curves[(name, metric)] = res.curve
        print(f"  {suite} {name}: " + ", ".join(f"{m} {float(r.scores[(name, m)].double().nanmean()):.3f}"
                                                for m in ("deletion",) + tuple(m for m, _ in INSERTIONS)),
              flush=True)
    r.metrics = list(METRICS)
    r.settings.update({"insertion_baselines": {m: (f"blur sigma={blur_sigma:g}px" if b == "blur" else
                                                   "uniform noise in each image's range, seed 0" if b == "uniform"
                                                   else "black (zero)") for m, b in INSERTIONS},
                       "wall_minutes": (time.time() - t0) / 60})
    r.settings.pop("insertion_baseline", None)
    folder = out / f"ablation_path_{suite}"
    r.save(folder)
    return folder


def _fmt_p(p) -> str:
    return "n/a" if p is None or not math.isfinite(p) else f"{p:.2g}"


def suite_report(folder: Path, command: str) -> tuple[list[str], dict[str, str]]:
    """Markdown for one saved suite and ``{metric: verdict for ablation_path}``."""
    summary = json.loads((folder / "summary.json").read_text())
    table = (folder / "table.md").read_text().strip()
    s = summary["settings"]
    n = s["n_images"]
    lines = [f"### {summary['suite']} ({n} items, model `{summary['model']}`)", "",
             f"Command: `{command}` ({s.get('wall_minutes', float('nan')):.0f} min). {s['steps']}-step curves, "
             f"softmax of the suite label; insertion baselines: "
             + "; ".join(f"{k.replace('insertion_', '')}: {v}" for k, v in s["insertion_baselines"].items())
             + f"; deletion to black; pointing tolerance {s['pointing_tolerance_px']:.1f} px. Method parameters: "
             f"{json.dumps(s['method_params']) if s['method_params'] else 'defaults'}.", "", table, "",
             "Ablation path against each other method, paired over the same items: mean difference "
             "(ablation_path − other) [95 % BCa CI], Holm-corrected Wilcoxon p; **better** / **worse** when "
             "significant.", "",
             "| metric | " + " | ".join(m for m in METHODS if m != "ablation_path") + " |",
             "|---|" + "---|" * (len(METHODS) - 1)]
    verdicts = {}
    by_metric: dict[str, list[dict]] = {}
    for p in summary["comparisons"]:
        by_metric.setdefault(p["metric"], []).append(p)
    for metric in summary["settings"].get("metrics_order", METRICS):
        pairs = by_metric.get(metric, [])
        cells, better_than, worse_than = [], [], []
        for other in (m for m in METHODS if m != "ablation_path"):
            p = next((q for q in pairs if {q["method_a"], q["method_b"]} == {"ablation_path", other}), None)
            if p is None:
                cells.append("—")
                continue
            sign = 1.0 if p["method_a"] == "ablation_path" else -1.0
            d = p["mean_difference"]
            if d is None:
                cells.append("—")
                continue
            lo, hi = p["ci95"] if p["ci95"] else (None, None)
            ci = (f" [{min(sign * lo, sign * hi):+.3f}, {max(sign * lo, sign * hi):+.3f}]"
                  if lo is not None and hi is not None else "")
            tag = ""
            if p["better"] == "ablation_path":
                tag, _ = " **better**", better_than.append(other)
            elif p["better"] == other:
                tag, _ = " **worse**", worse_than.append(other)
            cells.append(f"{sign * d:+.3f}{ci}, p {_fmt_p(p['p_holm'])}{tag}")
        lines.append(f"| {LABELS[metric]} | " + " | ".join(cells) + " |")
        best = summary["best"].get(metric, {})
        if best.get("best") == "ablation_path":
            verdicts[metric] = "best (significantly better than the runner-up)"
        elif worse_than:
            verdicts[metric] = f"significantly worse than {', '.join(worse_than)}"
        elif best.get("leader") == "ablation_path":
            verdicts[metric] = (f"best mean but tied with {best.get('runner_up')} "
                                f"(p_holm {_fmt_p(best.get('p_holm'))})")
        elif better_than and len(better_than) == len(METHODS) - 1:
            verdicts[metric] = "significantly better than every other method"
        else:
            verdicts[metric] = (f"not significantly different from the best ({best.get('leader')})"
                                + (f"; better than {', '.join(better_than)}" if better_than else ""))
    lines.append("")
    return lines, verdicts


def report(out: Path, commands: dict[str, str]) -> str:
    """Rewrite ``out/ablation_path.md`` from the saved suites; returns its text."""
    lines = ["# Optimised ablation paths vs the baselines (issue 5), with non-circular metrics", "",
             "The ablation path's default score P↑ (thesis Eq. 2.13) is the insertion curve from a blurred baseline, "
             "and RISE's insertion metric starts from a blurred image too, so insertion from blur favours the method "
             "by construction (thesis §2.7). The metrics here that do not: the pointing game, deletion to black, "
             "insertion from black and from uniform noise; insertion from blur is shown for comparison only. "
             "Written by `benchmarks/ablation_path_eval.py` (statistics: `pathxai.stats`, as in `pathxai "
             "evaluate`).", ""]
    all_verdicts = {}
    for suite in SUITES:
        folder = out / f"ablation_path_{suite}"
        if not (folder / "summary.json").exists():
            lines += [f"### {suite}", "", f"**Not measured yet.** Command: `{commands[suite]}`", ""]
            continue
        meta = json.loads((folder / "summary.json").read_text())
        cmd = meta["settings"].get("command", commands[suite])
        part, verdicts = suite_report(folder, cmd)
        lines += part
        all_verdicts[suite] = verdicts
    if all_verdicts:
        lines += ["## Which claims survive (computed from the statistics above)", "",
                  "| metric | " + " | ".join(all_verdicts) + " |", "|---|" + "---|" * len(all_verdicts)]
        for metric in METRICS:
            lines.append(f"| {LABELS[metric]} | " + " | ".join(all_verdicts[s].get(metric, "—")
                                                              for s in all_verdicts) + " |")
        lines += ["", "The claim \"ablation paths win insertion\" survives only where the ablation path is "
                  "significantly best on insertion from black *and* from noise; a lead on insertion from blur alone "
                  "is the circular one. Overhead ratio and seconds per image: 'Overhead ratios of the seed methods' "
                  "(`pathxai bench`) and the `s / image` column above.", ""]
    text = "\n".join(lines)
    (out / "ablation_path.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=list(SUITES), action="append", help="suite(s) to measure (repeatable)")
    ap.add_argument("--n-images", type=int, default=None, help="items (default: photos 60, digits-clutter 300)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", default="auto")
    ap.add_argument("--report", action="store_true", help="only rewrite ablation_path.md from saved results")
    ap.add_argument("--tiny", action="store_true", help="smoke run: both suites, a few items, cheap settings")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    batch = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    commands = {s: f"OMP_NUM_THREADS=1 python benchmarks/ablation_path_eval.py --suite {s}" for s in SUITES}
    suites = list(SUITES) if args.tiny else (args.suite or [])
    if not suites and not args.report:
        ap.error("give --suite (photos and/or digits-clutter), --report or --tiny")
    shown = " ".join(a for a in (sys.argv[1:] if argv is None else argv))
    for suite in suites:
        if args.tiny:
            n, steps = TINY["n_images"][suite], TINY["steps"]
            params = {**METHOD_PARAMS[suite], **TINY["params"]}
        else:
            n, steps, params = args.n_images or SUITES[suite], args.steps, METHOD_PARAMS[suite]
        print(f"{suite}: {n} items, {steps} steps", flush=True)
        folder = run_suite(suite, n, steps, params, args.out, args.seed, batch)
        summary = json.loads((folder / "summary.json").read_text())
        summary["settings"]["command"] = f"OMP_NUM_THREADS=1 python benchmarks/ablation_path_eval.py {shown}".strip()
        summary["settings"]["metrics_order"] = METRICS
        tmp = folder / f".summary.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(summary, indent=1))
        os.replace(tmp, folder / "summary.json")
    print(report(args.out, commands))
    return 0


if __name__ == "__main__":
    sys.exit(main())
