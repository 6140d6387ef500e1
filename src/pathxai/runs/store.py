"""The run store: one deterministic ``.npz`` file per finished (item, method) plus an SQLite index.

Layout of a run directory::

    RUN_DIR/
      run.json            the run's configuration (data, model, methods, metrics, seed, batch size, ...)
      index.sqlite        tables ``items`` (every planned item), ``results`` (one row per finished pair) and
                          ``run_config`` (a copy of run.json, restored from when run.json is lost or unreadable)
      results/<item_key>/<method>.npz    arrays of one finished (item, method) + its own record (``record_json``)
      report/             written by ``pathxai report``

Commit protocol (what makes a killed run resumable with nothing lost and nothing duplicated):

1. the arrays and the result's *record* (item id, method, status, scores, meta without wall-clock fields, and the
   digest of the result-changing settings; a UTF-8 JSON ``uint8`` array under the key ``record_json``) are
   serialised to a temporary file in the item's folder, flushed and fsynced;
2. the temporary file is renamed over ``<method>.npz`` (atomic on POSIX) and the folder is fsynced;
3. one SQLite transaction inserts-or-replaces the ``results`` row (status, scores, timing, the file's SHA-256 and
   size).

Files are written byte-for-byte deterministically (fixed zip timestamps, sorted keys, no timing in the record), so
the same result always gives the same bytes and the same hash.

Verification (the index is a cache of the files, never trusted on its own). A ``done`` row is *verified* when

* its ``file`` is exactly ``results/<item_key(item_id)>/<method>.npz`` and that path, resolved, lies inside
  ``RUN_DIR/results`` (a row pointing at another item's file or outside the run is invalid);
* the file is a regular file of the recorded size and SHA-256;
* the embedded record names the same item, method and status, carries the same scores as the row, was computed
  with the run's settings (digest of :data:`SETTINGS_KEYS`), and every score is finite and in its metric's range
  (insertion and deletion: softmax-curve areas in [0, 1]; pointing: 0 or 1).

:meth:`RunStore.finished` (resume) counts only verified pairs, so a missing, truncated, replaced or mismatched result
is recomputed; :meth:`RunStore.rows` with ``verify=True`` (``load_run``) reports an unverified row with status
``corrupt`` and the reason; :meth:`RunStore.load_arrays` verifies before returning arrays. Runs written before the
record existed (rows without a size) are verified by path, hash and score range only.

Recovery. A pair is *finished* exactly when its row exists, is ``done`` and verifies. A crash before step 3 leaves
at most a temporary file (deleted when the store is opened for writing) or an un-indexed ``.npz``; on resume such a
file is *adopted* (indexed from its own record) when it is intact and was computed with the run's settings, and
recomputed otherwise. A crash during step 3 is rolled back by SQLite's journal. The primary key ``(item_id,
method)`` makes a duplicate row impossible. An index SQLite cannot read (truncated, overwritten, "database disk
image is malformed") is moved aside as ``index.sqlite.corrupt-<timestamp>`` (with its ``-wal``/``-shm`` files) and
rebuilt from the result files by the same adoption; the planned items are re-planned from the data on resume and
the configuration is in ``run.json``. Timing (``seconds``) of adopted results is unknown (``None``): it is
wall-clock, so it is kept out of the deterministic files.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import sqlite3
import stat
import time
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from ..core.files import atomic_write_bytes

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    source TEXT,
    label INTEGER,
    info TEXT
);
CREATE TABLE IF NOT EXISTS results (
    item_id TEXT NOT NULL,
    method TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    file TEXT,
    sha256 TEXT,
    scores TEXT,
    seconds REAL,
    store_seconds REAL,
    error TEXT,
    meta TEXT,
    finished_at REAL,
    size INTEGER,
    PRIMARY KEY (item_id, method)
);
CREATE TABLE IF NOT EXISTS run_config (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_FIXED_DATE = (1980, 1, 1, 0, 0, 0)
RECORD_KEY = "record_json"          # the array (UTF-8 JSON bytes) holding a result's own record
RECORD_FORMAT = 1
# configuration keys a stored result depends on (``convert_modes`` only changes items that failed without it)
SETTINGS_KEYS = ("data", "model", "methods", "method_params", "metrics", "steps", "seed", "batch_size",
                 "threads_per_worker", "weights")
# settings that runs written before they existed do not have (absent = None)
OPTIONAL_SETTINGS = ("weights",)
SCORE_RANGES: dict[str, tuple[float, float]] = {"insertion": (0.0, 1.0), "deletion": (0.0, 1.0),
                                                "pointing": (0.0, 1.0)}
_SCORE_SLACK = 1e-6                 # float32 softmax sums may exceed 1 by an ulp or two
_METHOD_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}$")


class RunLockedError(RuntimeError):
    """Another process holds the run's lock (``RUN_DIR/.lock``): it is writing the run right now."""


