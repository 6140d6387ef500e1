"""Batch runs: explain many images with many methods into a resumable store, locally or on Ray; HTML report.

    table = px.run("digits", ["ig", "gradcam"], out="runs/digits", n_images=100)
    table = px.load_run("runs/digits")          # rows: item, method, status, scores, seconds, error
    px.runs.write_report("runs/digits")         # runs/digits/report/index.html
"""
from .api import RunTable, format_summary, load_run, run
from .store import CorruptResultError, ResultRecord, RunLockedError, RunStore

__all__ = ["CorruptResultError", "ResultRecord", "RunLockedError", "RunStore", "RunTable", "format_summary",
           "load_run", "run", "write_report"]


def write_report(run_dir: str, out: str | None = None, **kwargs: object) -> "object":
    """Write the static HTML report of a run (see :func:`pathxai.runs.report.write_report`)."""
    from .report import write_report as _write

    return _write(run_dir, out, **kwargs)  # type: ignore[arg-type]
