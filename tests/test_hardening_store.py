"""Hardening of the batch-run store: it verifies what it serves, rebuilds a damaged index, validates its inputs,
leaves no orphan workers and never deletes files it did not write."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import pathxai as px
from pathxai.runs import CorruptResultError, RunLockedError, RunStore
from pathxai.runs.report import write_report
from pathxai.runs.store import ResultRecord

METHODS = ["saliency", "ig"]
KW = {"n_images": 4, "steps": 4, "batch_size": 8, "shard_size": 2, "method_params": {"ig": {"n_steps": 4}},
      "progress": False}


def _run(out: Path, **extra: object) -> tuple[px.runs.RunTable, dict]:
    table = px.run("digits", METHODS, out=out, **{**KW, **extra})
    return table, json.loads((out / "summary.json").read_text())


def _files(run_dir: Path) -> dict[tuple[str, str], bytes]:
    """(item, method) -> bytes of the stored file, for every result the index lists as done."""
    with sqlite3.connect(run_dir / "index.sqlite") as db:
        rows = db.execute("SELECT item_id, method, file FROM results WHERE status = 'done'").fetchall()
    return {(i, m): (run_dir / f).read_bytes() for i, m, f in rows}


def _set(run_dir: Path, item: str, method: str, **cols: object) -> None:
    with sqlite3.connect(run_dir / "index.sqlite") as db:
        sets = ", ".join(f"{k} = ?" for k in cols)
        db.execute(f"UPDATE results SET {sets} WHERE item_id = ? AND method = ?", (*cols.values(), item, method))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hardening") / "base"
    table, _ = _run(out)
    assert len(table) == 8 and not table.failed
    return out


@pytest.fixture()
def run_copy(base: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(base, out)
    return out


def _row_path(run_dir: Path, item: str, method: str) -> Path:
    with sqlite3.connect(run_dir / "index.sqlite") as db:
        (file,) = db.execute("SELECT file FROM results WHERE item_id = ? AND method = ?", (item, method)).fetchone()
    return run_dir / file


def test_truncated_and_deleted_results_are_not_served_and_are_recomputed(base: Path, run_copy: Path) -> None:
    rows = px.load_run(base).rows
    (a, ma), (b, mb) = (rows[0]["item"], rows[0]["method"]), (rows[3]["item"], rows[3]["method"])
    path_a = _row_path(run_copy, a, ma)
    path_a.write_bytes(path_a.read_bytes()[:100])
    _row_path(run_copy, b, mb).unlink()

    status = {(r["item"], r["method"]): r for r in px.load_run(run_copy)}
    assert status[(a, ma)]["status"] == "corrupt" and "truncated" in status[(a, ma)]["error"]
    assert status[(b, mb)]["status"] == "corrupt" and "missing" in status[(b, mb)]["error"]
    assert status[(a, ma)]["insertion"] is None                 # no score of an unverified result
    with pytest.raises(CorruptResultError, match="resume the run"):
        px.load_run(run_copy).arrays(a, ma)
    index = write_report(run_copy)                              # the report lists them, it does not crash
    assert index.read_text().count('<tr class="corrupt">') == 2

    _, summary = _run(run_copy)                                 # resume: exactly those two are recomputed
    assert summary["results_computed_last_session"] == 2 and summary["n_done"] == 8
    assert {(r["item"], r["method"]) for r in summary["rejected_on_resume"]} == {(a, ma), (b, mb)}
    assert _files(run_copy) == _files(base)                     # byte for byte what the first run stored


def test_rows_pointing_at_other_files_are_not_served(base: Path, run_copy: Path, tmp_path: Path) -> None:
    rows = px.load_run(base).rows
    (a, ma), (b, mb) = (rows[0]["item"], rows[0]["method"]), (rows[2]["item"], rows[2]["method"])
    # a's row points at b's (intact) file, hash included: a consistent-looking lie
    other = _row_path(run_copy, b, mb)
    data = other.read_bytes()
    _set(run_copy, a, ma, file=str(other.relative_to(run_copy)), sha256=hashlib.sha256(data).hexdigest())
    # b's row points outside the run folder, at a valid copy of its own file
    outside = tmp_path / "outside.npz"
    outside.write_bytes(data)
    _set(run_copy, b, mb, file="../../outside.npz")
    status = {(r["item"], r["method"]): r for r in px.load_run(run_copy)}
    assert status[(a, ma)]["status"] == "corrupt" and "not at this result's file" in status[(a, ma)]["error"]
    assert status[(b, mb)]["status"] == "corrupt"
    for item, method in ((a, ma), (b, mb)):
        with pytest.raises(CorruptResultError):
            px.load_run(run_copy).arrays(item, method)
    _, summary = _run(run_copy)
    assert summary["results_computed_last_session"] == 2
    assert _files(run_copy) == _files(base)


def test_impossible_or_edited_scores_are_not_served(base: Path, run_copy: Path) -> None:
    rows = px.load_run(base).rows
    pairs = [(r["item"], r["method"]) for r in rows[:4]]
    edits = [{"insertion": 7.5}, {"insertion": float("nan")}, {"pointing": 0.5}, {"insertion": 0.123456}]
    for (item, method), edit in zip(pairs, edits, strict=True):
        old = next(r for r in rows if (r["item"], r["method"]) == (item, method))
        scores = {k: old[k] for k in ("insertion", "deletion", "pointing")}
        _set(run_copy, item, method, scores=json.dumps({**scores, **edit}))
    table = px.load_run(run_copy)
    status = {(r["item"], r["method"]): r for r in table}
    assert [status[p]["status"] for p in pairs] == ["corrupt"] * 4
    assert "outside [0, 1]" in status[pairs[0]]["error"] and "scores in the index differ" in status[pairs[3]]["error"]
    assert all(row["n"] == 2 for row in table.summary())       # 2 of 4 items per method verify: means over those
    _, summary = _run(run_copy)
    assert summary["results_computed_last_session"] == 4
    assert [(r["item"], r["method"], r["insertion"]) for r in px.load_run(run_copy)] == \
        [(r["item"], r["method"], r["insertion"]) for r in rows]


@pytest.mark.parametrize("damage", ["truncate", "overwrite"])
def test_damaged_index_is_kept_aside_and_rebuilt_from_the_files(base: Path, run_copy: Path, damage: str) -> None:
    index = run_copy / "index.sqlite"
    data = index.read_bytes()
    index.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\0garbage" * (len(data) // 8))
    _, summary = _run(run_copy)                                 # resume rebuilds: nothing is recomputed
    assert summary["results_computed_last_session"] == 0 and summary["n_done"] == 8
    kept = list(run_copy.glob("index.sqlite.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_bytes()[:64] == (data[:64] if damage == "truncate" else b"\0garbage" * 8)
    assert summary["index_rebuilt"]["corrupt_index_kept_as"] == str(kept[0])
    assert _files(run_copy) == _files(base)
    table = px.load_run(run_copy)
    assert [(r["item"], r["method"], r["label"], r["insertion"]) for r in table] == \
        [(r["item"], r["method"], r["label"], r["insertion"]) for r in px.load_run(base)]
    assert all(r["seconds"] is None for r in table)            # timing is not in the deterministic files


def test_a_reader_rebuilds_an_unreadable_index_too(base: Path, run_copy: Path) -> None:
    (run_copy / "index.sqlite").write_bytes(b"not a database" * 100)
    table = px.load_run(run_copy)
    assert sorted((r["item"], r["method"], r["status"]) for r in table) == \
        sorted((r["item"], r["method"], "done") for r in px.load_run(base))
    assert len(list(run_copy.glob("index.sqlite.corrupt-*"))) == 1


def test_result_files_carry_their_record_and_stay_deterministic(tmp_path: Path) -> None:
    arrays = {"saliency": np.arange(6, dtype=np.float32).reshape(1, 2, 3)}
    blobs = []
    for i, seconds in enumerate((0.1, 9.9)):
        with RunStore(tmp_path / f"r{i}") as store:
            store.commit(ResultRecord("x", "ig", "done", arrays, {"insertion": 0.5}, seconds, None,
                                      {"target": 3, "explain_seconds": seconds, "extras": {"path_time_s": seconds}}))
        blobs.append((tmp_path / f"r{i}" / "results").glob("*/ig.npz").__next__().read_bytes())
    assert blobs[0] == blobs[1]                                  # wall-clock fields are kept out of the file
    with np.load(tmp_path / "r0" / next((tmp_path / "r0" / "results").glob("*/ig.npz")).relative_to(
            tmp_path / "r0")) as z:
        record = json.loads(z["record_json"].tobytes())
    assert record["item_id"] == "x" and record["scores"] == {"insertion": 0.5} and record["meta"]["target"] == 3
    with RunStore(tmp_path / "r0", create=False) as store:
        assert set(store.load_arrays("x", "ig")) == {"saliency"}  # the record is not one of the served arrays
    with RunStore(tmp_path / "r2") as store:                     # a result that could never verify: failed
        store.commit(ResultRecord("x", "ig", "done", arrays, {"deletion": float("inf")}))
        assert store.rows()[0]["status"] == "failed" and "not a finite number" in store.rows()[0]["error"]


def test_both_temporary_file_names_are_cleaned(tmp_path: Path) -> None:
    with RunStore(tmp_path):
        pass
    folder = tmp_path / "results" / "x-00000000"
    folder.mkdir()
    old, new, root = folder / "ig.npz.tmp-123", folder / ".ig.npz.k2j3h4.tmp", tmp_path / ".run.json.abc.tmp"
    for p in (old, new, root):
        p.write_bytes(b"half")
    with RunStore(tmp_path):
        assert not old.exists() and not new.exists() and not root.exists()


def test_lost_run_json_is_restored_and_other_settings_still_refused(base: Path, run_copy: Path) -> None:
    (run_copy / "run.json").unlink()
    with pytest.raises(ValueError, match="different settings.*seed"):
        _run(run_copy, seed=1)
    assert json.loads((run_copy / "run.json").read_text())["seed"] == 0     # restored from the index's copy
    (run_copy / "run.json").write_text("{ half a fil")
    _, summary = _run(run_copy)
    assert summary["results_computed_last_session"] == 0
    assert len(list(run_copy.glob("run.json.corrupt-*"))) == 1


@pytest.mark.parametrize(("arg", "value", "err"), [
    ("shard_size", 0, ValueError), ("steps", 0, ValueError), ("workers", 0, ValueError),
    ("seed", -1, ValueError), ("seed", 2 ** 63, ValueError), ("threads_per_worker", 0, ValueError),
    ("n_images", 0, ValueError), ("shard_size", 1.5, TypeError), ("seed", True, TypeError)])
def test_run_arguments_are_validated(tmp_path: Path, arg: str, value: object, err: type) -> None:
    with pytest.raises(err, match=rf"{arg} must be an integer (>= |in \[)"):
        px.run("digits", ["saliency"], out=tmp_path / "run", **{**KW, arg: value})
    assert not (tmp_path / "run").exists()                       # refused before anything is written


def test_summary_counts_what_was_committed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pathxai.runs import engines

    real = engines.run_local

    def lossy(config, shards, workers):   # an engine that silently drops the second shard
        for i, records in enumerate(real(config, shards, workers)):
            if i != 1:
                yield records

    monkeypatch.setattr(engines, "run_local", lossy)
    with pytest.raises(RuntimeError, match="returned 4 of the 8 planned results"):
        _run(tmp_path / "run")
    monkeypatch.setattr(engines, "run_local", real)
    _, summary = _run(tmp_path / "run")                          # the rest is computed on resume
    assert summary["results_computed_last_session"] == 4 and summary["n_done"] == 8


def _digit_png(i: int, mode: str) -> object:
    from PIL import Image

    suite = px.data.load_suite("digits", n_images=4)
    return Image.fromarray((suite[i].image[0].numpy() * 255).round().astype(np.uint8), mode="L").convert(mode)


def test_convert_modes_can_be_switched_on_when_resuming(tmp_path: Path) -> None:
    data = tmp_path / "images"
    data.mkdir()
    _digit_png(0, "L").save(data / "good.png")
    _digit_png(1, "RGBA").save(data / "rgba.png")
    out = tmp_path / "run"
    kw = {"model": "digits-cnn", "metrics": ["insertion"], "steps": 4, "progress": False}
    table = px.run(data, ["saliency"], out=out, **kw)
    assert {r["item"]: r["status"] for r in table} == {"good.png": "done", "rgba.png": "failed"}
    assert "--convert-modes" in table.failed[0]["error"]
    table = px.run(data, ["saliency"], out=out, convert_modes=True, **kw)     # what the message suggests
    assert {r["item"]: r["status"] for r in table} == {"good.png": "done", "rgba.png": "done"}
    assert json.loads((out / "summary.json").read_text())["results_computed_last_session"] == 1
    assert json.loads((out / "run.json").read_text())["convert_modes"] is True
    with pytest.raises(ValueError, match=r"convert_modes=True.*resume it with convert_modes=True"):
        px.run(data, ["saliency"], out=out, **kw)


def test_trust_model_file_is_recorded_but_does_not_change_results(base: Path, run_copy: Path) -> None:
    from pathxai.runs.api import RESULT_KEYS

    assert "trust_model_file" not in RESULT_KEYS
    assert json.loads((base / "run.json").read_text())["trust_model_file"] is False
    _, summary = _run(run_copy, trust_model_file=True)
    assert summary["results_computed_last_session"] == 0
    assert json.loads((run_copy / "run.json").read_text())["trust_model_file"] is True
    with pytest.raises(TypeError, match="trust_model_file must be True or False"):
        _run(run_copy, trust_model_file="yes")


def test_held_lock_raises_a_named_error(tmp_path: Path) -> None:
    assert issubclass(RunLockedError, RuntimeError)
    with RunStore(tmp_path):
        with pytest.raises(RunLockedError, match=rf"another process is writing the run in {tmp_path}.*--out"):
            RunStore(tmp_path)


def test_report_never_deletes_files_it_did_not_write(base: Path, run_copy: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    (mine / "img").mkdir(parents=True)
    (mine / "img" / "holiday.png").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=r"mine.*force=True \(--force\)"):
        write_report(run_copy, mine)
    assert (mine / "img" / "holiday.png").read_bytes() == b"precious"
    write_report(run_copy, mine, force=True)                    # written into it, nothing of the user's deleted
    assert (mine / "img" / "holiday.png").read_bytes() == b"precious" and (mine / "index.html").exists()

    own = tmp_path / "own"
    write_report(run_copy, own, max_images=4)
    many = set((own / "img").glob("*.png"))
    (own / "img" / "notes.png").write_bytes(b"added by the user")
    write_report(run_copy, own, max_images=1)                   # its own folder: rewritten without force
    few = set((own / "img").glob("*.png"))
    assert few < many | {own / "img" / "notes.png"} and len(few) < len(many)
    assert (own / "img" / "notes.png").read_bytes() == b"added by the user"


def _children(pid: int) -> set[int]:
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")                               # a zombie has exited (waiting to be reaped)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the worker processes")
def test_workers_exit_when_the_driver_is_killed(tmp_path: Path) -> None:
    out = tmp_path / "run"
    script = textwrap.dedent(f"""
        import pathxai as px
        px.run("digits", ["rise"], out={str(out)!r}, n_images=60, steps=10, batch_size=16, workers=2,
               method_params={{"rise": {{"n_masks": 400}}}}, progress=False)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"},
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 60
        n = 0
        while time.time() < deadline and p.poll() is None and n < 1:   # workers up and computing
            try:
                with sqlite3.connect(out / "index.sqlite", timeout=1) as db:
                    n = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
            except sqlite3.Error:
                n = 0
            time.sleep(0.05)
        children = _children(p.pid)
        assert p.poll() is None and n >= 1, "the run ended (or never started) before it could be killed"
        assert len(children) >= 2, children                          # two workers (and the resource tracker)
        os.kill(p.pid, signal.SIGKILL)                                # the driver only
        p.wait()
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(c) for c in children):
            time.sleep(0.1)
        assert not [c for c in children if _alive(c)], "worker processes outlived their driver"
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)                          # whatever is left of this test's processes
        except ProcessLookupError:
            pass
        p.wait()
