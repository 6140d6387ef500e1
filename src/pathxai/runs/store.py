"""The run store: one deterministic ``.npz`` file per finished (item, method) plus an SQLite index.

Layout of a run directory::

    RUN_DIR/
      run.json            the run's configuration (data, model, methods, metrics, seed, batch size, ...)
      index.sqlite        tables ``items`` (every planned item) and ``results`` (one row per finished pair)
      results/<item_key>/<method>.npz    arrays of one finished (item, method)
      report/             written by ``pathxai report``

Commit protocol (what makes a killed run resumable with nothing lost and nothing duplicated):

1. the arrays are serialised to a temporary file ``<method>.npz.tmp-<pid>`` in the item's folder, flushed and
   fsynced;
2. the temporary file is renamed over ``<method>.npz`` (atomic on POSIX) and the folder is fsynced;
3. one SQLite transaction inserts-or-replaces the ``results`` row (status, scores, timing, the file's SHA-256).

A pair is *finished* exactly when its row exists with ``status = 'done'``. A crash before step 3 leaves at most a
temporary file (deleted when the store is opened again) or an un-indexed ``.npz`` that is recomputed and replaced on
resume; a crash during step 3 is rolled back by SQLite's journal. The primary key ``(item_id, method)`` makes a
duplicate row impossible. Files are written byte-for-byte deterministically (fixed zip timestamps, sorted keys), so
the same arrays always give the same bytes and the same hash.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sqlite3
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

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
    PRIMARY KEY (item_id, method)
);
"""

_FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def item_key(item_id: str) -> str:
    """A file-system-safe folder name for an item id (readable prefix + short hash, so ids never collide)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", item_id)[:60].strip("._") or "item"
    return f"{safe}-{hashlib.sha1(item_id.encode()).hexdigest()[:8]}"


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


class RunStore:
    """Open (or create) the store of a run directory.

    With ``create`` (the writer) the store holds an exclusive lock on ``RUN_DIR/.lock``: one writing process per
    run at a time (a second one gets a ``RuntimeError``); readers (``create=False``) take no lock.
    """

    def __init__(self, run_dir: str | Path, *, create: bool = True) -> None:
        self.root = Path(run_dir)
        if not create and not (self.root / "index.sqlite").exists():
            raise FileNotFoundError(f"{self.root} is not a pathxai run directory (no index.sqlite)")
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock: Any = None
        if create:
            self._lock = _exclusive_lock(self.root / ".lock")
        (self.root / "results").mkdir(exist_ok=True)
        self.db = sqlite3.connect(str(self.root / "index.sqlite"), timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self.crash_after: int | None = None   # test hook, see _maybe_crash
        self._commits = 0
        if create:
            self.clean_temporaries()

    # -- configuration ------------------------------------------------------------------------------------------
    def read_config(self) -> dict[str, Any] | None:
        path = self.root / "run.json"
        return json.loads(path.read_text()) if path.exists() else None

    def write_config(self, config: dict[str, Any]) -> None:
        _atomic_write(self.root / "run.json", json.dumps(config, indent=1, sort_keys=True).encode())

    def clean_temporaries(self) -> int:
        """Delete temporary files left by a killed writer; returns how many were removed."""
        n = 0
        for tmp in (self.root / "results").glob("*/*.tmp-*"):
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
        rows = self.db.execute("SELECT item_id, position, source, label, info FROM items ORDER BY position")
        return [{"item_id": i, "position": p, "source": s, "label": lab, "info": json.loads(info or "{}")}
                for i, p, s, lab, info in rows]

    # -- results ------------------------------------------------------------------------------------------------
    def finished(self) -> set[tuple[str, str]]:
        """(item_id, method) pairs whose result is committed as done."""
        return {(i, m) for i, m in self.db.execute("SELECT item_id, method FROM results WHERE status = 'done'")}

    def commit(self, record: ResultRecord) -> float:
        """Write ``record`` with the commit protocol of the module doc; returns the seconds spent storing."""
        t0 = time.perf_counter()
        rel = sha = None
        if record.status == "done":
            folder = self.root / "results" / item_key(record.item_id)
            folder.mkdir(exist_ok=True)
            data = npz_bytes(record.arrays)
            sha = hashlib.sha256(data).hexdigest()
            path = folder / f"{record.method}.npz"
            self._maybe_crash(path, data)
            _atomic_write(path, data)
            rel = str(path.relative_to(self.root))
        seconds = time.perf_counter() - t0
        with self._tx() as cur:
            cur.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (record.item_id, record.method, record.status, rel, sha,
                         json.dumps(record.scores, sort_keys=True), record.seconds, seconds, record.error,
                         json.dumps(record.meta, sort_keys=True, default=str), time.time()))
        self._commits += 1
        return time.perf_counter() - t0

    def rows(self) -> list[dict[str, Any]]:
        """Every result row joined with its item, in item order then method name."""
        q = ("SELECT r.item_id, r.method, r.status, r.file, r.sha256, r.scores, r.seconds, r.store_seconds, "
             "r.error, r.meta, i.position, i.source, i.label FROM results r LEFT JOIN items i USING (item_id) "
             "ORDER BY i.position, r.method")
        out = []
        for (item, method, status, file, sha, scores, seconds, store_s, error, meta, pos, source,
             label) in self.db.execute(q):
            out.append({"item": item, "method": method, "status": status, "file": file, "sha256": sha,
                        "scores": json.loads(scores or "{}"), "seconds": seconds, "store_seconds": store_s,
                        "error": error, "meta": json.loads(meta or "{}"), "position": pos, "source": source,
                        "label": label})
        return out

    def load_arrays(self, item_id: str, method: str) -> dict[str, np.ndarray]:
        """The arrays of a finished (item, method), read from its ``.npz`` (random access by item and method)."""
        row = self.db.execute("SELECT file, status, error FROM results WHERE item_id = ? AND method = ?",
                              (item_id, method)).fetchone()
        if row is None:
            raise KeyError(f"no result for item {item_id!r} and method {method!r} in {self.root}")
        file, status, error = row
        if status != "done":
            raise KeyError(f"item {item_id!r} with method {method!r} failed: {error}")
        with np.load(self.root / file, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def close(self) -> None:
        self.db.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------------------------
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


def _exclusive_lock(path: Path) -> Any:
    """Hold an exclusive ``flock`` on ``path`` (released when the file is closed or the process dies)."""
    import fcntl

    f = open(path, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise RuntimeError(f"another process is writing the run in {path.parent}; wait for it or use another "
                           "directory") from None
    return f


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def iter_chunks(seq: list[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive chunks of ``seq`` of at most ``size`` elements."""
    for s in range(0, len(seq), max(1, size)):
        yield seq[s:s + size]
