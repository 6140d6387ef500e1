"""One contract, every registered method: shapes, seeds, batch-size invariance, targets, bad inputs.

A new method passes through these tests just by registering (and, if its defaults are slow, adding cheap parameters
to tests/method_params.py).
"""
from __future__ import annotations

import pytest
import torch

import pathxai as px
from method_params import (BAD_PARAMS, COMMON_BAD_PARAMS, FAST_PARAMS, STRUCTURED_FEATURES, STRUCTURED_OUTPUTS,
                           assert_rejects_bad_inputs, required_params, tiny_vit)

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

    # logits in a dict / tuple / ModelOutput are unwrapped (see test_structured_model_outputs_are_unwrapped);
    # an output without logits names what came back and how to adapt the model
    with pytest.raises(TypeError, match=r"returned dict with keys \['scores'\], not a logits tensor.*"
                                        r"px.models.adapt\(model, output=\"scores\"\)"):
        make(name, DictOutput(digits_model, key="scores"), batch_size=4).explain(x, 1)
    with pytest.raises(TypeError, match=r"returned str, not a logits tensor"):
        make(name, StrOutput(digits_model), batch_size=4).explain(x, 1)


class DictOutput(torch.nn.Module):
    def __init__(self, net, key="logits"):
        super().__init__()
        self.net = net
        self.key = key

    def forward(self, inp):
        return {self.key: self.net(inp)}


class StrOutput(DictOutput):
    def forward(self, inp):
        self.net(inp)
        return "logits"


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


# ---------------------------------------------------------------------------------------------- model and autograd
class NanOutput(DictOutput):
    """The wrapped network with every output NaN (a diverged model); keeps its declared input shape."""

    def __init__(self, net):
        super().__init__(net)
        if hasattr(net, "input_shape"):
            self.input_shape = net.input_shape

    def forward(self, inp):
        return self.net(inp) * float("nan")


class DetachedOutput(NanOutput):
    """The wrapped network's output cut from the autograd graph (as a model going through NumPy would be)."""

    def forward(self, inp):
        return self.net(inp).detach()


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_a_model_with_nan_outputs_is_refused(name, digits_model, digit_batch):
    x, _ = digit_batch
    # a class target probes the model first; a callable target goes straight to the method's own evaluations
    for target in (1, lambda out: out[:, 1]):
        with pytest.raises(ValueError, match=r"model output contains NaN/Inf for \d+ item\(s\) \[.*\].*likely causes"):
            make(name, NanOutput(digits_model), batch_size=4).explain(x, target)


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_explain_under_no_grad_gives_the_same_result(name, digits_model, digit_batch):
    x, y = digit_batch
    expected = make(name, digits_model, batch_size=2).explain(x, y).attribution
    with torch.no_grad():  # the evaluator switches grad on where it needs it
        assert torch.equal(make(name, digits_model, batch_size=2).explain(x, y).attribution, expected)


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_missing_gradients_are_explained(name, digits_model, digit_batch):
    """Under inference mode, or with a model whose output is cut from the graph, a method either needs no gradient
    (and gives its usual result) or says why it cannot run -- never autograd's 'element 0 of tensors does not
    require grad'."""
    x, y = digit_batch
    expected = make(name, digits_model, batch_size=2).explain(x, y).attribution
    try:
        with torch.inference_mode():
            got = make(name, digits_model, batch_size=2).explain(x, y).attribution
    except px.core.GradientUnavailableError as err:
        assert "call explain outside torch.inference_mode()" in str(err)
    else:
        assert torch.equal(got, expected)
    try:
        got = make(name, DetachedOutput(digits_model), batch_size=2).explain(x, y).attribution
    except px.core.GradientUnavailableError as err:
        assert "does not depend differentiably" in str(err) and "occlusion" in str(err)
    else:
        assert torch.equal(got, expected)


