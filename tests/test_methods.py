"""Each baseline method against an independent reference: Captum, a plain loop, or closed form."""
from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import LayerGradCam, NoiseTunnel
from captum.attr import Occlusion as CaptumOcclusion
from captum.attr import Saliency as CaptumSaliency

import pathxai as px
from pathxai.core import item_generator
from pathxai.methods import quadrature, rise_masks


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
                                  "riemann_trapezoid"])
def test_ig_agrees_with_captum(rule, digits_model, digit_batch):
    x, y = digit_batch
    baseline = torch.full_like(x, 0.2)
    ours = px.get_method("ig")(digits_model, n_steps=16, method=rule, baseline=baseline, batch_size=5).explain(x, y)
    ref = CaptumIG(digits_model).attribute(x, baselines=baseline, target=y, n_steps=16, method=rule)
    if rule == "riemann_trapezoid":
        # Captum's trapezoid weights are 1/n with halved ends: they sum to (n-1)/n, not 1, on nodes spaced 1/(n-1).
        # Ours are the textbook 1/(n-1) (exact for linear integrands), so the two differ by exactly n/(n-1).
        ref = ref * 16 / 15
    assert rel(ours.attribution, ref) < 1e-5


def test_ig_completeness_within_quadrature_error(digits_model, digit_batch):
    x, y = digit_batch
    coarse = px.get_method("ig")(digits_model, n_steps=4, return_delta=True).explain(x, y).extras["delta"].abs()
    fine = px.get_method("ig")(digits_model, n_steps=128, return_delta=True).explain(x, y)
    gap = (digits_model(x).gather(1, y[:, None]) - digits_model(torch.zeros_like(x)).gather(1, y[:, None])).squeeze(1)
    assert (fine.extras["delta"].abs() < 0.01 * gap.abs()).all()
    assert fine.extras["delta"].abs().sum() < coarse.sum()


def test_quadrature_integrates_polynomials():
    for rule, exact_degree in [("gausslegendre", 9), ("riemann_trapezoid", 1), ("riemann_middle", 1)]:
        a, w = quadrature(5, rule)
        for deg in range(exact_degree + 1):
            assert abs(float((w * a ** deg).sum()) - 1.0 / (deg + 1)) < (1e-12 if rule == "gausslegendre" else 0.05)
    with pytest.raises(ValueError, match="method must be one of"):
        quadrature(5, "simpson")


def test_gradient_x_input_on_a_linear_model_is_w_times_x():
    lin = torch.nn.Linear(12, 3)
    x = torch.randn(4, 12)
    e = px.get_method("gradient_x_input")(lin, batch_size=3).explain(x, 1)
    assert torch.allclose(e.attribution, x * lin.weight[1].detach(), atol=1e-6)
    # completeness of gradient x input for a linear model without bias
    assert torch.allclose(e.attribution.sum(1), (x @ lin.weight[1].detach()), atol=1e-5)


def test_saliency_agrees_with_captum(digits_model, digit_batch):
    x, y = digit_batch
    ours = px.get_method("saliency")(digits_model).explain(x, y).attribution
    ref = CaptumSaliency(digits_model).attribute(x, target=y, abs=False)
    assert rel(ours, ref) < 1e-6


def test_smoothgrad_equals_a_plain_loop_with_the_same_noise(digits_model, digit_batch):
    x, y = digit_batch
    n, level, seed = 6, 0.2, 3
    ours = px.get_method("smoothgrad")(digits_model, n_samples=n, noise_level=level, seed=seed,
                                       batch_size=4, sampling="mc").explain(x, y)
    for i in range(x.shape[0]):
        sigma = level * float(x[i].max() - x[i].min())
        total = torch.zeros_like(x[i])
        for k in range(n):
            noise = torch.randn(x.shape[1:], generator=item_generator(seed, "smoothgrad", i * n + k))
            z = (x[i] + sigma * noise).unsqueeze(0).requires_grad_(True)
            total += torch.autograd.grad(digits_model(z)[0, y[i]], z)[0][0]
        assert rel(ours.attribution[i], total / n) < 1e-5


