"""RELAX speed, memory and time-to-accuracy, side by side with the authors' package ``relax-xai`` (0.0.5).

    python benchmarks/relax_speed.py accuracy  [--replicates 10] [--masks 300] [--chunk 30] [--model clutter-simclr]
    python benchmarks/relax_speed.py memory    [--model clutter-simclr]
    python benchmarks/relax_speed.py accumulate

``accuracy`` (default: EfficientNet-Lite0 pooled features, the 'chelsea' photo at 224 x 224, one image; or the
clutter SimCLR encoder on one 64 x 64 canvas): ``--replicates`` rounds, each running, interleaved, (a) pathxai RELAX
(defaults: ``sampling="stratified"``, inference mode) with ``--masks`` masks, and the same with
``control_variate=True``, (b) relax-xai with the same number of masks (its own masks and estimator, under
``torch.no_grad()``), (c) the plain forward passes either needs (``--masks`` masked copies in chunks of ``--chunk``,
masking outside the timing). Each
round uses a fresh seed. Reported: overhead = time / plain-pass time over all rounds (so at replicates x masks masks),
and the importance error of each package: with R independent replicate maps of N0 masks, the per-pixel standard
deviation across replicates gives the RMS error of one run, which falls as sqrt(N0 / N) for a run of N masks (averaging
k replicates *is* a run of k N0 masks for an unbiased mean of independent masks). An empirical check of that law: the
RMS difference between the means of two disjoint halves of the replicates, / sqrt(2), at k = 1..R/2 replicates per half.
Importance is compared in relax-xai's units: relax-xai returns the mask-weighted mean (Eq. 12); pathxai's Eq. 2
estimate is divided by p = 0.5 (with stratified masks Σ_n M_n = N p exactly, so the two estimators coincide).

``memory``: peak RSS growth of pathxai RELAX from 1,000 to 30,000 masks (a small model: EfficientNet at 30,000 masks is
hours here), with and without an outer ``torch.no_grad()``; and relax-xai at 100-400 masks without no_grad.

``accumulate``: cost per mask of the core's ``accumulate_rows`` (one row at a time) against RELAX's blocked
``MaskedMoments`` (three statistics) at 224 x 224, and the mask generation, against one EfficientNet forward.

Results go to benchmarks/results/relax_speed_<what>.json; benchmarks/results/relax.md quotes them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import types
from pathlib import Path

import torch

import pathxai as px
from pathxai.bench import PeakRSS
from pathxai.core.evaluator import evaluation_mode

OUT = Path(__file__).parent / "results"


def relax_xai_class():
    """relax-xai's RELAX class. Its utils module imports torchvision for a helper we do not use: stub it."""
    if "torchvision" not in sys.modules:
        try:
            import torchvision  # noqa: F401
        except ImportError:
            sys.modules["torchvision"] = types.ModuleType("torchvision")
    from relax_xai.relax import RELAX as RelaxXAI
    return RelaxXAI


def load_input(model: str = "efficientnet-lite0-features") -> tuple[torch.Tensor, torch.nn.Module]:
    """(x (1, C, H, W), encoder): chelsea at 224 x 224 for EfficientNet, the first digits-clutter test canvas for
    the clutter encoder."""
    enc = px.models.load(model)
    if model == "efficientnet-lite0-features":
        img = px.data.sample_images(["chelsea"])[0].image
        return px.models.load("efficientnet-lite0").preprocess(img), enc
    x, _ = px.data.clutter_dataset("test", 1)
    return x, enc


def plain_passes(model: torch.nn.Module, x: torch.Tensor, n: int, chunk: int) -> float:
    """Seconds for ``n`` forward passes of masked copies of ``x`` (masked inputs made outside the timing)."""
    inputs = x * torch.rand(chunk, 1, *x.shape[2:])
    total = 0.0
    with evaluation_mode(model), torch.inference_mode():
        for s in range(0, n, chunk):
            k = min(chunk, n - s)
            batch = inputs[:k].contiguous()
            t0 = time.perf_counter()
            model(batch)
            total += time.perf_counter() - t0
    return total


def run_ours(enc, x, n_masks: int, chunk: int, seed: int, control_variate: bool = False
             ) -> tuple[torch.Tensor, float]:
    method = px.get_method("relax")(enc, n_masks=n_masks, batch_size=chunk, seed=seed, sampling="stratified",
                                    control_variate=control_variate, progress=False)
    t0 = time.perf_counter()
    e = method.explain(x)
    return e.attribution[0, 0].double() / 0.5, time.perf_counter() - t0


