"""``pathxai denoise train|eval``: the thesis' Section 7.4 experiments from the command line.

Heavy imports (torch, the models) happen inside the commands so ``pathxai --help`` stays fast.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

# plain help (no rich markup eats "[...]"); errors are mapped to one line by the main app's group (pathxai.cli)
denoise_app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                          pretty_exceptions_enable=False, help=(
    "Rotation-equivariant denoising of synthetic cryo-EM images (spiral CNN vs cartesian vs steerable)."))


# every score the denoiser commands print is an error: say which way is better
LOWER_IS_BETTER = ("lower is better for every score: val MSE/noisy (denoised MSE over the noisy input's; < 1 means "
                   "the denoiser helps), NMSE (MSE over the clean signal's power; 1 = predicting zeros), "
                   "equivariance (|F(rotated x) - rotated F(x)| / |F(x) - mean F(x)| on the disc, so a constant "
                   "output is not rewarded; r<0.8: on the inner disc)")


@denoise_app.command("train")
def train_cmd(
    arch: str = typer.Option("spiral", "--arch", help="spiral | cartesian | steerable (steerable needs e2cnn)."),
    snr: str = typer.Option("1/64", "--snr", help="Signal-to-noise power ratio on the disc, e.g. 1/4 or 1/64."),
    size: int = typer.Option(33, "--size", help="Image side in pixels."),
    n_train: int = typer.Option(1500, "--n-train", help="Training images."),
    n_val: int = typer.Option(300, "--n-val", help="Validation images."),
    n_molecules: int = typer.Option(8, "--n-molecules", help="Distinct random 3-D molecules in the data set."),
    n_val_molecules: int = typer.Option(8, "--n-val-molecules", help="Held-out molecules the validation images show "
                                                                     "(0 = the training molecules)."),
    noise: str = typer.Option("gaussian", "--noise", help="gaussian | poisson."),
    epochs: int = typer.Option(6, "--epochs", help="Training epochs."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Images per training step."),
    lr: float = typer.Option(2e-3, "--lr", help="Adam learning rate (cosine-annealed)."),
    channels: int = typer.Option(12, "--channels", help="Hidden channels (spiral, cartesian)."),
    depth: int = typer.Option(5, "--depth", help="Number of convolution layers."),
    kernel_size: int = typer.Option(3, "--kernel-size", help="Kernel size = spiral ribbon height (3 or 5)."),
    fields: int = typer.Option(0, "--fields", help="Steerable regular fields; 0 = match the cartesian parameters."),
    rotations: int = typer.Option(8, "--rotations", help="Steerable: the group C_N."),
    augment: bool = typer.Option(False, "--augment/--no-augment", help="Random rotations of each training pair "
                                                                       "every epoch."),
    prefilter: float = typer.Option(0.0, "--prefilter", help="Spiral and cartesian: Gaussian anti-aliasing blur of "
                                                             "the input in pixels (0 = the thesis' plain network)."),
    seed: int = typer.Option(0, "--seed", help="Seed for data, initialisation and batch order."),
    threads: int = typer.Option(0, "--threads", help="torch threads (0 = torch's default)."),
    out: Path = typer.Option(Path("pathxai-out/denoise"), "--out", "-o", help="Run directory to write."),
) -> None:
    """Train one denoiser; writes OUT/history.csv, OUT/curves.png, OUT/model.pt and OUT/config.json."""
    import torch

    from .experiment import RunConfig, run, save_run

    if threads > 0:
        torch.set_num_threads(threads)
    # a bad setting raises ValueError/TypeError here, which the app reports in one line (exit code 2)
    config = RunConfig(arch=arch, snr=snr, size=size, n_train=n_train, n_val=n_val,  # type: ignore[arg-type]
                       n_molecules=n_molecules, n_val_molecules=n_val_molecules, noise=noise, epochs=epochs,
                       batch_size=batch_size, lr=lr,
                       channels=channels, depth=depth, kernel_size=kernel_size, fields=fields,
                       rotations=rotations, augment=augment, prefilter=prefilter, seed=seed)
    config.data_config()
    typer.echo(LOWER_IS_BETTER)

    def show(rec) -> None:
        typer.echo(f"epoch {rec.epoch:3d}  val MSE/noisy {rec.val_rel_mse:.4f}  NMSE {rec.val_nmse:.4f}  "
                   f"equivariance {rec.equivariance:.4f} (r<0.8: {rec.equivariance_inner:.4f})  "
                   f"{rec.seconds:.1f} s")

    result = run(config, on_epoch=show)
    save_run(out, result)
    typer.echo(f"{config.label()}: {result.n_parameters} parameters -> {out}")


@denoise_app.command("eval")
def eval_cmd(
    runs: List[Path] = typer.Argument(..., help="Run directories written by `pathxai denoise train`."),
    n_val: Optional[int] = typer.Option(None, "--n-val", help="Validation images (default: each run's own)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Data seed (default: each run's own)."),
    out: Path = typer.Option(Path("pathxai-out/denoise-eval"), "--out", "-o", help="Folder for the CSV and plot."),
) -> None:
    """Evaluate trained runs on their validation data; writes OUT/eval.csv, OUT/curves.csv and OUT/curves.png."""
    import csv
    import io

    from ..core.files import atomic_write_bytes
    from .data import make_cryo_em
    from .experiment import history_csv, load_run
    from .plots import plot_curves
    from .train import evaluate

    if out.exists() and not out.is_dir():
        raise ValueError(f"--out must name a folder for the outputs, but {out} is an existing file")
    typer.echo(LOWER_IS_BETTER)
    rows, curves, csv_parts = [], {}, []
    for d in runs:
        config, model, history = load_run(d)   # ValueError / FileNotFoundError: reported in one line, exit 2
        overrides = {"n_train": 2}
        if n_val is not None:
            overrides["n_val"] = n_val
        if seed is not None:
            overrides["seed"] = seed
        data = make_cryo_em(config.data_config(), **overrides)
        m = evaluate(model, data, config.n_equivariance, seed=config.seed)
        label = f"{config.label()} snr={config.snr:.4g} ({d.name})"
        rows.append({"run": str(d), "arch": config.label(), "snr": config.snr, **m})
        curves[label] = history
        csv_parts.append(history_csv(history, {"run": str(d), "arch": config.label(), "snr": config.snr}))
        typer.echo(f"{label}: val MSE/noisy {m['val_rel_mse']:.4f}  NMSE {m['val_nmse']:.4f}  "
                   f"equivariance {m['equivariance']:.4f} (r<0.8: {m['equivariance_inner']:.4f})")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(out / "eval.csv", buf.getvalue().encode())
    merged = csv_parts[0] + "".join(p.split("\n", 1)[1] for p in csv_parts[1:])
    atomic_write_bytes(out / "curves.csv", merged.encode())
    plot_curves(curves, out / "curves.png")
    typer.echo(f"wrote {out / 'eval.csv'}, {out / 'curves.csv'}, {out / 'curves.png'}")
