"""Functional Fisher information (FI, Gat et al. ICML 2022) vs the sampling baselines: the paper's Table 1, its
Spearman check and its two-command audio example, in small form, with every method explaining the *same* function.

    OMP_NUM_THREADS=1 python benchmarks/fi_table.py                      # everything, writes benchmarks/results/fi.md
    OMP_NUM_THREADS=1 python benchmarks/fi_table.py --tiny --out /tmp/fi.md   # smoke run (numbers meaningless)
    options: [--n-digits 60] [--n-audio 64] [--n-text 100] [--n-photos 4] [--samples 30]
             [--only image,audio,text,overhead,photos]

Every comparison is made twice, once per explained function, and every method sees that function:

- ``softmax``: the target's softmax probability p_y for all methods -- FI's f = p_y (the paper's choice and the
  authors' demo, which passes ``torch.nn.Softmax`` as ``outputs_activation_func``), SmoothGrad / SmoothGrad² / VarGrad
  with ``score="softmax"``;
- ``logit``: the target's logit l_y for SmoothGrad / SmoothGrad² / VarGrad (``score="output"``), and for FI the
  positive function f = exp(l_y) whose log is the logit (FI is only defined for f > 0; grad f = f grad l_y, so FI
  sees the same gradient directions, weighted by f), explained one class at a time through a callable target.

The authors' code computes SmoothGrad, SmoothGrad² and VarGrad from the same gradients of the same f as FI
(github.com/nitaytech/FunctionalExplanation, ``fi_code/fi.py``); an earlier version of this script compared FI on the
softmax with the baselines on the logit, which is not the paper's comparison.

Tasks (all offline): digits-cnn on the digits test split (image), commands-cnn on synthetic single-command clips
(audio), sentiment-cnn on template sentences (text), insertion/deletion with EfficientNet-Lite0 on the photos suite.
Methods: fi (independent form), fi+cov (per-class covariance fitted on the training data), smoothgrad,
smoothgrad_sq, vargrad, with the same number of samples and noise level 0.15 of the range. Negative perturbations:
mask the least important 10%..90% (black pixels / zero audio / [UNK] tokens), AUC x 100 of post-hoc accuracy
(explaining the ground truth, and the prediction) and post-hoc consistency (explaining the prediction).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch

import pathxai as px
from pathxai.bench import overhead_ratio
from pathxai.methods.fisher import ClassCovariance, ConvCovariance, fit_covariance
from pathxai.metrics import spearman

METHODS = ["fi", "fi+cov", "smoothgrad", "smoothgrad_sq", "vargrad"]
BASELINES = ["smoothgrad", "smoothgrad_sq", "vargrad"]
FUNCTIONS = ["softmax", "logit"]
FUNCTION_TEXT = {
    "softmax": "every method explains the softmax probability p_y",
    "logit": "SmoothGrad / SG² / VarGrad explain the logit l_y, FI explains exp(l_y)",
}
# the paper's Table 1 (AUC x 100): accuracy GT, accuracy predicted, consistency predicted
PAPER = {
    "audio": {"smoothgrad": (37.55, 37.38, 47.22), "smoothgrad_sq": (34.11, 33.65, 39.40),
              "vargrad": (39.95, 40.65, 49.19), "fi+cov": (51.70, 51.09, 76.28)},
    "image": {"smoothgrad": (46.85, 46.64, 53.83), "smoothgrad_sq": (54.35, 51.24, 58.35),
              "vargrad": (47.47, 47.14, 64.97), "fi+cov": (57.36, 54.48, 65.06)},
    "text": {"smoothgrad": (62.45, 64.24, 73.89), "smoothgrad_sq": (64.19, 64.66, 76.26),
             "vargrad": (66.30, 63.45, 71.88), "fi+cov": (65.72, 66.30, 79.36)},
}
COLUMNS = ["accuracy AUC (explain GT)", "accuracy AUC (explain prediction)", "consistency AUC (explain prediction)"]


def saliency_of(e: px.core.Explanation, x: torch.Tensor) -> torch.Tensor:
    """The per-feature scores the metric ranks: (N, H, W) images, (N, T) audio, (N, L) text."""
    if x.ndim == 4:
        return e.saliency()
    if x.shape[1] == 1:
        a = e.attribution.sum(1)  # audio (N, 1, T) -> (N, T)
    else:
        a = e.attribution.sum(-1)  # text (N, L, D) -> (N, L): a token's score sums its coordinates
    return a.abs() if e.meta["method"] == "smoothgrad" else a


def explain(name: str, model, x: torch.Tensor, target: torch.Tensor, cov, samples: int, batch: int,
            function: str) -> torch.Tensor:
    """Scores of method ``name`` for ``x`` explaining class ``target`` through ``function`` ("softmax" | "logit")."""
    target = torch.as_tensor(target).long()
    kw = {"n_samples": samples, "batch_size": batch, "seed": 0, "progress": False}
    if name not in ("fi", "fi+cov"):
        score = "softmax" if function == "softmax" else "output"
        return saliency_of(px.get_method(name)(model, score=score, **kw).explain(x, target), x)
    if function == "softmax":   # f = p_y: FI's own default
        c = cov if name == "fi+cov" else None
        return saliency_of(px.get_method("fi")(model, covariance=c, **kw).explain(x, target), x)
    # f = exp(l_y): a callable target returns log f = l_c, so explain one class at a time
    out = None
    for c in target.unique().tolist():
        idx = (target == c).nonzero().flatten()
        cv = None
        if name == "fi+cov":
            cv = cov[c] if isinstance(cov, ClassCovariance) else cov
        e = px.get_method("fi")(model, covariance=cv, **kw).explain(x[idx], lambda o, c=c: o[:, c])
        s = saliency_of(e, x[idx])
        if out is None:
            out = torch.zeros((x.shape[0],) + tuple(s.shape[1:]), dtype=s.dtype)
        out[idx] = s
    return out


def table(model, x, y, cov, samples, batch, function, baseline=0.0, valid=None):
    """{method: (acc GT, acc pred, consistency pred, wall s)} and the GT saliency of every method."""
    with torch.no_grad():
        pred = model(x).argmax(1)
    rows, maps = {}, {}
    for name in METHODS:
        t0 = time.perf_counter()
        s_gt = explain(name, model, x, y, cov, samples, batch, function)
        s_pr = s_gt if bool((pred == y).all()) else explain(name, model, x, pred, cov, samples, batch, function)
        r_gt = px.metrics.negative_perturbation(model, x, s_gt, y, baseline=baseline, valid=valid, batch_size=64)
        r_pr = px.metrics.negative_perturbation(model, x, s_pr, y, baseline=baseline, valid=valid, batch_size=64)
        rows[name] = (100 * r_gt.accuracy_auc.mean().item(), 100 * r_pr.accuracy_auc.mean().item(),
                      100 * r_pr.consistency_auc.mean().item(), time.perf_counter() - t0)
        maps[name] = s_gt
        print(f"  {function:7s} {name:14s}", ["%.2f" % v for v in rows[name]], flush=True)
    return rows, maps


def fmt(title: str, rows) -> list[str]:
    out = [f"\n### {title}\n", "| method | " + " | ".join(COLUMNS) + " | wall s |", "|---|---|---|---|---|"]
    for name, (a, b, c, t) in rows.items():
        out.append(f"| {name} | {a:.2f} | {b:.2f} | {c:.2f} | {t:.0f} |")
    return out


def paper_checks(modality: str, tables: dict[str, dict]) -> list[str]:
    """The paper's Table-1 claims for one modality, checked under each function."""
    paper = PAPER[modality]
    out = [f"\n#### {modality}: the paper's claims, checked\n",
           "| claim (paper's numbers) | " + " | ".join(FUNCTIONS) + " |", "|---|" + "---|" * len(FUNCTIONS)]
    for j, col in enumerate(COLUMNS):
        p_best = max(paper, key=lambda m: paper[m][j])
        claim = (f"FI+cov beats SmoothGrad, SG², VarGrad on {col} (paper: "
                 + ("yes" if p_best == "fi+cov" else f"no, {p_best}") + f", {paper['fi+cov'][j]:.2f} vs best "
                 f"baseline {max(paper[m][j] for m in BASELINES):.2f})")
        cells = []
        for f in FUNCTIONS:
            rows = tables[f]
            best_base = max(BASELINES, key=lambda m: rows[m][j])
            win = rows["fi+cov"][j] > rows[best_base][j]
            cells.append(f"{'yes' if win else 'no'} ({rows['fi+cov'][j]:.2f} vs {best_base} {rows[best_base][j]:.2f})")
        out.append(f"| {claim} | " + " | ".join(cells) + " |")
    cells = []
    for f in FUNCTIONS:
        rows = tables[f]
        cells.append(f"{abs(rows['fi'][2] - rows['smoothgrad_sq'][2]):.2f} ({rows['fi'][2]:.2f} vs "
                     f"{rows['smoothgrad_sq'][2]:.2f})")
    out.append("| FI without Σ ≈ SmoothGrad² (paper: 'differences are minor'); \\|Δ consistency\\| | "
               + " | ".join(cells) + " |")
    return out


