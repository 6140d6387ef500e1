"""Error versus wall time of every sampling method: the paper's plain Monte Carlo (``sampling="mc"``) against the
default sampler, and how close ``tol`` stops to the number of samples actually needed.

    python benchmarks/sampling_accuracy.py [--models digits-clutter-cnn,efficientnet-lite0] [--methods rise,...]
                                           [--seeds 5] [--images 2] [--ref-factor 16] [--merge] [--tiny]
    python benchmarks/sampling_accuracy.py --choose [--seeds 12]
    python benchmarks/sampling_accuracy.py --calibrate --models efficientnet-lite0 --methods rise,sift_rise
    python benchmarks/sampling_accuracy.py --tol-only --models efficientnet-lite0 [--methods rise,...]

``--choose`` is how the defaults were picked: on the digits-clutter CNN (one canvas; RELAX: the clutter SimCLR
encoder), at a small budget per method (``CHOOSE_BUDGET``), every ``sampling`` option of the method, ``--seeds``
runs each: the error against a 16x-budget reference (norm as below), the variance ratio to ``"mc"`` at equal
samples, and the calibration of ``extras["stderr"]`` (RMS reported standard error / RMS spread over seeds). Writes
sampling_choice_digits-clutter-cnn.{json,md}.

For each model (the digits-clutter CNN on clutter canvases; EfficientNet-Lite0 on the bundled photos; RELAX explains
the matching encoder, clutter-simclr / efficientnet-lite0-features) and each sampling method:

1. a reference map per image from a high budget (``REF_FACTOR`` x the paper's budget, default sampler); its own
   standard error (``extras["stderr"]``) is subtracted from the squared errors below, so the reference's residual
   noise does not count against the runs;
2. for ``sampling="mc"`` and the default, at budgets paper x (1/16, 1/8, 1/4, 1/2, 1) (and 2 for mc), ``--seeds``
   runs each: the error = RMS over the map of (estimate - reference) / the reference's spatial standard deviation,
   the reference's own noise taken out of both (the norm of ``tol``),
   RMS over images and seeds, and the mean wall time (``meta["wall_time_s"]``, everything the method does);
3. the goal ratio: the default's time to reach mc's error at the paper's budget (log-log interpolation of the
   default's error-vs-time curve; extrapolated with error ~ time^-1/2 below its smallest budget, marked ``<=``),
   divided by mc's time at the paper's budget; the evaluations ratio likewise;
4. ``tol``, at two tolerances: mc's error at the paper's budget (the goal's error; for a default many times more
   efficient than mc, its need can lie below the stopping rule's first check -- e.g. 4 Sobol nets of 64 masks --
   which then sets the stop), and the default's own error at half the paper's budget (a need inside the measured
   curve). The default runs with that ``tol`` and a cap of 4x the paper's budget, each image explained alone, per
   seed: ``meta["samples_used"]`` against the samples that image needs for that error (its own error-vs-budget
   curve under the default, RMS over seeds, interpolated log-log); reported as mean used over mean needed, and as
   the RMS error at the stop over tol. (An earlier version took the largest stop of a batch
   against the need of the batch's RMS error, which counts a batch waiting for its hardest input as lateness.)
5. the reference's own relative error (``meta["relative_error"]``, worst image): above 0.3 its noise is not well
   below its signal, the error norm's denominator is then poorly known, and the row is flagged "too noisy".

Paper budgets: RISE 4000 masks, SmoothGrad / SmoothGrad² / VarGrad 50 samples, FI 100, RELAX 3000, LIME / Kernel
SHAP 200 (Captum's default), sift_rise 500 (its default). ``--tiny`` runs everything at 1/16 of those sizes with one
image and two seeds, to check that the script works (its numbers are not the benchmark).

``--calibrate`` checks the default sampler's error estimates on each model's first image, at ``--fractions`` of the
paper's budget, ``--seeds`` runs each (default 16), without any reference: the RMS reported ``extras["stderr"]`` over
the RMS spread of the estimates over seeds, and the RMS reported ``meta["relative_error"]`` (what ``tol`` stops on)
over the relative error computed from that spread (the spread over the spatial SD of the mean over seeds, its noise
taken out); 1 = calibrated, with 95% percentile-bootstrap intervals over seeds. Writes
sampling_calibration_<model>.{json,md}.

``--tol-only`` re-runs step 4 alone on the curves of a saved JSON (its images, seeds and reference budget; the
reference is recomputed from its fixed seed).

Writes benchmarks/results/sampling_<model>.json, sampling_<model>.md (table) and sampling_error_vs_time_<model>.png.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import pathxai as px
from pathxai.core.sampling import ToleranceNotReachedWarning

OUT = Path(__file__).parent / "results"
PAPER = {"rise": 4000, "smoothgrad": 50, "smoothgrad_sq": 50, "vargrad": 50, "fi": 100, "relax": 3000, "lime": 200,
         "kernel_shap": 200, "sift_rise": 500}
BUDGET_PARAM = {"rise": "n_masks", "relax": "n_masks", "sift_rise": "n_masks"}
FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)
MC_EXTRA = (2.0,)
REF_FACTOR = 16
CHOOSE_BUDGET = {"rise": 512, "sift_rise": 256, "smoothgrad": 48, "smoothgrad_sq": 48, "vargrad": 48, "fi": 96,
                 "relax": 256, "lime": 200, "kernel_shap": 200}
OPTIONS = {"rise": ("mc", "stratified", "antithetic", "sobol"), "sift_rise": ("mc", "stratified", "antithetic", "sobol"),
           "relax": ("mc", "antithetic", "stratified"), "lime": ("mc", "antithetic"), "kernel_shap": ("mc", "antithetic")}


def load(model_name: str, n_images: int) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    """(classifier, encoder for RELAX, images (n, C, H, W))."""
    if model_name == "digits-clutter-cnn":
        x, _ = px.data.clutter_dataset("test", n_images)
        return px.models.load("digits-clutter-cnn"), px.models.load("clutter-simclr"), x
    model = px.models.load("efficientnet-lite0")
    photos = px.data.sample_images()[:n_images]
    x = torch.cat([model.preprocess(p.image) for p in photos])
    return model, px.models.load("efficientnet-lite0-features"), x


def run(name: str, model: torch.nn.Module, encoder: torch.nn.Module, x: torch.Tensor, budget: int, seed: int,
        sampling: str | None, tol: float | None = None) -> px.core.Explanation:
    params = {BUDGET_PARAM.get(name, "n_samples"): int(budget), "seed": seed, "progress": False}
    if sampling is not None:
        params["sampling"] = sampling
    if tol is not None:
        params["tol"] = tol
    if name == "relax":
        return px.get_method(name)(encoder, **params).explain(x)
    return px.get_method(name)(model, **params).explain(x, None)


def rel_errors(est: torch.Tensor, ref: torch.Tensor, ref_se: torch.Tensor) -> list[float]:
    """Per image, the squared relative error [mean((est - ref)^2) - mean(ref_se^2)] / [var_map(ref) - mean(ref_se^2)]
    (>= 0): the squared RMS error over the true map's spatial standard deviation, the norm of ``tol``
    (:func:`pathxai.core.sampling.relative_error`), with the reference's own noise taken out of both."""
    e, r, s = est.flatten(1).double(), ref.flatten(1).double(), ref_se.flatten(1).double()
    noise = (s ** 2).mean(1)
    sq = ((e - r) ** 2).mean(1) - noise
    signal = (r.var(1, unbiased=False) - noise).clamp_min(1e-300)
    return [max(float(v), 0.0) for v in (sq / signal)]


