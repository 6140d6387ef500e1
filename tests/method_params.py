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
    # digits have few keypoints (K <= 6): a 64-point Sobol net then holds every gain pattern equally often, so the
    # default sampling is exact and the same for every seed; stratified gains keep the seed test meaningful
    "sift_rise": {"n_masks": 16, "sampling": "stratified"},
    "sift_relax": {"n_masks": 16},
    "fi": {"n_samples": 4},
    "lime": {"n_samples": 16},
    "kernel_shap": {"n_samples": 16},
    "gradient_shap": {"n_samples": 4},
    # not a cheaper setting: lets the tiny-ViT part of the contract run them on Captum's gradient fallback (GELU,
    # LayerNorm, attention have no rule); identical results on the digits CNN, whose nonlinearities all have rules.
    # The default (strict) refusal is tested in tests/test_baselines_captum.py
    "deeplift": {"strict": False},
    "guided_backprop": {"strict": False},
}

NAN = float("nan")
INF = float("inf")

# Out-of-range constructor arguments per registered method: each (param, value) must raise ValueError or TypeError at
# construction, before any model call, with a message naming the parameter (tests/test_contract.py checks every
# entry, and that every registered method has one). A new method adds its parameters here: counts below 1, sigmas and
# step sizes <= 0, probabilities outside [0, 1], NaN/Inf floats, strings outside their fixed set, absurd costs.
# Seeds and batch sizes are checked for every method (COMMON_BAD_PARAMS).
COMMON_BAD_PARAMS: list[tuple[str, object]] = [
    ("seed", -1), ("seed", 2**63), ("seed", 2**70), ("seed", 1.5), ("seed", True), ("seed", "0"),
    ("batch_size", 0), ("batch_size", 2.5),
]
_SCORE = [("score", "prob"), ("score", 1)]
_SMOOTH = [("n_samples", 0), ("n_samples", 2.0), ("noise_level", 0.0), ("noise_level", -0.1), ("noise_level", NAN),
           ("noise_level", INF), ("noise_level", 11.0), ("n_samples", 10**9)]
_SIFT = [("eta", 0.0), ("eta", NAN), ("eta", INF), ("cells", "square"), ("sparsity", 1.0), ("sparsity", NAN),
         ("contrast_threshold", NAN), ("edge_ratio", -1.0), ("max_keypoints", 0), ("sigma_min", 0.0),
         ("octave_steps", 0), ("n_levels", 0), ("heatmap", "hot"), ("heatmap_sigmas", (0.0, 1.0)),
         ("heatmap_sigmas", (1.0, NAN)), ("heat_exponent", NAN)]
_PATHS = [("n_steps", 0), ("step_size", 0.0), ("step_size", NAN), ("saturation", -0.1), ("saturation", INF),
          ("pinch", 1.5), ("distance_penalty", -1.0), ("saturation_target", 2.0), ("min_iterations", -1),
          ("max_iterations", 10**12), ("reduction", "median"), ("score", "sideways"), ("score_kind", "prob")]
_RELAX = [("n_masks", 0), ("n_masks", 10**12), ("tolerance", 0.0), ("tolerance", NAN), ("tolerance", INF),
          ("tolerance", 1e-9), ("delta", 0.0), ("delta", 1.0), ("p", 0.0), ("p", 1.0), ("p", NAN),
          ("similarity", "l2"), ("estimator", "median"), ("sampling", "sobol"), ("stratum", 3),
          ("control_variate", "yes")]
_U_RELAX = [("gamma", -1.0), ("gamma", INF), ("gamma", NAN), ("aggregation", "max")]
_SAMP = [("step_size", 0), ("step_size", 1.5), ("step_size", NAN), ("step_size", "all"), ("features", "voxel"),
         ("direction", "up"), ("selection", "max"), ("momentum", 1.0), ("momentum", NAN), ("substeps", 0),
         ("quadrature", "simpson"), ("completeness_rtol", -1.0), ("completeness_rtol", NAN),
         ("completeness_rtol", INF), ("max_refinements", -1), ("max_refinements", 1000), ("blur_sigma", 0.0),
         ("blur_sigma", NAN), ("baseline", NAN), ("baseline", "nope"), ("insertion_baseline", INF)] + _SCORE
# the sampling layer's arguments (pathxai.core.sampling), taken by every Monte Carlo method
_TOL = [("tol", 0), ("tol", -0.1), ("tol", NAN), ("tol", INF), ("tol", "0.05"), ("tol", True), ("sampling", "sobel"),
        ("sampling", 3)]