def mean_spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    r = spearman(a.flatten(1), b.flatten(1))
    return float(r[torch.isfinite(r)].mean())


def image_part(args, model, x, y, cov, acc) -> tuple[list[str], dict]:
    tables, maps = {}, {}
    for f in FUNCTIONS:
        tables[f], maps[f] = table(model, x, y, cov, args.samples, 32, f)
    lines = []
    for f in FUNCTIONS:
        lines += fmt(f"Image ({f}: {FUNCTION_TEXT[f]}): digits-cnn, {len(y)} test digits (model accuracy "
                     f"{100 * acc:.1f}%), black-pixel masking, per-class 9x9 ConvCovariance", tables[f])
    lines += paper_checks("image", tables)
    lines += ["\n#### image: Spearman correlation of the per-pixel scores, mean over the digits (explaining the "
              "label)\n", "| pair | paper (CIFAR-10) | measured |", "|---|---:|---:|",
              f"| FI vs SmoothGrad², both on the softmax | 0.95 | "
              f"{mean_spearman(maps['softmax']['fi'], maps['softmax']['smoothgrad_sq']):.3f} |",
              f"| FI vs SmoothGrad², both on the logit (FI: exp(logit)) | — | "
              f"{mean_spearman(maps['logit']['fi'], maps['logit']['smoothgrad_sq']):.3f} |",
              f"| FI on the softmax vs SmoothGrad² on the logit (the earlier, mismatched comparison) | — | "
              f"{mean_spearman(maps['softmax']['fi'], maps['logit']['smoothgrad_sq']):.3f} |",
              f"| FI with covariance vs SmoothGrad², both on the softmax | 0.13 | "
              f"{mean_spearman(maps['softmax']['fi+cov'], maps['softmax']['smoothgrad_sq']):.3f} |"]
    return lines, tables


