"""The method contract for representation methods (``needs_target = False``): every such registered method runs
through shapes, seeds, batch-size invariance, bad inputs and model-mode restoration on an *encoder*
(the digits CNN's features, (N, 1, 28, 28) -> (N, 1568)), and, when it accepts (N, L, D) inputs, on a token encoder.

A new representation method passes through these tests just by registering (cheap parameters go to
tests/method_params.py).
"""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import pathxai as px
from method_params import FAST_PARAMS, assert_rejects_bad_inputs
from pathxai.models.encoders import digits_cnn_features

REPRESENTATION_METHODS = [name for name in px.list_methods() if not px.get_method(name).needs_target]
TOKEN_METHODS = [name for name in REPRESENTATION_METHODS if 3 in px.get_method(name).input_ndim]
# methods whose result for one image does not depend on the other images of the batch (deterministic ones, RELAX,
# whose masks are shared by all images, and SIFT-RELAX, whose gains depend on the mask index only; SmoothGrad's noise
# is drawn per position in the batch)
BATCH_INDEPENDENT = [name for name in REPRESENTATION_METHODS
                     if not px.get_method(name).stochastic or name in ("relax", "u_relax", "sift_relax")]


pytestmark = pytest.mark.usefixtures("one_thread")   # tiny models: one thread (conftest.py)


@pytest.fixture(scope="module")
def encoder() -> nn.Module:
    return digits_cnn_features()


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    x, _ = px.data.digits("test")
    return x[:3].clone()


class TokenEncoder(nn.Module):
    """(N, L, D) -> (N, 8): a tiny attention-free text encoder; all-zero rows are absent tokens."""

    def __init__(self, d: int = 6) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(d, 8)
        self.act = nn.ReLU()
        self.out = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        present = (x != 0).any(-1, keepdim=True).to(x.dtype)
        pooled = (self.act(self.proj(x)) * present).sum(1) / present.sum(1).clamp_min(1.0)
        return self.act(self.out(pooled)) + 0.01


def make(name: str, model, **kwargs):
    params = dict(FAST_PARAMS.get(name, {}))
    params.update(kwargs)
    return px.get_method(name)(model, **params)


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def test_the_representation_methods_are_registered():
    for name in ["relax", "u_relax", "rep_saliency", "rep_smooth_saliency", "rep_guided_saliency"]:
        assert name in REPRESENTATION_METHODS
        assert px.describe_methods()[name]
    assert not any(px.get_method(n).needs_target for n in REPRESENTATION_METHODS)


@pytest.mark.parametrize("name", REPRESENTATION_METHODS)
def test_shapes_and_meta(name, encoder, batch):
    e = make(name, encoder, batch_size=4).explain(batch)
    assert e.attribution.shape[0] == 3
    assert e.attribution.dtype == torch.float32 and not e.attribution.requires_grad
    assert torch.isfinite(e.attribution).all()
    assert e.saliency().shape == (3, 28, 28)
    assert e.meta["method"] == name and e.meta["target"] is None
    assert e.meta["model_evaluations"] > 0 and e.meta["wall_time_s"] > 0
    assert max(e.meta["chunk_sizes"]) <= 4
    for value in e.extras.values():
        if isinstance(value, torch.Tensor):
            assert torch.isfinite(value).all()


@pytest.mark.parametrize("name", REPRESENTATION_METHODS)
def test_seeded_determinism(name, encoder, batch):
    a = make(name, encoder, batch_size=2, seed=7).explain(batch).attribution
    b = make(name, encoder, batch_size=2, seed=7).explain(batch).attribution
    assert torch.equal(a, b)
    if px.get_method(name).stochastic:
        c = make(name, encoder, batch_size=2, seed=8).explain(batch).attribution
        assert not torch.equal(a, c), "a different seed must change a stochastic method's result"


@pytest.mark.parametrize("name", REPRESENTATION_METHODS)
def test_batch_size_invariance(name, encoder, batch):
    a = make(name, encoder, batch_size=1).explain(batch)
    b = make(name, encoder, batch_size=64).explain(batch)
    assert rel_diff(a.attribution, b.attribution) < 1e-5
    for key, value in a.extras.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            assert rel_diff(value, b.extras[key]) < 1e-5, key


@pytest.mark.parametrize("name", BATCH_INDEPENDENT)
def test_each_image_is_explained_on_its_own(name, encoder, batch):
    method = make(name, encoder, batch_size=5)
    together = method.explain(batch).attribution
    for i in range(3):
        assert rel_diff(together[i], method.explain(batch[i:i + 1]).attribution[0]) < 1e-5


@pytest.mark.parametrize("name", REPRESENTATION_METHODS)
def test_a_target_is_refused(name, encoder, batch):
    method = make(name, encoder, batch_size=4)
    with pytest.raises(ValueError, match=rf"method '{name}' explains a representation and takes no target; "
                                         r"got target=3"):
        method.explain(batch, 3)