def rel_error(est: torch.Tensor, ref: torch.Tensor, ref_se: torch.Tensor) -> float:
    """The RMS over images of :func:`rel_errors` (its square root)."""
    return math.sqrt(float(np.mean(rel_errors(est, ref, ref_se))))


def interp_loglog(xs: list[float], ys: list[float], y: float) -> tuple[float, str]:
    """x at which the decreasing curve ys(xs) reaches y (log-log), with '' / '<=' (extrapolated below the first
    point with slope -1/2) / '>' (not reached)."""
    pts = sorted(zip(xs, ys))
    if pts[0][1] <= y:
        x0, y0 = pts[0]
        return x0 * (y0 / y) ** 2, "<="
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if y1 <= y < y0:
            t = (math.log(y) - math.log(y0)) / (math.log(y1) - math.log(y0))
            return math.exp(math.log(x0) + t * (math.log(x1) - math.log(x0))), ""
    return pts[-1][0], ">"


def in_paper_order(results: list[dict]) -> list[dict]:
    """``results`` sorted as :data:`PAPER` lists the methods (others last)."""
    order = {m: i for i, m in enumerate(PAPER)}
    return sorted(results, key=lambda r: order.get(r["method"], len(order)))


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def method_default(name: str) -> str:
    cls = px.get_method(name)
    return getattr(cls, "sampling_default", None) or \
        __import__("inspect").signature(cls.__init__).parameters["sampling"].default


