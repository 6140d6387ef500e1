"""Every image method on the digits-clutter suite, on the clutter CNN and on the clutter ViT side by side.

    python benchmarks/cnn_vs_vit.py [--n-images 100] [--methods ig,gradcam,...] [--out benchmarks/results/cnn_vs_vit.md]

Runs :func:`pathxai.evaluate` (insertion from black, deletion to black, softmax scores, ``steps`` points; the pointing
game with the 15-px-at-224 tolerance scaled to 64 px) once per model, for every registered image method (the
methods that need a transformer -- the attention rollouts -- only on the ViT), and writes a markdown table: per
(method, metric, model) the mean over images and its 95 % percentile-bootstrap confidence interval (images
resampled with replacement; for the pointing game the statistic is the per-class mean accuracy, as in
``EvaluationResult.summary``), plus the seconds per image, the models' accuracies and the command that made it.

Every method runs at its defaults (``--fast`` uses the contract suite's cheap parameters, for a smoke run).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

import pathxai as px
from pathxai.core.files import atomic_write_text

MODELS = ("digits-clutter-cnn", "clutter-vit")
METRICS = ("insertion", "deletion", "pointing")
ARROWS = {"insertion": "↑", "deletion": "↓", "pointing": "↑"}


def image_methods() -> list[str]:
    """Registered methods that explain an image classifier's class score."""
    return [n for n in px.list_methods() if 4 in px.get_method(n).input_ndim and px.get_method(n).needs_target]


def needs_transformer(name: str) -> bool:
    return bool(getattr(px.get_method(name), "needs_transformer", False))


def fast_params() -> dict[str, dict]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from method_params import FAST_PARAMS  # noqa: PLC0415 - the contract suite's cheap settings

    return {k: dict(v) for k, v in FAST_PARAMS.items()}


def run(models: list[str], methods: list[str], n_images: int, steps: int, batch_size: int | str, n_boot: int,
        seed: int, method_params: dict[str, dict], partial: dict | None = None,
        save_partial: Any = lambda _: None) -> tuple[dict, dict, dict, dict]:
    """Returns (cells {(method, metric, model): (mean, lo, hi)}, seconds {(method, model): s/image},
    model info {model: {...}}, changes {(method, metric): PairedComparison of ViT - CNN with its Holm p-value}).

    ``partial`` holds finished (model, method) results (resumed from ``--out``'s ``.partial.json``); a method that
    refuses a model is recorded with its reason. The intervals are :mod:`pathxai.stats`' (BCa bootstrap over images, class-balanced for the pointing game, as
    ``pathxai evaluate`` reports them); the change from the CNN to the ViT is a paired comparison on the same
    canvases (mean difference, its interval, Wilcoxon signed-rank p-value), Holm-corrected over the methods of a
    metric.
    """
    from pathxai import stats

    partial = {} if partial is None else partial
    cells, seconds, info, scores, refused = {}, {}, {}, {}, {}
    for model_name in models:
        model = px.models.load(model_name)
        info[model_name] = {k: getattr(model, k) for k in ("test_accuracy", "no_digit_accuracy") if hasattr(model, k)}
        names = [m for m in methods if not needs_transformer(m) or model_name == "clutter-vit"]
        t0 = time.perf_counter()
        for m in names:   # one method at a time: a method that refuses a model does not stop the others
            done = partial.get(f"{model_name}|{m}")
            if done is None:
                try:
                    r = px.evaluate("digits-clutter", [m], list(METRICS), n_images=n_images, seed=seed,
                                    batch_size=batch_size, steps=steps,
                                    method_params={m: method_params[m]} if m in method_params else None,
                                    model=model, progress=False)
                except ValueError as err:   # e.g. DeepLIFT has no rules for a ViT's LayerNorm/GELU/attention
                    done = {"refused": " ".join(str(err).split())[:400]}
                else:
                    done = {"summary": [{k: row[k] for k in ("metric", "mean", "ci95")} for row in r.summary()],
                            "seconds": r.seconds[m],
                            "scores": {metric: [float(v) for v in r.scores[(m, metric)]] for metric in METRICS}}
                partial[f"{model_name}|{m}"] = done
                save_partial(partial)
                print(f"{model_name} {m}: {'refused' if 'refused' in done else 'done'}", file=sys.stderr)
            if "refused" in done:
                refused[(m, model_name)] = done["refused"]
                continue
            for row in done["summary"]:
                cells[(m, row["metric"], model_name)] = (row["mean"], *row["ci95"])
            seconds[(m, model_name)] = done["seconds"]
            for metric in METRICS:
                scores[(m, metric, model_name)] = torch.tensor(done["scores"][metric])
        info[model_name]["evaluate_seconds"] = time.perf_counter() - t0
        print(f"{model_name}: done in {info[model_name]['evaluate_seconds']:.0f} s", file=sys.stderr)
    info["refused"] = refused
    changes: dict = {}
    if len(models) == 2:
        cnn, vit = models
        for metric in METRICS:
            pairs = [(m, stats.paired_comparison(scores[(m, metric, vit)], scores[(m, metric, cnn)],
                                                 n_resamples=n_boot, seed=seed, stream=f"{m}-{metric}"))
                     for m in methods if (m, metric, cnn) in scores and (m, metric, vit) in scores]
            adjusted = stats.holm([c.p_value for _, c in pairs])
            for (m, c), p_holm in zip(pairs, adjusted):
                changes[(m, metric)] = (c, float(p_holm))
    return cells, seconds, info, changes