class CorruptResultError(KeyError):
    """A stored result failed verification (missing, truncated, hash or record mismatch, outside the run)."""

    def __str__(self) -> str:   # KeyError would print the message with quotes
        return str(self.args[0]) if self.args else ""


def item_key(item_id: str) -> str:
    """A file-system-safe folder name for an item id (readable prefix + short hash, so ids never collide)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", item_id)[:60].strip("._") or "item"
    return f"{safe}-{hashlib.sha1(item_id.encode()).hexdigest()[:8]}"


def result_relpath(item_id: str, method: str) -> str:
    """The only place the result of (item, method) may live, relative to the run folder.

    Raises:
        ValueError: ``method`` is not a plain name (letters, digits, ``_ . + -``; no path separators).
    """
    if not isinstance(method, str) or not _METHOD_NAME.match(method):
        raise ValueError(f"method must be a plain name (letters, digits, '_', '.', '+', '-'), got {method!r}")
    return f"results/{item_key(item_id)}/{method}.npz"


def settings_digest(config: dict[str, Any]) -> str:
    """SHA-256 of the result-changing settings of a run configuration (:data:`SETTINGS_KEYS`; an optional key
    such as ``weights`` counts only when set, so runs written before it existed keep their digest)."""
    settings = {k: config.get(k) for k in SETTINGS_KEYS if k not in OPTIONAL_SETTINGS or config.get(k) is not None}
    blob = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Serialise ``arrays`` to ``.npz`` bytes that depend only on the arrays (readable by ``np.load``)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_FIXED_DATE)
            info.external_attr = 0o644 << 16
            body = io.BytesIO()
            np.lib.format.write_array(body, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            zf.writestr(info, body.getvalue())
    return buf.getvalue()


def _is_wall_clock(key: str) -> bool:
    return key.endswith(("seconds", "_time_s")) or key in ("finished_at", "wall_time")


def stable_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` without wall-clock fields (``*seconds``, ``*_time_s``; also inside ``extras``), JSON-normalised."""
    out = {k: v for k, v in meta.items() if not _is_wall_clock(k)}
    if isinstance(out.get("extras"), dict):
        out["extras"] = {k: v for k, v in out["extras"].items() if not _is_wall_clock(k)}
    return json.loads(json.dumps(out, sort_keys=True, default=str))


def score_problem(scores: Any) -> str | None:
    """Why ``scores`` cannot be a real result (non-finite or out of its metric's range), or None if it can."""
    if not isinstance(scores, dict):
        return f"scores must be a mapping, got {type(scores).__name__}"
    for name, v in scores.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return f"score {name} = {v!r} is not a finite number"
        lo, hi = SCORE_RANGES.get(name, (-math.inf, math.inf))
        if not lo - _SCORE_SLACK <= v <= hi + _SCORE_SLACK:
            return f"score {name} = {v!r} is outside [{lo:g}, {hi:g}]"
        if name == "pointing" and v not in (0.0, 1.0):
            return f"score pointing = {v!r} is neither 0 nor 1"
    return None