def bench_method(name: str, model: torch.nn.Module, encoder: torch.nn.Module, x: torch.Tensor, seeds: int,
                 scale: float, ref_factor: int = REF_FACTOR) -> dict:
    paper = max(8, int(round(PAPER[name] * scale)))
    default = method_default(name)
    ref = run(name, model, encoder, x, paper * ref_factor, 10_000, None)
    ref_err = ref.meta.get("relative_error") or [math.nan]
    out = {"method": name, "paper_budget": paper, "default": default, "reference_budget": paper * ref_factor,
           "reference_relative_error": float(max(ref_err)),
           "curves": {}}
    for sampling in dict.fromkeys(("mc", default)):
        fractions = FRACTIONS + (MC_EXTRA if sampling == "mc" else ())
        curve = []
        for f in fractions:
            budget = max(8, int(round(paper * f)))
            errs, times, evals, used = [], [], [], []
            for s in range(seeds):
                e = run(name, model, encoder, x, budget, s, sampling)
                errs.append(rel_errors(e.attribution, ref.attribution, ref.extras["stderr"]))  # squared, per image
                times.append(e.meta["wall_time_s"])
                evals.append(e.meta["model_evaluations"])
                used.append(e.meta.get("samples_used", [budget])[0])
            sq = np.asarray(errs)                                                            # (seeds, images)
            curve.append({"budget": budget, "samples": float(np.mean(used)),
                          "error": float(np.sqrt(sq.mean())), "time_s": float(np.mean(times)),
                          "evaluations": float(np.mean(evals)),
                          "error_by_image": [float(v) for v in np.sqrt(sq.mean(0))]})
            print(f"  {name:13s} {sampling:10s} n={budget:5d} err {curve[-1]['error']:.4f} "
                  f"t {curve[-1]['time_s']:.2f}s", flush=True)
        out["curves"][sampling] = curve
    mc_paper = next(p for p in out["curves"]["mc"] if p["budget"] == paper)
    d = out["curves"][default]
    t_need, t_flag = interp_loglog([p["time_s"] for p in d], [p["error"] for p in d], mc_paper["error"])
    e_need, e_flag = interp_loglog([p["evaluations"] for p in d], [p["error"] for p in d], mc_paper["error"])
    n_need, n_flag = interp_loglog([p["samples"] for p in d], [p["error"] for p in d], mc_paper["error"])
    # variance per sample, mc over the default, at a quarter of the paper's budget (equal samples up to rounding)
    quarter = max(8, int(round(paper / 4)))
    p_mc = next(p for p in out["curves"]["mc"] if p["budget"] == quarter)
    p_def = next(p for p in d if p["budget"] == quarter)
    out["variance_ratio_equal_samples"] = (p_mc["error"] ** 2 * p_mc["samples"]) / max(
        p_def["error"] ** 2 * p_def["samples"], 1e-300)
    out["goal"] = {"mc_error_at_paper_budget": mc_paper["error"], "mc_time_s": mc_paper["time_s"],
                   "default_time_s": t_need, "time_ratio": t_need / mc_paper["time_s"], "time_flag": t_flag,
                   "evaluation_ratio": e_need / mc_paper["evaluations"], "evaluation_flag": e_flag,
                   "samples_needed": n_need, "samples_flag": n_flag}
    out.update(tol_checks(name, model, encoder, x, ref, out, seeds, paper))
    return out


