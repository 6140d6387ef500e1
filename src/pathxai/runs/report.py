"""Static HTML report of a run: a sortable methods x metrics table, a sortable per-item table, mean
deletion/insertion curves, a heatmap grid (one row per image, methods side by side) and, for methods that return an
ablation path (``extras["path"]``, (N, n, h, w) masks), a slider that walks along the path.

Everything is written into one folder (default ``RUN_DIR/report``): ``index.html`` plus ``img/*.png`` beside it,
so the report opens from the file system without a server and can be copied as a whole. The folder gets a marker
file, ``.pathxai-report``, listing the files the report wrote: writing a report again into it replaces those files
and deletes only the ones the new report does not write again. A non-empty folder without the marker is refused
unless ``force=True`` (``--force``); even then nothing in it is deleted, files of the same name are overwritten.
Only verified results are shown (see :mod:`pathxai.runs.store`); a stored result that does not verify is listed
with status ``corrupt`` and the reason.
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .api import load_run
from .store import CorruptResultError, RunStore, _atomic_write, item_key

HIGHER_IS_BETTER = {"insertion": True, "deletion": False, "pointing": True}
THUMB = 160      # displayed side of heatmaps and path frames, px
MAX_FRAMES = 24  # path frames shown on a slider (subsampled evenly when the path is longer)
MARKER = ".pathxai-report"


def _owned_files(out: Path, *, default: bool, force: bool) -> list[str]:
    """The files a previous report wrote into ``out`` (relative paths), after checking we may write there.

    Raises:
        FileExistsError: ``out`` is a non-empty folder that is not a pathxai report, and ``force`` is not set.
        NotADirectoryError: ``out`` exists and is not a folder.
    """
    if not out.exists():
        return []
    if not out.is_dir():
        raise NotADirectoryError(f"report folder {out} exists and is not a folder")
    marker = out / MARKER
    if marker.is_file():
        try:
            files = json.loads(marker.read_text()).get("files", [])
        except (ValueError, AttributeError, UnicodeDecodeError):
            files = []   # a damaged marker: still our folder, but delete nothing we cannot name
        return [f for f in files if isinstance(f, str)]
    entries = list(out.iterdir())
    if not entries:
        return []
    # a report written before the marker existed, in its default place: index.html and img/*.png, nothing else
    if default and {e.name for e in entries} <= {"index.html", "img"} and (out / "index.html").is_file() \
            and all(p.is_file() and p.suffix == ".png" for p in (out / "img").glob("*")):
        return ["index.html"] + [f"img/{p.name}" for p in (out / "img").glob("*.png")]
    if force:
        return []        # the user's folder: overwrite our file names, delete nothing
    raise FileExistsError(f"report folder {out} is not empty and was not written by pathxai report; choose an "
                          "empty or new folder, or pass force=True (--force) to write into it anyway (files of the "
                          "same name are overwritten, nothing else is deleted)")


def _remove_stale(out: Path, old: list[str], new: set[str]) -> None:
    """Delete the files of the previous report that this one did not write again (and only those)."""
    root = out.resolve()
    for rel in old:
        if rel in new or rel == MARKER:
            continue
        path = (out / rel)
        try:   # a marker names only files inside the folder; anything else in it is ignored
            if not path.resolve().is_relative_to(root) or not path.is_file() or path.is_symlink():
                continue
        except OSError:
            continue
        path.unlink(missing_ok=True)


def _png(rgb: np.ndarray, path: Path, written: set[str], side: int = THUMB) -> str:
    """Save ``rgb`` as ``img/<name>`` (upscaled to about ``side`` px), note it in ``written``; returns its src."""
    from PIL import Image

    img = Image.fromarray(rgb)
    scale = max(1, side // max(img.size))
    if scale > 1:
        img = img.resize((img.size[0] * scale, img.size[1] * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, optimize=False)
    written.add(f"img/{path.name}")
    return f"img/{path.name}"


def _rgb(input_uint8: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 -> (H, W, 3) uint8."""
    a = np.asarray(input_uint8)
    a = a.transpose(1, 2, 0)
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a[..., :3]


