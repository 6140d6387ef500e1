"""The RELAX paper's Tables 1-2 in small form: localisation and monotonicity of RELAX, U-RELAX and the three gradient
baselines for representations, on our suites with two encoders.

    python benchmarks/relax_tables.py --suite digits-clutter [--n-images 50] [--n-masks 1000]   # self-supervised
    python benchmarks/relax_tables.py --suite photos [--n-images 6] [--n-masks 256]             # supervised

- ``digits-clutter``: encoder ``clutter-simclr`` (SimCLR, no labels; see pathxai.models.encoders), monotonicity
  classifier ``digits-clutter-cnn`` (the suite's model), target = the digit label. Objects: the digit's ink box.
- ``photos``: encoder ``efficientnet-lite0-features`` (supervised ImageNet features, the paper's "Supervised"
  column), monotonicity classifier EfficientNet-Lite0 itself (the paper uses AlexNet), target = the suite label.

Scores (pathxai.metrics): pointing game against the unified object box (tolerance 0), top-k intersection
(k = 2 % of the pixels, = Quantus' 1000 at 224²), relevance rank accuracy, monotonicity correlation (Nguyen & Martinez;
``--groups`` pixel groups x ``--samples`` uniform-noise draws). U-RELAX is the paper's setting (median, γ = 1) applied
to the same RELAX run (``u_relax`` does exactly this with the same seed). RELAX uses the library defaults (stratified
masks, Eq. 2) with ``--n-masks`` masks, fewer than the paper's 3000 to fit this machine. Each score is the mean over
images ± the standard error over images; the paper's "± over 3 runs" is a different quantity.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import pathxai as px
from pathxai.methods.relax import u_relax
from pathxai.metrics import monotonicity_correlation, pointing_game_unified, relevance_rank_accuracy, top_k_intersection

OUT = Path(__file__).parent / "results"
SETTINGS = {
    "digits-clutter": {"encoder": "clutter-simclr", "classifier": "digits-clutter-cnn", "n_images": 50,
                       "n_masks": 1000, "groups": 64, "samples": 8, "batch": 128},
    "photos": {"encoder": "efficientnet-lite0-features", "classifier": "efficientnet-lite0", "n_images": 6,
               "n_masks": 256, "groups": 16, "samples": 2, "batch": 16},
}
METHODS = ["rep_saliency", "rep_smooth_saliency", "rep_guided_saliency", "relax", "u_relax"]
LABELS = {"rep_saliency": "Saliency", "rep_smooth_saliency": "Smooth Saliency",
          "rep_guided_saliency": "Guided Saliency", "relax": "RELAX", "u_relax": "U-RELAX"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=sorted(SETTINGS), required=True)
    parser.add_argument("--n-images", type=int)
    parser.add_argument("--n-masks", type=int)
    parser.add_argument("--groups", type=int)
    parser.add_argument("--samples", type=int)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    cfg = dict(SETTINGS[args.suite])
    for key in ("n_images", "n_masks", "groups", "samples"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    torch.set_num_threads(args.threads)
    suite = px.data.load_suite(args.suite, n_images=cfg["n_images"], seed=0)
    x, labels, boxes = suite.batch()
    encoder = px.models.load(cfg["encoder"])
    classifier = px.models.load(cfg["classifier"])
    maps: dict[str, torch.Tensor] = {}
    timings: dict[str, float] = {}
    for name in METHODS[:3]:
        t0 = time.perf_counter()
        maps[name] = px.get_method(name)(encoder, batch_size=cfg["batch"], seed=0, progress=False).explain(x).saliency()
        timings[name] = time.perf_counter() - t0
        print(name, f"{timings[name]:.0f}s", flush=True)
    t0 = time.perf_counter()
    e = px.get_method("relax")(encoder, n_masks=cfg["n_masks"], batch_size=cfg["batch"], seed=0,
                               progress=False).explain(x)
    timings["relax"] = time.perf_counter() - t0
    maps["relax"] = e.saliency()
    maps["u_relax"] = u_relax(e.attribution, e.extras["uncertainty"], 1.0, "median")[0][:, 0]
    print("relax", f"{timings['relax']:.0f}s", flush=True)
    rows = {}
    for name in METHODS:
        s = maps[name]
        t0 = time.perf_counter()
        mono = monotonicity_correlation(classifier, x, s, labels, n_groups=cfg["groups"], n_samples=cfg["samples"],
                                        batch_size=cfg["batch"], seed=0)
        scores = {"pointing game": pointing_game_unified(s, boxes).score,
                  "top k": top_k_intersection(s, boxes).score,
                  "relevance rank": relevance_rank_accuracy(s, boxes).score,
                  "monotonicity": mono.score}
        rows[name] = {k: {"mean": 100 * float(v.double().nanmean()),
                          "sem": 100 * float(v.double().std() / math.sqrt(len(v)))} for k, v in scores.items()}
        print(name, {k: round(v["mean"], 1) for k, v in rows[name].items()}, f"{time.perf_counter() - t0:.0f}s",
              flush=True)
    result = {"suite": args.suite, "config": cfg, "n_images": len(x), "rows": rows, "method_seconds": timings,
              "object_fraction": float(torch.stack([px.metrics.boxes_to_mask(b, *x.shape[-2:]) for b in boxes])
                                       .double().mean())}
    OUT.mkdir(exist_ok=True)
    (OUT / f"relax_tables_{args.suite}.json").write_text(json.dumps(result, indent=1))
    lines = [f"| score | {' | '.join(LABELS[m] for m in METHODS)} |", "|---|" + "---:|" * len(METHODS)]
    for score in ("pointing game", "top k", "relevance rank", "monotonicity"):
        best = max(METHODS, key=lambda m: rows[m][score]["mean"])
        cells = []
        for m in METHODS:
            v = rows[m][score]
            text = f"{v['mean']:.1f} ± {v['sem']:.1f}"
            cells.append(f"**{text}**" if m == best else text)
        lines.append(f"| {score} | {' | '.join(cells)} |")
    table = "\n".join(lines)
    (OUT / f"relax_tables_{args.suite}.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
