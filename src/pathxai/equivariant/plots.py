"""Training curves in the style of the thesis' Figures 7.7-7.9: validation MSE and equivariance error per epoch."""
from __future__ import annotations

import io
import os
from pathlib import Path

from .train import EpochRecord


def plot_curves(histories: dict[str, list[EpochRecord]], path: str | Path, title: str = "") -> Path:
    """Two panels (validation MSE relative to the noisy input; equivariance error on the disc) with one line per
    history; written atomically as PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not histories:
        raise ValueError("histories must not be empty")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, hist in histories.items():
        ep = [r.epoch for r in hist]
        a1.plot(ep[1:], [r.val_rel_mse for r in hist[1:]], marker="o", label=label)
        line, = a2.plot(ep, [r.equivariance for r in hist], marker="o", label=f"{label} (disc)")
        a2.plot(ep, [r.equivariance_inner for r in hist], ls="--", color=line.get_color(), alpha=0.6,
                label=f"{label} (r<0.8)")
    a1.set_xlabel("epoch")
    a1.set_ylabel("validation MSE / noisy-input MSE")
    a1.set_yscale("log")
    a1.grid(alpha=0.3)
    a1.legend(fontsize=8)
    a2.set_xlabel("epoch")
    a2.set_ylabel("equivariance error |F(Rx)-RF(x)|/|F(x)|")
    a2.set_yscale("log")
    a2.grid(alpha=0.3)
    a2.legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)
    return path
