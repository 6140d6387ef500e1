"""Batch runs (issue 12): store, resume after SIGKILL, bad data, engines agree bit for bit, the HTML report."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import pathxai as px
from pathxai.runs import RunStore
from pathxai.runs.store import ResultRecord, npz_bytes

METHODS = ["ig", "rise"]
PARAMS = {"ig": {"n_steps": 8}, "rise": {"n_masks": 32}}
RUN_KW = dict(n_images=5, steps=10, batch_size=8, shard_size=2, method_params=PARAMS, progress=False)
CLI_PARAMS = ["-p", "ig.n_steps=8", "-p", "rise.n_masks=32"]


def _cli(out: Path, *extra: str, env: dict[str, str] | None = None, wait: bool = True) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pathxai.cli", "run", "digits", "--out", str(out), "--methods", ",".join(METHODS),
           "-n", "5", "--steps", "10", "-b", "8", "--shard-size", "2", "--no-progress", *CLI_PARAMS, *extra]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    p = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    if wait:
        p.wait(timeout=300)
    return p


def _fingerprint(run_dir: Path) -> dict[tuple[str, str], tuple[str, str, str]]:
    """(item, method) -> (status, sha256 of the stored file, scores) from the index, checked against the files."""
    out = {}
    for r in px.load_run(run_dir):
        if r["status"] == "done":
            data = (run_dir / r["file"]).read_bytes()
            import hashlib

            assert hashlib.sha256(data).hexdigest() == r["sha256"], f"{r['file']} does not match its index hash"
        out[(r["item"], r["method"])] = (r["status"], r["sha256"], json.dumps([r[m] for m in
                                                                              ("insertion", "deletion", "pointing")]))
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted in-process run with the local engine and one worker."""
    out = tmp_path_factory.mktemp("runs") / "reference"
    table = px.run("digits", METHODS, out=out, **RUN_KW)
    assert len(table) == 5 * len(METHODS) and not table.failed
    return out


def test_store_files_are_deterministic_and_half_written_items_are_not_finished(tmp_path: Path) -> None:
    arrays = {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.ones(3)}
    assert npz_bytes(arrays) == npz_bytes(dict(reversed(list(arrays.items()))))
    with RunStore(tmp_path) as store:
        store.add_items([("x1", 0, None, 3, {}), ("x2", 1, None, 4, {})])
        store.commit(ResultRecord("x1", "ig", "done", arrays, {"insertion": 0.5}, 0.1))
        store.commit(ResultRecord("x2", "ig", "failed", error="bad file"))
        # a crash after the rename but before the index row: the file exists, the pair is not finished
        folder = tmp_path / "results" / "stray"
        folder.mkdir()
        (folder / "ig.npz").write_bytes(npz_bytes(arrays)[:50])
        (folder / "ig.npz.tmp-123").write_bytes(b"half")
        assert store.finished() == {("x1", "ig")}
        loaded = store.load_arrays("x1", "ig")
        np.testing.assert_array_equal(loaded["b"], arrays["b"])
        with pytest.raises(KeyError, match="bad file"):
            store.load_arrays("x2", "ig")
    with RunStore(tmp_path):
        assert not (folder / "ig.npz.tmp-123").exists()   # temporaries of a killed writer are removed on open
        with pytest.raises(RuntimeError, match="another process is writing"):
            RunStore(tmp_path)                              # one writer at a time
        with RunStore(tmp_path, create=False) as reader:    # readers need no lock
            assert reader.finished() == {("x1", "ig")}


def test_resume_after_sigkill_mid_write_is_exact(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    p = _cli(out, env={"PATHXAI_RUNS_CRASH_AFTER": "3"})   # 4th commit: half a file written, then SIGKILL
    assert p.returncode == -signal.SIGKILL, p.stderr.read()
    tmps = list(out.glob("results/*/*.tmp-*"))
    assert len(tmps) == 1 and tmps[0].stat().st_size > 0          # the half-written file is there ...
    with sqlite3.connect(out / "index.sqlite") as db:                 # ... and not indexed as finished
        rows = db.execute("SELECT item_id, method FROM results").fetchall()
    assert len(rows) == 3
    half = (tmps[0].parent.name, tmps[0].name.split(".npz")[0])
    assert all(f"{item}" not in half[0] or m != half[1] for item, m in rows)
    assert len(px.load_run(out)) == 3

    p = _cli(out)                                                    # resume
    assert p.returncode == 0, p.stderr.read()
    assert not list(out.glob("results/*/*.tmp-*"))
    got, want = _fingerprint(out), _fingerprint(reference)
    assert got == want                                               # every pair once, same bytes, same scores
    with sqlite3.connect(out / "index.sqlite") as db:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT item_id || '/' || method) FROM results").fetchone() \
            == (10, 10)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["results_computed_last_session"] == 7 and summary["n_done"] == 10


