"""Do the faithfulness metrics agree? Metric-agreement tables on the suites (issue 19).

    OMP_NUM_THREADS=1 python benchmarks/metric_agreement_table.py [--suites digits-clutter,photos]
        [--n-images digits-clutter=100,photos=12] [--out benchmarks/results/metric_agreement.md]

For each suite, :func:`pathxai.evaluate` explains ``--n-images`` items with every method of ``METHODS`` (defaults,
except RISE with 1000 masks on the photos) and scores each map with every metric of ``METRICS`` (insertion from a blur
and deletion to black on softmax scores, the pointing game, ROAD's MoRF / LeRF, IROF, sparseness (Gini),
complexity (entropy), relevance mass and rank); then :func:`pathxai.metrics.metric_agreement` ranks the methods by
each metric (in the metric's own direction) and reports, for every pair of metrics, Kendall's tau-b and Spearman's
rho of the two rankings with Kendall's two-sided p-value. Also written: each metric's ranking of the methods and the
per-(method, metric) means with their 95 % BCa intervals (``EvaluationResult.summary``), so a disagreement can be
traced to methods whose scores are within noise.

The stability metrics (relative input / output / representation stability) re-explain perturbed inputs, ten
explanations per item and method, and are left out for cost.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

import pathxai as px
from pathxai.core.files import atomic_write_text

METRICS = ("insertion", "deletion", "pointing", "road", "irof", "sparseness", "complexity", "relevance_mass",
           "relevance_rank")
METHODS = {
    "digits-clutter": ("saliency", "gradient_x_input", "ig", "smoothgrad", "gradient_shap", "deeplift",
                       "guided_backprop", "gradcam", "gradcam++", "occlusion", "rise", "lime"),
    # DeepLIFT and Guided Backprop refuse EfficientNet-Lite0 (ReLU6 has no rule in Captum): not in the photos list
    "photos": ("saliency", "gradient_x_input", "ig", "smoothgrad", "gradient_shap", "guided_ig", "gradcam",
               "gradcam++", "occlusion", "rise"),
}
PARAMS: dict[str, dict[str, dict]] = {"digits-clutter": {}, "photos": {"rise": {"n_masks": 1000}}}
N_IMAGES = {"digits-clutter": 100, "photos": 12}


def suite_section(suite: str, n_images: int, log) -> list[str]:
    """Evaluate ``METHODS[suite]`` on ``suite`` and return the markdown section."""
    t0 = time.perf_counter()
    result = px.evaluate(suite, list(METHODS[suite]), list(METRICS), n_images=n_images, seed=0,
                         method_params=PARAMS[suite], progress=False)
    seconds = time.perf_counter() - t0
    log(f"{suite}: evaluated in {seconds:.0f} s")
    agreement = px.metrics.metric_agreement(result)
    lines = [f"## {suite} ({n_images} items, model {result.model}; "
             f"{len(METHODS[suite])} methods; {seconds / 60:.1f} min)", "",
             "Kendall's tau-b between the method rankings of each pair of metrics (each metric ranks in its own "
             "direction: higher, lower or closer to zero is better):", "", agreement.format_table("kendall"), "",
             "Spearman's rho:", "", agreement.format_table("spearman").split("\n\n")[0], "",
             "Pairs with Kendall's two-sided p < 0.05 (not corrected for the "
             f"{len(agreement.pairs())} pairs):", ""]
    significant = [p for p in agreement.pairs() if math.isfinite(p["kendall_p"]) and p["kendall_p"] < 0.05]
    lines += [f"- {p['metric_a']} / {p['metric_b']}: tau {p['kendall']:+.2f} (p = {p['kendall_p']:.3g})"
              for p in significant] or ["- none"]
    lines += ["", "Each metric's ranking of the methods (best first):", "",
              "| metric | direction | ranking |", "|---|---|---|"]
    for m in agreement.metrics:
        lines.append(f"| {m} | {agreement.directions[m]} better | {', '.join(agreement.rankings[m])} |")
    lines += ["", "Means with 95 % BCa intervals (items resampled; pointing: per-class accuracy):", "",
              "| method | " + " | ".join(METRICS) + " |", "|---|" + "---:|" * len(METRICS)]
    cells = {(r["method"], r["metric"]): r for r in result.summary()}
    for method in METHODS[suite]:
        row = []
        for metric in METRICS:
            r = cells.get((method, metric))
            if r is None or not math.isfinite(float(r["mean"])):
                row.append("n/a")
                continue
            ci = r.get("ci95")
            row.append(f"{r['mean']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and all(map(math.isfinite, ci))
                                             else ""))
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    return lines + [""]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suites", default="digits-clutter,photos")
    parser.add_argument("--n-images", default="", help="per suite, e.g. digits-clutter=100,photos=12")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "metric_agreement.md"))
    args = parser.parse_args(argv)
    os.environ.setdefault("PATHXAI_NO_DISK_CACHE", "1")
    sizes = dict(N_IMAGES)
    for item in filter(None, args.n_images.split(",")):
        name, _, n = item.partition("=")
        sizes[name.strip()] = int(n)
    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    unknown = [s for s in suites if s not in METHODS]
    if unknown:
        raise SystemExit(f"--suites: no method list for {unknown}; choose from {', '.join(METHODS)}")
    command = "OMP_NUM_THREADS=1 python benchmarks/metric_agreement_table.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    lines = ["# Metric agreement on the suites", "", f"Command: `{command.strip()}`", "",
             f"Machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
             f"load average at start {load:.1f}; seed 0. Metrics: {', '.join(METRICS)} (pathxai evaluate's "
             "conventions: insertion from a blur, deletion to black, softmax scores, 50 steps). Stability metrics "
             "left out for cost (ten re-explanations per item and method).", "",
             "How to read it: a rank correlation near +1 means two metrics order these methods the same way; near 0 "
             "or negative means that choosing a 'best' method depends on the metric. With 10-12 methods a Kendall "
             "tau of about 0.45 or more is needed for p < 0.05.", ""]
    out = Path(args.out)
    for suite in suites:   # the file is written after every suite, so a later failure keeps the finished ones
        lines += suite_section(suite, sizes[suite], lambda m: print(m, file=sys.stderr, flush=True))
        atomic_write_text(out, "\n".join(lines).rstrip() + "\n")
    print(out)
    return out


if __name__ == "__main__":
    main()