def tol_levels(result: dict, paper: int) -> dict[str, float]:
    """The two tolerances ``tol`` is checked at: ``"mc"``, mc's error at the paper's budget (the goal's error; for
    an efficient default its need can sit below the rule's first check), and ``"half"``, the default's own error at
    half the paper's budget (a need inside the measured curve, well above the first check)."""
    mc_paper = next(p for p in result["curves"]["mc"] if p["budget"] == paper)
    half = next(p for p in result["curves"][result["default"]] if p["budget"] == max(8, int(round(paper / 2))))
    return {"mc": mc_paper["error"], "half": half["error"]}


def tol_check(name: str, model: torch.nn.Module, encoder: torch.nn.Module, x: torch.Tensor, ref: px.core.Explanation,
              curve: list[dict], tol: float, seeds: int, cap: int, seed0: int) -> dict:
    """Run the default with ``tol`` (cap ``cap``), each image alone, ``seeds`` times (seeds ``seed0 + s``): the
    samples used against that image's need (where its own error-vs-samples curve ``curve`` reaches ``tol``) and the
    error at the stop. Each image alone: a batch stops when its worst input is done, which says nothing about the
    rule."""
    stops, needs = [], []
    for i in range(x.shape[0]):
        need, flag = interp_loglog([p["samples"] for p in curve], [p["error_by_image"][i] for p in curve], tol)
        needs.append({"image": i, "samples_needed": need, "flag": flag})
        for s in range(seeds):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ToleranceNotReachedWarning)
                e = run(name, model, encoder, x[i:i + 1], cap, seed0 + s, None, tol=tol)
            stops.append({"image": i, "samples_used": e.meta["samples_used"][0], "tol_reached": e.meta["tol_reached"],
                          "error": rel_error(e.attribution, ref.attribution[i:i + 1], ref.extras["stderr"][i:i + 1])})
    used = float(np.mean([st["samples_used"] for st in stops]))
    needed = float(np.mean([n["samples_needed"] for n in needs]))
    return {"tol": tol, "runs": stops, "needs": needs, "mean_samples_used": used, "samples_needed": needed,
            "used_over_needed": used / needed,
            "error_at_stop": float(np.sqrt(np.mean([st["error"] ** 2 for st in stops])))}


def tol_checks(name: str, model: torch.nn.Module, encoder: torch.nn.Module, x: torch.Tensor,
               ref: px.core.Explanation, result: dict, seeds: int, paper: int) -> dict:
    """``{"tol": check at mc's error, "tol_half": check at the default's error at paper / 2}`` (:func:`tol_levels`),
    cap 4x the paper's budget. Skipped where the error is undefined (a reference without a finite standard error,
    e.g. Kernel SHAP's from a few dozen samples in a --tiny run)."""
    out = {}
    curve = result["curves"][result["default"]]
    for (level, tol), key, seed0 in zip(tol_levels(result, paper).items(), ("tol", "tol_half"), (100, 200)):
        if math.isfinite(tol) and tol > 0:
            out[key] = tol_check(name, model, encoder, x, ref, curve, tol, seeds, 4 * paper, seed0)
            out[key]["level"] = level
    return out