def read_record(data: bytes | Path) -> dict[str, Any] | None:
    """The record embedded in a result file (its bytes, or its path: then only the zip directory and the record
    are read), None for files written before records existed.

    Raises:
        ValueError: not a readable ``.npz``, or the record is not a JSON object.
    """
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with zipfile.ZipFile(source) as zf:
            if f"{RECORD_KEY}.npy" not in zf.namelist():
                return None
            with zf.open(f"{RECORD_KEY}.npy") as f:
                raw = np.lib.format.read_array(f, allow_pickle=False)
        record = json.loads(raw.tobytes().decode("utf-8"))
    except (zipfile.BadZipFile, ValueError, EOFError, KeyError) as err:
        raise ValueError(f"not a readable result file ({type(err).__name__}: {err})") from None
    if not isinstance(record, dict):
        raise ValueError("the embedded record is not a JSON object")
    return record


@dataclass
class ResultRecord:
    """One (item, method) outcome as produced by a worker and committed by the driver.

    Attributes:
        arrays: attribution, saliency, tensor extras (``extras_<key>``) and metric curves (``curve_<metric>``).
        scores: ``{metric: float}``. seconds: wall time of the explanation plus metrics.
        error: the reason when ``status == 'failed'``.
    """

    item_id: str
    method: str
    status: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Verified:
    """The outcome of verifying one stored result: ``reason`` is None when it may be served."""

    reason: str | None
    record: dict[str, Any] | None = None
    data: bytes | None = None


