"""The ``pathxai`` command line: explain images, list methods."""
from __future__ import annotations

import ast
import os
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=(
    "pathxai explains what a neural network does and measures how faithful the explanation is.\n\n"
    "Quick start:  pathxai explain --demo    (EfficientNet-Lite0 on a bundled cat photo -> heatmap PNG)"))


def _parse_params(params: List[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in params:
        if "=" not in item:
            raise typer.BadParameter(f"--param expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key.strip()] = value
    return out


def _parse_batch_size(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        size = int(value)
    except ValueError:
        raise typer.BadParameter(f"--batch-size must be a positive integer or 'auto', got {value!r}") from None
    if size < 1:
        raise typer.BadParameter(f"--batch-size must be a positive integer or 'auto', got {value!r}")
    return size


def _resolve_target(target: str, class_names: list[str] | None) -> int | None:
    if target == "auto":
        return None
    if target.lstrip("-").isdigit():
        return int(target)
    from .models import class_index

    try:
        return class_index(target, class_names if class_names and len(class_names) != 1000 else None)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


@app.command()
def explain(
    images: Optional[List[Path]] = typer.Argument(None, help="Image files (PNG/JPEG/...) or folders of images."),
    demo: bool = typer.Option(False, "--demo", help="Explain the bundled 'chelsea' cat photo with EfficientNet-Lite0."),
    model: str = typer.Option("efficientnet-lite0", "--model", "-m",
                              help="A bundled model name (efficientnet-lite0, digits-cnn) or a .pt file saved with "
                                   "torch.save(model); the model takes images in [0, 1]."),
    method: str = typer.Option("ig", "--method", help="Explanation method; see `pathxai methods`."),
    target: str = typer.Option("auto", "--target", "-t",
                               help="Class to explain: 'auto' (the predicted class), an index, or a class name."),
    batch_size: str = typer.Option("auto", "--batch-size", "-b",
                                   help="Most images per model pass (bounds memory), or 'auto' for the fastest."),
    seed: int = typer.Option(0, "--seed", help="Seed for stochastic methods (same seed, same result)."),
    size: int = typer.Option(224, "--size", help="Input side in pixels for a .pt model without input_size."),
    param: List[str] = typer.Option([], "--param", "-p", help="Method parameter KEY=VALUE, e.g. -p n_steps=32."),
    out: Path = typer.Option(Path("pathxai-out"), "--out", "-o", help="Folder for the PNG overlays and .npz files."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress",
                                            help="Progress bar on long runs [default: only on a terminal]."),
) -> None:
    """Explain a model's prediction on images: writes OUT/<image>_<method>.png (overlay) and .npz (attribution)."""
    import torch

    import pathxai as px
    from .data import image_files, load_image, sample_images
    from .models import image_to_tensor
    from .viz import save_overlay

    if demo:
        sample = sample_images(["chelsea"])[0]
        items = [(sample.name, sample.image)]
    elif images:
        try:
            files = image_files(images)
        except (FileNotFoundError, ValueError) as err:
            raise typer.BadParameter(str(err)) from None
        if not files:
            raise typer.BadParameter("no image files found in the given folders")
        items = [(f.stem, load_image(f)) for f in files]
    else:
        raise typer.BadParameter("give image files or folders, or --demo")
    try:
        cls = px.get_method(method)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    try:
        net = px.models.load(model)
    except (ValueError, FileNotFoundError, TypeError) as err:
        raise typer.BadParameter(str(err)) from None
    class_names: list[str] | None = getattr(net, "class_names", None)
    input_size = getattr(net, "input_size", (size, size))
    explainer = cls(net, batch_size=_parse_batch_size(batch_size), seed=seed, progress=progress,
                    **_parse_params(param))
    target_idx = _resolve_target(target, class_names)
    out.mkdir(parents=True, exist_ok=True)
    for name, image in items:
        x = net.preprocess(image) if hasattr(net, "preprocess") else image_to_tensor(image, input_size)
        with torch.inference_mode():
            probs = net(x).softmax(1)[0]
        predicted = int(probs.argmax())
        e = explainer.explain(x, target=target_idx)
        explained = int(e.meta["target"][0])
        label = class_names[explained] if class_names else str(explained)
        pred_label = class_names[predicted] if class_names else str(predicted)
        stem = out / f"{name}_{px.get_method(method).name}"
        save_overlay(x[0], e.saliency()[0], stem.with_suffix(".png"), method=cls.name,
                     title=f"{name}: {label} (class {explained}, p = {float(probs[explained]):.2f}) — {cls.name}")
        e.save(str(stem.with_suffix(".npz")))
        if "path" in e.extras and "curve" in e.extras and "baseline" in e.extras:
            from .viz import save_path_strip

            strip = save_path_strip(x[0], e.extras["path"][0], e.extras["baseline"][0], e.extras["curve"][0, 0],
                                    out / f"{stem.name}_path.png", class_name=label,
                                    title=f"{name}: ablation path for {label}")
            typer.echo(f"  path strip and score along the path -> {strip}")
        typer.echo(f"{name}: predicted {pred_label} (class {predicted}, p = {float(probs[predicted]):.2f}); "
                   f"explained class {explained} with {cls.name} in {e.meta['wall_time_s']:.1f} s "
                   f"({e.meta['model_evaluations']} model evaluations) -> {stem.with_suffix('.png')}")


@app.command("methods")
def list_methods_cmd() -> None:
    """List every explanation method with a one-line description."""
    import pathxai as px

    width = max(len(n) for n in px.list_methods())
    for name, text in px.describe_methods().items():
        typer.echo(f"{name.ljust(width)}  {text}")


@app.command()
def evaluate(
    suite: str = typer.Option("digits-clutter", "--suite", "-s",
                              help="Evaluation suite with ground truth: photos, digits, digits-clutter."),
    methods: str = typer.Option("ig,gradcam,rise,occlusion", "--methods", help="Comma-separated method names."),
    metrics: str = typer.Option("insertion,deletion,pointing", "--metrics",
                                help="Comma-separated: insertion, deletion, pointing, sensitivity_n."),
    n_images: Optional[int] = typer.Option(None, "--n-images", "-n", help="Images from the suite (default: all)."),
    steps: int = typer.Option(50, "--steps", help="Points of the insertion/deletion curves."),
    normalisation: str = typer.Option("none", "--normalisation",
                                      help="Insertion/deletion curve: none (RISE), input, or samp (SAMP paper)."),
    batch_size: str = typer.Option("auto", "--batch-size", "-b", help="Chunk size, or 'auto'."),
    seed: int = typer.Option(0, "--seed", help="Seed of the suite and of stochastic methods."),
    param: List[str] = typer.Option([], "--param", "-p", help="METHOD.KEY=VALUE, e.g. -p rise.n_masks=1000."),
    out: Path = typer.Option(Path("pathxai-eval"), "--out", "-o", help="Folder for CSV/JSON tables and plots."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bars."),
) -> None:
    """Score methods on a suite with known ground truth: prints a table, writes CSV/JSON and plots."""
    from . import evaluation
    from .data import list_suites

    if suite.replace("_", "-") not in list_suites():
        raise typer.BadParameter(f"unknown suite {suite!r}; available: {', '.join(list_suites())}")
    names = [n.strip() for n in methods.split(",") if n.strip()]
    metric_names = [n.strip() for n in metrics.split(",") if n.strip()]
    import pathxai as px

    for name in names:
        try:
            px.get_method(name)
        except ValueError as err:
            raise typer.BadParameter(str(err)) from None
    bad = [m for m in metric_names if m not in evaluation.METRIC_NAMES]
    if bad:
        raise typer.BadParameter(f"unknown metric(s) {bad}; available: {', '.join(evaluation.METRIC_NAMES)}")
    result = evaluation.evaluate(suite, names, metric_names, n_images=n_images, seed=seed,
                                 batch_size=_parse_batch_size(batch_size), steps=steps, normalisation=normalisation,
                                 method_params=_method_params(param), progress=progress)
    files = result.save(out)
    typer.echo(f"{result.suite} suite, model {result.model}, {len(result.item_names)} images; settings: "
               f"steps={steps}, normalisation={normalisation}, "
               f"pointing tolerance {result.settings['pointing_tolerance_px']:.1f} px")
    typer.echo(result.format_table())
    typer.echo("wrote " + ", ".join(str(f) for f in files))


def _method_params(param: List[str]) -> dict[str, dict[str, Any]]:
    overrides: dict[str, dict[str, Any]] = {}
    for key, value in _parse_params(param).items():
        if "." not in key:
            raise typer.BadParameter(f"--param expects METHOD.KEY=VALUE, got {key!r}")
        method_name, arg = key.split(".", 1)
        overrides.setdefault(method_name, {})[arg] = value
    return overrides


# Cheaper-than-default parameters the benchmark uses unless overridden (stated in its output).
BENCH_DEFAULTS: dict[str, dict[str, Any]] = {"rise": {"n_masks": 500}}


@app.command()
def bench(
    methods: str = typer.Option("ig,smoothgrad,gradient_x_input,gradcam,occlusion,rise", "--methods",
                                help="Comma-separated method names."),
    model: str = typer.Option("efficientnet-lite0", "--model", "-m", help="Bundled model name."),
    repeats: int = typer.Option(3, "--repeats", help="Interleaved repeats; medians are reported."),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="Also measure peak memory at 1x and 10x cost."),
    batch_size: str = typer.Option("auto", "--batch-size", "-b", help="Chunk size, or 'auto'."),
    param: List[str] = typer.Option([], "--param", "-p", help="METHOD.KEY=VALUE, e.g. -p rise.n_masks=1000."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the markdown tables to this file."),
) -> None:
    """Measure each method's overhead over the raw model passes it needs, and its memory as the work grows 10x."""
    import platform

    import torch

    import pathxai as px
    from . import bench as bench_lib

    names = [n.strip() for n in methods.split(",") if n.strip()]
    for name in names:
        try:
            px.get_method(name)
        except ValueError as err:
            raise typer.BadParameter(str(err)) from None
    overrides = _method_params(param)
    try:
        net = px.models.load(model)
    except (ValueError, FileNotFoundError, TypeError) as err:
        raise typer.BadParameter(str(err)) from None
    if model.startswith("efficientnet"):
        photo = px.data.sample_images(["chelsea"])[0].image
        x = (net.preprocess(photo) if hasattr(net, "preprocess")
             else px.models.image_to_tensor(photo, tuple(net.input_shape[1:])))
    else:
        x = px.data.digits("test")[0][:1]
    bs = _parse_batch_size(batch_size)
    rows, mems = [], []
    for name in names:
        params = {**BENCH_DEFAULTS.get(name, {}), **overrides.get(name, {})}
        rows.append(bench_lib.overhead_ratio(name, net, x, None, repeats=repeats, batch_size=bs, **params))
        typer.echo(f"{name}: {rows[-1].ratio:.2f}x the plain passes ({rows[-1].seconds:.2f} s)", err=True)
        if memory:
            result = bench_lib.memory_growth(name, net, x, None, batch_size=4 if bs == "auto" else bs, **params)
            if result is not None:
                mems.append(result)
    header = (f"model {model}, input {tuple(x.shape)}, {torch.get_num_threads()} threads, "
              f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, batch_size={batch_size}; "
              f"parameters: " + "; ".join(f"{r.method} {r.params}" for r in rows))
    text = "\n\n".join([header, bench_lib.format_overheads(rows)] + ([bench_lib.format_memory(mems)] if mems else []))
    typer.echo(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


from .equivariant.cli import denoise_app
app.add_typer(denoise_app, name="denoise")


@app.command("run")
def run_cmd(
    data: str = typer.Argument(..., help="A folder of images (with optional labels.csv/labels.json) or a suite name "
                                         "(photos, digits, digits-clutter)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory: the store; rerun with it to resume."),
    methods: str = typer.Option("ig", "--methods", help="Comma-separated method names."),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="Bundled model name or .pt file (default for a suite: its model)."),
    metrics: str = typer.Option("insertion,deletion,pointing", "--metrics",
                                help="Comma-separated: insertion, deletion, pointing ('' for none)."),
    engine: str = typer.Option("local", "--engine", help="local (processes on this machine) or ray."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address",
                                              help="Ray cluster address (default: start a local Ray instance)."),
    workers: int = typer.Option(1, "--workers", "-w", help="Worker processes (local) or Ray actors/CPUs (ray)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Label CSV/JSON (default: DATA/labels.csv|json)."),
    n_images: Optional[int] = typer.Option(None, "--n-images", "-n", help="Only the first N items."),
    batch_size: int = typer.Option(16, "--batch-size", "-b", help="Model evaluations per pass (an integer)."),
    steps: int = typer.Option(20, "--steps", help="Points of the insertion/deletion curves."),
    shard_size: int = typer.Option(4, "--shard-size", help="Items per scheduled unit of work."),
    seed: int = typer.Option(0, "--seed", help="Seed of the suite and of stochastic methods."),
    param: List[str] = typer.Option([], "--param", "-p", help="METHOD.KEY=VALUE, e.g. -p ig.n_steps=16."),
    convert_modes: bool = typer.Option(False, "--convert-modes",
                                       help="Convert images whose mode does not fit the model (grey/RGBA/palette "
                                            "for an RGB model) instead of recording them as failed."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bar."),
) -> None:
    """Explain a whole data set into a resumable store (killed runs resume where they stopped)."""
    from .runs import format_summary, run

    names = [n.strip() for n in methods.split(",") if n.strip()]
    metric_names = [n.strip() for n in metrics.split(",") if n.strip()]
    try:
        table = run(data, names, out=out, model=model, metrics=metric_names, engine=engine, workers=workers,
                    ray_address=ray_address, labels=labels, n_images=n_images, seed=seed, batch_size=batch_size,
                    steps=steps, shard_size=shard_size, method_params=_method_params(param),
                    convert_modes=convert_modes, progress=progress)
    except (ValueError, FileNotFoundError) as err:
        raise typer.BadParameter(str(err)) from None
    typer.echo(format_summary(table))
    typer.echo(f"results in {out} (summary.json); browse with: pathxai report {out}")


@app.command("report")
def report_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory written by `pathxai run`."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report folder (default: RUN_DIR/report)."),
    max_images: int = typer.Option(50, "--max-images", help="Images shown with heatmaps (the table has all)."),
) -> None:
    """Write a static HTML report of a run: sortable table, curves, heatmaps, ablation-path sliders."""
    from .runs.report import write_report

    try:
        path = write_report(run_dir, out, max_images=max_images)
    except FileNotFoundError as err:
        raise typer.BadParameter(str(err)) from None
    typer.echo(f"wrote {path}")


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
