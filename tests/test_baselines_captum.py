"""The baselines every paper lists: DeepLIFT, GradientSHAP and Guided Backprop against Captum's own output, their
defining properties (summation-to-delta, clipped ReLU signals), and Grad-CAM++ / Score-CAM against brute force."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import DeepLift, GradientShap, GuidedBackprop
from method_params import tiny_vit
from torch import nn

import pathxai as px
from pathxai.core.baselines import gaussian_blur
from pathxai.methods.cam_variants import gradcam_pp_weights
from pathxai.methods.captum_gradients import gradient_shap_draws

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")   # Captum's "setting hooks" notices


def assert_matches(ours: torch.Tensor, ref: torch.Tensor, tol: float = 1e-5) -> None:
    """Equal to ``tol`` relative to the reference's largest value (elementwise)."""
    scale = float(ref.abs().max())
    assert scale > 0
    err = float((ours - ref).abs().max())
    assert err <= tol * scale, f"max |ours - Captum| = {err:.3g}, {err / scale:.3g} of max |Captum|"


# ---------------------------------------------------------------------------------------------------------------
# DeepLIFT


@pytest.mark.parametrize("baseline", ["zero", "blur"])
def test_deeplift_equals_captum(baseline, digits_model, digit_batch):
    x, y = digit_batch
    e = px.get_method("deeplift")(digits_model, batch_size=2, baseline=baseline).explain(x, y)
    b = torch.zeros_like(x) if baseline == "zero" else gaussian_blur(x, 10.0)
    ref = DeepLift(digits_model).attribute(x, baselines=b, target=y).detach()
    assert_matches(e.attribution, ref)
    assert torch.equal(e.extras["baseline"], b)
    assert e.meta["gradient_evaluations"] == 2 * x.shape[0]    # inputs and references in one pass


def test_deeplift_sums_to_the_output_difference(digits_model, digit_batch):
    """Summation-to-delta (completeness): sum_i a_i = f(x) - f(baseline), exactly for the Rescale rule on a network
    of ReLUs, average pools, convolutions and linear layers."""
    x, y = digit_batch
    for baseline in ("zero", "blur", 0.5):
        e = px.get_method("deeplift")(digits_model, batch_size=2, baseline=baseline,
                                      return_delta=True).explain(x, y)
        with torch.no_grad():
            fx = digits_model(x).gather(1, y[:, None])[:, 0]
            fb = digits_model(e.extras["baseline"]).gather(1, y[:, None])[:, 0]
        gap = (fx - fb).abs()
        assert gap.min() > 0.5                      # a real difference to distribute
        total = e.attribution.flatten(1).sum(1)
        assert torch.allclose(total, fx - fb, atol=1e-4 * float(gap.max()))
        assert e.extras["delta"].abs().max() <= 1e-4 * float(gap.max())
    # the plain gradient x (x - b) does not have the property on this network: the check above can fail
    g = px.get_method("gradient_x_input")(digits_model).explain(x, y).attribution.flatten(1).sum(1)
    assert (g - (fx - fb)).abs().max() > 1e-2 * float(gap.max())