def markdown(cells: dict, seconds: dict, info: dict, models: list[str], methods: list[str], args: argparse.Namespace,
             command: str, method_params: dict[str, dict], changes: dict | None = None) -> str:
    short = {"digits-clutter-cnn": "CNN", "clutter-vit": "ViT"}
    lines = [
        "# Digits-clutter: the clutter CNN vs the clutter ViT",
        "",
        f"Made by `{command}` ({time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}).",
        "",
        f"{args.n_images} canvases of the digits-clutter suite (seed {args.seed}); the explained class is the label. "
        f"Insertion from black, deletion to black, softmax score, {args.steps} steps; pointing game with a "
        "4.3 px tolerance (15 px at 224 px). Cells: mean over images [95 % BCa bootstrap CI over the images, "
        f"{args.bootstrap} resamples, `pathxai.stats`]; pointing: per-class mean hit rate. n/a: the method needs a "
        "transformer.",
        "",
    ]
    for m in models:
        acc = info.get(m, {})
        if "test_accuracy" in acc:
            lines.append(f"- {m}: test accuracy {acc['test_accuracy']:.3f}, without the digit "
                         f"{acc['no_digit_accuracy']:.3f} (chance 0.1)")
    if method_params:
        lines.append(f"- method parameters: `{json.dumps(method_params, sort_keys=True)}`")
    lines += ["", "| method | " + " | ".join(f"{metric} {ARROWS[metric]} {short.get(m, m)}" for metric in METRICS
                                             for m in models) + " | " + " | ".join(f"s/image {short.get(m, m)}"
                                                                                    for m in models) + " |",
              "|---|" + "---:|" * (len(METRICS) * len(models) + len(models))]
    for method in methods:
        row = []
        for metric in METRICS:
            for m in models:
                cell = cells.get((method, metric, m))
                refused = (method, m) in info.get("refused", {})
                row.append("refused" if refused else "n/a" if cell is None
                           else f"{cell[0]:.3f} [{cell[1]:.3f}, {cell[2]:.3f}]")
        row += [("n/a" if (method, m) not in seconds else f"{seconds[(method, m)]:.2f}") for m in models]
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    for (method, m), why in sorted(info.get("refused", {}).items()):
        lines.append(f"\nrefused: {method} on {m}: {why}")
    if changes:
        short_v, short_c = short.get(models[1], models[1]), short.get(models[0], models[0])
        lines += ["", f"## Which methods survive the change of architecture ({short_v} − {short_c}, paired by canvas)",
                  "", "Mean difference ViT − CNN [95 % CI], Wilcoxon signed-rank p-value Holm-corrected over the "
                  "methods of each metric; **bold**: significant at 0.05 after correction.", "",
                  "| method | " + " | ".join(f"{metric} {ARROWS[metric]}" for metric in METRICS) + " |",
                  "|---|" + "---:|" * len(METRICS)]
        for method in methods:
            row = []
            for metric in METRICS:
                got = changes.get((method, metric))
                if got is None:
                    row.append("n/a")
                    continue
                c, p_holm = got
                text = f"{c.mean_difference:+.3f} [{c.low:+.3f}, {c.high:+.3f}] p={p_holm:.2g}"
                row.append(f"**{text}**" if p_holm < 0.05 else text)
            lines.append(f"| {method} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-images", type=int, default=100)
    parser.add_argument("--methods", default="", help="comma-separated (default: every registered image method)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", default="auto")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast", action="store_true", help="the contract suite's cheap method parameters")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "cnn_vs_vit.md"))
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] or image_methods()
    for m in methods:
        px.get_method(m)   # unknown names fail before any work
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    batch_size: int | str = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    method_params = {m: p for m, p in fast_params().items() if m in methods} if args.fast else {}
    command = "python benchmarks/cnn_vs_vit.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None
                                                                                     else sys.argv[1:]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial_path = out.with_suffix(".partial.json")   # finished (model, method) results: a rerun resumes there
    settings = {"n_images": args.n_images, "steps": args.steps, "seed": args.seed, "fast": args.fast}
    partial: dict = {}
    if partial_path.exists():
        stored = json.loads(partial_path.read_text())
        partial = stored["results"] if stored.get("settings") == settings else {}

    def save_partial(results: dict) -> None:
        atomic_write_text(partial_path, json.dumps({"settings": settings, "results": results}))

    cells, seconds, info, changes = run(models, methods, args.n_images, args.steps, batch_size, args.bootstrap,
                                        args.seed, method_params, partial, save_partial)
    atomic_write_text(out, markdown(cells, seconds, info, models, methods, args, command.strip(), method_params,
                                    changes))
    print(out)
    return out


if __name__ == "__main__":
    main()
