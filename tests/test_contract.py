"""One contract, every registered method: shapes, seeds, batch-size invariance, targets, bad inputs.

A new method passes through these tests just by registering (and, if its defaults are slow, adding cheap parameters
to tests/method_params.py).
"""
from __future__ import annotations

import pytest
import torch

import pathxai as px
from method_params import FAST_PARAMS, assert_rejects_bad_inputs, tiny_vit

IMAGE_METHODS = [name for name in px.list_methods() if 4 in px.get_method(name).input_ndim
                 and px.get_method(name).needs_target
                 and not getattr(px.get_method(name), "needs_transformer", False)]
# methods that only work on vision transformers (attention rollouts): run on a tiny ViT at the end of this file
TRANSFORMER_METHODS = [name for name in px.list_methods()
                       if getattr(px.get_method(name), "needs_transformer", False)]


def make(name: str, model, **kwargs):
    params = dict(FAST_PARAMS.get(name, {}))
    params.update(kwargs)
    return px.get_method(name)(model, **params)


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def test_registry_lists_the_baselines():
    for name in ["ig", "smoothgrad", "gradient_x_input", "gradcam", "occlusion", "rise"]:
        assert name in px.list_methods()
        assert px.get_method(name).name == name
        assert px.describe_methods()[name]
    assert px.get_method("IG") is px.get_method("ig")
    with pytest.raises(ValueError, match="unknown method 'nope'.*available: .*ig"):
        px.get_method("nope")


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_shapes_and_meta(name, digits_model, digit_batch):
    x, _ = digit_batch
    e = make(name, digits_model, batch_size=4).explain(x)
    assert e.attribution.shape[0] == 3
    assert e.attribution.dtype == torch.float32 and not e.attribution.requires_grad
    assert torch.isfinite(e.attribution).all()
    assert e.saliency().shape == (3, 28, 28)
    assert e.meta["method"] == name
    assert e.meta["model_evaluations"] > 0 and e.meta["wall_time_s"] > 0
    assert max(e.meta["chunk_sizes"]) <= 4
    assert e.meta["target"] == digits_model(x).argmax(1).tolist()


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_seeded_determinism(name, digits_model, digit_batch):
    x, y = digit_batch
    a = make(name, digits_model, batch_size=2, seed=7).explain(x, y).attribution
    b = make(name, digits_model, batch_size=2, seed=7).explain(x, y).attribution
    assert torch.equal(a, b)
    if px.get_method(name).stochastic:
        c = make(name, digits_model, batch_size=2, seed=8).explain(x, y).attribution
        assert not torch.equal(a, c), "a different seed must change a stochastic method's result"


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_batch_size_invariance(name, digits_model, digit_batch):
    x, y = digit_batch
    a = make(name, digits_model, batch_size=1).explain(x, y).attribution
    b = make(name, digits_model, batch_size=64).explain(x, y).attribution
    assert rel_diff(a, b) < 1e-5


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_per_sample_targets(name, digits_model, digit_batch):
    x, _ = digit_batch
    targets = [3, 5, 8]
    method = make(name, digits_model, batch_size=4)
    mixed = method.explain(x, targets).attribution
    for i, t in enumerate(targets):
        single = method.explain(x, t).attribution
        assert rel_diff(mixed[i], single[i]) < 1e-5
    assert method.explain(x, torch.tensor(targets)).meta["target"] == targets
    # the predicted class is what target=None explains
    pred = digits_model(x).argmax(1)
    assert rel_diff(method.explain(x, None).attribution, method.explain(x, pred).attribution) < 1e-6


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_callable_target(name, digits_model, digit_batch):
    x, _ = digit_batch
    e = make(name, digits_model, batch_size=4).explain(x, lambda out: out[:, 2] - out[:, 7])
    assert e.attribution.shape[0] == 3 and torch.isfinite(e.attribution).all()
    assert e.meta["target"] == "callable"


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_bad_inputs(name, digits_model, digit_batch):
    x, _ = digit_batch
    method = make(name, digits_model, batch_size=4)
    assert_rejects_bad_inputs(method, x, "digits-cnn")
    with pytest.raises(ValueError, match=r"target class 10 is out of range.*0 <= target < 10"):
        method.explain(x, 10)
    with pytest.raises(ValueError, match=r"target must be >= 0"):
        method.explain(x, -1)
    with pytest.raises(ValueError, match=r"target must be an int or have shape \(N,\) = \(3,\).*got shape \(2,\)"):
        method.explain(x, [1, 2])
    with pytest.raises(TypeError, match=r"target must hold integer class indices"):
        method.explain(x, torch.tensor([1.0, 2.0, 3.0]))

    with pytest.raises(TypeError, match=r"model output must be a torch.Tensor of shape \(N, \.\.\.\), got dict"):
        make(name, DictOutput(digits_model), batch_size=4).explain(x, 1)
    with pytest.raises(TypeError, match=r"model output must be a single torch.Tensor.*got a tuple"):
        make(name, TupleOutput(digits_model), batch_size=4).explain(x)