class FunctionalReLUNet(nn.Module):
    """A small CNN whose ReLU is a function call (no module for Captum to hook)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 28 * 28, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x) - 0.05).flatten(1))


class ModuleReLUNet(FunctionalReLUNet):
    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x) - 0.05).flatten(1))


def test_deeplift_refuses_nonlinearities_captum_has_no_rule_for(digit_batch):
    x, y = digit_batch
    with pytest.raises(ValueError, match=r"deeplift: Captum's DeepLIFT has rules only for modules of type nn.ReLU.*"
                                         r"computes relu \(in the model \(FunctionalReLUNet\)\).*strict=False"):
        px.get_method("deeplift")(FunctionalReLUNet()).explain(x, y)
    vit = tiny_vit()
    with pytest.raises(ValueError, match=r"computes layer_norm .*scaled_dot_product_attention .*gelu \(in "
                                         r"'net.model.vit.layers.0.mlp.activation_fn' \(GELUActivation\)"):
        px.get_method("deeplift")(vit).explain(x, y)
    # strict=False runs Captum's gradient fallback -- which is why strict is the default: the sums are off
    loose = px.get_method("deeplift")(FunctionalReLUNet(), strict=False, return_delta=True).explain(x, y)
    ruled = px.get_method("deeplift")(ModuleReLUNet(), return_delta=True).explain(x, y)   # same weights, nn.ReLU
    assert ruled.extras["delta"].abs().max() < 1e-4
    assert loose.extras["delta"].abs().max() > 1e-2
    assert px.get_method("deeplift")(vit, strict=False).explain(x, y).attribution.shape == x.shape


class ReusedReLUNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(2 * 28 * 28, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv2(self.act(self.conv1(x)))).flatten(1))


def test_deeplift_refuses_a_reused_module_whatever_strict_says(digit_batch):
    x, y = digit_batch
    for strict in (True, False):
        with pytest.raises(ValueError, match=r"module 'act' \(ReLU\) runs 2 times per forward pass.*own module"):
            px.get_method("deeplift")(ReusedReLUNet(), strict=strict).explain(x, y)
    # Guided Backprop's rule has no state per module: reuse is fine
    net = ReusedReLUNet()
    e = px.get_method("guided_backprop")(net).explain(x, y)
    assert_matches(e.attribution, GuidedBackprop(net).attribute(x, target=y).detach())


def test_hooked_methods_need_a_module():
    for name in ("deeplift", "guided_backprop"):
        with pytest.raises(TypeError, match=rf"{name} needs the model as an nn.Module.*got function"):
            px.get_method(name)(lambda t: t.flatten(1)[:, :10])


# ---------------------------------------------------------------------------------------------------------------
# Guided Backprop


def test_guided_backprop_equals_captum(digits_model, digit_batch):
    x, y = digit_batch
    e = px.get_method("guided_backprop")(digits_model, batch_size=2).explain(x, y)
    assert_matches(e.attribution, GuidedBackprop(digits_model).attribute(x, target=y).detach())
    plain = px.get_method("saliency")(digits_model).explain(x, y).attribution
    assert (e.attribution - plain).abs().max() > 0.1 * plain.abs().max()   # the rule changed something


def test_guided_backprop_clips_the_backward_signal_at_every_relu_by_hand():
    """Two nets small enough to check by hand that the signal passed down through each ReLU is clipped at 0."""
    # one ReLU layer: z = W1 x = (5, 1, -4); the signal at the ReLU is w2 * [z > 0] = (1, -2, 0)
    net = nn.Sequential(nn.Linear(2, 3, bias=False), nn.ReLU(), nn.Linear(3, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 1.0], [2.0, -3.0]]))
        net[2].weight.copy_(torch.tensor([[1.0, -2.0, 3.0]]))
    x = torch.tensor([[1.0, 2.0]])
    gbp = px.get_method("guided_backprop")(net).explain(x, 0).attribution
    grad = px.get_method("saliency")(net).explain(x, 0).attribution
    assert torch.equal(grad, torch.tensor([[3.0, 0.0]]))     # W1^T (1, -2, 0)
    assert torch.equal(gbp, torch.tensor([[1.0, 2.0]]))      # W1^T relu(1, -2, 0) = W1^T (1, 0, 0)

    # two ReLU layers: h1 = x = (1, 2) > 0; z2 = W2 h1 = (-1, 1); the signal at ReLU 2 is (0, 2) >= 0, passed down
    # as W2^T (0, 2) = (-2, 2): the plain gradient keeps the -2, guided backprop clips it at ReLU 1
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 2, bias=False), nn.ReLU(),
                        nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(2))
        net[2].weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        net[4].weight.copy_(torch.tensor([[1.0, 2.0]]))
    gbp = px.get_method("guided_backprop")(net).explain(x, 0).attribution
    grad = px.get_method("saliency")(net).explain(x, 0).attribution
    assert torch.equal(grad, torch.tensor([[-2.0, 2.0]]))
    assert torch.equal(gbp, torch.tensor([[0.0, 2.0]]))


def test_guided_backprop_refuses_models_without_relu_modules(digit_batch):
    x, y = digit_batch
    with pytest.raises(ValueError, match=r"guided_backprop: .*nn.ReLU modules only; this model computes relu"):
        px.get_method("guided_backprop")(FunctionalReLUNet()).explain(x, y)
    with pytest.raises(ValueError, match=r"computes gelu \(in 'net.model.vit.layers.0.mlp.activation_fn'"):
        px.get_method("guided_backprop")(tiny_vit()).explain(x, y)
    sigmoid_net = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.Sigmoid(), nn.Linear(16, 10))
    with pytest.raises(ValueError, match=r"runs no nn.ReLU module, so Guided Backprop would be the plain gradient"):
        px.get_method("guided_backprop")(sigmoid_net).explain(x, y)
    loose = px.get_method("guided_backprop")(sigmoid_net, strict=False).explain(x, y).attribution
    assert torch.allclose(loose, px.get_method("saliency")(sigmoid_net).explain(x, y).attribution)


# ---------------------------------------------------------------------------------------------------------------
# GradientSHAP


def test_gradient_shap_equals_captum_given_the_same_draws(digits_model, digit_batch, monkeypatch):
    """Captum's GradientShap draws reference indices (np.random.choice), path points (np.random.uniform) and noise
    (torch.normal) itself; fed our per-item draws it must give our attribution, sample by sample, with the
    distribution of Captum's tutorial (the zero image and the input)."""
    x, y = digit_batch
    n, stdevs, seed = 6, 0.05, 3
    e = px.get_method("gradient_shap")(digits_model, n_samples=n, stdevs=stdevs, seed=seed,
                                       batch_size=4).explain(x, y)
    seen_refs = set()
    for i in range(x.shape[0]):
        index, alpha, noise = gradient_shap_draws(seed, torch.arange(i * n, (i + 1) * n), 2, x.shape[1:], stdevs)
        assert torch.equal(e.extras["baseline_index"][i], index) and torch.equal(e.extras["alpha"][i], alpha)
        seen_refs |= set(index.tolist())
        monkeypatch.setattr(np.random, "choice", lambda a, size, _i=index: _i.numpy().copy())
        monkeypatch.setattr(np.random, "uniform", lambda low, high, size, _a=alpha: _a.double().numpy())
        monkeypatch.setattr(torch, "normal", lambda mean, std, _n=noise: _n.clone())
        ref = GradientShap(digits_model).attribute(x[i:i + 1], baselines=torch.cat([x[i:i + 1] * 0, x[i:i + 1]]),
                                                   n_samples=n, stdevs=stdevs, target=int(y[i])).detach()
        assert_matches(e.attribution[i:i + 1], ref)
    assert seen_refs == {0, 1}    # both references were drawn


