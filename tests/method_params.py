"""Cheap constructor parameters per registered method for the shared contract suite (tests/test_contract.py).

Every registered method runs through the contract tests; a method whose defaults are too slow for the fast suite
adds an entry here (same math, fewer samples / steps / iterations).
"""
FAST_PARAMS: dict[str, dict] = {
    "ig": {"n_steps": 8},
    "smoothgrad": {"n_samples": 4},
    "smoothgrad_sq": {"n_samples": 4},
    "vargrad": {"n_samples": 4},
    "rise": {"n_masks": 24},
    "occlusion": {"window": 8, "stride": 8},
}