@pytest.mark.slow
def test_killed_process_group_with_two_workers_resumes_exactly(reference: Path, tmp_path: Path) -> None:
    """SIGKILL the driver and its worker processes at an arbitrary moment, then resume with 2 workers."""
    out = tmp_path / "run"
    p = _cli(out, "--workers", "2", wait=False)
    deadline = time.time() + 120
    n = 0
    while time.time() < deadline and p.poll() is None:
        if (out / "index.sqlite").exists():
            try:
                with sqlite3.connect(out / "index.sqlite", timeout=1) as db:
                    n = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
            except sqlite3.OperationalError:
                n = 0
            if n >= 2:
                break
        time.sleep(0.05)
    assert p.poll() is None, "the run ended before it could be killed"
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert 2 <= len(px.load_run(out)) < 10
    p = _cli(out, "--workers", "2")
    assert p.returncode == 0, p.stderr.read()
    assert _fingerprint(out) == _fingerprint(reference)


def test_resume_refuses_other_settings(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    with pytest.raises(ValueError, match="different settings.*seed"):
        px.run("digits", METHODS, out=out, **{**RUN_KW, "seed": 1})
    table = px.run("digits", METHODS, out=out, **RUN_KW)     # same settings: nothing left to do
    assert json.loads((out / "summary.json").read_text())["results_computed_last_session"] == 0
    assert len(table) == 10


def _digit_png(i: int) -> "object":
    from PIL import Image

    suite = px.data.load_suite("digits", n_images=8)
    return Image.fromarray((suite[i].image[0].numpy() * 255).round().astype(np.uint8), mode="L")


def test_bad_data_is_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pathxai.cli import app

    data = tmp_path / "images"
    data.mkdir()
    _digit_png(0).save(data / "good.png")                              # mode L: what the grey model takes
    _digit_png(1).convert("RGB").save(data / "colour.png")             # mode RGB for a 1-channel model
    _digit_png(2).convert("RGBA").save(data / "rgba.png")              # mode RGBA
    full = (data / "good.png").read_bytes()
    _digit_png(3).save(data / "tmp.png")
    (data / "truncated.png").write_bytes((data / "tmp.png").read_bytes()[: len(full) // 2])
    (data / "tmp.png").unlink()
    (data / "garbage.png").write_bytes(b"this is not an image")
    (data / "labels.csv").write_text("file,label,x0,y0,x1,y1\ngood.png,7,4,4,24,24\ncolour.png,2,,,,\n"
                                     "missing.png,1,0,0,5,5\n")
    out = tmp_path / "run"
    args = ["run", str(data), "--model", "digits-cnn", "--methods", "gradcam", "--steps", "5", "--no-progress"]
    result = CliRunner().invoke(app, args + ["--out", str(out)])
    assert result.exit_code == 0, result.output
    table = px.load_run(out)
    status = {r["item"]: r for r in table}
    assert {k: v["status"] for k, v in status.items()} == {
        "good.png": "done", "colour.png": "failed", "rgba.png": "failed",
        "truncated.png": "failed", "garbage.png": "failed", "missing.png": "failed"}
    assert "missing.png, which does not exist" in status["missing.png"]["error"]
    assert "cannot read image" in status["truncated.png"]["error"]
    assert "cannot read image" in status["garbage.png"]["error"]
    assert "mode RGBA" in status["rgba.png"]["error"] and "--convert-modes" in status["rgba.png"]["error"]
    assert "mode RGB does not match the model's 1-channel input" in status["colour.png"]["error"]
    assert status["good.png"]["label"] == 7 and status["good.png"]["target"] == 7
    assert status["good.png"]["pointing"] in (0.0, 1.0)                # boxes from the CSV give a pointing score
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(f["item"] for f in summary["failed"]) == ["colour.png", "garbage.png", "missing.png", "rgba.png",
                                                           "truncated.png"]
    assert "missing.png" in result.output and "failed" in result.output

    # opting in converts the mismatched modes and notes it; switching it off on such a run is refused (switching it
    # on when resuming a strict run is allowed: tests/test_hardening_store.py)
    converted = tmp_path / "converted"
    result = CliRunner().invoke(app, args + ["--out", str(converted), "--convert-modes"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, args + ["--out", str(converted)])
    assert result.exit_code != 0 and "convert_modes" in result.output
    status = {r["item"]: r for r in px.load_run(converted)}
    assert status["rgba.png"]["status"] == "done" and status["colour.png"]["status"] == "done"
    assert "mode RGBA" in status["rgba.png"]["note"] and "mode RGB" in status["colour.png"]["note"]
    assert status["rgba.png"]["pointing"] is None                      # no box, no pointing score
    assert status["truncated.png"]["status"] == "failed"


@pytest.mark.slow
def test_ray_engine_matches_local(reference: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    table = px.run("digits", METHODS, out=out, engine="ray", workers=2, **RUN_KW)
    assert len(table) == 10 and not table.failed
    assert _fingerprint(out) == _fingerprint(reference)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_report_renders_and_reacts_in_headless_chromium(tmp_path: Path) -> None:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    out = tmp_path / "run"
    px.run("digits", ["gradcam", "ablation_path"], out=out, n_images=3, steps=5, batch_size=8, progress=False,
           method_params={"ablation_path": {"n_steps": 6, "mask_size": 14}})
    from typer.testing import CliRunner

    from pathxai.cli import app

    result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    index = out / "report" / "index.html"
    artefacts = Path(os.environ.get("PATHXAI_ARTIFACTS", tmp_path))
    artefacts.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium, headless=True, viewport={"width": 1200, "height": 900},
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            page.goto(index.as_uri())
            page.wait_for_load_state("load")
            # the methods x metrics table: 2 methods; sorting by a metric column reorders rows both ways
            assert page.locator("#summary tbody tr").count() == 2
            col = page.locator("#summary th", has_text="deletion")
            col.click()
            first = page.locator("#summary tbody tr td:first-child").all_inner_texts()
            col.click()
            second = page.locator("#summary tbody tr td:first-child").all_inner_texts()
            assert first == second[::-1] and first != second
            assert page.locator("#summary th[data-order=desc]").count() == 1
            # every image (heatmaps, curves, path frames) is loaded and has pixels
            sizes = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
            assert len(sizes) >= 1 + 3 * 3 + 3 and all(c and w > 0 for c, w in sizes), sizes
            # the path slider walks along the path: the frame and its label change
            slider = page.locator("input.path-slider").first
            frame = page.locator("img.path-frame").first
            before = frame.get_attribute("src"), page.locator(".path-label").first.inner_text()
            slider.fill("3")
            after = frame.get_attribute("src"), page.locator(".path-label").first.inner_text()
            assert after[0] != before[0] and after[0].endswith("path003.png") and "step 4/6" in after[1]
            page.wait_for_function("document.querySelector('img.path-frame').complete")
            assert page.eval_on_selector("img.path-frame", "e => e.naturalWidth") > 0
            page.screenshot(path=str(artefacts / "run-report.png"), full_page=True)
        finally:
            browser.close()
    assert (artefacts / "run-report.png").stat().st_size > 10_000


def test_report_path_frames_follow_the_ablation_path_convention() -> None:
    """phi = 0 keeps the image, phi = 1 shows the baseline (pathxai.methods.ablation_path)."""
    from pathxai.runs.report import _path_frames

    image = np.full((4, 4, 3), 200, dtype=np.uint8)
    baseline = np.full((1, 3, 4, 4), 0.2, dtype=np.float32)
    path = np.stack([np.zeros((2, 2)), np.full((2, 2), 0.5), np.ones((2, 2))]).astype(np.float32)
    frames = _path_frames(image, path, baseline)
    assert [int(f[0, 0, 0]) for f in frames] == [200, 126, 51]