def test_gradient_shap_draws_do_not_depend_on_the_chunking(digits_model, digit_batch):
    x, y = digit_batch
    runs = [px.get_method("gradient_shap")(digits_model, n_samples=5, seed=1, batch_size=b).explain(x, y)
            for b in (1, 3, 64)]
    for other in runs[1:]:
        assert torch.equal(other.extras["baseline_index"], runs[0].extras["baseline_index"])
        assert torch.equal(other.extras["alpha"], runs[0].extras["alpha"])
        assert torch.allclose(other.attribution, runs[0].attribution, rtol=0, atol=1e-6)
    assert runs[0].meta["params"]["baselines"] == ["zero", "input"] and runs[0].meta["params"]["stdevs"] == 1e-4


def test_gradient_shap_with_a_shared_reference_tensor(digits_model, digit_batch):
    """Captum's own form: a (B, ...) tensor of references shared by every input; one reference b and no noise
    makes every draw a point on the segment from b, i.e. an IG estimate with random nodes."""
    x, y = digit_batch
    refs = torch.full((1, 1, 28, 28), 0.25)
    e = px.get_method("gradient_shap")(digits_model, n_samples=8, stdevs=0.0, baselines=refs).explain(x, y)
    assert (e.extras["baseline_index"] == 0).all()
    alpha = e.extras["alpha"]
    expect = torch.zeros_like(x)
    for i in range(x.shape[0]):
        pts = refs + alpha[i].view(-1, 1, 1, 1) * (x[i:i + 1] - refs)
        g = px.get_method("saliency")(digits_model).explain(pts, int(y[i])).attribution
        expect[i] = ((x[i:i + 1] - refs) * g).mean(0)
    assert_matches(e.attribution, expect)
    with pytest.raises(ValueError, match=r"baselines tensor must have shape \(B, 1, 28, 28\)"):
        px.get_method("gradient_shap")(digits_model, baselines=torch.zeros(2, 1, 14, 14)).explain(x, y)


# ---------------------------------------------------------------------------------------------------------------
# Grad-CAM++


