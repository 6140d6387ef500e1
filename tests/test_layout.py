"""Package layout: ``data`` holds images and ground truth only, models know no suite, suites sit above both.

The import checks run in a fresh interpreter in which ``pathxai`` is a bare namespace (its ``__init__``, which
imports everything, is not run), so they see what the subpackage itself imports.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import pathxai as px

SRC = Path(px.__file__).resolve().parent

_PRELUDE = f"""
import json, sys, types
pkg = types.ModuleType("pathxai")
pkg.__path__ = [{str(SRC)!r}]
sys.modules["pathxai"] = pkg
def loaded(prefix):
    return sorted(m for m in sys.modules if m == prefix or m.startswith(prefix + "."))
"""


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PRELUDE + code], capture_output=True, text=True, timeout=300,
                         cwd=str(SRC.parent))
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_data_imports_no_model_and_no_suite() -> None:
    got = _run("""
import pathxai.data
from pathxai.data import clutter, ground_truth, photos
import pathxai.data.suites          # the deprecated alias module: lazy, loads nothing above data
x, y = pathxai.data.clutter_dataset("test", 2, seed=0)
photos.composite(0, seed=0)
pathxai.data.suites.render_clutter   # resolved in pathxai.data.clutter
print(json.dumps({"models": loaded("pathxai.models"), "suites": loaded("pathxai.suites"),
                  "shape": list(x.shape)}))
""")
    assert got["shape"] == [2, 1, 64, 64]
    assert got["models"] == [], got["models"]
    assert got["suites"] == [], got["suites"]


def test_models_import_no_suite_module() -> None:
    got = _run("""
import importlib, pkgutil
import pathxai.models
for info in pkgutil.iter_modules(pathxai.models.__path__):
    importlib.import_module("pathxai.models." + info.name)
from pathxai.models.encoders import _clutter_data
x, y = _clutter_data(2, seed=0)     # the clutter training data: the generator, not the suite
print(json.dumps({"suites": loaded("pathxai.suites") + loaded("pathxai.data.suites"), "n": int(x.shape[0])}))
""")
    assert got["n"] == 2
    assert got["suites"] == [], got["suites"]


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of the pathxai modules a source file imports (relative imports resolved)."""
    package = ".".join(("pathxai",) + path.relative_to(SRC).parent.parts)
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)
    return {n for n in names if n == "pathxai" or n.startswith("pathxai.")}


@pytest.mark.parametrize("folder,forbidden", [("data", ("pathxai.models", "pathxai.suites")),
                                              ("models", ("pathxai.suites", "pathxai.data.suites"))])
def test_no_import_statement_crosses_the_layers(folder: str, forbidden: tuple[str, ...]) -> None:
    files = sorted((SRC / folder).rglob("*.py"))
    assert files
    bad = {str(p.relative_to(SRC)): sorted(m for m in _imported_modules(p)
                                          if any(m == f or m.startswith(f + ".") for f in forbidden))
           for p in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_suite_api_still_reachable_from_data() -> None:
    import pathxai.suites as suites
    from pathxai.data import Suite, SuiteItem, list_suites, load_suite, save_item_png

    assert (Suite, SuiteItem, list_suites, load_suite, save_item_png) == (
        suites.Suite, suites.SuiteItem, suites.list_suites, suites.load_suite, suites.save_item_png)
    assert {"Suite", "load_suite", "clutter_dataset"} <= set(dir(px.data))
    assert px.data.suites.clutter_dataset is px.data.clutter.clutter_dataset
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        px.data.nope  # noqa: B018
    with pytest.raises(AttributeError, match="moved"):
        px.data.suites.nope  # noqa: B018


@pytest.mark.parametrize("seed", [-1, 2 ** 63, 1.5, True, "0"])
def test_load_suite_rejects_bad_seeds(seed) -> None:
    with pytest.raises((ValueError, TypeError), match="seed must be an integer in"):   # core.validation.check_seed
        px.data.load_suite("digits", n_images=2, seed=seed)


def test_load_suite_accepts_the_largest_seed() -> None:
    a = px.data.load_suite("digits", n_images=2, seed=2 ** 63 - 1)
    assert len(a) == 2 and a.seed == 2 ** 63 - 1
