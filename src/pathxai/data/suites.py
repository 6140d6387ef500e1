"""Deprecated alias kept for old imports: the suites moved above ``data`` and ``models``.

- the suites (``Suite``, ``SuiteItem``, ``load_suite``, ``list_suites``, ``save_item_png``): :mod:`pathxai.suites`
  (also reachable as ``pathxai.data.load_suite`` etc.);
- the clutter canvas generator (``render_clutter``, ``clutter_dataset``, ``CLUTTER_SIZE``): :mod:`pathxai.data.clutter`;
- the photo composites: :mod:`pathxai.data.photos`; boxes and masks: :mod:`pathxai.data.ground_truth`.

Names are looked up lazily in those modules (in the order photos, clutter, ground truth, suites), so importing this
module loads no model and no suite; new code should import from the modules above. ``pathxai.data`` itself never
imports this module.
"""
from __future__ import annotations

import importlib
from typing import Any

_HOMES = ("pathxai.data.photos", "pathxai.data.clutter", "pathxai.data.ground_truth", "pathxai.suites")


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    for home in _HOMES:
        module = importlib.import_module(home)
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r} (the suites moved to pathxai.suites, the "
                         "generators to pathxai.data.clutter and pathxai.data.photos)")
