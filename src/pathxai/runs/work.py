"""What a run explains (its items) and how one item is explained and scored (the worker, shared by every engine).

Every item is explained on its own (a batch of one) with an integer ``batch_size`` and ``threads_per_worker`` torch
threads, so a result does not depend on which worker, engine or shard computed it: the local and Ray engines give
the same bytes for the same seed.
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..data.images import ImageData
from ..core.placement import resolve_device
from .store import ResultRecord

RUN_METRICS = ("insertion", "deletion", "pointing")
LABEL_FILES = ("labels.csv", "labels.json")


@dataclass
class ItemSpec:
    """One planned item: where its image comes from, its label (None = the predicted class) and boxes.

    ``error`` is set when the item is known to be bad before loading (e.g. the label file names a missing file).
    """

    item_id: str
    position: int
    source: str | None
    label: int | None = None
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    suite_index: int | None = None
    error: str | None = None
    image: np.ndarray | None = field(default=None, repr=False)   # suites: the (C, H, W) float32 image itself
    mask: np.ndarray | None = field(default=None, repr=False)    # suites: the (H, W) bool object mask


# ---------------------------------------------------------------------------------------------------------------
# planning (in the driver)


def plan_items(data: str | Path, *, labels: str | Path | None = None, n_images: int | None = None,
               seed: int = 0) -> tuple[dict[str, Any], list[ItemSpec]]:
    """Resolve DATA (a named suite or a folder of images) into a data description and the list of items.

    A folder may hold ``labels.csv`` (columns ``file,label`` and optionally ``x0,y0,x1,y1``; one row per box) or
    ``labels.json`` (``{file: {"label": int, "boxes": [[x0, y0, x1, y1], ...]}}`` or a list of objects with a
    ``file`` key); ``labels`` names such a file explicitly. Files named there but missing become failed items, and
    so do entries of the folder that are not images or are symbolic links leading out of it (nothing is skipped
    without a word). Label keys are reduced to file names: a label file cannot point outside the folder.
    """
    from ..data import scan_images
    from ..suites import list_suites

    from ..core.validation import check_positive_int

    if n_images is not None:
        n_images = check_positive_int(n_images, "n_images")
    name = str(data)
    if not Path(name).exists() and name.replace("_", "-") in list_suites():
        from ..suites import load_suite

        suite = load_suite(name.replace("_", "-"), n_images=n_images, seed=seed)
        desc = {"kind": "suite", "name": suite.name, "n_images": n_images, "seed": seed,
                "model": suite.model_name}
        masks = suite.masks()   # boxes filled in where a suite has no mask
        items = [ItemSpec(it.name, i, f"suite:{suite.name}[{i}]", int(it.label),
                          [tuple(int(v) for v in b) for b in it.boxes], suite_index=i, image=it.image.numpy(),
                          mask=masks[i].numpy())
                 for i, it in enumerate(suite)]
        return desc, items
    folder = Path(name)
    if not folder.is_dir():
        raise ValueError(f"DATA must be a folder of images or a suite name ({', '.join(list_suites())}); "
                         f"got {name!r}")
    label_path = Path(labels) if labels is not None else next(
        (folder / f for f in LABEL_FILES if (folder / f).exists()), None)
    table = _read_labels(label_path) if label_path is not None else {}
    scan = scan_images([folder])
    present = {f.name for f in scan.files}
    items: list[ItemSpec] = []
    for f in scan.files:
        label, boxes = table.get(f.name, (None, []))
        items.append(ItemSpec(f.name, 0, str(f.resolve()), label, boxes))
    for entry, why in scan.skipped:
        if label_path is not None and entry.resolve() == label_path.resolve():
            continue
        label, boxes = table.get(entry.name, (None, []))
        items.append(ItemSpec(entry.name, 0, str(folder.resolve() / entry.name), label, boxes,
                              error=f"{entry.name} is {why}"))
        present.add(entry.name)
    for fname, (label, boxes) in sorted(table.items()):
        if fname not in present:
            reason = f"the label file {label_path.name} names {fname}, which does not exist in {folder}"
            items.append(ItemSpec(fname, 0, str(folder.resolve() / fname), label, boxes, error=reason))
    items.sort(key=lambda it: it.item_id)
    if n_images is not None:
        items = items[:n_images]
    for i, it in enumerate(items):
        it.position = i
    desc = {"kind": "folder", "path": str(folder.resolve()),
            "labels": str(label_path.resolve()) if label_path else None, "n_images": n_images}
    return desc, items


def _read_labels(path: Path) -> dict[str, tuple[int | None, list[tuple[int, int, int, int]]]]:
    if not path.exists():
        raise FileNotFoundError(f"label file {path} does not exist")
    out: dict[str, tuple[int | None, list[tuple[int, int, int, int]]]] = {}

    def add(fname: str, label: Any, box: Sequence[Any] | None) -> None:
        lab = None if label in (None, "") else int(label)
        prev_label, boxes = out.get(fname, (lab, []))
        if box is not None and all(v not in (None, "") for v in box):
            boxes = boxes + [tuple(int(float(v)) for v in box)]  # type: ignore[misc]
        out[fname] = (lab if lab is not None else prev_label, boxes)

    if path.suffix.lower() == ".json":
        raw = json.loads(path.read_text())
        entries = raw.items() if isinstance(raw, dict) else [(e["file"], e) for e in raw]
        for fname, e in entries:
            e = e if isinstance(e, dict) else {"label": e}
            boxes = e.get("boxes") or []
            name = Path(str(fname)).name   # a file name in the data folder, never a path elsewhere
            add(name, e.get("label"), None)
            for b in boxes:
                add(name, e.get("label"), b)
        return out
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        key = next((c for c in ("file", "filename", "image", "path") if c in cols), None)
        if key is None:
            raise ValueError(f"label CSV {path} needs a 'file' column (got columns {cols})")
        for row in reader:
            box = [row.get(c) for c in ("x0", "y0", "x1", "y1")] if "x0" in cols else None
            add(Path(row[key]).name, row.get("label"), box)
    return out


# ---------------------------------------------------------------------------------------------------------------
# the worker


def read_image_file(path: str, channels: int, convert_modes: bool = False,
                    reduce_to: tuple[int, int] | None = None) -> ImageData:
    """Decode an image fully (a truncated file raises) for a model with ``channels`` input channels.

    See :func:`pathxai.data.read_image` (the pixel limit applies). A file whose mode does not match (grey or palette
    for an RGB model, RGBA, 16-bit, RGB for a grey model) raises :class:`pathxai.data.ImageReadError` naming the mode,
    unless ``convert_modes`` is set: silently dropping an alpha channel or inventing colour changes what the model
    sees, so converting is the user's decision. Conversions are recorded in the result's ``notes``.
    """
    from ..data import read_image

    return read_image(path, channels=channels, convert=convert_modes, reduce_to=reduce_to)


class BadItem(Exception):
    """An item that was read but cannot be explained as it is (the reason is the message)."""


class Worker:
    """Loads the model and methods once, then explains and scores items one at a time.

    Args:
        config: the run configuration (see :func:`pathxai.runs.run`).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        from ..core import get_method
        from ..models import load

        torch.set_num_threads(int(config["threads_per_worker"]))
        self.config = config
        weights = config.get("weights")
        if weights:   # the file the run started with, unchanged: its content is a result-changing setting
            from .api import _weights_record

            now = _weights_record(weights["path"])
            if now is None or now["sha256"] != weights["sha256"]:
                raise ValueError(f"the weights file {weights['path']} changed since the run started (SHA-256 "
                                 "differs); restore it or start a new run with another --out")
        self.model = load(config["model"], trust=bool(config.get("trust_model_file", False)),
                          weights=weights["path"] if weights else None)
        self.device = resolve_device(config.get("device", "auto"))
        self.model = self.model.to(self.device)
        self.methods = {name: get_method(name)(self.model, batch_size=config["batch_size"], seed=config["seed"],
                                               progress=False, **config["method_params"].get(name, {}))
                        for name in config["methods"]}

    def _load(self, item: ItemSpec) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
        if item.image is not None:
            mask = torch.from_numpy(item.mask).unsqueeze(0) if item.mask is not None else None
            return torch.from_numpy(item.image).unsqueeze(0), mask, {}
        from ..models import image_to_tensor

        from ..data import ImageReadError

        shape = getattr(self.model, "input_shape", (3,))
        channels = int(shape[0])
        try:
            image = read_image_file(str(item.source), channels, bool(self.config.get("convert_modes", False)),
                                    reduce_to=tuple(shape[1:3]) if len(shape) == 3 else None)
        except ImageReadError as err:   # a mode mismatch, a truncated file, too many pixels: a bad item, no crash
            raise BadItem(str(err)) from None
        arr = image.array
        x = self.model.preprocess(arr) if hasattr(self.model, "preprocess") else image_to_tensor(arr)
        mask = None
        if item.boxes:
            m = np.zeros(arr.shape[:2], dtype=np.float32)
            for box in item.boxes:   # boxes are given on the full-size image: follow a reduction
                x0, y0, x1, y1 = (int(round(v * image.scale)) for v in box)
                m[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = 1.0
            size = tuple(x.shape[-2:])
            mask = image_to_tensor(m, size)[:, 0] > 0.5
        return x, mask, ({"note": "; ".join(image.notes)} if image.notes else {})

    def process(self, shard: Sequence[tuple[ItemSpec, Sequence[str]]]) -> list[ResultRecord]:
        """Explain every (item, methods) of ``shard``; failures become records with the reason."""
        out: list[ResultRecord] = []
        for item, methods in shard:
            if item.error is not None:
                out += [ResultRecord(item.item_id, m, "failed", error=item.error) for m in methods]
                continue
            try:
                x, mask, info = self._load(item)
            except BadItem as err:
                out += [ResultRecord(item.item_id, m, "failed", error=str(err)) for m in methods]
                continue
            except Exception as err:  # noqa: BLE001 - any unreadable input is recorded, the run goes on
                reason = f"cannot read image {item.source}: {type(err).__name__}: {err}"
                out += [ResultRecord(item.item_id, m, "failed", error=reason) for m in methods]
                continue
            for name in methods:
                try:
                    out.append(self._explain(item, name, x, mask, info))
                except Exception as err:  # noqa: BLE001
                    out.append(ResultRecord(item.item_id, name, "failed", error=f"{type(err).__name__}: {err}"))
        return out

    def _explain(self, item: ItemSpec, name: str, x: torch.Tensor, mask: torch.Tensor | None,
                 info: dict[str, Any]) -> ResultRecord:
        from .. import metrics as M

        cfg = self.config
        t0 = time.perf_counter()
        e = self.methods[name].explain(x, target=item.label)
        t_explain = time.perf_counter() - t0
        target = int(e.meta["target"][0]) if "target" in e.meta else item.label
        sal = e.saliency()
        arrays: dict[str, np.ndarray] = {k: v for k, v in e.numpy().items()}
        arrays["input_uint8"] = (x[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        scores: dict[str, float] = {}
        scale = min(x.shape[-2:]) / 224.0
        for metric in cfg["metrics"]:
            if metric in ("insertion", "deletion"):
                fn = M.insertion if metric == "insertion" else M.deletion
                r = fn(self.model, x, sal, [target], steps=cfg["steps"],
                       baseline="blur" if metric == "insertion" else "zero", blur_sigma=max(1.0, 5.0 * scale),
                       batch_size=cfg["batch_size"], progress=False)
                scores[metric] = float(r.score[0])
                arrays[f"curve_{metric}"] = r.curve[0].numpy()
            elif metric == "pointing" and mask is not None:
                r = M.pointing_game(sal, mask, tolerance=15.0 * scale)
                scores[metric] = float(r.score[0])
        seconds = time.perf_counter() - t0
        plain = {k: v for k, v in e.extras.items() if isinstance(v, (str, int, float, bool, tuple, list))}
        meta = {"target": target, "explain_seconds": t_explain, "device": str(self.device),
                "model_evaluations": e.meta.get("model_evaluations"), "extras": plain, **info}
        return ResultRecord(item.item_id, name, "done", arrays, scores, seconds, None, meta)


def finite_or_none(v: float) -> float | None:
    """JSON-safe float (NaN/Inf -> None)."""
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None
