"""pathxai's Integrated Gradients vs Captum's, and vs the raw gradient passes they both need, in one process.

    python benchmarks/ig_vs_captum.py [--steps 32] [--repeats 3]

Every configuration runs the same model (EfficientNet-Lite0) on the same photo (chelsea, 224 x 224) with the same
number of steps; the runs are interleaved and each reported time is the median over repeats, so a busy machine slows
all of them alike. Ratios, not seconds, are the result.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from captum.attr import IntegratedGradients as CaptumIG

import pathxai as px
from pathxai.core.evaluator import clear_auto_cache


def plain_loop(model: torch.nn.Module, x: torch.Tensor, steps: int, chunk: int, target: int) -> None:
    """The physical limit: ``steps`` forward+backward passes of scaled inputs in chunks of ``chunk``."""
    alphas = torch.linspace(0, 1, steps)
    for p in model.parameters():
        p.requires_grad_(False)
    for s in range(0, steps, chunk):
        batch = (alphas[s:s + chunk].view(-1, 1, 1, 1) * x).requires_grad_(True)
        torch.autograd.grad(model(batch)[:, target].sum(), batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ["PATHXAI_NO_DISK_CACHE"] = "1"  # the cold `auto` run must probe in this process

    model = px.models.load("efficientnet-lite0")
    x = model.preprocess(px.data.sample_images(["chelsea"])[0].image)
    target, steps = 285, args.steps
    captum = CaptumIG(model)

    def run_captum(internal_batch_size):
        return lambda: captum.attribute(x, target=target, n_steps=steps, internal_batch_size=internal_batch_size)

    def run_ours(batch_size):
        method = px.get_method("ig")(model, n_steps=steps, batch_size=batch_size, progress=False)
        return lambda: method.explain(x, target)

    # warm up the allocator and kernels once
    plain_loop(model, x, 4, 4, target)

    cold = []
    for _ in range(args.repeats):
        clear_auto_cache()
        t0 = time.perf_counter()
        px.get_method("ig")(model, n_steps=steps, progress=False).explain(x, target)
        cold.append(time.perf_counter() - t0)
    # now the auto chunk size is settled for this process
    chosen = px.get_method("ig")(model, n_steps=steps, progress=False).explain(x, target).meta["chunk_sizes"]

    configs = {
        "plain loop, chunks of 4 (reference)": lambda: plain_loop(model, x, steps, 4, target),
        "plain loop, one chunk of all steps": lambda: plain_loop(model, x, steps, steps, target),
        "Captum IG, default (all steps in one batch)": run_captum(None),
        "Captum IG, internal_batch_size=4": run_captum(4),
        "pathxai ig, batch_size=4": run_ours(4),
        "pathxai ig, batch_size='auto' (settled)": run_ours("auto"),
    }
    times: dict[str, list[float]] = {k: [] for k in configs}
    for _ in range(args.repeats):
        for name, fn in configs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    med["pathxai ig, batch_size='auto' (first call, probing)"] = statistics.median(cold)

    ours = run_ours(4)().attribution
    ref = captum.attribute(x, target=target, n_steps=steps, internal_batch_size=4)
    agreement = float((ours - ref).abs().max() / ref.abs().max())

    ref_time = med["plain loop, chunks of 4 (reference)"]
    print(f"# IG vs Captum: EfficientNet-Lite0, 1 image 224x224, {steps} steps (Gauss-Legendre), "
          f"median of {args.repeats}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; auto chose chunk sizes {chosen}")
    print()
    print("| configuration | seconds | vs plain loop (chunks of 4) | vs Captum default |")
    print("|---|---:|---:|---:|")
    cap = med["Captum IG, default (all steps in one batch)"]
    for name, t in med.items():
        print(f"| {name} | {t:.2f} | {t / ref_time:.2f} | {t / cap:.2f} |")
    print()
    print(f"max |pathxai - Captum| / max |Captum| = {agreement:.2e}")
    same_bs = med["pathxai ig, batch_size=4"] / med["Captum IG, internal_batch_size=4"]
    auto = med["pathxai ig, batch_size='auto' (settled)"] / cap
    print(f"pathxai / Captum at the same batch size 4: {same_bs:.2f}; pathxai auto (settled) / Captum default: "
          f"{auto:.2f}")


if __name__ == "__main__":
    main()
