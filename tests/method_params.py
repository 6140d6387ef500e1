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