def audio_part(args) -> list[str]:
    audio = px.models.load("commands-cnn")
    xa_tr, ya_tr, _ = px.models.command_clips(max(args.n_audio_train, 16), seed=0)
    xa, ya, _ = px.models.command_clips(args.n_audio, seed=9)
    cova = fit_covariance(xa_tr, ya_tr, kind="conv", size=31)
    with torch.no_grad():
        acc = float((audio(xa).argmax(1) == ya).float().mean())
    tables = {f: table(audio, xa, ya, cova, args.samples, 32, f)[0] for f in FUNCTIONS}
    lines = []
    for f in FUNCTIONS:
        lines += fmt(f"Audio ({f}: {FUNCTION_TEXT[f]}): commands-cnn, {len(ya)} synthetic clips (accuracy "
                     f"{100 * acc:.1f}%), zero masking, per-class 31-tap ConvCovariance", tables[f])
    lines += paper_checks("audio", tables)

    # the paper's Figure 2: 'Right' followed by 'Cat' -- two commands, explain each
    pairs = [(a, b) for a in range(4) for b in range(4) if a != b][: args.n_pairs]
    x2, c2, m2 = px.models.two_command_clips(pairs, seed=11)
    lines += ["\n### Audio, two commands (first half a, second half b): share of |score| on the explained "
              "command's half (0.5 = no localisation; the paper's Figure 2 shows FI localising each command)\n",
              "| method | " + " | ".join(f"{f}: explain a | {f}: explain b" for f in FUNCTIONS) + " |",
              "|---|" + "---|" * (2 * len(FUNCTIONS))]
    for name in METHODS:
        cells = []
        for f in FUNCTIONS:
            for j in range(2):
                s = explain(name, audio, x2, c2[:, j], cova, args.samples, 32, f).abs().flatten(1)
                cells.append(f"{float(((s * m2[:, j]).sum(1) / s.sum(1)).mean()):.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def text_part(args) -> list[str]:
    model = px.models.load("sentiment-cnn")
    _, y_tr, ids_tr, _ = px.models.sentiment_corpus(model.tokenizer, max(args.n_text_train, 16), seed=0)
    _, y, ids, gt = px.models.sentiment_corpus(model.tokenizer, args.n_text, seed=9)
    cov = fit_covariance(model.embed(ids_tr), y_tr, kind="token")
    x = model.embed(ids)
    valid = ids != model.tokenizer.pad_token_id
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    tables, maps = {}, {}
    for f in FUNCTIONS:
        tables[f], maps[f] = table(model, x, y, cov, args.samples, 50, f, baseline=model.unk_embedding, valid=valid)
    lines = []
    for f in FUNCTIONS:
        lines += fmt(f"Text ({f}: {FUNCTION_TEXT[f]}): sentiment-cnn over MiniLM token embeddings, {len(y)} template "
                     f"sentences (accuracy {100 * acc:.1f}%), [UNK] masking of real tokens (not padding), per-class "
                     "384x384 TokenCovariance", tables[f])
    lines += paper_checks("text", tables)
    lines += ["\n| method | " + " | ".join(f"top-1 token is the sentiment word ({f})" for f in FUNCTIONS) + " |",
              "|---|" + "---|" * len(FUNCTIONS)]
    idx = torch.arange(len(y))
    for name in METHODS:
        cells = []
        for f in FUNCTIONS:
            s = maps[f][name].masked_fill(~valid, -math.inf)
            cells.append(f"{float(gt[idx, s.argmax(1)].float().mean()):.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def overhead_part(model, x, y, cov, repeats: int) -> list[str]:
    lines = []
    xo, yo = x[:4], y[:4]
    lines.append("\n### Overhead (digits-cnn, 4 digits, 50 samples, batch 50) and speed-up over a per-sample loop\n")
    lines.append("| method | ours s | plain gradient passes s | ratio | per-sample loop s | speed-up |\n"
                 "|---|---|---|---|---|---|")
    for label, kw in [("fi", {}), ("fi+cov", {"covariance": cov}), ("smoothgrad_sq", {})]:
        r = overhead_ratio("smoothgrad_sq" if label == "smoothgrad_sq" else "fi", model, xo, yo, batch_size=50,
                           n_samples=50, repeats=repeats, **kw)
        if label == "smoothgrad_sq":
            lines.append(f"| {label} (reference) | {r.seconds:.3f} | {r.reference_seconds:.3f} | {r.ratio:.3f} | - "
                         "| - |")
            continue
        t0 = time.perf_counter()
        loop_fi(model, xo, yo, 50, kw.get("covariance"))
        loop = time.perf_counter() - t0
        lines.append(f"| {label} | {r.seconds:.3f} | {r.reference_seconds:.3f} | {r.ratio:.3f} | {loop:.3f} | "
                     f"{loop / r.seconds:.1f}x |")
    return lines


def loop_fi(model, x, y, n, cov) -> torch.Tensor:
    """The same estimator, one noisy sample at a time (what a naive implementation does)."""
    out = torch.zeros_like(x)
    for i in range(x.shape[0]):
        c = cov[int(y[i])] if cov is not None else None
        sig = float(x[i].max() - x[i].min()) * 0.15
        for k in range(n):
            eps = torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(i * n + k))
            noise = sig * eps if c is None else sig / c.mean_variance(x.shape[1:]) ** 0.5 * c.factor_apply(eps[None])[0]
            z = (x[i] + noise).unsqueeze(0).requires_grad_(True)
            f = model(z).softmax(1)[0, int(y[i])]
            (g,) = torch.autograd.grad(f, z)
            out[i] += (g * g / f)[0] if c is None else (c.apply(g) * g / f)[0]
    return out / n


def photos(n: int, samples: int) -> list[str]:
    model = px.models.load("efficientnet-lite0")
    suite = px.data.load_suite("photos", n_images=n)
    x = torch.stack([it.image for it in suite.items])
    y = torch.tensor([it.label for it in suite.items])
    cov = ConvCovariance.fit(x, size=15)  # one global stationary covariance from the suite's own photos
    lines = [f"\n### Photos suite: EfficientNet-Lite0, {n} images (224x224), {samples} samples, insertion (blur "
             "baseline) / deletion (black), softmax score, 20 steps, target = suite label, global 15x15 "
             "ConvCovariance\n",
             "| method | " + " | ".join(f"{f}: insertion ↑ | {f}: deletion ↓" for f in FUNCTIONS) + " |",
             "|---|" + "---|" * (2 * len(FUNCTIONS))]
    for name in METHODS:
        cells = []
        for f in FUNCTIONS:
            s = explain(name, model, x, y, cov, samples, 4, f)
            ins = px.metrics.insertion(model, x, s, y, steps=20, batch_size=8, progress=False).score.mean().item()
            dele = px.metrics.deletion(model, x, s, y, steps=20, batch_size=8, progress=False).score.mean().item()
            cells += [f"{ins:.3f}", f"{dele:.3f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    return lines


HEADER = """# Functional Fisher information (FI, Gat et al. ICML 2022) vs sampling baselines

Command (all offline; 2 CPU cores): `{command}` ({minutes:.0f} min; torch {torch}, {threads} thread(s), load average
{load0:.1f} at start, {load1:.1f} at end).

Setup: every method uses the same number of Gaussian samples ({samples} per input; {photo_samples} on the photos),
noise std 0.15 of each input's value range (SmoothGrad's convention; the paper states no value), seed 0. `fi` =
independent form (Eq. 9), `fi+cov` = covariance form (Eq. 13, with the division by f, as in the paper and the
authors' code) with the covariance rescaled to the same mean variance as the independent noise
(`covariance_scale="relative"`). Covariances: digits — per-class 9×9 `ConvCovariance` fitted on the training digits;
audio — per-class 31-tap 1-D `ConvCovariance` on training clips; text — per-class 384×384 `TokenCovariance` on
training sentences; photos — one global 15×15 `ConvCovariance` from the suite photos themselves (no ImageNet data
ships). Negative perturbations (`px.metrics.negative_perturbation`): the least important 10%…90% of features masked
(black pixels, zero audio, [UNK] embedding for real tokens — padding is excluded via `valid=`), AUC ×100 over the
0.1–0.9 range. "Explain GT" explains the label, "explain prediction" the predicted class; accuracy is against the
label, consistency against the unmasked prediction.

**One function per comparison.** Each table is computed twice: `softmax` — every method explains the softmax
probability p_y (FI's f = p_y, as in the paper and the authors' demo notebook); `logit` — SmoothGrad, SmoothGrad² and
VarGrad explain the logit l_y and FI explains f = exp(l_y), the positive function whose log is the logit (FI needs
f > 0; ∇f = f ∇l_y). The authors' code computes all four methods from the same gradients of the same function.
"""

NOTES = """
## What the authors' code does (github.com/nitaytech/FunctionalExplanation, `fi_code/fi.py`; read, not run)

- FI divides by f: `functional_information` averages `grads ** 2 / outputs`, `covariance_functional_information`
  averages `cov_grads * grads / outputs` (Eq. 9 and 13 as in the paper).
- f is `outputs_activation_func(model(z))`, the raw output by default; the demo notebook passes `torch.nn.Softmax`.
  SmoothGrad, SmoothGrad² and VarGrad (`explain(..., method=[...])`) are computed from the same gradients.
- The noise: `var_spread = 0.15` multiplies a variance. Without a covariance the sample's own variance
  (`torch.var` over all its values), i.e. noise std ≈ 0.39 std(x); with a covariance Σ, `N(x, 0.15 Σ)` (the Cholesky
  factor is multiplied by sqrt(0.15)) while `Σ ∇f` uses Σ unscaled. pathxai uses std = 0.15 × range for every
  method instead (SmoothGrad's convention).
- Two details that differ from the usual definitions, as written: `var_grad` returns the variance of the *squared*
  gradients (`(grads ** 2).var(dim=-1)`), and when a Cholesky factor is passed (as the demo does) `perturbate`
  multiplies it by sqrt(0.15) *in place* on every draw, so successive draws of one explanation shrink (we did not run
  their code to confirm the effect on their numbers).
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-digits", type=int, default=60)
    ap.add_argument("--n-audio", type=int, default=64)
    ap.add_argument("--n-audio-train", type=int, default=600)
    ap.add_argument("--n-pairs", type=int, default=12, help="two-command clips (ordered pairs of 4 commands)")
    ap.add_argument("--n-photos", type=int, default=4)
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--n-text", type=int, default=100)
    ap.add_argument("--n-text-train", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=5, help="overhead repeats")
    ap.add_argument("--skip-photos", action="store_true")
    ap.add_argument("--only", default="image,audio,text,overhead,photos")
    ap.add_argument("--tiny", action="store_true", help="smoke run: a few items of each task, 4 samples")
    ap.add_argument("--out", default="benchmarks/results/fi.md", help="markdown file to write")
    args = ap.parse_args()
    if args.tiny:
        args.n_digits, args.n_audio, args.n_audio_train, args.n_pairs = 8, 8, 64, 2
        args.n_photos, args.samples, args.n_text, args.n_text_train, args.repeats = 2, 4, 8, 64, 1
    torch.set_num_threads(1)
    load0, t_start = os.getloadavg()[0], time.time()
    photo_samples = max(args.samples // 3, 8) if not args.tiny else 2
    body: list[str] = []
    only = set(args.only.split(","))
    model = px.models.load("digits-cnn")
    x_tr, y_tr = px.data.digits("train")
    x, y = px.data.digits("test")
    x, y = x[:args.n_digits], y[:args.n_digits]
    cov = fit_covariance(x_tr, y_tr, kind="conv", size=9)
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    if "image" in only:
        lines, _ = image_part(args, model, x, y, cov, acc)
        body += lines
    if "audio" in only:
        body += audio_part(args)
    if "text" in only:
        body += text_part(args)
    if "overhead" in only:
        body += overhead_part(model, x, y, cov, args.repeats)
    if "photos" in only and not args.skip_photos:
        body += photos(args.n_photos, photo_samples)
    command = "OMP_NUM_THREADS=1 python benchmarks/fi_table.py " + " ".join(sys.argv[1:])
    head = HEADER.format(command=command.strip(), minutes=(time.time() - t_start) / 60, torch=torch.__version__,
                         threads=torch.get_num_threads(), load0=load0, load1=os.getloadavg()[0],
                         samples=args.samples, photo_samples=photo_samples)
    text = head + "\n".join(body) + "\n" + NOTES
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
