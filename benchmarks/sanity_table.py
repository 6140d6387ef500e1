"""Sanity checks (Adebayo et al. 2018) for every registered image method on the digits CNN and on EfficientNet-Lite0.

    python benchmarks/sanity_table.py [--n-images 16] [--methods ig,saliency,...] [--models digits-cnn,...]
                                      [--fast] [--out benchmarks/results/sanity.md]
                                      [--steps blocks|coarse] [--param rise.n_masks=1000 ...]
                                      [--exclude "samp++=reason" ...]

For each model and method: the cascading model-parameter randomisation test (:func:`pathxai.sanity.model_randomisation`,
top layer first; EfficientNet-Lite0 by blocks -- classifier, head, its 16 MBConv blocks, stem -- the way the paper
randomises Inception v3 by blocks; the digits CNN layer by layer), Spearman rank correlation of |maps| between the
trained model's map and the map after each step, mean over the images with a 95 % percentile-bootstrap interval;
and the random-logit test (:func:`pathxai.sanity.random_logit`: the map of a random other class). Images: the digits
test split for the digits CNN, the photos suite (the three bundled photos, then composites) for EfficientNet-Lite0;
the explained class is the suite's label, on every randomised model too.

Writes ``--out`` (a compact table: similarity after the top layer, after half the steps and with every layer
randomised, and the random-logit similarity; then the full per-step tables and the command that made it) and, per
model, ``sanity_<model>/`` next to it (CSV tables, per-item similarities and the cascading-randomisation figure of
the first image). Every method runs at its defaults (``--fast``: the contract suite's cheap parameters, for a smoke
run). A method that cannot run on a model is listed with the reason.

``--steps coarse`` groups the blocks into fewer cascade steps (the classifier alone, the rest of the head, the
container's blocks in four consecutive groups, the stem), for a model where every method at 22 steps would take
hours on a CPU; ``--param`` sets one method parameter (stated in the output); ``--exclude`` leaves a method out with
the reason given (stated in the output).
"""
from __future__ import annotations

import argparse
import ast
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

import pathxai as px
from pathxai.core.files import atomic_write_text

MODELS = ("digits-cnn", "efficientnet-lite0")
SUITES = {"digits-cnn": "digits", "efficientnet-lite0": "photos"}


def image_methods() -> list[str]:
    """Registered methods that explain an image classifier's class score (the attention rollouts need a ViT)."""
    return [n for n in px.list_methods() if 4 in px.get_method(n).input_ndim and px.get_method(n).needs_target
            and not getattr(px.get_method(n), "needs_transformer", False)]


def excluded_methods() -> dict[str, str]:
    """Registered methods the table leaves out, with the reason."""
    out = {}
    for n in px.list_methods():
        cls = px.get_method(n)
        if not cls.needs_target:
            out[n] = "explains an encoder's representation, no class"
        elif getattr(cls, "needs_transformer", False):
            out[n] = "needs a transformer"
        elif 4 not in cls.input_ndim:
            out[n] = f"explains inputs {cls.input_expected}, not images"
    return out


def fast_params() -> dict[str, dict]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from method_params import FAST_PARAMS  # noqa: PLC0415 - the contract suite's cheap settings

    return {k: dict(v) for k, v in FAST_PARAMS.items()}


def coarse_steps(model: torch.nn.Module, x: torch.Tensor, n_groups: int = 4) -> list[list[str]]:
    """Cascade steps, top-down, with fewer entries than ``"blocks"``: the top layer alone, the other layers above
    the model's main block container as one step, its blocks in ``n_groups`` consecutive groups, the layers below
    it as one step (each a list of module names for :func:`pathxai.sanity.model_randomisation`)."""
    r = px.sanity.model_randomisation(model, x[:1], None, method="saliency", layers="blocks", progress=False)
    order = r.layers     # top-down, as the "blocks" cascade orders them
    container = max((name.rsplit(".", 1)[0] for name in order if name.rsplit(".", 1)[-1].isdigit()),
                    key=lambda c: sum(n.startswith(c + ".") for n in order), default=None)
    in_block = [n.rsplit(".", 1)[-1].isdigit() and n.rsplit(".", 1)[0] == container for n in order]
    if container is None or sum(in_block) < n_groups:
        return [[n] for n in order]
    first, last = in_block.index(True), len(in_block) - 1 - in_block[::-1].index(True)
    above, blocks, below = order[:first], order[first:last + 1], order[last + 1:]
    size = math.ceil(len(blocks) / n_groups)
    steps = [above[:1]] + ([above[1:]] if len(above) > 1 else [])
    steps += [blocks[i:i + size] for i in range(0, len(blocks), size)]
    return steps + ([below] if below else [])