# SAMP++'s infinitesimal constraint (eta absolute, eta_fraction relative) and the quadrature tolerance
_SAMP = _SAMP + [("eta", 0.0), ("eta", -1.0), ("eta", NAN), ("eta_fraction", 0.0), ("eta_fraction", INF),
                 ("rtol", 0.0), ("rtol", NAN), ("rtol", INF), ("return_path", "yes"), ("quadrature", "gauss")]
BAD_PARAMS: dict[str, list[tuple[str, object]]] = {
    "ig": [("n_steps", 0), ("n_steps", 2.5), ("n_steps", 10**9), ("method", "simpson"), ("method", None),
           ("baseline", NAN), ("baseline", INF), ("baseline", "nope"), ("baseline", True), ("blur_sigma", 0.0),
           ("blur_sigma", -1.0), ("blur_sigma", NAN), ("return_delta", "yes")] + _SCORE,
    "saliency": _SCORE,
    "gradient_x_input": _SCORE,
    "smoothgrad": _SMOOTH + _SCORE + [("aggregate", "median")],
    "smoothgrad_sq": _SMOOTH + _SCORE + [("aggregate", "median")],
    "vargrad": _SMOOTH + _SCORE + [("aggregate", "median")],
    "gradcam": [("layer", "no_such_layer"), ("layer", 3), ("relu", "no")],
    "occlusion": [("window", 0), ("window", 2.5), ("stride", 0), ("baseline", NAN), ("baseline", "nope"),
                  ("blur_sigma", 0.0), ("blur_sigma", NAN)] + _SCORE,
    "rise": [("n_masks", 0), ("n_masks", 10**9), ("grid", 0), ("p", 0.0), ("p", 1.0), ("p", NAN)] + _SCORE,
    "blur_ig": [("n_steps", 0), ("n_steps", 10**9), ("max_sigma", 0.0), ("max_sigma", -1.0), ("max_sigma", NAN),
                ("max_sigma", INF)] + _SCORE,
    "guided_ig": [("n_steps", 0), ("n_steps", 10**9), ("fraction", 0.0), ("fraction", NAN), ("max_dist", 0.0),
                  ("max_dist", 1.5), ("baseline", NAN), ("baseline", "nope"), ("blur_sigma", 0.0)] + _SCORE,
    "ablation_path": _PATHS + [("mask_size", 0), ("mask_size", (4, 4, 4)), ("baseline", NAN), ("baseline", "nope"),
                               ("blur_sigma", 0.0), ("blur_sigma", NAN), ("blur_sigma", "big"),
                               ("blur_range", (0.0, 10.0)), ("blur_range", (1.0, NAN)), ("blur_tol", 0.0),
                               ("blur_tol", NAN), ("smoothing_sigma", -1.0), ("smoothing_sigma", INF),
                               ("window", "yes"), ("schedule", "fast"), ("schedule", None), ("coarse_factor", 0),
                               ("coarse_factor", 2.0), ("coarse_steps", 0), ("momentum", 1.0), ("momentum", -0.1),
                               ("momentum", NAN), ("tolerance", -1e-3), ("tolerance", NAN), ("tolerance", INF),
                               ("patience", 0)],
    "samp": _SAMP,
    "samp++": _SAMP,
    "relax": _RELAX + [("grid", 0), ("baseline", NAN), ("baseline", "blur")],
    "u_relax": _RELAX + _U_RELAX + [("grid", 0), ("baseline", INF)],
    "rep_saliency": [],        # no parameters of its own (the common ones apply)
    "rep_guided_saliency": [],
    "rep_smooth_saliency": [p for p in _SMOOTH],
    "sift_ablation_path": _PATHS + _SIFT + [("feature_weights", "yes")],
    "sift_rise": [("n_masks", 0), ("n_masks", 10**9), ("p", 0.0), ("p", NAN), ("score", "prob")] + _SIFT,
    "sift_relax": _RELAX + _U_RELAX + _SIFT,
    "fi": [("n_samples", 0), ("n_samples", 10**9), ("noise_level", 0.0), ("noise_level", NAN),
           ("noise_level", -1.0), ("covariance", "identity"), ("covariance_scale", "rel"),
           ("subset", [True, False])],
    "lime": [("n_samples", 1), ("n_samples", 10**9), ("grid", 0), ("groups", "patches")],
    "kernel_shap": [("n_samples", 1), ("n_samples", 10**9), ("grid", 0), ("groups", "patches")],
    "energy_occlusion": [("baseline", NAN), ("baseline", INF), ("baseline", "zero"), ("whole_structure", "yes"),
                         ("region", []), ("region", [1.5]), ("region", [-1]), ("region", "0"),
                         ("groups", "features")],
    "sointer": [("interpreter", "trained.pt")],
    "l2x": [("interpreter", None)],
    # the rollouts take no parameters of their own: the common ones (seed, batch_size) are checked
    "attention_rollout": [],
    "grad_rollout": [],
    "deeplift": [("baseline", NAN), ("baseline", INF), ("baseline", "nope"), ("baseline", True), ("blur_sigma", 0.0),
                 ("blur_sigma", NAN), ("strict", "yes"), ("return_delta", "yes")],
    "guided_backprop": [("strict", "yes"), ("strict", None)],
    "gradient_shap": [("n_samples", 0), ("n_samples", 2.5), ("n_samples", 10**9), ("stdevs", -0.1), ("stdevs", NAN),
                      ("stdevs", INF), ("baselines", []), ("baselines", "nope"), ("baselines", NAN),
                      ("baselines", ["zero", INF]), ("baselines", 7j), ("blur_sigma", 0.0)] + _SCORE,
    "gradcam++": [("layer", "no_such_layer"), ("layer", 3), ("relu", "no")],
    "scorecam": [("layer", "no_such_layer"), ("layer", 3), ("relu", "no"), ("baseline", NAN), ("baseline", "nope"),
                 ("blur_sigma", 0.0), ("score", "prob"), ("score", "log_softmax")],
}

