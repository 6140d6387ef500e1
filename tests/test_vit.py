"""Vision transformers: Grad-CAM on token layers, the attention rollouts, clutter-vit, evaluate(model=).

Tests on transformers ViTs run in the default environment (random tiny models); tests on timm models are marked
``vision`` and skip without timm (run them in an environment with torchvision + timm).
"""
from __future__ import annotations

import copy

import pytest
import torch

import pathxai as px
from method_params import tiny_vit
from pathxai.methods.attention_rollout import gradient_rollout, iter_attention, rollout
from pathxai.methods.gradcam import default_gradcam_layer

LAST_NORM = "net.model.vit.layers.2.layernorm_before"   # tiny_vit: 3 blocks


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@pytest.fixture(scope="module")
def vit():
    return tiny_vit()


@pytest.fixture(scope="module")
def eager_vit(vit):
    """The same weights with transformers' explicit (eager) attention, which can return its probabilities."""
    from pathxai.models.vit import build_vit

    config = copy.deepcopy(vit.net.model.config)
    config._attn_implementation = "eager"
    net = build_vit(config)
    net.load_state_dict(vit.net.state_dict())
    return net.model.eval()


@pytest.fixture(scope="module")
def x():
    return px.data.digits("test")[0][:3].clone()


def explicit_attentions(eager_vit, x, grad_classes=None):
    """(attentions per layer (N, H, T, T), logits) from transformers' own eager attention; with ``grad_classes``
    also d logit[class] / d A per layer (the attentions are in the graph in eager mode)."""
    out = eager_vit(pixel_values=x, output_attentions=True)
    if grad_classes is None:
        return [a.detach() for a in out.attentions], None
    grads = torch.autograd.grad(out.logits.gather(1, grad_classes[:, None]).sum(), out.attentions)
    return [a.detach() for a in out.attentions], [g.detach() for g in grads]


# ---------------------------------------------------------------------------------------------------------------
# capturing attention


def test_captured_attention_equals_the_explicit_attention(vit, eager_vit, x):
    assert vit.net.model.config._attn_implementation == "sdpa"   # fused: A is never materialised by the model
    ours = list(iter_attention(vit, x))
    ref, _ = explicit_attentions(eager_vit, x)
    assert [n for n, _ in ours] == [f"net.model.vit.layers.{i}.attention" for i in range(3)]
    assert len(ours) == len(ref) == 3
    for (_, a), b in zip(ours, ref):
        assert a.shape == (3, 4, 17, 17)
        assert (a - b).abs().max() <= 1e-5
    # peaked attention (far from uniform 1/17), so the comparisons below can fail
    assert ref[0].max() > 0.3


def test_an_unknown_attention_variant_fails_loudly(x):
    model = tiny_vit()
    attn = model.net.model.vit.layers[1].attention
    original = attn.forward

    def variant(hidden_states, *args, **kwargs):  # e.g. a bias term the q/k/v recomputation does not know about
        out, weights = original(hidden_states, *args, **kwargs)
        return out + 0.1 * hidden_states, weights

    attn.forward = variant
    with pytest.raises(ValueError, match="net.model.vit.layers.1.attention.*do not reproduce its output"):
        px.get_method("attention_rollout")(model, batch_size=4).explain(x)


# ---------------------------------------------------------------------------------------------------------------
# attention rollout (Abnar & Zuidema 2020)


def test_rollout_equals_the_brute_force_product_of_the_returned_attentions(vit, eager_vit, x):
    e = px.get_method("attention_rollout")(vit, batch_size=2).explain(x)
    ref, _ = explicit_attentions(eager_vit, x)
    eye = torch.eye(17)
    r = eye.expand(3, 17, 17)
    for a in ref:   # layer by layer, from the input up
        r = (0.5 * a.mean(1) + 0.5 * eye) @ r
    assert e.attribution.shape == (3, 1, 4, 4)
    assert rel(e.attribution.flatten(1), r[:, 0, 1:]) < 1e-5
    assert rel(e.extras["rollout"], r) < 1e-5
    assert e.extras["prefix_tokens"] == 1 and e.extras["grid"] == (4, 4)
    assert e.meta["params"]["attention_layers"] == [f"net.model.vit.layers.{i}.attention" for i in range(3)]


