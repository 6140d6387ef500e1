"""SIFT-based ablation (thesis ch. 4) vs pixel methods: pointing game and insertion/deletion, plus timings.

    python benchmarks/sift_ablation.py timing [--repeats 2]
    python benchmarks/sift_ablation.py compare --suite digits-clutter --n-images 16
    python benchmarks/sift_ablation.py compare --suite photos --n-images 4 --image-batch 4
    python benchmarks/sift_ablation.py compare --suite digits-clutter --n-images 16 --sift-heatmap image \
        --methods sift_ablation_path sift_rise
    python benchmarks/sift_ablation.py relax --suite digits-clutter [--n-images 50] [--n-masks 1000]
    python benchmarks/sift_ablation.py relax --suite photos [--n-images 6] [--n-masks 256]

``timing``: the decomposition (E_SIFT + decoder set-up) of a 224 x 224 photo, and one iteration of the SIFT path
(n_steps forward+backward passes through D(theta) and EfficientNet-Lite0) next to one pixel-path iteration.
``compare``: ``px.evaluate`` on a suite with the methods' settings printed alongside the table (markdown).
``relax``: ``sift_relax`` (RELAX over keypoint gains) vs pixel RELAX / U-RELAX on the representation encoders, images,
scores and number of masks of benchmarks/relax_tables.py (its SETTINGS); the same N for both. SIFT-RELAX's pixel map
is reported with the Eq. 4.46 and the Eq. 4.48 extraction (the latter from the same keypoint importance, the image
decomposed once more); U-RELAX rows use each method's own uncertainty. Writes results/sift_relax_<suite>.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch

import pathxai as px
from pathxai.methods.relax import u_relax
from pathxai.methods.sift_ablation import SiftAblationPath, SiftRELAX, sift_decompose
from pathxai.metrics import monotonicity_correlation, pointing_game_unified, relevance_rank_accuracy, top_k_intersection
from relax_tables import SETTINGS as RELAX_SETTINGS  # benchmarks/ is the script's directory, on sys.path

OUT = Path(__file__).parent / "results"
# SIFT-RELAX decomposition settings per suite (photos: the keypoint cap of the other SIFT methods' photo runs)
SIFT_RELAX_PARAMS = {"digits-clutter": {}, "photos": {"max_keypoints": 200}}
RELAX_ROWS = {"relax": "RELAX (pixels)", "u_relax": "U-RELAX (pixels)", "sift_relax": "SIFT-RELAX (Eq. 4.46)",
              "sift_u_relax": "SIFT-U-RELAX (Eq. 4.46)", "sift_relax_fine": "SIFT-RELAX (Eq. 4.46, α = 1)",
              "sift_relax_image": "SIFT-RELAX (Eq. 4.48)", "image_contrast": "control: Eq. 4.48 of θ = 1"}

# settings that fit 2 busy CPU cores; the thesis uses more path steps and iterations
PARAMS = {
    "photos": {
        "sift_ablation_path": {"n_steps": 8, "min_iterations": 4, "max_iterations": 8, "max_keypoints": 200},
        "sift_rise": {"n_masks": 200, "max_keypoints": 200},
        "ablation_path": {"n_steps": 8, "min_iterations": 4, "max_iterations": 8, "mask_size": 32},
        "rise": {"n_masks": 500},
        "gradcam": {},
    },
    "digits-clutter": {
        "sift_ablation_path": {"n_steps": 10, "min_iterations": 6, "max_iterations": 20},
        "sift_rise": {"n_masks": 500},
        "ablation_path": {"n_steps": 10, "min_iterations": 6, "max_iterations": 20, "mask_size": 32},
        "rise": {"n_masks": 500},
        "gradcam": {},
    },
}


def timing(repeats: int) -> None:
    model = px.models.load("efficientnet-lite0")
    x = model.preprocess(px.data.sample_images()[0].image)
    dec_times = []
    for _ in range(repeats):
        t = time.perf_counter()
        dec = sift_decompose(x[0])
        dec_times.append(time.perf_counter() - t)
    k = dec.n_features
    theta = torch.rand(8, k)
    t = time.perf_counter()
    with torch.no_grad():
        dec.decode(theta)
    decode8 = time.perf_counter() - t
    one = {}
    for name, cls, extra in (("sift_ablation_path", SiftAblationPath, {}),
                             ("ablation_path", px.get_method("ablation_path"), {"baseline": "zero", "mask_size": 64})):
        runs = []
        for _ in range(repeats):
            m0 = cls(model, n_steps=14, min_iterations=0, max_iterations=0, batch_size=8, **extra)
            m1 = cls(model, n_steps=14, min_iterations=1, max_iterations=1, batch_size=8, **extra)
            t = time.perf_counter()
            e0 = m0.explain(x, 285)
            t0 = time.perf_counter() - t
            t = time.perf_counter()
            e1 = m1.explain(x, 285)
            t1 = time.perf_counter() - t
            dt = (e1.extras["decomposition_time_s"][0] - e0.extras["decomposition_time_s"][0]
                  if "decomposition_time_s" in e0.extras else 0.0)
            runs.append(t1 - t0 - float(dt))
        one[name] = statistics.median(runs)
    print(f"| image | K | decoder nnz | decomposition (s) | decode 8 gain vectors (s) | SIFT path iteration, "
          f"14 steps (s) | pixel path iteration, 14 steps (s) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| chelsea 224x224 | {k} | {dec.nnz()} | {statistics.median(dec_times):.2f} | {decode8:.3f} | "
          f"{one['sift_ablation_path']:.2f} | {one['ablation_path']:.2f} |")


def compare(suite: str, n_images: int, methods: list[str], image_batch: int, sift_heatmap: str) -> None:
    params = {m: dict(PARAMS[suite].get(m, {})) for m in methods}
    for m in methods:
        if m.startswith("sift_"):
            params[m]["heatmap"] = sift_heatmap
    t = time.perf_counter()
    r = px.evaluate(suite, methods, ("pointing", "insertion", "deletion"), n_images=n_images, batch_size=8,
                    method_params=params, image_batch=image_batch, progress=False)
    print(r.format_table())
    print()
    print(f"settings: {params}")
    print(f"seconds per image: {{{', '.join(f'{k}: {v:.1f}' for k, v in r.seconds.items())}}}")
    print(f"total wall time: {time.perf_counter() - t:.0f} s, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")


def keypoint_pointing(importances: list[torch.Tensor], keypoints: list[torch.Tensor], boxes: list
                      ) -> tuple[float, float]:
    """Pointing game in the keypoint basis, before any pixel extraction: the share of images whose most important
    keypoint has its centre in one of the image's boxes (x0, y0, x1, y1), and the chance level (mean share of the
    keypoints that lie in a box)."""
    hits, chance = [], []
    for imp, kp, bxs in zip(importances, keypoints, boxes):
        y, x = kp[:, 0], kp[:, 1]
        inside = torch.zeros(len(kp), dtype=torch.bool)
        for x0, y0, x1, y1 in bxs:
            inside |= (x >= x0 - 0.5) & (x < x1 - 0.5) & (y >= y0 - 0.5) & (y < y1 - 0.5)  # pixel centres at k
        hits.append(float(inside[int(imp.argmax())]))
        chance.append(float(inside.double().mean()))
    return statistics.mean(hits), statistics.mean(chance)


def relax(suite_name: str, n_images: int | None, n_masks: int | None) -> None:
    cfg = dict(RELAX_SETTINGS[suite_name])
    cfg["n_images"] = n_images or cfg["n_images"]
    cfg["n_masks"] = n_masks or cfg["n_masks"]
    suite = px.data.load_suite(suite_name, n_images=cfg["n_images"], seed=0)
    x, labels, boxes = suite.batch()
    encoder = px.models.load(cfg["encoder"])
    classifier = px.models.load(cfg["classifier"])
    maps: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    e = px.get_method("relax")(encoder, n_masks=cfg["n_masks"], batch_size=cfg["batch"], seed=0,
                               progress=False).explain(x)
    seconds["relax"] = time.perf_counter() - t0
    maps["relax"] = e.saliency()
    maps["u_relax"] = u_relax(e.attribution, e.extras["uncertainty"], 1.0, "median")[0][:, 0]
    print("relax", f"{seconds['relax']:.0f}s", flush=True)
    sift_params = SIFT_RELAX_PARAMS[suite_name]
    t0 = time.perf_counter()
    m = SiftRELAX(encoder, n_masks=cfg["n_masks"], batch_size=cfg["batch"], seed=0, progress=False, **sift_params)
    e = m.explain(x)
    seconds["sift_relax"] = time.perf_counter() - t0
    maps["sift_relax"] = e.saliency()
    maps["sift_u_relax"] = e.extras["u_relax"][:, 0]
    print("sift_relax", f"{seconds['sift_relax']:.0f}s", flush=True)
    # other pixel extractions of the same keypoint importance (no model evaluations; one more decomposition with
    # heat exponent 1, which changes only the Eq. 4.46 field): Eq. 4.46 favouring fine cells, Eq. 4.48, and as a
    # control Eq. 4.48 of uniform gains -- the image's own band-pass contrast, which knows nothing of the model
    fine = SiftRELAX(encoder, heat_exponent=1.0, **sift_params)
    image_heat = SiftRELAX(encoder, heatmap="image", **sift_params)
    extra: dict[str, list[torch.Tensor]] = {"sift_relax_fine": [], "sift_relax_image": [], "image_contrast": []}
    for i, imp in enumerate(e.extras["feature_importance"]):
        dec = fine.decompose(x[i])
        extra["sift_relax_fine"].append(fine.importance_heatmap(dec, imp))
        extra["sift_relax_image"].append(image_heat.importance_heatmap(dec, imp))
        extra["image_contrast"].append(image_heat.importance_heatmap(dec, torch.ones_like(imp)))
    maps.update({k: torch.stack(v).to(x.dtype) for k, v in extra.items()})
    rows = {}
    for name, s in maps.items():
        mono = monotonicity_correlation(classifier, x, s, labels, n_groups=cfg["groups"], n_samples=cfg["samples"],
                                        batch_size=cfg["batch"], seed=0)
        scores = {"pointing game": pointing_game_unified(s, boxes).score, "top k": top_k_intersection(s, boxes).score,
                  "relevance rank": relevance_rank_accuracy(s, boxes).score, "monotonicity": mono.score}
        rows[name] = {k: {"mean": 100 * float(v.double().nanmean()),
                          "sem": 100 * float(v.double().std() / math.sqrt(len(v)))} for k, v in scores.items()}
        print(name, {k: round(v["mean"], 1) for k, v in rows[name].items()}, flush=True)
    n_features = e.extras["n_features"].double()
    keypoint_hits, keypoint_chance = keypoint_pointing(e.extras["feature_importance"], e.extras["keypoints"], boxes)
    print(f"keypoint pointing (top keypoint's centre in a box): {100 * keypoint_hits:.1f} %, chance (share of "
          f"keypoints in a box): {100 * keypoint_chance:.1f} %")
    result = {"suite": suite_name, "config": cfg, "sift_params": sift_params, "n_images": len(x), "rows": rows,
              "method_seconds": seconds, "keypoints_mean": float(n_features.mean()),
              "control_variate": [m.uses_control_variate(int(k)) for k in e.extras["n_features"]],
              "keypoint_pointing": keypoint_hits, "keypoint_chance": keypoint_chance,
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    OUT.mkdir(exist_ok=True)
    (OUT / f"sift_relax_{suite_name}.json").write_text(json.dumps(result, indent=1))
    names = list(maps)
    lines = [f"| score | {' | '.join(RELAX_ROWS[n] for n in names)} |", "|---|" + "---:|" * len(names)]
    for score in ("pointing game", "top k", "relevance rank", "monotonicity"):
        best = max(names, key=lambda n: rows[n][score]["mean"])
        cells = [f"{rows[n][score]['mean']:.1f} ± {rows[n][score]['sem']:.1f}" for n in names]
        cells = [f"**{c}**" if n == best else c for n, c in zip(names, cells)]
        lines.append(f"| {score} | {' | '.join(cells)} |")
    time_cells = {"relax": f"{seconds['relax'] / len(x):.1f}", "sift_relax": f"{seconds['sift_relax'] / len(x):.1f}",
                  "image_contrast": "no model"}
    lines.append(f"| s / image | {' | '.join(time_cells.get(n, 'same run') for n in names)} |")
    table = "\n".join(lines)
    (OUT / f"sift_relax_{suite_name}.md").write_text(table + "\n")
    print(table)
    print(f"settings: {cfg}, sift: {sift_params}, mean keypoints {float(n_features.mean()):.1f}, control variate on "
          f"for {sum(result['control_variate'])}/{len(x)} images, OMP_NUM_THREADS={result['omp_num_threads']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("timing")
    t.add_argument("--repeats", type=int, default=2)
    c = sub.add_parser("compare")
    c.add_argument("--suite", default="digits-clutter", choices=sorted(PARAMS))
    c.add_argument("--n-images", type=int, default=16)
    c.add_argument("--image-batch", type=int, default=8)
    c.add_argument("--sift-heatmap", default="voronoi", choices=["voronoi", "image"],
                   help="pixel heatmap of the SIFT methods: Eq. 4.46 (voronoi) or Eq. 4.48 (image)")
    c.add_argument("--methods", nargs="+",
                   default=["sift_ablation_path", "sift_rise", "ablation_path", "rise", "gradcam"])
    r = sub.add_parser("relax")
    r.add_argument("--suite", default="digits-clutter", choices=sorted(RELAX_SETTINGS))
    r.add_argument("--n-images", type=int)
    r.add_argument("--n-masks", type=int)
    r.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    if a.cmd == "timing":
        timing(a.repeats)
    elif a.cmd == "relax":
        torch.set_num_threads(a.threads)
        relax(a.suite, a.n_images, a.n_masks)
    else:
        compare(a.suite, a.n_images, a.methods, a.image_batch, a.sift_heatmap)


if __name__ == "__main__":
    main()
