"""Atomic file writes shared by every writer in pathxai (results, plots, caches, run stores).

A reader never sees half a file: data goes to a temporary file in the target's folder, is flushed and fsynced, then
renamed over the target (atomic on POSIX). The temporary file gets the permissions a plain ``open(path, "w")``
would give (``0o666`` minus the umask, usually ``0644``), so every file pathxai writes has the same mode whichever
writer made it (``tempfile.mkstemp`` alone would leave ``0600``).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666`` minus the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error, move it onto ``path``.

    The caller writes the whole file to the yielded path (any library that takes a file name works). On error the
    temporary file is removed and ``path`` is left as it was.

    Args:
        path: the final file; its folder is created if missing.
        fsync_dir: also fsync the folder after the rename, so the rename itself survives a power cut (run stores).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:   # the writer may have closed its own handle without syncing
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    if fsync_dir:
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync_dir: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); returns ``path``."""
    with atomic_path(path, fsync_dir=fsync_dir) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, fsync_dir: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`); returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync_dir=fsync_dir)
