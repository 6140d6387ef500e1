"""SAMP / SAMP++: the math of the greedy manipulation path, pinned on models whose line integrals are known."""
from __future__ import annotations

import math

import pytest
import torch

import pathxai as px
from pathxai.methods import default_step_size


class Linear(torch.nn.Module):
    """f(x) = W flatten(x) + c: every path integral is w * (x_E - x_S) exactly."""

    def __init__(self, shape=(3, 5, 4), classes=3, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.shape = shape
        self.lin = torch.nn.Linear(math.prod(shape), classes)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(classes, math.prod(shape), generator=g))
            self.lin.bias.copy_(torch.randn(classes, generator=g))

    def forward(self, x):
        return self.lin(x.flatten(1))


class OneKink(torch.nn.Module):
    """f(x) = relu(w . x + c) + v . x: one change of linear region on the insertion line from 0 to x."""

    def __init__(self, w, v, c):
        super().__init__()
        self.w, self.v, self.c = w, v, c

    def forward(self, x):
        flat = x.flatten(1)
        return torch.stack([torch.relu(flat @ self.w + self.c) + flat @ self.v, torch.zeros(len(x))], 1)


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@pytest.mark.parametrize("name", ["samp", "samp++"])
@pytest.mark.parametrize("step_size", [1, 7, 1.0])
@pytest.mark.parametrize("direction", ["deletion", "insertion"])
def test_linear_model_gives_w_times_displacement_for_any_step_size(name, step_size, direction):
    model = Linear()
    x = torch.rand(2, *model.shape)
    baseline = torch.rand(2, *model.shape)
    e = px.get_method(name)(model, step_size=step_size, direction=direction, baseline=baseline,
                            batch_size=3).explain(x, 1)
    expected = model.lin.weight[1].detach().view(model.shape) * (x - baseline)
    assert torch.allclose(e.attribution, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("features", ["pixel", "channel"])
def test_every_feature_moves_exactly_once_and_the_path_ends_at_the_end_point(features):
    model = Linear()
    x = torch.rand(2, *model.shape)
    x[0, :, 0, :2] = 0.0  # pixels with nothing to move towards a black baseline
    s = 3
    e = px.get_method("samp")(model, step_size=s, features=features, direction="deletion",
                              batch_size=2).explain(x, 0)
    n_groups = 5 * 4 if features == "pixel" else 3 * 5 * 4
    step_of = e.extras["feature_step"]
    assert step_of.shape == (2, n_groups)
    disp = x.reshape(2, 3, 20) if features == "pixel" else x.reshape(2, 1, 60)
    movable = (disp != 0).any(1)
    assert torch.equal(step_of >= 0, movable)          # exactly the features with something to move, moved once
    for i in range(2):
        m = int(movable[i].sum())
        counts = torch.bincount(step_of[i][step_of[i] >= 0])
        assert counts.tolist() == [s] * (m // s) + ([m % s] if m % s else [])
        assert int(e.extras["path_steps"][i]) == math.ceil(m / s)
        assert sorted(e.extras["order"][i].tolist()) == list(range(n_groups))
        # the order lists features by the step they moved in; unmoved ones come last
        assert torch.equal(step_of[i][e.extras["order"][i][:m]], torch.sort(step_of[i][movable[i]]).values)
    # the path ends at the baseline: f at the last point is f(0)
    f0 = model(torch.zeros_like(x))[:, 0].double()
    assert torch.allclose(e.extras["end_score"], f0, atol=1e-5)
    assert torch.allclose(e.extras["start_score"], model(x)[:, 0].double(), atol=1e-5)


def test_one_step_reduces_to_gradient_times_displacement_at_the_start(digits_model, digit_batch):
    x, y = digit_batch
    grad = px.get_method("saliency")(digits_model, batch_size=8).explain(x, y).attribution
    base = torch.full_like(x, 0.3)
    dele = px.get_method("samp")(digits_model, step_size=1.0, direction="deletion", baseline=base,
                                 batch_size=8).explain(x, y)
    assert rel(dele.attribution, grad * (x - base)) < 1e-5      # -grad f(x) * (b - x)
    ins = px.get_method("samp")(digits_model, step_size=28 * 28, direction="insertion", baseline=base,
                                batch_size=8).explain(x, y)
    grad_b = px.get_method("saliency")(digits_model, batch_size=8).explain(base, y).attribution
    assert rel(ins.attribution, grad_b * (x - base)) < 1e-5


def test_samp_plus_plus_integrates_a_kink_exactly_where_samp_does_not():
    torch.manual_seed(0)
    d = 12
    x = torch.rand(1, 1, 3, 4) + 0.5
    w, v = torch.randn(d), torch.randn(d)
    c = -0.4 * float(x.flatten() @ w) if float(x.flatten() @ w) > 0 else 0.4 * abs(float(x.flatten() @ w))
    model = OneKink(w, v, c)
    kink = -c / float(x.flatten() @ w)                   # the line t x crosses w . x + c = 0 at t = kink
    assert 0 < kink < 1
    alive_after = float(x.flatten() @ w) > 0             # relu active for t > kink (else for t < kink)
    share = (1 - kink) if alive_after else kink
    exact = (v + w * share) * x.flatten()
    kw = dict(step_size=1.0, direction="insertion", baseline="zero", batch_size=4)
    plus = px.get_method("samp++")(model, **kw).explain(x, 0)
    assert torch.allclose(plus.attribution.flatten(), exact, atol=1e-5)
    plain = px.get_method("samp")(model, **kw).explain(x, 0)
    assert not torch.allclose(plain.attribution.flatten(), exact, atol=1e-2)


def test_completeness_of_samp_plus_plus_on_the_digits_model(digits_model, digit_batch):
    x, y = digit_batch
    kw = dict(direction="deletion", baseline="zero", step_size=40, batch_size=16)
    plus = px.get_method("samp++")(digits_model, **kw).explain(x, y)
    plain = px.get_method("samp")(digits_model, **kw).explain(x, y)
    check = px.metrics.completeness(digits_model, x, plus.attribution, y, baseline="zero", batch_size=16)
    assert (check.relative < 1e-3).all(), check.relative
    assert torch.allclose(check.residual.double(), plus.extras["residual"], atol=1e-4)
    plain_check = px.metrics.completeness(digits_model, x, plain.attribution, y, baseline="zero", batch_size=16)
    assert plain_check.relative.mean() > 10 * check.relative.mean()   # SAMP's residual: reported in samp.md
    assert torch.allclose(plain_check.residual.double(), plain.extras["residual"], atol=1e-4)


def test_both_directions_average_and_stay_complete(digits_model, digit_batch):
    x, y = digit_batch
    e = px.get_method("samp++")(digits_model, step_size=80, batch_size=16).explain(x, y)   # B+G default
    assert {"deletion_trajectory", "insertion_trajectory", "insertion_baseline"} <= set(e.extras)
    f_x = digits_model(x).gather(1, y[:, None]).squeeze(1).double()
    f_black = digits_model(torch.zeros_like(x)).gather(1, y[:, None]).squeeze(1).double()
    blur = px.core.gaussian_blur(x, 5.0)
    f_blur = digits_model(blur).gather(1, y[:, None]).squeeze(1).double()
    expected = f_x - 0.5 * (f_black + f_blur)
    assert torch.allclose(e.attribution.flatten(1).double().sum(1), expected, rtol=1e-3, atol=1e-4)
    assert torch.allclose(e.extras["insertion_baseline"], blur)


def test_concentration_principle_samp_variance_exceeds_ig(digits_model, digit_batch):
    # Same end points and score as IG (black -> x, logits), so both attributions have (nearly) the same sum and
    # their variances compare. Per image the ratio varies (0.5-1.8 on digits); 20 px per step keeps the test fast; the mean log-ratio is what the
    # principle predicts to be positive. benchmarks/results/samp.md reports the ratio on 100 digits.
    x, y = digit_batch
    samp = px.get_method("samp")(digits_model, direction="insertion", baseline="zero", step_size=20,
                                 batch_size=16).explain(x, y)
    ig = px.get_method("ig")(digits_model, n_steps=32, batch_size=32).explain(x, y)
    ratio = samp.saliency().flatten(1).var(1) / ig.saliency().flatten(1).var(1)
    assert float(ratio.log().mean()) > 0, ratio


def test_batched_paths_equal_one_image_at_a_time(digits_model, digit_batch):
    x, y = digit_batch
    method = px.get_method("samp++")(digits_model, step_size=300, batch_size=5)
    batched = method.explain(x, y)
    for i in (0, 2):
        alone = method.explain(x[i:i + 1], y[i:i + 1])
        assert rel(batched.attribution[i], alone.attribution[0]) < 1e-5
        assert torch.equal(batched.extras["deletion_order"][i], alone.extras["deletion_order"][0])


def test_momentum_changes_the_choice_not_the_completeness(digits_model, digit_batch):
    x, y = digit_batch[0][:2], digit_batch[1][:2]
    kw = {"direction": "insertion", "baseline": "zero", "step_size": 100, "batch_size": 16}
    a = px.get_method("samp++")(digits_model, momentum=0.0, **kw).explain(x, y)
    b = px.get_method("samp++")(digits_model, momentum=0.9, **kw).explain(x, y)
    assert not torch.equal(a.extras["order"], b.extras["order"])
    assert (a.extras["relative_residual"] < 1e-3).all() and (b.extras["relative_residual"] < 1e-3).all()


def test_default_step_size_goes_through_the_papers_settings():
    assert default_step_size(28 * 28) == 10
    assert default_step_size(224 * 224) == 224 * 16
    assert default_step_size(1) == 1
    assert 10 < default_step_size(64 * 64) < 3584


@pytest.mark.parametrize("kwargs, error, match", [
    ({"step_size": 0}, ValueError, "step_size must be an integer >= 1"),
    ({"step_size": 1.5}, ValueError, "step_size must lie in"),
    ({"step_size": "big"}, TypeError, "step_size must be an int"),
    ({"features": "voxel"}, ValueError, "features must be one of 'pixel', 'channel'"),
    ({"direction": "up"}, ValueError, "direction must be one of"),
    ({"selection": "max"}, ValueError, "selection must be one of"),
    ({"momentum": 1.0}, ValueError, r"momentum must lie in \[0, 1\)"),
    ({"quadrature": "left", "completeness_rtol": 1e-3}, ValueError, "need quadrature='trapezoid'"),
    ({"completeness_rtol": -1.0}, ValueError, "completeness_rtol must be a positive number"),
    ({"score": "prob"}, ValueError, "score must be"),
])
def test_bad_arguments_name_the_argument(kwargs, error, match, digits_model):
    name = "samp" if "quadrature" in kwargs else "samp++"
    with pytest.raises(error, match=match):
        px.get_method(name)(digits_model, **kwargs)


def test_bad_baseline_shape_is_reported(digits_model, digit_batch):
    x, y = digit_batch
    with pytest.raises(ValueError, match=r"baseline tensor must have shape \(3, 1, 28, 28\)"):
        px.get_method("samp")(digits_model, baseline=torch.zeros(2, 5)).explain(x, y)