def run_relax_xai(enc, x, n_masks: int, chunk: int, seed: int) -> tuple[torch.Tensor, float]:
    RelaxXAI = relax_xai_class()
    torch.manual_seed(seed)
    enc.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        r = RelaxXAI(x, enc, batch_size=chunk, num_batches=n_masks // chunk)
        r.forward()
    return r.importance.double().clone(), time.perf_counter() - t0


def accuracy(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    x, enc = load_input(args.model)
    rounds = []
    arms = args.arms.split(",")
    runners = {"pathxai": lambda r: run_ours(enc, x, args.masks, args.chunk, seed=r),
               "pathxai-cv": lambda r: run_ours(enc, x, args.masks, args.chunk, seed=r, control_variate=True),
               "relax-xai": lambda r: run_relax_xai(enc, x, args.masks, args.chunk, seed=r)}
    maps = {name: [] for name in arms if name != "plain"}
    times = {name: 0.0 for name in arms}
    for r in range(args.replicates):
        row: dict = {"round": r}
        t_plain = plain_passes(enc, x, args.masks // 2, args.chunk) if "plain" in arms else 0.0
        for name in maps:
            m, t = runners[name](r)
            maps[name].append(m)
            times[name] += t
            row[f"{name}_s"] = t
        if "plain" in arms:
            t_plain += plain_passes(enc, x, args.masks - args.masks // 2, args.chunk)
            times["plain"] += t_plain
            row["plain_s"] = t_plain
        rounds.append(row)
        print(row, flush=True)
    n_total = args.masks * args.replicates
    result = {"model": args.model, "input": tuple(x.shape), "masks_per_replicate": args.masks,
              "replicates": args.replicates, "chunk": args.chunk, "threads": args.threads,
              "total_masks": n_total, "times_s": times, "rounds": rounds,
              "overhead": {name: times[name] / times["plain"] for name in maps} if "plain" in times else None,
              "machine": platform.platform(), "torch": torch.__version__}
    for name, ms in maps.items():
        stack = torch.stack(ms)
        sd_rms = float(stack.std(0).pow(2).mean().sqrt())   # RMS over pixels of the per-pixel sd of one run
        half = len(ms) // 2
        emp = []
        for k in range(1, half + 1):
            a, b = stack[:k].mean(0), stack[half:half + k].mean(0)
            emp.append({"masks": k * args.masks, "rms_error": float((a - b).pow(2).mean().sqrt() / 2 ** 0.5)})
        per_mask_s = times[name] / n_total
        result[name] = {"rms_error_at_N0": sd_rms, "seconds_per_mask": per_mask_s, "empirical_half_split": emp,
                        "mean_importance": float(stack.mean())}
    e_target = result["relax-xai"]["rms_error_at_N0"] * (args.masks / 3000) ** 0.5
    result["target"] = {"relax_xai_masks": 3000, "relax_xai_rms_error": e_target,
                        "relax_xai_seconds": 3000 * result["relax-xai"]["seconds_per_mask"]}
    for name in [n for n in maps if n != "relax-xai"]:
        n_ours = args.masks * (result[name]["rms_error_at_N0"] / e_target) ** 2
        seconds = n_ours * result[name]["seconds_per_mask"]
        result["target"][name] = {"masks_needed": n_ours, "seconds": seconds,
                                  "time_ratio": seconds / result["target"]["relax_xai_seconds"]}
    OUT.mkdir(exist_ok=True)
    result["arms"] = arms
    (OUT / f"relax_speed_accuracy_{args.model}_{args.masks}.json").write_text(json.dumps(result, indent=1))
    plot(result, maps, args)
    print(json.dumps({k: result[k] for k in ("overhead", "target")}, indent=1))


def plot(result: dict, maps: dict, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for name, colour in (("relax-xai", "tab:red"), ("pathxai", "tab:blue"), ("pathxai-cv", "tab:green")):
        if name not in result:
            continue
        r = result[name]
        ns = torch.logspace(1.7, 3.7, 40)
        ax.plot(ns * r["seconds_per_mask"], r["rms_error_at_N0"] * (args.masks / ns) ** 0.5, color=colour,
                label=f"{name}: RMS error ∝ 1/√N (from {args.replicates} replicates of {args.masks})")
        emp = r["empirical_half_split"]
        ax.scatter([e["masks"] * r["seconds_per_mask"] for e in emp], [e["rms_error"] for e in emp], color=colour,
                   s=14, label=f"{name}: half-split check")
    t = result["target"]
    ax.axhline(t["relax_xai_rms_error"], color="grey", lw=0.8, ls="--")
    ax.axvline(t["relax_xai_seconds"], color="tab:red", lw=0.8, ls=":")
    for name, colour in (("pathxai", "tab:blue"), ("pathxai-cv", "tab:green")):
        if name in t:
            ax.axvline(t[name]["seconds"], color=colour, lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("wall time (s, this machine)")
    ax.set_ylabel("RMS importance error (relax-xai units)")
    ax.set_title(f"RELAX on {args.model}, input {tuple(result['input'][1:])}: error vs time", fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(OUT / f"relax_error_vs_time_{args.model}_{args.masks}.png")


def memory(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    enc = px.models.load(args.model)
    c, h, w = enc.input_shape
    x = torch.rand(1, c, h, w, generator=torch.Generator().manual_seed(0))
    rows = []
    for outer_no_grad in (False, True):
        for n in args.counts:
            method = px.get_method("relax")(enc, n_masks=n, batch_size=64, seed=0, progress=False)
            method.explain(x) if n <= 1000 else None  # warm the allocator once
            with PeakRSS() as rss:
                t0 = time.perf_counter()
                if outer_no_grad:
                    with torch.no_grad():
                        method.explain(x)
                else:
                    method.explain(x)
                dt = time.perf_counter() - t0
            rows.append({"package": "pathxai", "masks": n, "outer_no_grad": outer_no_grad,
                         "peak_rss_growth_mib": rss.peak / 2 ** 20, "seconds": dt})
            print(rows[-1], flush=True)
    RelaxXAI = relax_xai_class()
    for n in args.relax_xai_counts:
        torch.manual_seed(0)
        with PeakRSS() as rss:
            r = RelaxXAI(x, enc, batch_size=50, num_batches=n // 50)
            r.forward()
        rows.append({"package": "relax-xai", "masks": n, "outer_no_grad": False,
                     "peak_rss_growth_mib": rss.peak / 2 ** 20})
        del r
        print(rows[-1], flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "relax_speed_memory.json").write_text(json.dumps({"model": args.model, "rows": rows}, indent=1))


def accumulate(args: argparse.Namespace) -> None:
    from pathxai.core import accumulate_rows
    from pathxai.methods.relax import MaskedMoments, relax_masks

    torch.set_num_threads(args.threads)
    n = 640
    t0 = time.perf_counter()
    masks = relax_masks(torch.arange(n), 0, (224, 224))
    t_masks = (time.perf_counter() - t0) / n
    scores = torch.rand(n)
    acc = torch.zeros(1, 224, 224)
    t0 = time.perf_counter()
    accumulate_rows(acc, torch.zeros(n, dtype=torch.long), masks, scores)
    t_rows = (time.perf_counter() - t0) / n
    mom = MaskedMoments(1, 224 * 224)
    t0 = time.perf_counter()
    for b in range(0, n, 64):
        mom.add_block(masks[b:b + 64].reshape(64, -1), scores[None, b:b + 64])
    t_blocks = (time.perf_counter() - t0) / n
    x, enc = load_input("efficientnet-lite0-features")
    t_fwd = plain_passes(enc, x, 64, 32) / 64
    res = {"mask_generation_ms": 1e3 * t_masks, "accumulate_rows_ms": 1e3 * t_rows,
           "masked_moments_ms": 1e3 * t_blocks, "efficientnet_forward_ms": 1e3 * t_fwd, "threads": args.threads}
    print(res)
    OUT.mkdir(exist_ok=True)
    (OUT / "relax_speed_accumulate.json").write_text(json.dumps(res, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["accuracy", "memory", "accumulate"])
    parser.add_argument("--replicates", type=int, default=10)
    parser.add_argument("--masks", type=int, default=300)
    parser.add_argument("--chunk", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--arms", default="pathxai,pathxai-cv,relax-xai,plain",
                        help="accuracy: comma-separated subset of pathxai, pathxai-cv, relax-xai, plain")
    parser.add_argument("--model", default=None, help="accuracy: efficientnet-lite0-features (default) or "
                        "clutter-simclr; memory: clutter-simclr (default)")
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10000, 30000])
    parser.add_argument("--relax-xai-counts", type=int, nargs="+", default=[100, 200, 400])
    args = parser.parse_args()
    os.environ.setdefault("PATHXAI_NO_DISK_CACHE", "1")
    if args.model is None:
        args.model = "clutter-simclr" if args.what == "memory" else "efficientnet-lite0-features"
    {"accuracy": accuracy, "memory": memory, "accumulate": accumulate}[args.what](args)


if __name__ == "__main__":
    main()