@pytest.mark.parametrize("name", REPRESENTATION_METHODS)
def test_bad_inputs(name, encoder, batch):
    method = make(name, encoder, batch_size=4)
    assert_rejects_bad_inputs(method, batch, "digits-cnn-features")
    with pytest.raises(TypeError, match=r"returned dict with keys \['representation'\], not a logits tensor.*"
                                        r"px.models.adapt\(model, output=\"representation\"\)"):
        make(name, DictOutput(encoder), batch_size=4).explain(batch)
    # a tuple's first element is the output (e.g. transformers models called with return_dict=False)
    plain = make(name, encoder, batch_size=4).explain(batch).attribution
    torch.testing.assert_close(make(name, TupleOutput(encoder), batch_size=4).explain(batch).attribution, plain)


class DictOutput(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, inp):
        return {"representation": self.net(inp)}


class TupleOutput(DictOutput):
    def forward(self, inp):
        return self.net(inp), inp


@pytest.mark.parametrize("name", REPRESENTATION_METHODS)
def test_rank_is_checked_without_a_declared_input_shape(name, encoder, batch):
    bare = nn.Sequential(encoder.trunk, nn.Flatten())
    assert not hasattr(bare, "input_shape")
    expected = re.escape(px.get_method(name).input_expected)
    with pytest.raises(ValueError, match=rf"x must have shape {expected} \(\d( or \d)* dims\), got shape \(28\) "
                                         r"\(1 dims\)"):
        make(name, bare, batch_size=4).explain(batch[0, 0, 0])


@pytest.mark.parametrize("name", REPRESENTATION_METHODS)
def test_model_mode_and_parameters_restored(name, encoder, batch):
    encoder.train()
    flags = [p.requires_grad for p in encoder.parameters()]
    try:
        make(name, encoder, batch_size=4).explain(batch)
        assert encoder.training and all(m.training for m in encoder.modules())
        assert [p.requires_grad for p in encoder.parameters()] == flags
    finally:
        encoder.eval()


@pytest.mark.parametrize("name", REPRESENTATION_METHODS)
def test_bad_constructor_arguments(name, encoder):
    with pytest.raises(ValueError, match="batch_size must be a positive int or 'auto'"):
        px.get_method(name)(encoder, batch_size=0)
    with pytest.raises(TypeError, match="batch_size must be a positive int or 'auto'"):
        px.get_method(name)(encoder, batch_size="big")
    with pytest.raises(TypeError, match="model must be callable"):
        px.get_method(name)(42)


@pytest.mark.parametrize("name", TOKEN_METHODS)
def test_token_inputs(name):
    enc = TokenEncoder()
    x = torch.randn(2, 5, 6)
    x[1, 4] = 0.0  # the second sentence is one token shorter
    a = make(name, enc, batch_size=3, seed=1).explain(x)
    b = make(name, enc, batch_size=64, seed=1).explain(x)
    assert a.attribution.shape in [(2, 5), (2, 5, 6)]
    assert torch.isfinite(a.attribution).all()
    assert rel_diff(a.attribution, b.attribution) < 1e-5
    with pytest.raises(ValueError, match=r"saliency\(\) needs image inputs"):
        a.saliency()
    if 2 not in px.get_method(name).input_ndim:
        with pytest.raises(ValueError, match=r"x must have shape \(N, C, H, W\) or \(N, L, D\).*got shape \(5, 6\)"):
            make(name, enc).explain(x[0])


class DetachedOutput(DictOutput):
    """The encoder's representation cut from the autograd graph (as an encoder going through NumPy would be)."""

    def forward(self, inp):
        return self.net(inp).detach()


@pytest.mark.parametrize("name", REPRESENTATION_METHODS)
def test_explain_under_no_grad_and_missing_gradients(name, encoder, batch):
    """``torch.no_grad()`` is lifted by the evaluator; inference mode and a detached representation either do not
    matter (perturbation methods) or are named -- never autograd's 'element 0 of tensors does not require grad'."""
    expected = make(name, encoder, batch_size=2).explain(batch).attribution
    with torch.no_grad():
        assert torch.equal(make(name, encoder, batch_size=2).explain(batch).attribution, expected)
    try:
        with torch.inference_mode():
            got = make(name, encoder, batch_size=2).explain(batch).attribution
    except px.core.GradientUnavailableError as err:
        assert "call explain outside torch.inference_mode()" in str(err)
    else:
        assert torch.equal(got, expected)
    try:
        got = make(name, DetachedOutput(encoder), batch_size=2).explain(batch).attribution
    except px.core.GradientUnavailableError as err:
        assert "does not depend differentiably" in str(err) and "occlusion" in str(err)
    else:
        assert torch.equal(got, expected)