def test_vargrad_and_smoothgrad_sq_are_moments_of_the_same_gradients(digits_model, digit_batch):
    x, y = digit_batch
    kw = dict(n_samples=5, seed=1, batch_size=3, sampling="mc")
    mean = px.get_method("smoothgrad")(digits_model, **kw).explain(x, y).attribution
    sq = px.get_method("smoothgrad_sq")(digits_model, **kw).explain(x, y).attribution
    var = px.get_method("vargrad")(digits_model, **kw).explain(x, y).attribution
    assert torch.allclose(var, sq - mean ** 2, atol=1e-5 * float(sq.abs().max()))
    assert (var >= 0).all()


def test_smoothgrad_with_captum_noise_tunnel_statistically(digits_model, digit_batch):
    """Different random draws, same estimator: both converge to the same map."""
    x, y = digit_batch
    ours = px.get_method("smoothgrad")(digits_model, n_samples=400, noise_level=0.1).explain(x[:1], y[:1]).attribution
    torch.manual_seed(0)
    sigma = 0.1 * float(x[0].max() - x[0].min())
    ref = NoiseTunnel(CaptumSaliency(digits_model)).attribute(x[:1], target=y[:1], nt_type="smoothgrad",
                                                               nt_samples=400, stdevs=sigma, abs=False)
    assert rel(ours, ref) < 0.25
    assert torch.nn.functional.cosine_similarity(ours.flatten(), ref.flatten(), dim=0) > 0.95


@pytest.mark.parametrize("window,stride", [(4, 4), (6, 3), (5, 2)])
def test_occlusion_agrees_with_captum(window, stride, digits_model, digit_batch):
    x, y = digit_batch
    ours = px.get_method("occlusion")(digits_model, window=window, stride=stride, batch_size=7).explain(x, y)
    ref = CaptumOcclusion(digits_model).attribute(x, sliding_window_shapes=(1, window, window),
                                                   strides=(1, stride, stride), baselines=0.0, target=y)
    assert rel(ours.attribution, ref) < 1e-5


def test_gradcam_agrees_with_a_manual_computation(digits_model, digit_batch):
    x, y = digit_batch
    ours = px.get_method("gradcam")(digits_model, batch_size=2).explain(x, y).attribution
    layer = digits_model.gradcam_layer
    acts = {}
    handle = layer.register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    out = digits_model(x)
    handle.remove()
    grads = torch.autograd.grad(out.gather(1, y[:, None]).sum(), acts["a"])[0]
    cam = torch.relu((grads.mean((2, 3), keepdim=True) * acts["a"]).sum(1, keepdim=True))
    assert rel(ours, cam.detach()) < 1e-5
    ref = LayerGradCam(digits_model, layer).attribute(x, target=y, relu_attributions=True)
    assert rel(ours, ref) < 1e-6


def test_gradcam_layer_by_name(digits_model, digit_batch):
    x, y = digit_batch
    by_name = px.get_method("gradcam")(digits_model, layer="net.features.3").explain(x, y)
    assert by_name.attribution.shape == (3, 1, 14, 14)
    with pytest.raises(ValueError, match="is not a submodule"):
        px.get_method("gradcam")(digits_model, layer="net.nope")


def test_rise_equals_a_plain_loop_over_the_same_masks(digits_model, digit_batch):
    x, y = digit_batch
    n_masks, seed = 30, 5
    ours = px.get_method("rise")(digits_model, n_masks=n_masks, seed=seed, batch_size=8,
                                 sampling="mc").explain(x, y).attribution
    masks = rise_masks(torch.arange(n_masks), seed, 28, 28, grid=7, p=0.5)
    with torch.no_grad():
        for i in range(x.shape[0]):
            ref = torch.zeros(28, 28)
            for m in range(n_masks):
                prob = digits_model((x[i] * masks[m]).unsqueeze(0)).softmax(1)[0, y[i]]
                ref += prob * masks[m]
            assert rel(ours[i, 0], ref / (n_masks * 0.5)) < 1e-5


def test_rise_masks_have_the_papers_statistics():
    masks = rise_masks(torch.arange(400), 0, 56, 56, grid=7, p=0.5)
    assert masks.shape == (400, 56, 56)
    assert 0.0 <= float(masks.min()) and float(masks.max()) <= 1.0
    assert abs(float(masks.mean()) - 0.5) < 0.03
    assert not torch.equal(masks[0], masks[1])
