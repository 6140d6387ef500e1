"""Functional Fisher information (FI, Gat et al. ICML 2022) vs the sampling baselines: the paper's Table 1 in small form.

    OMP_NUM_THREADS=1 python benchmarks/fi_table.py [--n-digits 60] [--n-audio 64] [--n-text 100] [--n-photos 4]
        [--samples 30] [--only image,audio,text,overhead,photos] [--out tables.md]

Tasks (all offline): digits-cnn on the digits test split (image), commands-cnn on synthetic single-command clips
(audio), and insertion/deletion with EfficientNet-Lite0 on the photos suite. Methods: fi (independent form),
fi+cov (per-class ConvCovariance fitted on the training data), smoothgrad, smoothgrad_sq, vargrad, all with the
same number of samples and noise level 0.15. Negative perturbations: mask the least important 10%..90% (black
pixels / zero audio), AUC x 100 of post-hoc accuracy (explaining the ground truth, and the prediction) and post-hoc
consistency (explaining the prediction). Then the overhead ratio and the speed-up over a per-sample loop.
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

import pathxai as px
from pathxai.bench import overhead_ratio
from pathxai.methods.fisher import ClassCovariance, ConvCovariance, fit_covariance

METHODS = ["fi", "fi+cov", "smoothgrad", "smoothgrad_sq", "vargrad"]


def saliency_of(e: px.core.Explanation, x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 4:
        return e.saliency()
    if x.shape[1] == 1:
        a = e.attribution.sum(1)  # audio (N, 1, T) -> (N, T)
    else:
        a = e.attribution.sum(-1)  # text (N, L, D) -> (N, L): a token's score sums its coordinates
    return a.abs() if e.meta["method"] == "smoothgrad" else a


def explain(name: str, model, x, target, cov, samples: int, batch: int):
    kw = {"n_samples": samples, "batch_size": batch, "seed": 0, "progress": False}
    if name == "fi+cov":
        return px.get_method("fi")(model, covariance=cov, **kw).explain(x, target)
    return px.get_method(name)(model, **kw).explain(x, target)


def table(model, x, y, cov, samples, batch, baseline=0.0, valid=None) -> dict[str, tuple[float, float, float, float]]:
    pred = model(x).argmax(1)
    rows = {}
    for name in METHODS:
        t0 = time.perf_counter()
        e_gt = explain(name, model, x, y, cov, samples, batch)
        e_pr = explain(name, model, x, pred, cov, samples, batch)
        r_gt = px.metrics.negative_perturbation(model, x, saliency_of(e_gt, x), y, baseline=baseline, valid=valid,
                                            batch_size=64)
        r_pr = px.metrics.negative_perturbation(model, x, saliency_of(e_pr, x), y, baseline=baseline, valid=valid,
                                            batch_size=64)
        rows[name] = (100 * r_gt.accuracy_auc.mean().item(), 100 * r_pr.accuracy_auc.mean().item(),
                      100 * r_pr.consistency_auc.mean().item(), time.perf_counter() - t0)
        print(name, ["%.2f" % v for v in rows[name]], flush=True)
    return rows


def fmt(title: str, rows) -> str:
    out = [f"\n### {title}\n", "| method | accuracy AUC (explain GT) | accuracy AUC (explain prediction) | "
           "consistency AUC (explain prediction) | wall s |", "|---|---|---|---|---|"]
    for name, (a, b, c, t) in rows.items():
        out.append(f"| {name} | {a:.2f} | {b:.2f} | {c:.2f} | {t:.0f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-digits", type=int, default=60)
    ap.add_argument("--n-audio", type=int, default=64)
    ap.add_argument("--n-photos", type=int, default=4)
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--n-text", type=int, default=100)
    ap.add_argument("--skip-photos", action="store_true")
    ap.add_argument("--only", default="image,audio,text,overhead,photos")
    ap.add_argument("--out", default=None, help="also write the markdown tables to this file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    lines = [f"torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread; "
             f"{args.samples} samples per input, noise level 0.15, seed 0"]

    only = set(args.only.split(","))
    # image: digits
    model = px.models.load("digits-cnn")
    x_tr, y_tr = px.data.digits("train")
    x, y = px.data.digits("test")
    x, y = x[:args.n_digits], y[:args.n_digits]
    cov = fit_covariance(x_tr, y_tr, kind="conv", size=9)
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    if "image" in only:
        rows = table(model, x, y, cov, args.samples, 32)
        lines.append(fmt(f"Image: digits-cnn, {len(y)} test digits (model accuracy {100 * acc:.1f}%), "
                     "black-pixel masking, per-class 9x9 ConvCovariance", rows))

    # audio
    if only & {"audio"}:
        lines.extend(audio_part(args))
    if "text" in only:
        lines.extend(text_part(args))
    if "overhead" in only:
        lines.extend(overhead_part(model, x, y, cov))
    if "photos" in only and not args.skip_photos:
        lines.append(photos(args.n_photos, max(args.samples // 3, 8)))
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


def audio_part(args) -> list[str]:
    lines = []
    audio = px.models.load("commands-cnn")
    xa_tr, ya_tr, _ = px.models.command_clips(600, seed=0)
    xa, ya, _ = px.models.command_clips(args.n_audio, seed=9)
    cova = fit_covariance(xa_tr, ya_tr, kind="conv", size=31)
    with torch.no_grad():
        acc = float((audio(xa).argmax(1) == ya).float().mean())
    rows = table(audio, xa, ya, cova, args.samples, 32)
    lines.append(fmt(f"Audio: commands-cnn, {len(ya)} synthetic clips (accuracy {100 * acc:.1f}%), zero masking, "
                     "per-class 31-tap ConvCovariance", rows))

    # audio two-command localisation
    pairs = [(a, b) for a in range(4) for b in range(4) if a != b]
    x2, c2, m2 = px.models.two_command_clips(pairs, seed=11)
    lines.append("\n### Audio, two commands (first half a, second half b): share of |attribution| on the explained "
                 "command's half (0.5 = no localisation)\n")
    lines.append("| method | explain a | explain b |\n|---|---|---|")
    for name in METHODS:
        share = []
        for j in range(2):
            e = explain(name, audio, x2, c2[:, j], cova, args.samples, 32)
            s = e.attribution.abs().flatten(1)
            share.append(float(((s * m2[:, j]).sum(1) / s.sum(1)).mean()))
        lines.append(f"| {name} | {share[0]:.3f} | {share[1]:.3f} |")

    return lines


def text_part(args) -> list[str]:
    from pathxai.methods.fisher import fit_covariance as fitc
    model = px.models.load("sentiment-cnn")
    _, y_tr, ids_tr, _ = px.models.sentiment_corpus(model.tokenizer, 600, seed=0)
    _, y, ids, gt = px.models.sentiment_corpus(model.tokenizer, args.n_text, seed=9)
    cov = fitc(model.embed(ids_tr), y_tr, kind="token")
    x = model.embed(ids)
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    rows = table(model, x, y, cov, args.samples, 50, baseline=model.unk_embedding,
                 valid=ids != model.tokenizer.pad_token_id)
    lines = [fmt(f"Text: sentiment-cnn over MiniLM token embeddings, {len(y)} template sentences (accuracy "
                 f"{100 * acc:.1f}%), [UNK] masking of real tokens (not padding), per-class 384x384 TokenCovariance", rows)]
    lines.append("\n| method | top-1 token is the sentiment word (ground truth) |\n|---|---|")
    for name in METHODS:
        e = explain(name, model, x, y, cov, args.samples, 50)
        s = saliency_of(e, x)
        lines.append(f"| {name} | {float(gt[torch.arange(len(y)), s.argmax(1)].float().mean()):.2f} |")
    return lines


def overhead_part(model, x, y, cov) -> list[str]:
    lines = []
    # overhead and speed-up on digits
    xo, yo = x[:4], y[:4]
    lines.append("\n### Overhead (digits-cnn, 4 digits, 50 samples, batch 50) and speed-up over a per-sample loop\n")
    lines.append("| method | ours s | plain gradient passes s | ratio | per-sample loop s | speed-up |\n|---|---|---|---|---|---|")
    for label, kw in [("fi", {}), ("fi+cov", {"covariance": cov}), ("smoothgrad_sq", {})]:
        r = overhead_ratio("smoothgrad_sq" if label == "smoothgrad_sq" else "fi", model, xo, yo, batch_size=50,
                           n_samples=50, repeats=5, **kw)
        if label == "smoothgrad_sq":
            lines.append(f"| {label} (reference) | {r.seconds:.3f} | {r.reference_seconds:.3f} | {r.ratio:.3f} | - | - |")
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


def photos(n: int, samples: int) -> str:
    model = px.models.load("efficientnet-lite0")
    suite = px.data.load_suite("photos", n_images=n)
    x = torch.stack([it.image for it in suite.items])
    y = torch.tensor([it.label for it in suite.items])
    cov = ConvCovariance.fit(x, size=15)  # one global stationary covariance from the suite's own photos
    lines = [f"\n### Photos suite: EfficientNet-Lite0, {n} images (224x224), {samples} samples, insertion (blur "
             "baseline) / deletion (black), 20 steps, target = suite label, global 15x15 ConvCovariance\n",
             "| method | insertion AUC (higher better) | deletion AUC (lower better) | wall s |", "|---|---|---|---|"]
    for name in METHODS:
        t0 = time.perf_counter()
        e = explain(name, model, x, y, cov, samples, 4)
        t = time.perf_counter() - t0
        ins = px.metrics.insertion(model, x, e.saliency(), y, steps=20, batch_size=8).score.mean().item()
        dele = px.metrics.deletion(model, x, e.saliency(), y, steps=20, batch_size=8).score.mean().item()
        lines.append(f"| {name} | {ins:.3f} | {dele:.3f} | {t:.0f} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