def _overlay(image: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """Image (H, W, 3) uint8 in grey, saliency in a diverging colour map (blue < 0 < red), symmetric scale."""
    import matplotlib

    s = np.asarray(saliency, dtype=np.float64)
    lim = float(np.abs(s).max()) or 1.0
    colours = matplotlib.colormaps["bwr"]((s / lim + 1) / 2)[..., :3]
    grey = image.astype(np.float64).mean(2, keepdims=True) / 255.0
    out = 0.45 * grey + 0.55 * colours
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def _path_frames(image: np.ndarray, path: np.ndarray, baseline: np.ndarray | None) -> list[np.ndarray]:
    """Frames of an ablation path phi(t) (0 = keep the image, 1 = the baseline, as in
    :mod:`pathxai.methods.ablation_path`): ``(1 - phi) * image + phi * baseline`` (black without a baseline)."""
    from PIL import Image

    h, w = image.shape[:2]
    base = _rgb((np.clip(baseline[0], 0, 1) * 255).round().astype(np.uint8)) if baseline is not None \
        else np.zeros_like(image)
    frames = []
    for m in path:
        m = np.asarray(m, dtype=np.float32)
        if m.shape != (h, w):
            m = np.asarray(Image.fromarray(m).resize((w, h), Image.BILINEAR))
        m = np.clip(m, 0, 1)[..., None]
        frames.append(((1 - m) * image + m * base).round().astype(np.uint8))
    return frames


def _fmt(v: Any, digits: int = 4) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and math.isfinite(v) else "–"


def write_report(run_dir: str | Path, out: str | Path | None = None, *, max_images: int = 50,
                 force: bool = False) -> Path:
    """Write ``index.html`` (and ``img/``) for the run in ``run_dir``; returns the path of ``index.html``.

    Args:
        out: report folder (default ``run_dir/report``). It must be new, empty, or a folder a previous report
            wrote (it has a ``.pathxai-report`` marker); the files of that report are replaced.
        max_images: images shown in the heatmap grid and path sliders (the tables list every item), >= 0.
        force: write into a non-empty folder that is not a report anyway (overwrites files of the same name,
            deletes nothing).
    Raises:
        FileExistsError: ``out`` is a non-empty folder without the marker and ``force`` is False.
    """
    if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 0:
        raise ValueError(f"max_images must be an integer >= 0, got {max_images!r}")
    default = out is None
    out = Path(out) if out is not None else Path(run_dir) / "report"
    old_files = _owned_files(out, default=default, force=force)
    # hashes are checked below, when each result's arrays are read (once per file, not twice)
    table = load_run(run_dir, verify_hashes=False)
    cfg = table.config
    methods: list[str] = cfg.get("methods", [])
    metrics: list[str] = cfg.get("metrics", [])
    (out / "img").mkdir(parents=True, exist_ok=True)
    # claim the folder before writing into it (a report killed half-way is still recognised as ours)
    _atomic_write(out / MARKER, json.dumps({"files": old_files}, indent=0).encode())

    by_pair = {(r["item"], r["method"]): r for r in table.rows}
    items: list[str] = []
    for r in table.rows:
        if r["item"] not in items:
            items.append(r["item"])

    # curves (mean over finished items) -------------------------------------------------------------------------
    curves: dict[tuple[str, str], Any] = {}
    grid_rows: list[str] = []
    sliders: list[str] = []
    import torch

    shown = 0
    written: set[str] = {"index.html"}   # what this report writes (recorded in the marker)
    store = RunStore(run_dir, create=False)

    def verified_arrays(item: str) -> dict[str, dict[str, np.ndarray]]:
        out_arrays = {}
        for m in methods:
            row = by_pair.get((item, m))
            if row is None or row["status"] != "done":
                continue
            try:
                out_arrays[m] = store.load_arrays(item, m)   # hash checked here
            except CorruptResultError as err:   # changed since load_run: shown as corrupt, never served
                row.update(status="corrupt", error=str(err), **{k: None for k in metrics})
        return out_arrays

    try:
        for item in items:
            arrays = verified_arrays(item)
            done = [m for m in methods if m in arrays]
            for m, a in arrays.items():
                for metric in ("insertion", "deletion"):
                    if f"curve_{metric}" in a:
                        curves.setdefault((m, metric), []).append(torch.from_numpy(a[f"curve_{metric}"]))
            if not done or shown >= max_images:
                continue
            shown += 1
            key = item_key(item)
            image = _rgb(arrays[done[0]]["input_uint8"])
            thumb = _png(image, out / "img" / f"{key}.png", written)
            cells = [f'<td><img class="thumb" alt="{html.escape(item)}" src="{thumb}">'
                     f'<div class="cap">{html.escape(item)}</div></td>']
            for m in methods:
                if m not in arrays:
                    err = by_pair.get((item, m), {}).get("error") or "not run"
                    status = by_pair.get((item, m), {}).get("status", "not run")
                    cells.append(f'<td class="failed" title="{html.escape(err)}">{html.escape(status)}</td>')
                    continue
                a = arrays[m]
                src = _png(_overlay(image, a["saliency"][0]), out / "img" / f"{key}__{m}.png", written)
                scores = " ".join(f"{k[:3]} {_fmt(by_pair[(item, m)].get(k), 2)}" for k in metrics)
                cells.append(f'<td><img class="thumb" alt="{html.escape(m)} on {html.escape(item)}" src="{src}">'
                             f'<div class="cap">{html.escape(scores)}</div></td>')
                if "extras_path" in a and a["extras_path"].ndim == 4:
                    path = a["extras_path"][0]
                    idx = np.unique(np.linspace(0, len(path) - 1, min(MAX_FRAMES, len(path))).round().astype(int))
                    frames = _path_frames(image, path[idx], a.get("extras_baseline"))
                    srcs = [_png(f, out / "img" / f"{key}__{m}__path{j:03d}.png", written) for j, f in zip(idx, frames)]
                    times = a.get("extras_times")
                    labels = [f"step {j + 1}/{len(path)}" + (f", t = {float(times[j]):.2f}" if times is not None
                                                              and len(times) == len(path) else "") for j in idx]
                    sliders.append(
                        f'<div class="path"><h3>{html.escape(m)} — {html.escape(item)}</h3>'
                        f'<img class="path-frame" alt="path frame" src="{srcs[0]}"><br>'
                        f'<input type="range" class="path-slider" min="0" max="{len(srcs) - 1}" value="0" step="1" '
                        f"data-frames='{html.escape(json.dumps(srcs))}' "
                        f"data-labels='{html.escape(json.dumps(labels))}'>"
                        f'<span class="path-label">{html.escape(labels[0])}</span></div>')
            grid_rows.append("<tr>" + "".join(cells) + "</tr>")
    finally:
        store.close()

    curves_html = ""
    if curves:
        from ..viz.curves import save_curves

        save_curves({k: torch.stack(v) for k, v in curves.items()}, out / "img" / "curves.png",
                    title=f"{cfg.get('model', '')}: mean over finished items (±1 std)")
        written.add("img/curves.png")
        curves_html = '<img id="curves" alt="deletion and insertion curves" src="img/curves.png">'

    # tables ------------------------------------------------------------------------------------------------------
    summary = {(r["method"], r["metric"]): r for r in table.summary()}
    head = "".join(f'<th data-type="num">{html.escape(m)} {"↑" if HIGHER_IS_BETTER.get(m, True) else "↓"}</th>'
                   for m in metrics)
    body = []
    for m in methods:
        done = [r for r in table.rows if r["method"] == m and r["status"] == "done"]
        timed = [r["seconds"] for r in done if r["seconds"] is not None]   # None: adopted file, timing unknown
        secs = float(np.mean(timed)) if timed else math.nan
        cells = "".join(
            f'<td data-v="{_fmt(summary[(m, k)]["mean"], 6)}">{_fmt(summary[(m, k)]["mean"])} ± '
            f'{_fmt(summary[(m, k)]["std"])} <small>(n={summary[(m, k)]["n"]})</small></td>' for k in metrics)
        body.append(f'<tr><td data-v="{html.escape(m)}">{html.escape(m)}</td>{cells}'
                    f'<td data-v="{_fmt(secs, 6)}">{_fmt(secs, 3)}</td><td data-v="{len(done)}">{len(done)}</td></tr>')
    summary_html = (f'<table id="summary" class="sortable"><thead><tr><th data-type="text">method</th>{head}'
                    f'<th data-type="num">s / item</th><th data-type="num">done</th></tr></thead>'
                    f'<tbody>{"".join(body)}</tbody></table>')
    item_rows = []
    for r in table.rows:
        cells = "".join(f'<td data-v="{_fmt(r.get(k), 6)}">{_fmt(r.get(k))}</td>' for k in metrics)
        item_rows.append(
            f'<tr class="{r["status"]}"><td data-v="{html.escape(r["item"])}">{html.escape(r["item"])}</td>'
            f'<td data-v="{html.escape(r["method"])}">{html.escape(r["method"])}</td>'
            f'<td data-v="{r["status"]}">{r["status"]}</td>{cells}'
            f'<td data-v="{_fmt(r["seconds"], 6)}">{_fmt(r["seconds"], 3)}</td>'
            f'<td data-v="{html.escape(r["error"] or "")}">{html.escape(r["error"] or r.get("note") or "")}</td></tr>')
    items_html = (f'<table id="items" class="sortable"><thead><tr><th data-type="text">item</th>'
                  f'<th data-type="text">method</th><th data-type="text">status</th>{head}'
                  f'<th data-type="num">seconds</th><th data-type="text">error / note</th></tr></thead>'
                  f'<tbody>{"".join(item_rows)}</tbody></table>')
    grid_html = ('<table id="grid"><thead><tr><th>image</th>' + "".join(f"<th>{html.escape(m)}</th>" for m in methods)
                 + "</tr></thead><tbody>" + "".join(grid_rows) + "</tbody></table>")
    failed = table.failed
    settings = {k: cfg.get(k) for k in ("data", "model", "methods", "method_params", "metrics", "steps", "seed",
                                        "batch_size")}
    page = _TEMPLATE.format(
        title=html.escape(f"pathxai run — {Path(run_dir).resolve().name}"),
        settings=html.escape(json.dumps(settings, indent=1)),
        counts=f"{len(items)} items × {len(methods)} methods: "
               f"{sum(r['status'] == 'done' for r in table.rows)} done, {len(failed)} failed",
        summary=summary_html, curves=curves_html or "<p>no deletion/insertion curves in this run</p>",
        grid=grid_html, shown=shown,
        paths="".join(sliders) or "<p>no method in this run returned an ablation path</p>",
        items=items_html, script=_SCRIPT)
    path = out / "index.html"
    _atomic_write(path, page.encode())
    _atomic_write(out / MARKER, json.dumps({"files": sorted(written)}, indent=0).encode())
    _remove_stale(out, old_files, written)
    return path


_SCRIPT = """
function cellValue(row, i, type) {
  const v = row.cells[i].dataset.v;
  if (type === 'num') { const x = parseFloat(v); return isNaN(x) ? -Infinity : x; }
  return v || '';
}
document.querySelectorAll('table.sortable').forEach(table => {
  table.querySelectorAll('th').forEach((th, i) => {
    th.addEventListener('click', () => {
      const asc = th.dataset.order !== 'asc';
      table.querySelectorAll('th').forEach(h => { delete h.dataset.order; });
      th.dataset.order = asc ? 'asc' : 'desc';
      const body = table.tBodies[0];
      const rows = Array.from(body.rows);
      rows.sort((a, b) => {
        const x = cellValue(a, i, th.dataset.type), y = cellValue(b, i, th.dataset.type);
        return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
      });
      rows.forEach(r => body.appendChild(r));
    });
  });
});
document.querySelectorAll('input.path-slider').forEach(slider => {
  const frames = JSON.parse(slider.dataset.frames), labels = JSON.parse(slider.dataset.labels);
  const box = slider.closest('.path');
  slider.addEventListener('input', () => {
    box.querySelector('img.path-frame').src = frames[slider.value];
    box.querySelector('.path-label').textContent = labels[slider.value];
  });
});
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 7px; text-align: right; vertical-align: top; }}
td:first-child, th:first-child {{ text-align: left; }}
table.sortable th {{ cursor: pointer; background: #f0f0f0; user-select: none; }}
th[data-order=asc]::after {{ content: " ▲"; }} th[data-order=desc]::after {{ content: " ▼"; }}
tr.failed td, tr.corrupt td {{ background: #fde8e8; }} td.failed {{ background: #fde8e8; text-align: center; }}
img.thumb, img.path-frame {{ width: {thumb}px; height: {thumb}px; image-rendering: pixelated; }}
.cap {{ font-size: 11px; text-align: center; max-width: {thumb}px; }}
.path {{ display: inline-block; margin: 0 1.5em 1em 0; }} .path h3 {{ font-size: 14px; margin: 0.2em 0; }}
input.path-slider {{ width: {thumb}px; }} pre {{ background: #f7f7f7; padding: 0.5em; }}
</style></head><body>
<h1>{title}</h1>
<p id="counts">{counts}</p>
<details><summary>settings</summary><pre>{settings}</pre></details>
<h2>Methods × metrics (mean ± std over items; click a header to sort)</h2>
{summary}
<h2>Deletion and insertion curves</h2>
{curves}
<h2>Heatmaps (first {shown} images; red = positive, blue = negative attribution)</h2>
{grid}
<h2>Ablation paths (drag the slider to walk along the path)</h2>
{paths}
<h2>Every result</h2>
{items}
<script>{script}</script>
</body></html>
""".replace("{thumb}", str(THUMB))