class TinyCAMNet(nn.Module):
    """conv -> ReLU (the explained layer, maps >= 0) -> conv -> head -> linear; float64. With ``smooth_head`` the
    head is a Softplus, so the score is not piecewise linear in the maps and the paper's identity fails."""

    def __init__(self, smooth_head: bool = False) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = nn.Conv2d(1, 3, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Softplus() if smooth_head else nn.ReLU()
        self.fc = nn.Linear(4 * 5 * 5, 3)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5
        self.double()

    def after(self, a: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head(self.conv2(a)).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after(self.act(self.conv1(x)))


def brute_force_gradcam_pp(net: TinyCAMNet, x: torch.Tensor, target: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's Eq. 19 with Y = exp(S) and every derivative taken by autograd (second and third derivatives of
    Y w.r.t. each activation A_kij). Returns (map (1, h, w) with the factor exp(S), S)."""
    a = net.act(net.conv1(x)).detach().requires_grad_(True)      # (1, C, h, w)
    s = net.after(a)[0, target]
    y = torch.exp(s)
    (dy,) = torch.autograd.grad(y, a, create_graph=True)
    d2 = torch.zeros_like(a).flatten()
    d3 = torch.zeros_like(a).flatten()
    for e in range(a.numel()):
        (row,) = torch.autograd.grad(dy.flatten()[e], a, create_graph=True)
        d2[e] = row.flatten()[e]
        (row3,) = torch.autograd.grad(row.flatten()[e], a, retain_graph=True)
        d3[e] = row3.flatten()[e]
    d2, d3 = d2.view_as(a), d3.view_as(a)
    denom = 2 * d2 + a.detach().sum(dim=(2, 3), keepdim=True) * d3
    alpha = torch.where(denom != 0, d2 / torch.where(denom != 0, denom, 1.0), 0.0)
    w = (alpha * torch.relu(dy.detach())).sum(dim=(2, 3), keepdim=True)
    return torch.relu((w * a.detach()).sum(1)), s.detach()


def test_gradcam_pp_equals_the_brute_force_higher_order_derivatives():
    net = TinyCAMNet()
    x = torch.rand(3, 1, 5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    targets = [0, 1, 2]
    e = px.get_method("gradcam++")(net, layer="act", batch_size=2).explain(x, targets)
    assert e.meta["params"]["layer"] == "act" and e.attribution.shape == (3, 1, 5, 5)
    for i, t in enumerate(targets):
        brute, s = brute_force_gradcam_pp(net, x[i:i + 1], t)
        ours = e.attribution[i] * torch.exp(s)       # the paper's map carries the common factor exp(S)
        assert brute.abs().max() > 0
        torch.testing.assert_close(ours, brute, rtol=1e-9, atol=1e-12)
    # it is not Grad-CAM (alpha matters)
    gc = px.get_method("gradcam")(net, layer="act").explain(x, targets).attribution
    assert F.cosine_similarity(gc.flatten(1), e.attribution.flatten(1)).min() < 0.9999


def test_gradcam_pp_brute_force_differs_where_the_identity_does_not_hold():
    """With a smooth head d2S/dA2 != 0: the closed form is then an approximation (the test above can fail)."""
    net = TinyCAMNet(smooth_head=True)
    x = torch.rand(1, 1, 5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    e = px.get_method("gradcam++")(net, layer="act").explain(x, 0)
    brute, s = brute_force_gradcam_pp(net, x, 0)
    ours = e.attribution[0] * torch.exp(s)
    assert float((ours - brute).abs().max() / brute.abs().max()) > 1e-3


def test_gradcam_pp_weights_formula():
    """alpha = g^2 / (2 g^2 + sum(A) g^3) where defined, 0 where the denominator vanishes (g = 0)."""
    acts = torch.tensor([[[[1.0, 2.0], [3.0, 0.0]]]])
    grads = torch.tensor([[[[0.5, -1.0], [0.0, 2.0]]]])
    # sum(A) = 6: alpha = 1/(2 + 6 g): g=0.5 -> 1/5, g=-1 -> -1/4 (relu(g) = 0), g=0 -> 0, g=2 -> 1/14
    expected = 0.2 * 0.5 + 0.0 + 0.0 + (1 / 14) * 2.0
    assert torch.allclose(gradcam_pp_weights(acts, grads), torch.tensor(expected).view(1, 1, 1, 1))


def test_cam_variants_use_the_rectified_default_layer(digits_model, digit_batch):
    x, y = digit_batch
    for name in ("gradcam++", "scorecam"):
        assert px.get_method(name)(digits_model).explain(x, y).meta["params"]["layer"] == "net.features.7"
        e = px.get_method(name)(digits_model, layer="net.features.6").explain(x, y)
        assert e.meta["params"]["layer"] == "net.features.6"        # an explicit layer is used as given
    vit = tiny_vit()
    for name in ("gradcam++", "scorecam"):
        e = px.get_method(name)(vit, batch_size=4).explain(x, y)
        assert e.meta["params"]["layer"] == "net.model.vit.layers.2.layernorm_before"
        assert e.extras["layout"] == "tokens" and e.extras["prefix_tokens"] == 1 and e.attribution.shape == (3, 1, 4, 4)


# ---------------------------------------------------------------------------------------------------------------
# Score-CAM


def plain_scorecam(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: int,
                   to_maps=lambda t: t) -> torch.Tensor:
    """Score-CAM of one image (1, C, H, W) by a plain loop over the maps: upsample, normalise to [0, 1], mask,
    softmax score minus the zero image's; exactly-constant maps skipped as in the authors' code."""
    seen = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.setdefault("a", out.detach()))
    with torch.no_grad():
        model(x)
        handle.remove()
        acts = to_maps(seen["a"])[0]
        base = model(torch.zeros_like(x)).softmax(1)[0, target]
        cam = torch.zeros(acts.shape[1:])
        for k in range(acts.shape[0]):
            a = acts[k]
            if a.max() == a.min():
                continue
            up = F.interpolate(a[None, None], size=x.shape[2:], mode="bilinear", align_corners=False)
            h = (up - up.min()) / (up.max() - up.min())
            p = model(x * h).softmax(1)[0, target]
            cam += (p - base) * a
    return torch.relu(cam)


def test_scorecam_equals_a_plain_loop_over_the_maps(digits_model, digit_batch):
    x, _ = digit_batch
    targets = [3, 5, 8]
    e = px.get_method("scorecam")(digits_model, batch_size=5).explain(x, targets)
    layer = digits_model.net.features[7]
    for i, t in enumerate(targets):
        ref = plain_scorecam(digits_model, layer, x[i:i + 1], t)
        assert ref.abs().max() > 0
        assert_matches(e.attribution[i, 0], ref)
    # one evaluation for the maps and one for the baseline per sample, one per non-constant map
    assert e.meta["model_evaluations"] == 2 * x.shape[0] + e.extras["evaluated_maps"]
    assert e.extras["evaluated_maps"] < 3 * 32     # switched-off channels cost nothing
    assert e.meta["forward_evaluations"] == e.meta["model_evaluations"] and e.meta["gradient_evaluations"] == 0


def test_scorecam_equals_a_plain_loop_on_vit_tokens(digit_batch):
    x, y = digit_batch
    vit = tiny_vit()
    layer = vit.net.model.vit.layers[2].layernorm_before
    e = px.get_method("scorecam")(vit, batch_size=7).explain(x, y)

    def to_maps(tokens: torch.Tensor) -> torch.Tensor:      # drop CLS, (1, 16, C) -> (1, C, 4, 4)
        return tokens[:, 1:].transpose(1, 2).reshape(1, -1, 4, 4)

    for i in range(x.shape[0]):
        assert_matches(e.attribution[i, 0], plain_scorecam(vit, layer, x[i:i + 1], int(y[i]), to_maps))


def test_scorecam_baseline_and_score_options(digits_model, digit_batch):
    x, y = digit_batch
    zero = px.get_method("scorecam")(digits_model).explain(x, y)
    half = px.get_method("scorecam")(digits_model, baseline=0.5).explain(x, y)
    assert not torch.allclose(zero.attribution, half.attribution)
    logit = px.get_method("scorecam")(digits_model, score="output").explain(x, y)
    with torch.no_grad():
        base = digits_model(torch.zeros_like(x)).gather(1, y[:, None])[:, 0]
    assert torch.allclose(logit.extras["baseline_score"], base, atol=1e-5)
    assert torch.allclose(zero.extras["baseline_score"], digits_model(torch.zeros_like(x)).softmax(1)
                          .gather(1, y[:, None])[:, 0].detach(), atol=1e-6)


def test_deeplift_on_a_bundled_model_whose_gradcam_layer_is_a_relu():
    """The clutter CNN names its last ReLU as its Grad-CAM layer; registered as a second submodule it made Captum hook
    that ReLU twice ("used more than once in the network")."""
    from captum.attr import DeepLift as CaptumDeepLift

    model = px.models.load("digits-clutter-cnn")
    x = px.data.clutter_dataset("test", 2, seed=0)[0]
    ours = px.get_method("deeplift")(model, batch_size=2).explain(x, [1, 2]).attribution
    ref = CaptumDeepLift(model.net.eval()).attribute(x, target=[1, 2])
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