class RunStore:
    """Open (or create) the store of a run directory.

    With ``create`` (the writer) the store holds an exclusive lock on ``RUN_DIR/.lock``: one writing process per
    run at a time (a second one gets a :class:`RunLockedError`); readers (``create=False``) take no lock, except
    for a moment to rebuild an unreadable index when no writer holds the run.

    Attributes:
        settings_digest: the digest every verified result's record must carry (set from ``run.json`` on open;
            None skips that check).
        rebuilt_from: where an unreadable index was moved before it was rebuilt (None if it was not).
        invalid: ``{(item_id, method): reason}`` of the rows the last :meth:`finished` call rejected.
    """

    def __init__(self, run_dir: str | Path, *, create: bool = True) -> None:
        self.root = Path(run_dir)
        if not create and not (self.root / "index.sqlite").exists():
            raise FileNotFoundError(f"{self.root} is not a pathxai run directory (no index.sqlite)")
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock: Any = None
        self.writable = create
        if create:
            self._lock = _exclusive_lock(self.root / ".lock")
            (self.root / "results").mkdir(exist_ok=True)
            self.clean_temporaries()
        self.rebuilt_from: Path | None = None
        self.rebuild_reason: str | None = None
        self.invalid: dict[tuple[str, str], str] = {}
        self.crash_after: int | None = None   # test hook, see _maybe_crash
        self._commits = 0
        self.db, rebuild_lock = self._open_index()
        try:
            self.settings_digest: str | None = None
            config = self.read_config()
            if config is not None:
                self.settings_digest = settings_digest(config)
            if self.rebuilt_from is not None:
                self.adopt_files()
        finally:
            if rebuild_lock is not None:   # a reader that rebuilt the index: back to reading, lock released
                rebuild_lock.close()
                self.writable = False

    # -- configuration ------------------------------------------------------------------------------------------
    def read_config(self) -> dict[str, Any] | None:
        """The run configuration from ``run.json``, or from the index's copy when run.json is missing or unreadable
        (a writer then restores run.json and keeps an unreadable one as ``run.json.corrupt-<timestamp>``)."""
        path = self.root / "run.json"
        config = None
        unreadable = False
        if path.exists():
            try:
                config = json.loads(path.read_text())
                unreadable = not isinstance(config, dict)
            except (ValueError, UnicodeDecodeError):
                unreadable = True
            if unreadable:
                config = None
        if config is not None:
            return config
        row = self.db.execute("SELECT value FROM run_config WHERE key = 'config'").fetchone()
        backup = json.loads(row[0]) if row else None
        if self.writable and (backup is not None or unreadable):
            if unreadable:
                os.replace(path, _aside_name(path))
            if backup is not None:
                _atomic_write(path, json.dumps(backup, indent=1, sort_keys=True).encode())
        return backup

    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``run.json`` (atomically) and its copy in the index."""
        blob = json.dumps(config, indent=1, sort_keys=True)
        _atomic_write(self.root / "run.json", blob.encode())
        with self._tx() as cur:
            cur.execute("INSERT OR REPLACE INTO run_config VALUES ('config', ?)", (blob,))
        self.settings_digest = settings_digest(json.loads(blob))

    def clean_temporaries(self) -> int:
        """Delete temporary files left by a killed writer; returns how many were removed.

        Both names are recognised: ``<name>.tmp-<pid>`` (older writers, the crash test hook) and
        ``.<name>.<random>.tmp`` (:func:`pathxai.core.files.atomic_path`).
        """
        n = 0
        for pattern in ("results/*/*.tmp-*", "results/*/.*.tmp", "*.tmp-*", ".*.tmp"):
            for tmp in self.root.glob(pattern):
                if tmp.is_file():
                    tmp.unlink(missing_ok=True)
                    n += 1
        return n

    # -- items --------------------------------------------------------------------------------------------------
    def add_items(self, rows: Iterable[tuple[str, int, str | None, int | None, dict[str, Any]]]) -> None:
        """Record the planned items ``(item_id, position, source, label, info)`` (existing ids are kept)."""
        with self._tx() as cur:
            cur.executemany("INSERT OR IGNORE INTO items VALUES (?, ?, ?, ?, ?)",
                            [(i, p, s, lab, json.dumps(info, sort_keys=True)) for i, p, s, lab, info in rows])

    def items(self) -> list[dict[str, Any]]:
        """The planned items in order: ``item_id, position, source, label, info``."""
        rows = self.db.execute("SELECT item_id, position, source, label, info FROM items ORDER BY position")
        return [{"item_id": i, "position": p, "source": s, "label": lab, "info": json.loads(info or "{}")}
                for i, p, s, lab, info in rows]

    # -- results ------------------------------------------------------------------------------------------------
    def finished(self) -> set[tuple[str, str]]:
        """(item_id, method) pairs whose result is committed as done *and verifies* (see the module doc).

        Rejected rows are listed in :attr:`invalid` with the reason; the writer also adopts intact un-indexed
        result files (a crash between rename and index row, or a rebuilt index).
        """
        done: set[tuple[str, str]] = set()
        self.invalid = {}
        for item, method, file, sha, size, scores in self.db.execute(
                "SELECT item_id, method, file, sha256, size, scores FROM results WHERE status = 'done'"
        ).fetchall():
            v = self.verify(item, method, file, sha, size, scores)
            if v.reason is None:
                done.add((item, method))
            else:
                self.invalid[(item, method)] = v.reason
        if self.writable:
            done |= self.adopt_files()
        return done

    def verify(self, item_id: str, method: str, file: str | None, sha: str | None, size: int | None,
               scores: str | None, *, hashes: bool = True) -> Verified:
        """Check one ``done`` row against its file (see the module doc); ``hashes=False`` skips reading the whole
        file (path, size and the embedded record are still checked)."""
        try:
            rel = result_relpath(item_id, method)
        except ValueError as err:
            return Verified(str(err))
        if file != rel:
            return Verified(f"the index points at {file!r}, not at this result's file {rel}")
        path = self.root / rel
        results = (self.root / "results").resolve()
        if not path.resolve().is_relative_to(results):
            return Verified(f"{rel} resolves outside {results}")
        try:
            st = path.stat()
        except OSError:
            return Verified(f"result file {rel} is missing")
        if not stat.S_ISREG(st.st_mode):
            return Verified(f"{rel} is not a regular file")
        if size is not None and st.st_size != size:
            return Verified(f"{rel} has {st.st_size} bytes, the index says {size} (truncated or replaced)")
        data = None
        try:
            if hashes:
                data = path.read_bytes()
                if sha is None or hashlib.sha256(data).hexdigest() != sha:
                    return Verified(f"{rel} does not match its SHA-256 in the index (changed or damaged)")
                record = read_record(data)
            else:
                record = read_record(path)
        except (OSError, ValueError) as err:
            return Verified(f"{rel}: {err}")
        row_scores = _json_or_none(scores)
        if record is None:
            if size is not None:   # a file written with a record but the record is gone: not ours
                return Verified(f"{rel} carries no result record")
            problem = score_problem(row_scores)
            return Verified(problem and f"{rel}: {problem}", None, data)
        problem = self._record_problem(record, item_id, method)
        if problem is None and score_problem(row_scores) is not None:
            problem = f"impossible score in the index: {score_problem(row_scores)}"
        elif problem is None and _canon(record.get("scores")) != _canon(row_scores):
            problem = "the scores in the index differ from the scores stored with the result"
        return Verified(problem and f"{rel}: {problem}", record, data)

    def adopt_files(self) -> set[tuple[str, str]]:
        """Index intact result files that have no index row (writer only); returns the adopted pairs.

        A file is adopted when it is where its own record says it belongs, every zip member passes its CRC, and
        the record is a done result with sane scores computed with :attr:`settings_digest`.
        """
        if not self.writable:
            return set()
        have = {(i, m) for i, m in self.db.execute("SELECT item_id, method FROM results")}
        indexed = set()
        for i, m in have:
            try:
                indexed.add(result_relpath(i, m))
            except ValueError:
                pass
        results = (self.root / "results").resolve()
        adopted: list[tuple[Any, ...]] = []
        for path in sorted((self.root / "results").glob("*/*.npz")):
            if str(path.relative_to(self.root)) in indexed:   # its pair has a row: verified there, not re-read
                continue
            try:
                if not path.resolve().is_relative_to(results) or not path.is_file():
                    continue
                data = path.read_bytes()
                record = read_record(data)
                if record is None:
                    continue
                with zipfile.ZipFile(io.BytesIO(data)) as zf:
                    if zf.testzip() is not None:
                        continue
                item, method = record.get("item_id"), record.get("method")
                if not isinstance(item, str) or (item, method) in have:
                    continue
                if str(path.relative_to(self.root)) != result_relpath(item, method):
                    continue
                if self._record_problem(record, item, method) is not None:
                    continue
                mtime = path.stat().st_mtime
            except (OSError, ValueError, zipfile.BadZipFile):
                continue
            have.add((item, method))
            adopted.append((item, method, "done", result_relpath(item, method), hashlib.sha256(data).hexdigest(),
                            json.dumps(record["scores"], sort_keys=True), None, None, None,
                            json.dumps(record.get("meta", {}), sort_keys=True), mtime, len(data)))
        if adopted:
            with self._tx() as cur:
                cur.executemany(f"INSERT INTO results ({_COLUMNS}) VALUES ({', '.join('?' * 12)})", adopted)
        return {(a[0], a[1]) for a in adopted}

    def commit(self, record: ResultRecord) -> float:
        """Write ``record`` with the commit protocol of the module doc; returns the seconds spent storing."""
        t0 = time.perf_counter()
        rel = sha = size = None
        if record.status not in ("done", "failed"):
            raise ValueError(f"record.status must be 'done' or 'failed', got {record.status!r}")
        if record.status == "done" and score_problem(record.scores) is not None:
            # a result that could never verify would be recomputed on every resume: record why it is unusable
            record = replace(record, status="failed", arrays={},
                             error=f"impossible result, not stored: {score_problem(record.scores)}")
        if record.status == "done":
            rel = result_relpath(record.item_id, record.method)
            if RECORD_KEY in record.arrays:
                raise ValueError(f"record.arrays must not use the reserved key {RECORD_KEY!r}")
            embedded = {"format": RECORD_FORMAT, "item_id": record.item_id, "method": record.method,
                        "status": "done", "scores": json.loads(json.dumps(record.scores, sort_keys=True)),
                        "meta": stable_meta(record.meta), "settings": self.settings_digest}
            blob = json.dumps(embedded, sort_keys=True).encode("utf-8")
            data = npz_bytes({**record.arrays, RECORD_KEY: np.frombuffer(blob, dtype=np.uint8)})
            sha, size = hashlib.sha256(data).hexdigest(), len(data)
            path = self.root / rel
            path.parent.mkdir(exist_ok=True)
            self._maybe_crash(path, data)
            _atomic_write(path, data)
        seconds = time.perf_counter() - t0
        with self._tx() as cur:
            cur.execute(f"INSERT OR REPLACE INTO results ({_COLUMNS}) VALUES ({', '.join('?' * 12)})",
                        (record.item_id, record.method, record.status, rel, sha,
                         json.dumps(record.scores, sort_keys=True), record.seconds, seconds, record.error,
                         json.dumps(record.meta, sort_keys=True, default=str), time.time(), size))
        self._commits += 1
        return time.perf_counter() - t0

    def rows(self, *, verify: bool = False, hashes: bool = True) -> list[dict[str, Any]]:
        """Every result row joined with its item, in item order then method name.

        With ``verify`` every ``done`` row is checked (see :meth:`verify`; ``hashes`` as there): a row that does not
        verify gets status ``corrupt``, the reason in ``error`` and no scores.
        """
        q = ("SELECT r.item_id, r.method, r.status, r.file, r.sha256, r.scores, r.seconds, r.store_seconds, "
             "r.error, r.meta, i.position, i.source, i.label, r.size FROM results r LEFT JOIN items i "
             "USING (item_id) ORDER BY i.position, r.item_id, r.method")
        out = []
        for (item, method, status, file, sha, scores, seconds, store_s, error, meta, pos, source,
             label, size) in self.db.execute(q).fetchall():
            row = {"item": item, "method": method, "status": status, "file": file, "sha256": sha,
                   "scores": _json_or_none(scores) or {}, "seconds": seconds, "store_seconds": store_s,
                   "error": error, "meta": _json_or_none(meta) or {}, "position": pos, "source": source,
                   "label": label, "size": size}
            if verify and status == "done":
                v = self.verify(item, method, file, sha, size, scores, hashes=hashes)
                if v.reason is not None:
                    row.update(status="corrupt", error=f"not served: {v.reason}", scores={})
            out.append(row)
        return out

    def load_arrays(self, item_id: str, method: str) -> dict[str, np.ndarray]:
        """The arrays of a finished (item, method), read from its ``.npz`` after verifying it.

        Raises:
            KeyError: no result, or the pair failed. CorruptResultError (a KeyError): the result does not verify.
        """
        row = self.db.execute("SELECT file, status, error, sha256, size, scores FROM results "
                              "WHERE item_id = ? AND method = ?", (item_id, method)).fetchone()
        if row is None:
            raise KeyError(f"no result for item {item_id!r} and method {method!r} in {self.root}")
        file, status, error, sha, size, scores = row
        if status != "done":
            raise KeyError(f"item {item_id!r} with method {method!r} failed: {error}")
        v = self.verify(item_id, method, file, sha, size, scores)
        if v.reason is not None:
            raise CorruptResultError(f"result of item {item_id!r} with method {method!r} in {self.root} is not "
                                     f"served: {v.reason}; resume the run to recompute it")
        assert v.data is not None
        with np.load(io.BytesIO(v.data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files if k != RECORD_KEY}

    def close(self) -> None:
        """Close the index and release the lock."""
        self.db.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------------------------
    def _record_problem(self, record: dict[str, Any], item_id: str, method: str) -> str | None:
        if record.get("item_id") != item_id or record.get("method") != method:
            return (f"the file holds the result of item {record.get('item_id')!r} with method "
                    f"{record.get('method')!r}")
        if record.get("status") != "done":
            return f"the stored record has status {record.get('status')!r}"
        if self.settings_digest is not None and record.get("settings") != self.settings_digest:
            return "the result was computed with other settings than this run's"
        return score_problem(record.get("scores"))

    def _open_index(self) -> tuple[sqlite3.Connection, Any]:
        """Connect to the index and check it; an unreadable one is set aside and a fresh one created, to be filled
        from the result files (see the module doc). Returns the connection and, for a reader that had to rebuild,
        the lock it took meanwhile (the caller releases it)."""
        path = self.root / "index.sqlite"
        try:
            return _connect(path, self.writable), None
        except sqlite3.DatabaseError as err:
            reason = str(err)
        lock = None
        if self._lock is None:   # a reader may rebuild only while no writer holds the run
            try:
                lock = _exclusive_lock(self.root / ".lock")
            except RunLockedError:
                raise RunLockedError(f"the index of the run in {self.root} is unreadable ({reason}) and another "
                                     "process is writing the run; wait for it to finish") from None
        try:
            stamp = time.strftime("%Y%m%dT%H%M%S")
            aside = _aside_name(path, stamp)
            for suffix in ("-wal", "-shm", ""):
                part = path.with_name(path.name + suffix)
                if part.exists():
                    os.replace(part, aside.with_name(aside.name.replace(path.name, path.name + suffix, 1)))
            self.rebuilt_from = aside
            self.rebuild_reason = reason
            self.writable = True          # the rebuild writes rows (a reader holds the lock meanwhile)
            (self.root / "results").mkdir(exist_ok=True)
            return _connect(path, True), lock
        except BaseException:
            if lock is not None:
                lock.close()
            raise

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Cursor:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db.cursor()

        def __exit__(self, exc_type: Any, *rest: Any) -> None:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")

    def _tx(self) -> "RunStore._Tx":
        return RunStore._Tx(self.db)

    def _maybe_crash(self, path: Path, data: bytes) -> None:
        """Test hook: with ``crash_after = k`` (env ``PATHXAI_RUNS_CRASH_AFTER``), the writer of the (k+1)-th commit
        writes half of its temporary file and kills its own process with SIGKILL -- a crash mid-write."""
        if self.crash_after is None or self._commits < self.crash_after:
            return
        import signal

        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)


_COLUMNS = ("item_id, method, status, file, sha256, scores, seconds, store_seconds, error, meta, finished_at, "
            "size")


def _connect(path: Path, writable: bool) -> sqlite3.Connection:
    """Open the index, create missing tables and columns, and make SQLite read every page once (quick_check), so
    a damaged file fails here rather than in the middle of a run."""
    # check_same_thread=False: a RunTable shares its reader between threads, serialised by its own lock
    db = sqlite3.connect(str(path), timeout=60, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        check = db.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            raise sqlite3.DatabaseError(f"quick_check: {'; '.join(str(r[0]) for r in check[:3])}")
        if writable:
            db.executescript(SCHEMA)
            columns = {r[1] for r in db.execute("PRAGMA table_info(results)")}
            if "size" not in columns:   # indexes written before sizes were recorded
                db.execute("ALTER TABLE results ADD COLUMN size INTEGER")
        else:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {"items", "results"} <= tables:
                raise sqlite3.DatabaseError("the index has no items/results tables")
            columns = {r[1] for r in db.execute("PRAGMA table_info(results)")}
            if "size" not in columns:   # an old index opened read-only: expose the column as NULL
                db.execute("CREATE TEMP VIEW results AS SELECT *, NULL AS size FROM main.results")
            if "run_config" not in tables:
                db.execute("CREATE TEMP TABLE run_config (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    except BaseException:
        db.close()
        raise
    return db


def _aside_name(path: Path, stamp: str | None = None) -> Path:
    """``<path>.corrupt-<timestamp>`` (a counter is appended if that name is taken): evidence is kept, not deleted."""
    base = path.with_name(f"{path.name}.corrupt-{stamp or time.strftime('%Y%m%dT%H%M%S')}")
    cand, n = base, 1
    while cand.exists():
        cand = base.with_name(f"{base.name}.{n}")
        n += 1
    return cand


def _json_or_none(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _exclusive_lock(path: Path) -> Any:
    """Hold an exclusive ``flock`` on ``path`` (released when the file is closed or the process dies)."""
    import fcntl

    f = open(path, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise RunLockedError(f"another process is writing the run in {path.parent} (it holds {path}); wait for it "
                             "to finish or stop it, or use another --out") from None
    return f


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, the rename fsynced too (the store's durability rests on it)."""
    atomic_write_bytes(path, data, fsync_dir=True)


def iter_chunks(seq: list[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive chunks of ``seq`` of at most ``size`` (>= 1) elements."""
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"chunk size must be an integer >= 1, got {size!r}")
    for s in range(0, len(seq), size):
        yield seq[s:s + size]