def choose(seeds: int) -> None:
    """The ``--choose`` table (module doc)."""
    model, encoder, x = load("digits-clutter-cnn", 1)
    rows, lines = [], ["| method | samples | sampling | RMS error / map SD | variance vs mc (equal samples) | "
                       "stderr / spread over seeds | time per run (s) |", "|---|---|---|---|---|---|---|"]
    for name, budget in CHOOSE_BUDGET.items():
        default = method_default(name)
        ref = run(name, model, encoder, x, budget * REF_FACTOR, 10_000, default)
        base = None
        for sampling in OPTIONS.get(name, ("mc", "antithetic", "sobol")):
            runs = [run(name, model, encoder, x, budget, s, sampling) for s in range(seeds)]
            est = torch.stack([e.attribution for e in runs]).double()
            se = torch.stack([e.extras["stderr"] for e in runs]).double()
            err = math.sqrt(float(np.mean([rel_error(e.attribution, ref.attribution, ref.extras["stderr"]) ** 2
                                           for e in runs])))
            calib = float(se.pow(2).mean().sqrt() / est.std(0).pow(2).mean().sqrt())
            base = err if sampling == "mc" else base
            row = {"method": name, "samples": runs[0].meta["samples_used"][0], "sampling": sampling, "error": err,
                   "variance_ratio": (base / err) ** 2 if base else None, "stderr_calibration": calib,
                   "time_s": float(np.mean([e.meta["wall_time_s"] for e in runs])), "default": sampling == default}
            rows.append(row)
            mark = " (default)" if row["default"] else ""
            lines.append(f"| {name} | {row['samples']} | {sampling}{mark} | {err:.4f} | "
                         f"{row['variance_ratio']:.2f} | {calib:.2f} | {row['time_s']:.2f} |")
            print(lines[-1], flush=True)
    meta = {"model": "digits-clutter-cnn", "seeds": seeds, "torch": torch.__version__,
            "threads": torch.get_num_threads()}
    (OUT / "sampling_choice_digits-clutter-cnn.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (OUT / "sampling_choice_digits-clutter-cnn.md").write_text("\n".join(lines) + "\n")


def calibrate(model_name: str, methods: list[str], seeds: int, fractions: list[float]) -> None:
    """The ``--calibrate`` table (module doc): is ``extras["stderr"]`` the estimate's real spread over seeds, and
    is ``meta["relative_error"]`` (what ``tol`` stops on) the real relative error?"""
    model, encoder, x = load(model_name, 1)
    path = OUT / f"sampling_calibration_{model_name}.json"
    # rows of an earlier call for other (method, budget) pairs are kept: one table per model
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    rng = np.random.default_rng(0)
    for name in methods:
        for fraction in fractions:
            budget = max(8, int(round(PAPER[name] * fraction)))
            runs = [run(name, model, encoder, x, budget, s, None) for s in range(seeds)]
            est = torch.stack([e.attribution.flatten() for e in runs]).double()        # (seeds, P)
            se2 = torch.stack([e.extras["stderr"].flatten() for e in runs]).double() ** 2
            rel2 = torch.tensor([e.meta["relative_error"][0] for e in runs], dtype=torch.float64) ** 2

            def ratios(idx: np.ndarray) -> tuple[float, float]:
                spread2 = est[idx].var(0).mean()
                # the true map's spatial variance, from the mean over seeds with its own noise taken out
                signal = est[idx].mean(0).var(unbiased=False) - spread2 / len(idx)
                true_rel = (spread2 / signal.clamp_min(1e-300)).sqrt()
                return float(se2[idx].mean().sqrt() / spread2.sqrt()), float(rel2[idx].mean().sqrt() / true_rel)

            # percentile bootstrap over seeds (runs are the independent units)
            boot = np.array([ratios(rng.integers(0, seeds, seeds)) for _ in range(1000)])
            se_ratio, rel_ratio = ratios(np.arange(seeds))
            row = {"method": name, "sampling": method_default(name), "samples": runs[0].meta["samples_used"][0],
                   "seeds": seeds, "stderr_ratio": se_ratio, "relative_error_ratio": rel_ratio,
                   "stderr_ci95": [float(v) for v in np.percentile(boot[:, 0], [2.5, 97.5])],
                   "relative_error_ci95": [float(v) for v in np.percentile(boot[:, 1], [2.5, 97.5])],
                   "time_s": float(np.mean([e.meta["wall_time_s"] for e in runs]))}
            row["load_average"] = os.getloadavg()
            rows = [r for r in rows if (r["method"], r["samples"]) != (name, row["samples"])] + [row]
            rows.sort(key=lambda r: (list(PAPER).index(r["method"]), r["samples"]))
            meta = {"model": model_name, "torch": torch.__version__, "threads": torch.get_num_threads()}
            write_atomic(path, json.dumps({"meta": meta, "rows": rows}, indent=1))
            write_atomic(path.with_suffix(".md"), calibration_table(rows) + "\n")
            print(calibration_table([row]).splitlines()[-1], flush=True)


def calibration_table(rows: list[dict]) -> str:
    lines = ["| method | sampling | samples | seeds | stderr: reported RMS / RMS spread over seeds (95% CI) | "
             "relative error: reported (RMS over seeds) / from the spread (95% CI) |", "|---|---|---|---|---|---|"]
    for r in rows:
        cells = []
        for key in ("stderr", "relative_error"):
            v, (lo, hi) = r[f"{key}_ratio"], r[f"{key}_ci95"]
            # undefined: fewer independent groups than the error needs (one Sobol net; LIME below features + 2)
            cells.append("undefined" if math.isnan(v) else "inf: some runs read an infinite relative error"
                         if math.isinf(v) else f"{v:.2f} ({lo:.2f}-{hi:.2f})")
        lines.append(f"| {r['method']} | {r['sampling']} | {r['samples']} | {r['seeds']} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def plot(results: list[dict], model_name: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, r in zip(axes.flat, results):
        for sampling, curve in r["curves"].items():
            ax.loglog([p["time_s"] for p in curve], [p["error"] for p in curve], "o-",
                      label=f"{sampling}" + (" (default)" if sampling == r["default"] else ""))
        g = r["goal"]
        ax.axhline(g["mc_error_at_paper_budget"], color="grey", lw=0.8, ls="--")
        ax.set_title(f"{r['method']}  (time ratio {g['time_flag']}{g['time_ratio']:.2f})", fontsize=9)
        ax.set_xlabel("wall time (s)")
        ax.set_ylabel("RMS error / map SD")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"error vs time, {model_name} (dashed: mc at the paper's budget)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(results: list[dict]) -> str:
    lines = ["| method | default | paper budget | variance per sample, mc / default | mc error @ paper | mc time (s) | "
             "default time to that error (s) | time ratio (goal <= 0.25) | evaluations ratio | "
             "tol = mc error @ paper: samples used / needed (goal within 20%) | error at stop / tol | "
             "tol = default error @ paper/2: used / needed | error at stop / tol | reference's own error |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def tol_cells(t: dict | None) -> str:
        if not t:
            return "- | -"
        flags = {n["flag"] for n in t["needs"]} - {""}
        # a need read off the curve's extrapolation (<=) or beyond its end (>) is marked, not hidden
        mark = f" ({', '.join(sorted(flags))} need)" if flags else ""
        return (f"{t['mean_samples_used']:.0f} / {t['samples_needed']:.0f} = {t['used_over_needed']:.2f}{mark} | "
                f"{t['error_at_stop'] / t['tol']:.2f}")

    for r in results:
        g = r["goal"]
        ref_err = r.get("reference_relative_error", math.nan)
        # a reference whose own noise is not well below its signal cannot score the runs: flagged, not hidden
        ref_note = "-" if math.isnan(ref_err) else f"{ref_err:.2f}" + (" (too noisy)" if ref_err > 0.3 else "")
        lines.append(f"| {r['method']} | {r['default']} | {r['paper_budget']} | {r['variance_ratio_equal_samples']:.2f} | "
                     f"{g['mc_error_at_paper_budget']:.4f} | "
                     f"{g['mc_time_s']:.2f} | {g['time_flag']}{g['default_time_s']:.2f} | "
                     f"{g['time_flag']}{g['time_ratio']:.2f} | {g['evaluation_flag']}{g['evaluation_ratio']:.2f} | "
                     f"{tol_cells(r.get('tol'))} | {tol_cells(r.get('tol_half'))} | {ref_note} |")
    notes = [f"{r['method']}: {r['settings']['images']} image(s), {r['settings']['seeds']} seeds, reference "
             f"{r['settings']['ref_factor']}x the paper's budget, load average {r['settings']['load_average'][0]:.1f}"
             for r in results if "settings" in r]
    if notes:
        lines += ["", "Settings: " + "; ".join(notes) + "."]
    return "\n".join(lines)


def save(model_name: str, suffix: str, merged: list[dict], total_s: float) -> None:
    """The model's JSON and table, written atomically: an interrupted run keeps what it measured."""
    meta = {"model": model_name, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(),
            "methods": [q["method"] for q in merged], "total_s": total_s}
    write_atomic(OUT / f"sampling_{model_name}{suffix}.json", json.dumps({"meta": meta, "results": merged}, indent=1))
    write_atomic(OUT / f"sampling_{model_name}{suffix}.md", table(merged) + "\n")


def tol_only(model_name: str, methods: list[str], suffix: str) -> None:
    """``--tol-only``: step 4 again for ``methods``, on the curves saved in the model's JSON."""
    path = OUT / f"sampling_{model_name}{suffix}.json"
    saved = json.loads(path.read_text())
    results = saved["results"]
    model, encoder, x = load(model_name, max(r["settings"]["images"] for r in results))   # loaded once
    for r in results:
        if r["method"] not in methods:
            continue
        st = r["settings"]
        x_r = x[:st["images"]]   # load(model, n) returns the first n images
        print(f"{model_name}: {r['method']} (tol checks only)", flush=True)
        t0 = time.perf_counter()
        ref = run(r["method"], model, encoder, x_r, r["reference_budget"], 10_000, None)
        r.update(tol_checks(r["method"], model, encoder, x_r, ref, r, st["seeds"], r["paper_budget"]))
        st["tol_load_average"], st["tol_seconds"] = os.getloadavg(), time.perf_counter() - t0
        save(model_name, suffix, results, saved["meta"]["total_s"])
    print(table(results))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="digits-clutter-cnn,efficientnet-lite0")
    ap.add_argument("--methods", default=",".join(PAPER))
    ap.add_argument("--seeds", type=int, default=None, help="runs per setting (default 5; --choose: 12)")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="1/16 sizes, one image, two seeds: a smoke run")
    ap.add_argument("--choose", action="store_true", help="every sampling option at a small budget (module doc)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the methods of an earlier run of the same model (its JSON) that this run does not "
                         "re-measure: runs with different settings (e.g. fewer seeds for RISE) share one table")
    ap.add_argument("--calibrate", action="store_true",
                    help="stderr calibration of the default sampler on one image of each model (module doc)")
    ap.add_argument("--fractions", default="0.125,0.5", help="--calibrate: budgets as fractions of the paper's")
    ap.add_argument("--tol-only", action="store_true",
                    help="re-run only step 4 (both tol checks) for --methods, on the curves of the model's saved "
                         "JSON (same images, seeds, reference budget; the reference is recomputed: seed 10,000)")
    ap.add_argument("--ref-factor", type=int, default=REF_FACTOR,
                    help=f"reference budget / paper budget (default {REF_FACTOR}; the reference's own standard error "
                         "is subtracted either way, a smaller factor only makes the error of the smallest errors "
                         "noisier)")
    args = ap.parse_args()
    if args.ref_factor < 2:
        ap.error("--ref-factor must be >= 2")
    OUT.mkdir(parents=True, exist_ok=True)
    if args.choose:
        choose(args.seeds or 12)
        return
    if args.calibrate:
        for model_name in args.models.split(","):
            calibrate(model_name, args.methods.split(","), args.seeds or 16,
                      [float(f) for f in args.fractions.split(",")])
        return
    scale = 1 / 16 if args.tiny else 1.0
    seeds = 2 if args.tiny else (args.seeds or 5)
    n_images = 1 if args.tiny else args.images
    torch.set_num_threads(max(1, torch.get_num_threads()))
    suffix = "_tiny" if args.tiny else ""
    for model_name in args.models.split(","):
        if args.tol_only:
            tol_only(model_name, args.methods.split(","), suffix)
            continue
        model, encoder, x = load(model_name, n_images)
        path = OUT / f"sampling_{model_name}{suffix}.json"
        kept: list[dict] = []
        if args.merge and path.exists():
            kept = [r for r in json.loads(path.read_text())["results"] if r["method"] not in args.methods.split(",")]
        results: list[dict] = []
        merged = in_paper_order(kept)
        t0 = time.perf_counter()
        for name in args.methods.split(","):
            if name == "sift_rise" and model_name == "efficientnet-lite0" and args.tiny:
                continue   # SIFT decomposition of a 224 x 224 photo: minutes, not a smoke test
            print(f"{model_name}: {name}", flush=True)
            t_method = time.perf_counter()
            r = bench_method(name, model, encoder, x, seeds, scale, args.ref_factor)
            # each result carries its own settings, so a merged table stays self-describing
            r["settings"] = {"images": n_images, "seeds": seeds, "ref_factor": args.ref_factor, "scale": scale,
                             "load_average": os.getloadavg(), "seconds": time.perf_counter() - t_method}
            results.append(r)
            merged = in_paper_order(kept + results)
            save(model_name, suffix, merged, time.perf_counter() - t0)   # after every method
        plot(merged, model_name, OUT / f"sampling_error_vs_time_{model_name}{suffix}.png")
        print(table(merged))


if __name__ == "__main__":
    main()
