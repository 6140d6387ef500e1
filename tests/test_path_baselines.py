"""Blur IG and Guided IG against closed forms, a plain loop and Integrated Gradients."""
from __future__ import annotations

import math

import pytest
import torch

import pathxai as px
from pathxai.core import gaussian_blur


class Linear(torch.nn.Module):
    def __init__(self, shape=(2, 6, 5), classes=3, seed=1):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = torch.nn.Linear(math.prod(shape), classes)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(classes, math.prod(shape), generator=g))

    def forward(self, x):
        return self.lin(x.flatten(1))


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def test_blur_ig_on_a_linear_model_is_w_times_the_blur_removed():
    model = Linear()
    x = torch.rand(2, 2, 6, 5)
    e = px.get_method("blur_ig")(model, n_steps=7, max_sigma=3.0, batch_size=4).explain(x, 2)
    w = model.lin.weight[2].detach().view(2, 6, 5)
    assert torch.allclose(e.attribution, w * (x - gaussian_blur(x, 3.0)), atol=1e-5)
    assert torch.allclose(e.extras["end_point"], gaussian_blur(x, 3.0))


def test_blur_ig_matches_a_plain_loop(digits_model, digit_batch):
    x, y = digit_batch
    n, top = 4, 4.0
    e = px.get_method("blur_ig")(digits_model, n_steps=n, max_sigma=top, batch_size=4).explain(x, y)
    ref = torch.zeros_like(x)
    for i in range(3):
        for k in range(n):
            p = gaussian_blur(x[i:i + 1], top * k / n).requires_grad_(True)
            (g,) = torch.autograd.grad(digits_model(p)[0, y[i]], p)
            ref[i] += (g * (p.detach() - gaussian_blur(x[i:i + 1], top * (k + 1) / n)))[0]
    assert rel(e.attribution, ref) < 1e-5


def test_blur_ig_default_sigma_scales_with_the_image():
    m = px.get_method("blur_ig")(Linear())
    assert float(m.sigmas(224, 224)[-1]) == pytest.approx(50.0)
    assert float(m.sigmas(28, 28)[-1]) == pytest.approx(6.25)


def test_blur_ig_is_nearly_complete_with_many_steps(digits_model, digit_batch):
    x, y = digit_batch
    e = px.get_method("blur_ig")(digits_model, n_steps=32, batch_size=64).explain(x, y)
    f = digits_model(torch.cat([x, e.extras["end_point"]])).gather(1, torch.cat([y, y])[:, None]).squeeze(1)
    gap = f[:3] - f[3:]
    assert ((e.attribution.flatten(1).sum(1) - gap).abs() < 0.05 * gap.abs()).all()


def test_guided_ig_on_a_linear_model_is_w_times_displacement():
    model = Linear()
    x, b = torch.rand(2, 2, 6, 5), torch.rand(2, 2, 6, 5)
    e = px.get_method("guided_ig")(model, n_steps=5, fraction=0.2, baseline=b, batch_size=2).explain(x, 0)
    w = model.lin.weight[0].detach().view(2, 6, 5)
    assert torch.allclose(e.attribution, w * (x - b), atol=1e-5)


def test_guided_ig_moving_everything_at_once_is_ig_with_the_left_riemann_rule(digits_model, digit_batch):
    x, y = digit_batch
    guided = px.get_method("guided_ig")(digits_model, n_steps=8, fraction=1.0, max_dist=1.0,
                                        batch_size=8).explain(x, y)
    ig = px.get_method("ig")(digits_model, n_steps=8, method="riemann_left", batch_size=8).explain(x, y)
    assert rel(guided.attribution, ig.attribution) < 1e-5


def test_guided_ig_differs_from_ig_but_keeps_the_sum(digits_model, digit_batch):
    x, y = digit_batch
    guided = px.get_method("guided_ig")(digits_model, n_steps=8, batch_size=8).explain(x, y)
    ig = px.get_method("ig")(digits_model, n_steps=8, method="riemann_left", batch_size=8).explain(x, y)
    assert rel(guided.attribution, ig.attribution) > 0.05
    gap = (digits_model(x) - digits_model(torch.zeros_like(x))).gather(1, y[:, None]).squeeze(1)
    assert ((guided.attribution.flatten(1).sum(1) - gap).abs() < 0.25 * gap.abs()).all()


def test_guided_ig_anchored_stays_near_the_straight_line(digits_model, digit_batch):
    x, y = digit_batch
    x, y = x[:1], y[:1]
    free = px.get_method("guided_ig")(digits_model, n_steps=4, batch_size=8).explain(x, y)
    anchored = px.get_method("guided_ig")(digits_model, n_steps=4, max_dist=0.02, batch_size=8).explain(x, y)
    ig = px.get_method("ig")(digits_model, n_steps=4, method="riemann_left", batch_size=8).explain(x, y)
    assert rel(anchored.attribution, ig.attribution) < rel(free.attribution, ig.attribution)


@pytest.mark.parametrize("name, kwargs, match", [
    ("blur_ig", {"n_steps": 0}, "n_steps must be an integer >= 1"),
    ("blur_ig", {"max_sigma": -1.0}, "max_sigma must be a positive number"),
    ("guided_ig", {"fraction": 0.0}, r"fraction must lie in \(0, 1\]"),
    ("guided_ig", {"max_dist": 2.0}, r"max_dist must lie in \[0.0, 1.0\]"),
    ("guided_ig", {"score": "prob"}, "score must be"),
])
def test_bad_arguments(name, kwargs, match, digits_model):
    with pytest.raises(ValueError, match=match):
        px.get_method(name)(digits_model, **kwargs)