def run_model(model_name: str, methods: list[str], args: argparse.Namespace, params: dict[str, dict],
              out_dir: Path) -> dict:
    model = px.models.load(model_name)
    if args.device != "cpu":
        from pathxai.core.placement import resolve_device

        model = model.to(resolve_device(args.device))
    data = px.data.load_suite(SUITES[model_name], n_images=args.n_images, seed=args.seed)
    x, labels, _ = data.batch()
    batch_size: int | str = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    layers: str | list[list[str]] = coarse_steps(model, x) if args.steps == "coarse" else "blocks"
    results, logits, skipped, seconds = {}, {}, {}, {}
    for name in methods:
        t0 = time.perf_counter()
        try:
            r = px.sanity.model_randomisation(model, x, labels, method=name, mode="cascading",
                                              similarity="spearman_abs", layers=layers, seed=args.seed,
                                              method_params=params.get(name), batch_size=batch_size,
                                              return_maps=1, progress=False)
            rl = px.sanity.random_logit(model, x, labels, method=name, similarity="spearman_abs", seed=args.seed,
                                        method_params=params.get(name), batch_size=batch_size, progress=False)
        except (TypeError, ValueError, RuntimeError, NotImplementedError) as err:
            skipped[name] = f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
            print(f"{model_name} {name}: skipped ({skipped[name]})", file=sys.stderr)
            continue
        results[name], logits[name] = r, rl
        seconds[name] = (time.perf_counter() - t0) / len(data)
        print(f"{model_name} {name}: {len(r.layers)} steps, {seconds[name]:.1f} s/image; all layers randomised: "
              f"{float(r.similarity[-1].nanmean()):.2f}", file=sys.stderr)
    files = []
    if results:
        files = px.sanity.save_results(results, out_dir / f"sanity_{model_name}", image=x[0], n_boot=args.bootstrap,
                                       seed=args.seed, header=f"{model_name}: cascading randomisation, Spearman of "
                                                              f"|maps|, {len(data)} images",
                                       figure_title=f"{model_name}, {data.items[0].name}: cascading randomisation "
                                                    "(numbers: Spearman of |maps| with the trained model's map)",
                                       figure_dpi=100 if x.shape[-1] <= 64 else 60)   # photos: keep the PNG small
    return {"results": results, "logits": logits, "skipped": skipped, "seconds": seconds, "n": len(data),
            "files": files, "suite": data.name}


def _cell(mean: float, lo: float, hi: float) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.2f}" + (f" [{lo:.2f}, {hi:.2f}]" if math.isfinite(lo) else "")