def test_rollout_is_row_stochastic_and_uniform_attention_gives_a_uniform_map(vit, x):
    e = px.get_method("attention_rollout")(vit, batch_size=4).explain(x)
    assert torch.allclose(e.extras["rollout"].sum(-1), torch.ones(3, 17), atol=1e-5)
    assert (e.extras["rollout"] >= 0).all()
    assert e.attribution.std() > 1e-3   # peaked attention: a non-uniform map
    # zero queries -> every attention row is uniform 1/T; then Â^L = 0.5^L I + (1 - 0.5^L) J / T
    flat = copy.deepcopy(vit)
    for layer in flat.net.model.vit.layers:
        torch.nn.init.zeros_(layer.attention.q_proj.weight)
        torch.nn.init.zeros_(layer.attention.q_proj.bias)
    u = px.get_method("attention_rollout")(flat, batch_size=4).explain(x)
    expected = (1 - 0.5 ** 3) / 17
    assert torch.allclose(u.attribution, torch.full_like(u.attribution, expected), atol=1e-6)


def test_rollout_functions_on_hand_made_matrices():
    # two layers, one head, 3 tokens: identity attention keeps R = I (no flow between tokens)
    eye = torch.eye(3).expand(1, 1, 3, 3)
    assert torch.allclose(rollout([eye, eye]), torch.eye(3).expand(1, 3, 3))
    a = torch.tensor([[[[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]]])
    expected = (0.5 * a[0, 0] + 0.5 * torch.eye(3)) @ (0.5 * a[0, 0] + 0.5 * torch.eye(3))
    assert torch.allclose(rollout([a, a])[0], expected)
    # Chefer: R = I + Ā after one layer, with Ā = ReLU(∇A ⊙ A) averaged over heads
    g = torch.tensor([[[[1.0, -2.0, 0.5]] * 3, [[-1.0, 2.0, 0.0]] * 3]])
    two = torch.full((1, 2, 3, 3), 0.5)
    r = gradient_rollout([two], [g])
    assert torch.allclose(r[0], torch.eye(3) + (g * two).clamp_min(0).mean(1)[0])


def test_rollout_is_class_agnostic(vit, x):
    method = px.get_method("attention_rollout")(vit, batch_size=4)
    assert torch.equal(method.explain(x, 1).attribution, method.explain(x, 7).attribution)


# ---------------------------------------------------------------------------------------------------------------
# gradient-weighted rollout (Chefer, Gur & Wolf 2021)


def test_grad_rollout_equals_the_brute_force_rule_on_the_returned_attentions(vit, eager_vit, x):
    classes = torch.tensor([1, 4, 9])
    e = px.get_method("grad_rollout")(vit, batch_size=2).explain(x, classes)
    att, grads = explicit_attentions(eager_vit, x, classes)
    r = torch.eye(17).expand(3, 17, 17)
    for a, g in zip(att, grads):
        r = r + (g * a).clamp_min(0).mean(1) @ r
    assert e.attribution.shape == (3, 1, 4, 4)
    assert rel(e.attribution.flatten(1), r[:, 0, 1:]) < 1e-5
    assert e.attribution.abs().max() > 1e-4   # not a trivially zero map


def test_grad_rollout_is_class_specific(vit, x):
    method = px.get_method("grad_rollout")(vit, batch_size=4)
    a, b = method.explain(x, 1).attribution, method.explain(x, 7).attribution
    assert rel(a, b) > 0.05


def test_rollouts_refuse_models_without_global_attention(digits_model):
    with pytest.raises(ValueError, match="needs a vision transformer"):
        px.get_method("grad_rollout")(digits_model)
    with pytest.raises(TypeError, match="needs an nn.Module model"):
        px.get_method("attention_rollout")(lambda t: t.flatten(1)[:, :10])
    transformers = pytest.importorskip("transformers")
    from pathxai.models.vit import HFLogits

    swin = HFLogits(transformers.SwinForImageClassification(transformers.SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4, num_labels=3)))
    with pytest.raises(ValueError, match="windowed attention"):
        px.get_method("attention_rollout")(swin)


# ---------------------------------------------------------------------------------------------------------------
# Grad-CAM on token layers


def test_gradcam_picks_the_last_pre_attention_norm_and_follows_the_formula(vit, x):
    y = torch.tensor([2, 5, 7])
    e = px.get_method("gradcam")(vit, batch_size=2).explain(x, y)
    assert e.meta["params"]["layer"] == LAST_NORM
    assert e.extras == {"layout": "tokens", "prefix_tokens": 1}
    layer = vit.get_submodule(LAST_NORM)
    acts = {}
    handle = layer.register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    out = vit(x.clone().requires_grad_(True))
    handle.remove()
    grad = torch.autograd.grad(out.gather(1, y[:, None]).sum(), acts["a"])[0]
    a, g = acts["a"][:, 1:].detach(), grad[:, 1:]               # drop CLS: (3, 16, 32)
    cam = torch.relu((g.mean(1, keepdim=True) * a).sum(-1))   # w_c = mean over the patch tokens
    assert e.attribution.shape == (3, 1, 4, 4)
    assert rel(e.attribution.flatten(1), cam.reshape(3, 16)) < 1e-5   # tokens in row-major grid order
    assert e.attribution.max() > 0


