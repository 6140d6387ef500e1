"""A stored reference of ``ablation_path``'s Algorithm 2 results, to check that ``schedule="thesis"`` reproduces the
package's results from before the faster schedule existed, bit for bit.

The reference file was written by the code of commit 2795b57 (before ``schedule=`` existed, so without that
argument), on the CPU with one thread:

    git archive 2795b57 src | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old/src OMP_NUM_THREADS=1 python tests/ablation_reference.py

Only the public API is used (``get_method(...).explain`` and its extras), so the same code records old and new
results. Floats are stored as ``float.hex`` strings (exact); the path and the attribution by checksums (float64 sums
in a fixed order, with fixed weights), which change with any bit of the (N, n, h, w) path.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

REFERENCE_PATH = Path(__file__).parent / "data" / "ablation_path_thesis_reference.json"

# (name, parameters): the defaults, and a two-path score stopped by the iteration cap on a coarser grid
CASES: list[tuple[str, dict[str, Any]]] = [
    ("defaults", {"batch_size": 5}),
    ("straddling_cap", {"batch_size": 7, "score": "boundary_straddling", "n_steps": 6, "mask_size": (14, 14),
                        "max_iterations": 12, "min_iterations": 2}),
]


def _hex(t: torch.Tensor) -> list:
    return [float(v).hex() for v in t.detach().double().flatten().tolist()]


def _checksums(t: torch.Tensor) -> list[str]:
    """Per image: plain sum and a weighted sum with weights 1 + (index mod 7) / 7 (sensitive to where values are)."""
    flat = t.detach().double().flatten(1)
    weights = 1.0 + (torch.arange(flat.shape[1], dtype=torch.float64) % 7) / 7.0
    return _hex(torch.stack([flat.sum(1), (flat * weights).sum(1)], 1))


def record(explanation: Any) -> dict[str, Any]:
    """The compared quantities of one explanation, as exact strings."""
    ex = explanation.extras
    out = {"iterations": ex["iterations"].tolist(), "score": _hex(ex["score"]),
           "score_history": _hex(ex["score_history"]), "history_shape": list(ex["score_history"].shape),
           "path": _checksums(ex["path"]), "attribution": _checksums(explanation.attribution),
           "gradient_evaluations": int(explanation.meta["gradient_evaluations"])}
    if "path_down" in ex:
        out["path_down"] = _checksums(ex["path_down"])
    return out


def compute(**extra: Any) -> dict[str, dict[str, Any]]:
    """Every case on the first three test digits with their labels (``extra`` added to the parameters)."""
    import pathxai as px

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as recorded: the model's float32 sums may round differently with more threads
    try:
        model = px.models.load("digits-cnn")
        x, y = px.data.digits("test")
        x, y = x[:3].clone(), y[:3].clone()
        return {name: record(px.get_method("ablation_path")(model, **params, **extra).explain(x, y))
                for name, params in CASES}
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    REFERENCE_PATH.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE_PATH.write_text(json.dumps(compute(), indent=1) + "\n")
    print(f"written {REFERENCE_PATH}", file=sys.stderr)
