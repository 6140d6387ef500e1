"""SIFT-based ablation (thesis ch. 4) vs pixel methods: pointing game and insertion/deletion, plus timings.

    python benchmarks/sift_ablation.py timing [--repeats 2]
    python benchmarks/sift_ablation.py compare --suite digits-clutter --n-images 16
    python benchmarks/sift_ablation.py compare --suite photos --n-images 4 --image-batch 4
    python benchmarks/sift_ablation.py compare --suite digits-clutter --n-images 16 --sift-heatmap image \
        --methods sift_ablation_path sift_rise

``timing``: the decomposition (E_SIFT + decoder set-up) of a 224 x 224 photo, and one iteration of the SIFT path
(n_steps forward+backward passes through D(theta) and EfficientNet-Lite0) next to one pixel-path iteration.
``compare``: ``px.evaluate`` on a suite with the methods' settings printed alongside the table (markdown).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import pathxai as px
from pathxai.methods.sift_ablation import SiftAblationPath, sift_decompose

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
    a = ap.parse_args()
    if a.cmd == "timing":
        timing(a.repeats)
    else:
        compare(a.suite, a.n_images, a.methods, a.image_batch, a.sift_heatmap)


if __name__ == "__main__":
    main()