# ---------------------------------------------------------------------------------------------- every registered method
class Tripwire(torch.nn.Module):
    """The digits CNN's layers (Grad-CAM finds its conv layer), but calling it fails the test."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.calls = 0

    def forward(self, inp):
        self.calls += 1
        raise AssertionError("the model was evaluated while a method was being constructed")


def test_every_registered_method_has_a_bad_parameter_table():
    missing = sorted(set(px.list_methods()) - set(BAD_PARAMS))
    assert not missing, f"add the out-of-range parameters of {missing} to BAD_PARAMS in tests/method_params.py"


@pytest.mark.parametrize("name", px.list_methods())
def test_out_of_range_parameters_are_refused_at_construction(name, digits_model):
    model = Tripwire(tiny_vit() if getattr(px.get_method(name), "needs_transformer", False) else digits_model)
    cls = px.get_method(name)
    cls(model, **required_params(name))  # the defaults are valid
    problems = []
    for param, value in COMMON_BAD_PARAMS + BAD_PARAMS.get(name, []):
        try:
            cls(model, **{**required_params(name), param: value})
        except (ValueError, TypeError) as err:
            if param not in str(err):
                problems.append(f"{param}={value!r}: the message does not name {param}: {err}")
        else:
            problems.append(f"{param}={value!r} was accepted")
    assert not problems, f"{name}: " + "; ".join(problems)
    assert model.calls == 0


@pytest.mark.parametrize("name", px.list_methods())
def test_every_method_refuses_a_model_with_nan_outputs(name, digits_model, digit_batch):
    from pathxai.models.encoders import digits_cnn_features

    cls = px.get_method(name)
    if not cls.needs_target:
        model, x, target = NanOutput(digits_cnn_features()), digit_batch[0], None
    elif 4 in cls.input_ndim:
        net = tiny_vit() if getattr(cls, "needs_transformer", False) else digits_model
        model, x, target = NanOutput(net), digit_batch[0], 1
    else:  # structured black boxes (N, D) -> (N, L)
        net = torch.nn.Sequential(torch.nn.Linear(STRUCTURED_FEATURES, STRUCTURED_OUTPUTS), torch.nn.Sigmoid())
        model = NanOutput(net)
        x, target = torch.rand(3, STRUCTURED_FEATURES), 3
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    method = cls(model, batch_size=4, **{**FAST_PARAMS.get(name, {}), **required_params(name)})
    with pytest.raises(ValueError, match=r"model output contains NaN/Inf"):
        method.explain(x, target)
    if cls.needs_target and 4 not in cls.input_ndim and name != "energy_occlusion":
        # learned selectors (SOInter, L2X) explain with their interpreter: with target=None the black box is not
        # evaluated at all, so there is nothing to refuse
        calls.clear()
        e = method.explain(x, None)
        assert not calls and e.meta["model_evaluations"] == 0 and torch.isfinite(e.attribution).all()


# ---------------------------------------------------------------------------------------------------------------
# the same contract on a tiny vision transformer: the methods that need one, and Grad-CAM's token-layer path


@pytest.fixture(scope="module")
def vit_model():
    return tiny_vit()


# every image method meets the ViT too (bring your own model): the transformer-only methods, Grad-CAM's token path,
# and the model-agnostic ones
VIT_CONTRACT_METHODS = TRANSFORMER_METHODS + IMAGE_METHODS
VIT_CHECKS = [test_shapes_and_meta, test_seeded_determinism, test_batch_size_invariance, test_per_sample_targets,
              test_callable_target, test_model_mode_and_parameters_restored,
              test_image_methods_check_rank_without_a_declared_input_shape]


def test_transformer_methods_are_declared():
    assert {"attention_rollout", "grad_rollout"} <= set(TRANSFORMER_METHODS)
    assert not set(TRANSFORMER_METHODS) & set(IMAGE_METHODS)


@pytest.mark.parametrize("check", VIT_CHECKS, ids=lambda f: f.__name__.removeprefix("test_"))
@pytest.mark.parametrize("name", VIT_CONTRACT_METHODS)
def test_contract_on_a_tiny_vit(check, name, vit_model, digit_batch):
    if check is test_image_methods_check_rank_without_a_declared_input_shape and \
            px.get_method(name).input_ndim != (4,):
        pytest.skip("methods that also take (N, L, D) / (N, D) inputs rely on the model to declare its input shape")
    check(name, vit_model, digit_batch)


@pytest.mark.parametrize("name", VIT_CONTRACT_METHODS)
def test_bad_inputs_and_arguments_on_a_tiny_vit(name, vit_model, digit_batch):
    x, _ = digit_batch
    method = make(name, vit_model, batch_size=4)
    assert_rejects_bad_inputs(method, x, "tiny-vit")
    with pytest.raises(ValueError, match=r"target class 10 is out of range.*0 <= target < 10"):
        method.explain(x, 10)
    # a tuple's first element is the logits (transformers models with return_dict=False)
    torch.testing.assert_close(make(name, TupleOutput(vit_model), batch_size=4, seed=1).explain(x, 1).attribution,
                               make(name, vit_model, batch_size=4, seed=1).explain(x, 1).attribution)
    test_bad_constructor_arguments(name, vit_model)


@pytest.mark.parametrize("name", TRANSFORMER_METHODS)
def test_transformer_methods_refuse_a_cnn_clearly(name, digits_model):
    with pytest.raises(ValueError, match="needs a vision transformer"):
        px.get_method(name)(digits_model)
