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
    "samp": {"step_size": 0.34},
    "samp++": {"step_size": 0.34},
    "blur_ig": {"n_steps": 4},
    "guided_ig": {"n_steps": 4},
    "ablation_path": {"n_steps": 4, "mask_size": 14, "min_iterations": 1, "max_iterations": 3},
    "relax": {"n_masks": 24},
    "u_relax": {"n_masks": 24},
    "rep_smooth_saliency": {"n_samples": 4},
    "sift_ablation_path": {"n_steps": 4, "min_iterations": 1, "max_iterations": 2},
    "sift_rise": {"n_masks": 16},
    "sift_relax": {"n_masks": 16},
    "fi": {"n_samples": 4},
    "lime": {"n_samples": 16},
    "kernel_shap": {"n_samples": 16},
}