for _name in ("rise", "smoothgrad", "smoothgrad_sq", "vargrad", "fi", "sift_rise", "lime", "kernel_shap", "relax",
              "u_relax"):
    BAD_PARAMS[_name] = BAD_PARAMS[_name] + _TOL

# structured-task sizes of the untrained stand-ins below
STRUCTURED_FEATURES, STRUCTURED_OUTPUTS = 16, 5


def required_params(name: str) -> dict:
    """Arguments a method cannot be built without (trained networks): untrained stand-ins of the right shape, enough
    for tests that only construct a method or feed it a broken model."""
    if name == "energy_occlusion":
        from pathxai.structured import EnergyNet
        return {"energy": EnergyNet(STRUCTURED_FEATURES, STRUCTURED_OUTPUTS)}
    if name in ("sointer", "l2x"):
        from pathxai.structured import Selector
        return {"interpreter": Selector(STRUCTURED_FEATURES, 3, [3], kind=name)}
    return {}


def assert_rejects_bad_inputs(method, x, model_name: str) -> None:
    """The input checks every method shares: NaN/Inf, wrong rank, wrong size, empty, integer, not a tensor.
    ``x``: a (3, 1, 28, 28) batch the method accepts; ``model_name`` as the error message names the model."""
    import pytest

    bad = x.clone()
    bad[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"x contains 1 NaN/Inf"):
        method.explain(bad)
    inf = x.clone()
    inf[1, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"x contains .*NaN/Inf"):
        method.explain(inf)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, 28, 28\).*got shape \(1, 28, 28\)"):
        method.explain(x[0])
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, 28, 28\) for the model " + model_name
                       + r", got shape \(3, 1, 27, 28\)"):
        method.explain(x[..., 1:, :])
    with pytest.raises(ValueError, match=r"x is an empty batch: shape \(0, 1, 28, 28\)"):
        method.explain(x[:0])
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor.*int64"):
        method.explain((x * 255).long())
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor"):
        method.explain(x.numpy())


def tiny_vit(seed: int = 0, **config):
    """A tiny transformers ViT (random weights) for the contract suite and the ViT tests, as the digits CNN is
    wrapped: (N, 1, 28, 28) in [0, 1] -> (N, 10) logits, 7 x 7 patches (a 4 x 4 grid + CLS), 3 blocks of 4 heads.
    ``initializer_range`` 0.2 (not 0.02) gives peaked, far-from-uniform attention, so that tests can fail.
    Skips the calling test when transformers is missing."""
    import pytest

    pytest.importorskip("transformers")
    from pathxai.models import ImageClassifier
    from pathxai.models.vit import build_vit, clutter_vit_config

    fields = dict(image_size=28, patch_size=7, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                  intermediate_size=64, initializer_range=0.2)
    fields.update(config)
    import torch

    net = build_vit(clutter_vit_config(**fields), seed=seed)
    return ImageClassifier(net, torch.nn.Identity(), [str(i) for i in range(10)], (28, 28), "tiny-vit",
                           channels=1).eval()