def markdown(runs: dict[str, dict], methods: list[str], args: argparse.Namespace, command: str,
             params: dict[str, dict], out: Path) -> str:
    lines = [
        "# Sanity checks: model-parameter randomisation and random logit",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; seed "
        f"{args.seed}; batch size {args.batch_size}; method parameters: "
        + ("defaults" if not params else "; ".join(f"{m} {p}" for m, p in params.items() if m in methods)) + ".",
        "",
        "Cascading randomisation (Adebayo et al. 2018): the layers are re-initialised top-down (classifier first; "
        "EfficientNet-Lite0 block by block), and each cell is the Spearman rank correlation of |maps| between the "
        "trained model's map and the randomised model's (a step named a+b re-initialises a and b together), mean "
        "over the images [95 % percentile-bootstrap interval, "
        f"{args.bootstrap} resamples]. Random logit: the map of a random other class against the map of the label. "
        "A similarity that stays high as layers are randomised means the map does not depend on what the model "
        "learnt (it explains the input); a faithful method falls towards 0 once the top layers are randomised.",
        "",
    ]
    excluded = {m: why for m, why in excluded_methods().items() if not args.methods}
    excluded.update({m: f"left out by --exclude: {why}" for m, why in getattr(args, "excluded", {}).items()})
    if excluded:
        lines += ["Registered methods not in the table: " + "; ".join(f"{m} ({why})" for m, why in excluded.items())
                  + ".", ""]
    for model_name, run in runs.items():
        res, logit = run["results"], run["logits"]
        lines += [f"## {model_name} ({run['n']} images of the {run['suite']} suite)", ""]
        if res:
            first = next(iter(res.values()))
            n_steps = len(first.layers)
            mid = n_steps // 2
            lines += [f"| method | top layer ({first.layers[0]}) | {mid + 1} of {n_steps} steps "
                      f"(down to {first.layers[mid]}) | every layer | random logit | s / image |",
                      "|---|---:|---:|---:|---:|---:|"]
            for name, r in res.items():
                rows = r.summary(n_boot=args.bootstrap, seed=args.seed)
                cells = [_cell(rows[k]["mean"], rows[k]["ci_low"], rows[k]["ci_high"]) for k in (0, mid, -1)]
                s = logit[name].summary(n_boot=args.bootstrap, seed=args.seed)
                cells.append(_cell(s["mean"], s["ci_low"], s["ci_high"]))
                lines.append(f"| {name} | " + " | ".join(cells) + f" | {run['seconds'][name]:.2f} |")
            lines += ["", f"Every step (the figure of the first image: `sanity_{model_name}/sanity.png`):", "",
                      px.sanity.format_table(res, n_boot=args.bootstrap, seed=args.seed), ""]
        for name, reason in run["skipped"].items():
            lines.append(f"- {name}: not run ({reason})")
        if run["skipped"]:
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-images", type=int, default=16)
    parser.add_argument("--methods", default="", help="comma-separated (default: every registered image method)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch-size", default="auto")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fast", action="store_true", help="the contract suite's cheap method parameters")
    parser.add_argument("--steps", choices=("blocks", "coarse"), default="blocks",
                        help="cascade steps: every block, or blocks grouped (see the module docstring)")
    parser.add_argument("--param", action="append", default=[], metavar="METHOD.KEY=VALUE",
                        help="one method parameter (a Python literal or a string); repeatable")
    parser.add_argument("--exclude", action="append", default=[], metavar="METHOD=REASON",
                        help="leave a method out of the table, with the reason stated; repeatable")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "sanity.md"))
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] or image_methods()
    for m in methods:
        px.get_method(m)   # unknown names fail before any work
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in SUITES]
    if unknown:
        raise SystemExit(f"--models: no bundled images for {unknown}; choose from {', '.join(SUITES)}")
    excluded = dict(e.split("=", 1) if "=" in e else (e, "excluded") for e in args.exclude)
    methods = [m for m in methods if m not in excluded]
    args.excluded = excluded
    params = {m: p for m, p in fast_params().items() if m in methods} if args.fast else {}
    for item in args.param:
        key, _, value = item.partition("=")
        method, _, name = key.partition(".")
        if not name or not _:
            raise SystemExit(f"--param: expected METHOD.KEY=VALUE, got {item!r}")
        px.get_method(method)
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        params.setdefault(method, {})[name] = parsed
    command = "python benchmarks/sanity_table.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None
                                                                                       else sys.argv[1:]))
    out = Path(args.out)
    runs = {m: run_model(m, methods, args, params, out.parent) for m in models}
    atomic_write_text(out, markdown(runs, methods, args, command.strip(), params, out))
    print(out)
    return out


if __name__ == "__main__":
    main()