def test_the_last_block_output_gives_patch_tokens_zero_gradient(vit, x):
    """Why the default layer is the norm *before* the last attention: only CLS reaches the head afterwards."""
    block = vit.get_submodule("net.model.vit.layers.2")
    acts = {}
    handle = block.register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    out = vit(x.clone().requires_grad_(True))
    handle.remove()
    grad = torch.autograd.grad(out[:, 3].sum(), acts["a"])[0]
    assert torch.count_nonzero(grad[:, 1:]) == 0 and grad[:, 0].abs().sum() > 0
    at_output = px.get_method("gradcam")(vit, layer="net.model.vit.layers.2", relu=False).explain(x, 3)
    assert torch.count_nonzero(at_output.attribution) == 0
    assert torch.count_nonzero(px.get_method("gradcam")(vit, relu=False).explain(x, 3).attribution) == 3 * 16


def test_gradcam_reshape_for_layouts_we_do_not_recognise(vit, x):
    def to_grid(t):   # drop CLS, (N, 16, C) -> (N, C, 4, 4)
        return t[:, 1:].transpose(1, 2).reshape(t.shape[0], t.shape[2], 4, 4)

    auto = px.get_method("gradcam")(vit).explain(x, 3)
    manual = px.get_method("gradcam")(vit, layer=LAST_NORM, reshape=to_grid).explain(x, 3)
    assert torch.allclose(auto.attribution, manual.attribution, atol=1e-7)
    assert manual.meta["params"]["reshape"].endswith("to_grid")
    # the shape is the model chunk's: batch_size="auto" may split the 3 images (it does on a loaded machine)
    with pytest.raises(ValueError, match=r"reshape must map the layer output of shape \([123], 17, 32\) to \(N, C, h, w\)"):
        px.get_method("gradcam")(vit, reshape=lambda t: t).explain(x, 3)
    with pytest.raises(TypeError, match="reshape must be a callable"):
        px.get_method("gradcam")(vit, reshape="grid")