class DictOutput(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, inp):
        return {"logits": self.net(inp)}


class TupleOutput(DictOutput):
    def forward(self, inp):
        return self.net(inp), inp


@pytest.mark.parametrize("name", [n for n in IMAGE_METHODS if px.get_method(n).input_ndim == (4,)])
def test_image_methods_check_rank_without_a_declared_input_shape(name, digits_model, digit_batch):
    x, _ = digit_batch
    plain = digits_model.net  # the bare network declares no input_shape
    assert not hasattr(plain, "input_shape")
    with pytest.raises(ValueError, match=r"x must have shape \(N, C, H, W\) \(4 dims\), got shape \(1, 28, 28\)"):
        make(name, plain, batch_size=4).explain(x[0])


def test_gradcam_rejects_a_model_without_conv_layers():
    with pytest.raises(ValueError, match="no nn.Conv2d layer"):
        px.get_method("gradcam")(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)))


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_model_mode_and_parameters_restored(name, digits_model, digit_batch):
    x, y = digit_batch
    digits_model.train()
    flags = [p.requires_grad for p in digits_model.parameters()]
    try:
        make(name, digits_model, batch_size=4).explain(x, y)
        assert digits_model.training
        assert [p.requires_grad for p in digits_model.parameters()] == flags
    finally:
        digits_model.eval()


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_bad_constructor_arguments(name, digits_model):
    with pytest.raises(ValueError, match="batch_size must be a positive int or 'auto'"):
        px.get_method(name)(digits_model, batch_size=0)
    with pytest.raises(TypeError, match="batch_size must be a positive int or 'auto'"):
        px.get_method(name)(digits_model, batch_size="big")
    with pytest.raises(TypeError, match="model must be callable"):
        px.get_method(name)(42)


# ---------------------------------------------------------------------------------------------------------------
# the same contract on a tiny vision transformer: the methods that need one, and Grad-CAM's token-layer path


@pytest.fixture(scope="module")
def vit_model():
    return tiny_vit()


VIT_CONTRACT_METHODS = TRANSFORMER_METHODS + ["gradcam"]
VIT_CHECKS = [test_shapes_and_meta, test_seeded_determinism, test_batch_size_invariance, test_per_sample_targets,
              test_callable_target, test_model_mode_and_parameters_restored,
              test_image_methods_check_rank_without_a_declared_input_shape]


def test_transformer_methods_are_declared():
    assert {"attention_rollout", "grad_rollout"} <= set(TRANSFORMER_METHODS)
    assert not set(TRANSFORMER_METHODS) & set(IMAGE_METHODS)


@pytest.mark.parametrize("check", VIT_CHECKS, ids=lambda f: f.__name__.removeprefix("test_"))
@pytest.mark.parametrize("name", VIT_CONTRACT_METHODS)
def test_contract_on_a_tiny_vit(check, name, vit_model, digit_batch):
    check(name, vit_model, digit_batch)


@pytest.mark.parametrize("name", VIT_CONTRACT_METHODS)
def test_bad_inputs_and_arguments_on_a_tiny_vit(name, vit_model, digit_batch):
    x, _ = digit_batch
    method = make(name, vit_model, batch_size=4)
    assert_rejects_bad_inputs(method, x, "tiny-vit")
    with pytest.raises(ValueError, match=r"target class 10 is out of range.*0 <= target < 10"):
        method.explain(x, 10)
    with pytest.raises(TypeError, match=r"model output must be a single torch.Tensor.*got a tuple"):
        make(name, TupleOutput(vit_model), batch_size=4).explain(x)
    test_bad_constructor_arguments(name, vit_model)


@pytest.mark.parametrize("name", TRANSFORMER_METHODS)
def test_transformer_methods_refuse_a_cnn_clearly(name, digits_model):
    with pytest.raises(ValueError, match="needs a vision transformer"):
        px.get_method(name)(digits_model)