class LinearPatchTransformer(torch.nn.Module):
    """Patches embedded by a Linear layer (no conv to read the grid from), torch's own pre-norm encoder layers."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(49, 16)
        self.blocks = torch.nn.Sequential(*[torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True,
                                                                             norm_first=True) for _ in range(2)])
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x):
        patches = torch.nn.functional.unfold(x, 7, stride=7).transpose(1, 2)   # (N, 16, 49)
        return self.head(self.blocks(self.embed(patches)).mean(1))


def test_gradcam_asks_for_reshape_when_it_cannot_tell_the_grid(x):
    torch.manual_seed(0)
    model = LinearPatchTransformer().eval()
    assert default_gradcam_layer(model)[0] == "blocks.1.norm1"
    with pytest.raises(ValueError, match=r"cannot tell the \(h, w\) patch grid of the 16 tokens.*pass reshape="):
        px.get_method("gradcam")(model).explain(x, 0)
    e = px.get_method("gradcam")(model, reshape=lambda t: t.transpose(1, 2).reshape(t.shape[0], -1, 4, 4)).explain(x, 0)
    assert e.attribution.shape == (3, 1, 4, 4)


def test_gradcam_never_explains_a_stem_convolution():
    stem_only = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 7, stride=7), torch.nn.Flatten(), torch.nn.Linear(128, 10))
    with pytest.raises(ValueError, match=r"only nn.Conv2d \('0'\) is its input stem.*pass layer="):
        px.get_method("gradcam")(stem_only)
    with pytest.raises(ValueError, match="no nn.Conv2d layer and no recognisable transformer blocks.*pass layer="):
        px.get_method("gradcam")(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)))


def test_gradcam_records_qualified_layer_names_for_cnns(digits_model, digit_batch):
    x, y = digit_batch
    assert px.get_method("gradcam")(digits_model).explain(x, y).meta["params"]["layer"] == "net.features.6"
    plain = digits_model.net   # no declared gradcam_layer: the last conv by name
    assert px.get_method("gradcam")(plain).params()["layer"] == "features.6"
    with pytest.raises(ValueError, match="is not a submodule of the model"):
        px.get_method("gradcam")(digits_model, layer=torch.nn.Conv2d(1, 1, 1))


def test_gradcam_on_transformers_deit_and_swin():
    transformers = pytest.importorskip("transformers")
    from pathxai.models.vit import HFLogits

    torch.manual_seed(0)
    deit = HFLogits(transformers.DeiTForImageClassificationWithTeacher(transformers.DeiTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        num_labels=3, num_channels=1))).eval()
    x = torch.rand(2, 1, 32, 32)
    e = px.get_method("gradcam")(deit).explain(x, 1)
    assert e.meta["params"]["layer"] == "model.deit.layers.1.layernorm_before"
    assert e.extras["prefix_tokens"] == 2 and e.attribution.shape == (2, 1, 4, 4)   # CLS + distillation dropped
    r = px.get_method("attention_rollout")(deit).explain(x, 1)
    assert r.extras["prefix_tokens"] == 2 and r.attribution.shape == (2, 1, 4, 4)
    swin = HFLogits(transformers.SwinForImageClassification(transformers.SwinConfig(
        image_size=64, patch_size=4, embed_dim=16, depths=[1, 2], num_heads=[1, 2], window_size=4, num_labels=3,
        num_channels=1))).eval()
    x = torch.rand(2, 1, 64, 64)
    e = px.get_method("gradcam")(swin).explain(x, 1)
    # (N, 64, C) tokens of the last stage on the 8 x 8 grid the block receives (64 / 4 patches, merged once)
    assert e.meta["params"]["layer"] == "model.swin.encoder.layers.1.blocks.1.layernorm_before"
    assert e.attribution.shape == (2, 1, 8, 8) and e.extras["prefix_tokens"] == 0


# ---------------------------------------------------------------------------------------------------------------
# timm (marked `vision`: needs torchvision + timm)


def _timm():
    return pytest.importorskip("timm")


@pytest.mark.vision
@pytest.mark.parametrize("arch,kw,prefix,grid", [
    ("vit_tiny_patch16_224", dict(img_size=64, depth=3), 1, (4, 4)),
    ("deit_tiny_distilled_patch16_224", dict(img_size=64, depth=3), 2, (4, 4)),
    ("vit_small_patch14_reg4_dinov2", dict(img_size=56, depth=3), 5, (4, 4)),
])
def test_timm_vits(arch, kw, prefix, grid):
    timm = _timm()
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=5, **kw).eval()
    assert model.num_prefix_tokens == prefix
    x = torch.rand(2, 3, kw["img_size"], kw["img_size"])
    y = torch.tensor([1, 3])
    e = px.get_method("gradcam")(model, batch_size=1).explain(x, y)
    assert e.meta["params"]["layer"] == "blocks.2.norm1"      # not patch_embed.proj, the only Conv2d
    assert e.extras == {"layout": "tokens", "prefix_tokens": prefix} and e.attribution.shape == (2, 1, *grid)
    # Grad-CAM by hand at blocks.2.norm1
    acts = {}
    handle = model.blocks[2].norm1.register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    out = model(x.clone().requires_grad_(True))
    handle.remove()
    g = torch.autograd.grad(out.gather(1, y[:, None]).sum(), acts["a"])[0][:, prefix:]
    cam = torch.relu((g.mean(1, keepdim=True) * acts["a"][:, prefix:].detach()).sum(-1))
    assert rel(e.attribution.flatten(1), cam) < 1e-5
    # captured attention vs timm's explicit attention (fused_attn off, probabilities hooked at attn_drop)
    explicit = []
    handles = []
    for blk in model.blocks:
        blk.attn.fused_attn = False
        handles.append(blk.attn.attn_drop.register_forward_hook(lambda m, i, o: explicit.append(o.detach())))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    for blk in model.blocks:
        blk.attn.fused_attn = True
    ours = [a for _, a in iter_attention(model, x)]
    assert len(ours) == len(explicit) == 3
    assert max(float((a - b).abs().max()) for a, b in zip(ours, explicit)) <= 1e-5
    r = px.get_method("attention_rollout")(model, batch_size=2).explain(x, y)
    assert r.extras["prefix_tokens"] == prefix and r.attribution.shape == (2, 1, *grid)
    eye = torch.eye(ours[0].shape[-1])
    ref = eye.expand(2, *eye.shape)
    for a in explicit:
        ref = (0.5 * a.mean(1) + 0.5 * eye) @ ref
    assert rel(r.attribution.flatten(1), ref[:, 0, prefix:]) < 1e-5
    assert px.get_method("grad_rollout")(model, batch_size=2).explain(x, y).attribution.shape == (2, 1, *grid)


@pytest.mark.vision
def test_timm_swin_gradcam_on_channels_last_stages():
    timm = _timm()
    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=5, depths=(1, 1, 1, 2),
                              embed_dim=24, num_heads=(1, 1, 1, 1)).eval()
    x = torch.rand(2, 3, 224, 224)
    e = px.get_method("gradcam")(model, batch_size=2).explain(x, 1)
    assert e.meta["params"]["layer"] == "layers.3.blocks.1.norm1" and e.extras["layout"] == "nhwc"
    acts = {}
    handle = model.layers[3].blocks[1].norm1.register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    out = model(x.clone().requires_grad_(True))
    handle.remove()
    g = torch.autograd.grad(out[:, 1].sum(), acts["a"])[0]                  # (2, 7, 7, C)
    cam = torch.relu((g.mean((1, 2), keepdim=True) * acts["a"].detach()).sum(-1))
    assert e.attribution.shape == (2, 1, 7, 7) and rel(e.attribution[:, 0], cam) < 1e-5
    with pytest.raises(ValueError, match="windowed attention"):
        px.get_method("attention_rollout")(model)


# ---------------------------------------------------------------------------------------------------------------
# clutter-vit and evaluate(model=)


def test_train_clutter_vit_is_reproducible():
    pytest.importorskip("transformers")
    from pathxai.models.vit import build_vit, clutter_vit_config, train_clutter_vit

    config = clutter_vit_config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    a, stats = train_clutter_vit(n_train=48, epochs=1, seed=3, evaluate=False, config=config)
    b, _ = train_clutter_vit(n_train=48, epochs=1, seed=3, evaluate=False, config=config)
    assert set(stats) == {"train_seconds", "train_cpu_seconds"} and not a.training
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(build_vit(config, seed=3).state_dict()["model.classifier.weight"],
                           sa["model.classifier.weight"])   # it did train


def test_clutter_vit_loader_follows_the_model_conventions(monkeypatch, tmp_path):
    pytest.importorskip("transformers")
    import pathxai.models.vit as vit_module

    monkeypatch.setenv("PATHXAI_CACHE", str(tmp_path))
    calls = []

    def fake_train():   # the real training takes minutes: an untrained net of the real architecture
        calls.append(1)
        return vit_module.build_vit(), {"test_accuracy": 0.5, "no_digit_accuracy": 0.1, "train_seconds": 1.0,
                                         "train_cpu_seconds": 1.0}

    monkeypatch.setattr(vit_module, "train_clutter_vit", fake_train)
    model = px.models.load("clutter-vit")
    assert model.model_name == "clutter-vit" and model.class_names == [str(i) for i in range(10)]
    assert model.input_size == (64, 64) and model.input_shape == (1, 64, 64)
    assert model.test_accuracy == 0.5 and model.no_digit_accuracy == 0.1
    assert model.gradcam_layer is model.get_submodule("net.model.vit.layers.3.layernorm_before")
    assert len(list(tmp_path.glob("clutter_vit_v*_tf*.pt"))) == 1
    again = px.models.load("clutter-vit")
    assert calls == [1]    # the second load reads the cache
    sa, sb = model.state_dict(), again.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    x = px.data.load_suite("digits-clutter", n_images=2).batch()[0]
    e = px.get_method("gradcam")(model, batch_size=2).explain(x, 0)
    assert e.meta["params"]["layer"] == "net.model.vit.layers.3.layernorm_before"
    assert e.attribution.shape == (2, 1, 8, 8)


@pytest.mark.slow
def test_clutter_vit_reads_the_digit():
    """The real model (trained once, a few CPU minutes, then cached): accuracy >= 0.9, near chance without digit."""
    pytest.importorskip("transformers")
    from pathxai.models.clutter import evaluate_clutter_cnn

    model = px.models.load("clutter-vit")
    assert model.test_accuracy >= 0.9 and model.no_digit_accuracy < 0.25
    assert evaluate_clutter_cnn(model) == pytest.approx(model.test_accuracy, abs=1e-6)


def test_evaluate_takes_another_model(vit):
    r = px.evaluate("digits", ["gradcam", "attention_rollout"], ["deletion", "pointing"], n_images=2, steps=4,
                    batch_size=2, model=vit, progress=False)
    assert r.model == "tiny-vit"
    assert r.scores[("attention_rollout", "deletion")].shape == (2,)
    assert r.saliency["gradcam"].shape == (2, 28, 28)
    r = px.evaluate("digits", ["gradcam"], ["pointing"], n_images=2, batch_size=2, model="digits-cnn", progress=False)
    assert r.model == "digits-cnn"
    with pytest.raises(TypeError, match="model must be a model name, a model file path or an nn.Module, got int"):
        px.evaluate("digits", ["gradcam"], ["pointing"], n_images=2, model=42)
