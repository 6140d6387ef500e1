"""px.metrics against cases computed by hand: linear models with closed-form curves, synthetic pointing-game maps,
sensitivity-N of gradient x input, completeness of IG, Captum's infidelity / sensitivity_max, bad inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import pathxai as px
from pathxai import metrics


# ----------------------------------------------------------------------------------------------- helpers
def linear_model(c: int, h: int, w: int, k: int = 3, seed: int = 0, dtype=torch.float64) -> nn.Module:
    """f(x) = W flatten(x) + b, in float64 so closed forms hold to ~1e-12."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(c * h * w, k).to(dtype)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(k, c * h * w, generator=g, dtype=dtype))
        lin.bias.copy_(torch.randn(k, generator=g, dtype=dtype))
    return nn.Sequential(nn.Flatten(), lin)


def tiny_cnn(seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 5))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model.eval()


def ranked(sal: torch.Tensor) -> list[int]:
    """Pixel indices most salient first, ties by index: written independently of the library."""
    flat = sal.flatten().tolist()
    return sorted(range(len(flat)), key=lambda i: (-flat[i], i))


def trapezoid(values: list[float]) -> float:
    k = len(values) - 1
    return sum((values[i] + values[i + 1]) / 2 for i in range(k)) / k


def expected_linear_curve(model: nn.Module, x: torch.Tensor, base: torch.Tensor, sal: torch.Tensor, cls: int,
                          steps: int, kind: str) -> list[float]:
    """Logit of class ``cls`` after each step: bias + sum_i w_i * (x_i or baseline_i), pixel by pixel (C = 1)."""
    lin = model[1]
    wvec, bias = lin.weight[cls].tolist(), float(lin.bias[cls].detach())
    xs, bs = x.flatten().tolist(), base.flatten().tolist()
    order = ranked(sal)
    hw = len(order)
    out = []
    for k in range(steps + 1):
        changed = set(order[: (k * hw) // steps])
        total = bias
        for i in range(hw):
            if kind == "deletion":
                total += wvec[i] * (bs[i] if i in changed else xs[i])
            else:
                total += wvec[i] * (xs[i] if i in changed else bs[i])
        out.append(total)
    return out


# ----------------------------------------------------------------------------------------------- deletion / insertion
@pytest.mark.parametrize("steps", [16, 5])
def test_deletion_linear_logit_matches_closed_form(steps):
    torch.manual_seed(1)
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    model = linear_model(1, 4, 4)
    sal = torch.rand(2, 4, 4, dtype=torch.float64)
    sal[0, 0, :3] = 0.5  # ties: broken by pixel index
    sal[1] = 0.0  # all tied: pixel-index order
    r = metrics.deletion(model, x, sal, target=[1, 2], steps=steps, baseline="zero", score="logit", batch_size=3)
    assert r.curve.shape == (2, steps + 1) and r.score.shape == (2,)
    for i, cls in enumerate([1, 2]):
        want = expected_linear_curve(model, x[i], torch.zeros_like(x[i]), sal[i], cls, steps, "deletion")
        assert r.curve[i].tolist() == pytest.approx(want, abs=1e-10)
        assert float(r.score[i]) == pytest.approx(trapezoid(want), abs=1e-10)
    assert r.fractions.tolist() == pytest.approx([k / steps for k in range(steps + 1)])
    assert r.n_pixels[0] == 0 and r.n_pixels[-1] == 16
    assert r.meta["model_evaluations"] == 2 * (steps + 1)


def test_insertion_linear_with_tensor_baseline_and_uneven_steps():
    torch.manual_seed(2)
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64)
    base = torch.full((1, 4, 4), 0.25, dtype=torch.float64)
    model = linear_model(1, 4, 4, seed=3)
    sal = torch.randn(1, 4, 4, dtype=torch.float64)
    r = metrics.insertion(model, x, sal, target=0, steps=3, baseline=base, score="logit")
    want = expected_linear_curve(model, x[0], base, sal[0], 0, 3, "insertion")  # 0, 5, 10, 16 pixels
    assert r.n_pixels.tolist() == [0, 5, 10, 16]
    assert r.curve[0].tolist() == pytest.approx(want, abs=1e-10)
    assert float(r.score[0]) == pytest.approx(trapezoid(want), abs=1e-10)


def test_softmax_score_is_probability_of_the_logit_curve():
    torch.manual_seed(3)
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64)
    model = linear_model(1, 4, 4, seed=4)
    sal = torch.rand(1, 4, 4, dtype=torch.float64)
    r = metrics.deletion(model, x, sal, target=2, steps=4)  # default: softmax probability, zero baseline
    order = ranked(sal[0])
    for k in range(5):
        xk = x.clone().flatten()
        xk[order[: 4 * k]] = 0
        with torch.no_grad():
            p = model(xk.view(1, 1, 4, 4)).softmax(1)[0, 2]
        assert float(r.curve[0, k]) == pytest.approx(float(p), abs=1e-12)
    assert 0 <= float(r.score[0]) <= 1


def test_samp_normalisation_gives_negative_deletion_and_insertion_above_one():
    # contributions w_i x_i = (+3, +2, -2, -2), bias 0.5: removing the positive pixels first pushes the logit below
    # its value on the baseline; inserting them first pushes it above its value on the full input.
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 1).double())
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[3.0, 2.0, -2.0, -2.0]], dtype=torch.float64))
        model[1].bias.fill_(0.5)
    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    sal = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]], dtype=torch.float64)
    d = metrics.deletion(model, x, sal, 0, steps=4, score="logit", normalisation="samp")
    i = metrics.insertion(model, x, sal, 0, steps=4, score="logit", baseline="zero", normalisation="samp")
    # f(x) = 1.5, f(baseline) = 0.5; normalised by hand: (s_k - 0.5) / (1.5 - 0.5)
    assert d.curve[0].tolist() == pytest.approx([1, -2, -4, -2, 0])
    assert i.curve[0].tolist() == pytest.approx([0, 3, 5, 3, 1])
    assert float(d.score[0]) == pytest.approx(-7.5 / 4) and float(i.score[0]) == pytest.approx(11.5 / 4)
    assert d.raw_curve[0].tolist() == pytest.approx([1.5, -1.5, -3.5, -1.5, 0.5])
    assert float(d.input_score[0]) == 1.5 and float(d.baseline_score[0]) == 0.5
    inp = metrics.deletion(model, x, sal, 0, steps=4, score="logit", normalisation="input")
    assert inp.curve[0].tolist() == pytest.approx([1, -1, -3.5 / 1.5, -1, 0.5 / 1.5])


def test_samp_normalisation_undefined_when_input_and_baseline_score_agree():
    model = linear_model(1, 2, 2)
    with torch.no_grad():
        model[1].weight.zero_()
    x = torch.rand(1, 1, 2, 2, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="f\\(x\\) - f\\(baseline\\)"):
        r = metrics.deletion(model, x, torch.rand(1, 2, 2, dtype=torch.float64), 0, steps=2, score="logit",
                             normalisation="samp")
    assert torch.isnan(r.score).all()


def test_deletion_batch_size_invariance_and_bounded_chunks():
    torch.manual_seed(4)
    model = tiny_cnn()
    seen = []
    model.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].shape[0]))
    x = torch.rand(3, 1, 12, 12)
    sal = torch.rand(3, 12, 12)
    r1 = metrics.deletion(model, x, sal, None, steps=9, batch_size=1)
    seen.clear()
    r7 = metrics.deletion(model, x, sal, None, steps=9, batch_size=7)
    assert max(seen) <= 7
    torch.testing.assert_close(r1.curve, r7.curve, rtol=0, atol=1e-6)
    torch.testing.assert_close(r1.score, r7.score, rtol=0, atol=1e-6)
    assert r1.meta["model_evaluations"] == r7.meta["model_evaluations"] == 3 * 10 + 3  # curve + predicted class
    ins = metrics.insertion(model, x, sal, None, steps=9, batch_size=4)
    assert torch.allclose(ins.curve[:, -1], r7.curve[:, 0], atol=1e-6)  # both are f(x)


def test_targets_none_callable_and_explanation_input():
    torch.manual_seed(5)
    model = linear_model(1, 4, 4, k=4)
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    sal = torch.rand(3, 4, 4, dtype=torch.float64)
    predicted = model(x).argmax(1)
    a = metrics.deletion(model, x, sal, None, steps=4, batch_size=5)
    b = metrics.deletion(model, x, sal, predicted, steps=4, batch_size=5)
    assert torch.equal(a.curve, b.curve) and a.meta["target"] == predicted.tolist()
    c = metrics.deletion(model, x, sal, lambda out: out[:, 1], steps=4, score="logit")
    d = metrics.deletion(model, x, sal, 1, steps=4, score="logit")
    assert torch.allclose(c.curve, d.curve)
    e = px.get_method("gradient_x_input")(model, batch_size=4).explain(x, 1)
    assert torch.allclose(metrics.insertion(model, x, e, 1, steps=4).score,
                          metrics.insertion(model, x, e.saliency(), 1, steps=4).score)
    with pytest.raises(ValueError, match="callable target"):
        metrics.deletion(model, x, sal, lambda out: out[:, 1], steps=4, score="softmax")


def test_deletion_bad_inputs_raise_clear_errors():
    model = linear_model(1, 4, 4)
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    sal = torch.rand(2, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"x must have shape \(N, C, H, W\).*\(2, 4, 4\)"):
        metrics.deletion(model, x[:, 0], sal)
    with pytest.raises(ValueError, match=r"saliency must have shape \(N, H, W\) = \(2, 4, 4\).*\(2, 3, 4\)"):
        metrics.deletion(model, x, sal[:, :3])
    with pytest.raises(TypeError, match="x must be a floating-point"):
        metrics.deletion(model, (x * 255).long(), sal)
    bad = sal.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="saliency contains NaN"):
        metrics.insertion(model, x, bad)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        metrics.deletion(model, x, sal, steps=0)
    with pytest.raises(ValueError, match="normalisation must be one of"):
        metrics.deletion(model, x, sal, normalisation="minmax")
    with pytest.raises(ValueError, match="score must be 'softmax', 'logit'"):
        metrics.deletion(model, x, sal, score="prob")
    with pytest.raises(ValueError, match="out of range.*3 outputs"):
        metrics.deletion(model, x, sal, target=7)
    with pytest.raises(ValueError, match=r"target must be an int or have shape \(N,\) = \(2,\)"):
        metrics.deletion(model, x, sal, target=[0, 1, 2])
    with pytest.raises(ValueError, match=r"baseline tensor must have shape \(2, 1, 4, 4\)"):
        metrics.deletion(model, x, sal, baseline=torch.zeros(3, 3))


# ----------------------------------------------------------------------------------------------- pointing game
def peak_map(h: int, w: int, row: int, col: int) -> torch.Tensor:
    m = torch.zeros(h, w)
    m[row, col] = 1.0
    return m


def test_pointing_game_tolerance_edge_and_distances():
    h = w = 40
    mask = torch.zeros(4, h, w, dtype=torch.bool)
    mask[:, 20, 20] = True  # one object pixel
    # distances from (20, 20): sqrt(221) = 14.87 (hit), 15 exactly (miss: TorchRay's strict <), sqrt(226) = 15.03
    # (miss), 0 (on the object)
    points = [(20 + 14, 20 + 5), (20, 5), (20 + 15, 20 + 1), (20, 20)]
    sal = torch.stack([peak_map(h, w, r, c) for r, c in points])
    res = metrics.pointing_game(sal, mask, tolerance=15)
    assert res.hits.tolist() == [True, False, False, True]
    assert res.score.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert res.distances.tolist() == pytest.approx([math.sqrt(221), 15.0, math.sqrt(226), 0.0])
    assert res.points.tolist() == [list(p) for p in points]
    assert res.accuracy == pytest.approx(0.5)
    # tolerance 0 means "on the object"
    assert metrics.pointing_game(sal, mask, tolerance=0).hits.tolist() == [False, False, False, True]


def test_pointing_game_boxes_inclusive_exclusive_multi_box_and_ties():
    h, w = 20, 30
    sal = torch.stack([peak_map(h, w, 5, 9), peak_map(h, w, 5, 10), peak_map(h, w, 15, 25), torch.zeros(h, w)])
    sal[3, 2, 3] = sal[3, 18, 28] = 1.0  # two equal maxima: the first in row-major order, (2, 3), is taken
    boxes = [(0, 0, 10, 10), [0, 0, 10, 10], [(0, 0, 2, 2), (20, 12, 30, 20)], [(0, 0, 5, 5)]]
    res = metrics.pointing_game(sal, boxes, tolerance=0)
    assert res.hits.tolist() == [True, False, True, True]  # col 10 is outside x1 = 10; (2, 3) in the last box
    assert res.points[3].tolist() == [2, 3]
    # the same as a (N, 4) box tensor and as boolean masks
    box_t = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [20, 12, 30, 20], [0, 0, 5, 5]])
    assert metrics.pointing_game(sal, box_t, tolerance=0).hits.tolist() == [True, False, True, True]
    masks = torch.stack([metrics.boxes_to_mask(b, h, w) for b in [(0, 0, 10, 10)] * 2 + [(20, 12, 30, 20),
                                                                                      (0, 0, 5, 5)]])
    assert masks[0].sum() == 100 and masks[0, 9, 9] and not masks[0, 9, 10] and not masks[0, 10, 9]
    assert metrics.pointing_game(sal, masks, tolerance=0).hits.tolist() == [True, False, True, True]
    # with the default tolerance the point one pixel right of the box hits
    assert metrics.pointing_game(sal[1:2], [(0, 0, 10, 10)]).hits.tolist() == [True]


def test_pointing_game_per_class_mean_and_difficult_subset():
    h = w = 16
    mask = torch.zeros(5, h, w, dtype=torch.bool)
    mask[:, :4, :4] = True
    inside, outside = peak_map(h, w, 1, 1), peak_map(h, w, 12, 12)
    sal = torch.stack([inside, outside, inside, inside, outside])
    res = metrics.pointing_game(sal, mask, tolerance=3, classes=[0, 0, 1, 2, 2], difficult=[0, 1, 0, 1, 1])
    assert res.hits.tolist() == [True, False, True, True, False]
    assert res.per_class == pytest.approx({0: 0.5, 1: 1.0, 2: 0.5})
    assert res.accuracy == pytest.approx(2 / 3)  # mean over classes, not the 3/5 sample mean
    assert res.per_class_difficult == pytest.approx({0: 0.0, 2: 0.5})
    assert res.accuracy_difficult == pytest.approx(0.25)
    assert math.isnan(metrics.pointing_game(sal, mask).accuracy_difficult)


def test_pointing_game_matches_brute_force_torchray_rule():
    rng = np.random.default_rng(0)
    n, h, w, tol = 30, 24, 24, 6
    sal = torch.from_numpy(rng.random((n, h, w)))
    boxes = []
    for _ in range(n):
        x0, y0 = rng.integers(0, w - 2), rng.integers(0, h - 2)
        boxes.append((int(x0), int(y0), int(x0 + rng.integers(1, 6)), int(y0 + rng.integers(1, 6))))
    res = metrics.pointing_game(sal, boxes, tolerance=tol)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        r, c = divmod(int(np.argmax(sal[i].numpy())), w)
        hit = any((rr - r) ** 2 + (cc - c) ** 2 < tol ** 2
                  for rr in range(y0, min(y1, h)) for cc in range(x0, min(x1, w)))
        assert bool(res.hits[i]) == (hit or (y0 <= r < y1 and x0 <= c < x1)), i
    assert 0 < res.score.mean() < 1  # the random case has both hits and misses


def test_pointing_game_bad_inputs():
    sal = torch.rand(2, 8, 8)
    with pytest.raises(ValueError, match="empty box"):
        metrics.pointing_game(sal, [(0, 0, 4, 4), (3, 3, 3, 5)])
    with pytest.raises(ValueError, match="covers no pixel"):
        metrics.pointing_game(sal, [(0, 0, 4, 4), (20, 20, 30, 30)])
    with pytest.raises(ValueError, match=r"boolean masks must have shape \(N, H, W\) = \(2, 8, 8\)"):
        metrics.pointing_game(sal, torch.ones(2, 8, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"one entry per saliency map \(N = 2\), got 3"):
        metrics.pointing_game(sal, [(0, 0, 4, 4)] * 3)
    with pytest.raises(ValueError, match="tolerance must be"):
        metrics.pointing_game(sal, [(0, 0, 4, 4)] * 2, tolerance=-1)
    with pytest.raises(ValueError, match=r"classes must have shape \(N,\) = \(2,\)"):
        metrics.pointing_game(sal, [(0, 0, 4, 4)] * 2, classes=[0])
    with pytest.raises(ValueError, match=r"saliency must have shape \(N, H, W\)"):
        metrics.pointing_game(torch.rand(8, 8), [(0, 0, 4, 4)])


# ----------------------------------------------------------------------------------------------- sensitivity-N
def test_sensitivity_n_is_one_for_gradient_x_input_on_linear_model():
    torch.manual_seed(6)
    model = linear_model(3, 5, 5, k=4, seed=7)
    x = torch.rand(2, 3, 5, 5, dtype=torch.float64)
    attr = px.get_method("gradient_x_input")(model, batch_size=8).explain(x, 3).attribution
    r = metrics.sensitivity_n(model, x, attr, 3, ns=(1, 3, 10, 20), n_subsets=15, batch_size=16)
    assert r.curve.shape == (2, 4) and r.score.shape == (2,) and r.n_features == 25
    assert torch.allclose(r.curve, torch.ones_like(r.curve), atol=1e-9)
    # not only correlated: equal (linear model, zero baseline, pixels over all channels)
    assert torch.allclose(r.attribution_sums, r.output_changes, atol=1e-9)
    # a per-pixel map (channel sum) is the same attribution for pixel features
    r_map = metrics.sensitivity_n(model, x, attr.sum(1), 3, ns=(1, 3, 10, 20), n_subsets=15, batch_size=16)
    assert torch.allclose(r_map.output_changes, r.output_changes) and torch.allclose(r_map.curve, r.curve)
    # a random attribution is not sensitivity-N
    noise = torch.randn(attr.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r_bad = metrics.sensitivity_n(model, x, noise, 3, ns=(1, 3, 10, 20), n_subsets=15, batch_size=16)
    assert float(r_bad.score.max()) < 0.9


def test_sensitivity_n_seeded_batch_invariant_and_feature_groups():
    torch.manual_seed(8)
    model = tiny_cnn()
    x = torch.rand(2, 1, 12, 12)
    attr = torch.rand(2, 1, 12, 12)
    a = metrics.sensitivity_n(model, x, attr, 0, ns=(2, 8), n_subsets=6, seed=3, batch_size=1)
    b = metrics.sensitivity_n(model, x, attr, 0, ns=(2, 8), n_subsets=6, seed=3, batch_size=5)
    c = metrics.sensitivity_n(model, x, attr, 0, ns=(2, 8), n_subsets=6, seed=4, batch_size=5)
    assert torch.equal(a.attribution_sums, b.attribution_sums)
    torch.testing.assert_close(a.output_changes, b.output_changes, rtol=0, atol=1e-5)
    assert not torch.equal(a.attribution_sums, c.attribution_sums)
    assert a.meta["model_evaluations"] == 2 * 2 * 6 + 2
    # 3x3 blocks as features: 16 groups; every subset sum is a sum of whole blocks
    blocks = (torch.arange(12).view(12, 1) // 3) * 4 + torch.arange(12).view(1, 12) // 3
    g = metrics.sensitivity_n(model, x, attr, 0, ns=(1,), n_subsets=16, features=blocks, batch_size=8)
    assert g.n_features == 16
    block_sums = torch.zeros(2, 16, dtype=torch.float64).index_add_(1, blocks.flatten(), attr.flatten(1).double())
    for s in range(2):
        for v in g.attribution_sums[s, 0].tolist():
            assert torch.isclose(block_sums[s], torch.tensor(v, dtype=torch.float64), atol=1e-5).any()


def test_sensitivity_n_bad_inputs():
    model = linear_model(1, 3, 3)
    x = torch.rand(1, 1, 3, 3, dtype=torch.float64)
    attr = torch.rand(1, 1, 3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"ns entries must lie in \[1, 8\]"):
        metrics.sensitivity_n(model, x, attr, 0, ns=(1, 9))
    with pytest.raises(ValueError, match="n_subsets must be an integer >= 2"):
        metrics.sensitivity_n(model, x, attr, 0, n_subsets=1)
    with pytest.raises(ValueError, match=r"attribution must have the shape of x \(1, 1, 3, 3\)"):
        metrics.sensitivity_n(model, x, torch.rand(1, 2, 3, 3, dtype=torch.float64), 0)
    with pytest.raises(ValueError, match="features must have a shape broadcastable"):
        metrics.sensitivity_n(model, x, attr, 0, features=torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="attribution must be a torch.Tensor or a pathxai Explanation"):
        metrics.sensitivity_n(model, x, attr.numpy(), 0)


# ----------------------------------------------------------------------------------------------- completeness
def smooth_model(seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    return model


def test_completeness_of_ig_within_quadrature_error():
    torch.manual_seed(9)
    model = smooth_model()
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    ig = px.get_method("ig")
    coarse = ig(model, n_steps=4, method="riemann_right", return_delta=True, batch_size=8).explain(x, 1)
    fine = ig(model, n_steps=64, batch_size=16).explain(x, 1)
    rc = metrics.completeness(model, x, coarse, 1)
    rf = metrics.completeness(model, x, fine.attribution, 1, baseline="zero")
    # the residual is exactly the quadrature error: coarse sum minus the (converged) fine sum, and IG's own delta
    quad_err = coarse.attribution.flatten(1).sum(1) - fine.attribution.flatten(1).sum(1)
    assert torch.allclose(rc.residual, quad_err, atol=1e-8)
    assert torch.allclose(rc.residual, coarse.extras["delta"], atol=1e-10)
    assert float(rf.score.max()) < 1e-8 < float(rc.score.min())
    assert torch.allclose(rf.output_difference, rf.input_score - rf.baseline_score)
    assert torch.allclose(rf.output_difference, model(x)[:, 1] - model(torch.zeros_like(x))[:, 1])
    assert torch.equal(rc.absolute, rc.residual.abs()) and rc.meta["model_evaluations"] == 6


def test_completeness_bad_inputs():
    model = smooth_model()
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"attribution must have shape \(N, \.\.\.\) with N = 2"):
        metrics.completeness(model, x, torch.rand(3, 1, 4, 4, dtype=torch.float64), 0)
    with pytest.raises(ValueError, match="attribution contains NaN"):
        metrics.completeness(model, x, torch.full((2, 1, 4, 4), float("nan"), dtype=torch.float64), 0)


# ----------------------------------------------------------------------------------------------- Captum adapters
def test_infidelity_zero_for_gradient_of_linear_model():
    torch.manual_seed(10)
    model = linear_model(1, 4, 4, seed=11)
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    grad = metrics.infidelity(model, x, "saliency", 2, noise_std=0.1, batch_size=8)
    gxi = metrics.infidelity(model, x, "gradient_x_input", 2, noise_std=0.1, batch_size=8)
    # f(x) - f(x - I) = w . I exactly, which the gradient w reproduces; w * x does not
    assert float(grad.score.max()) < 1e-20 and float(gxi.score.min()) > 1e-4
    assert grad.meta["model_evaluations"] > 0 and grad.attribution.shape == x.shape
    again = metrics.infidelity(model, x, gxi.attribution, 2, noise_std=0.1, batch_size=3)
    assert torch.allclose(again.score, gxi.score)  # seeded perturbations, chunking only changes rounding
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        metrics.infidelity(model, x, "nope", 2)
    with pytest.raises(ValueError, match=r"attribution of the shape of x \(2, 1, 4, 4\)"):
        metrics.infidelity(model, x, torch.rand(2, 4, 4, dtype=torch.float64), 2)


def test_sensitivity_max_through_captum():
    torch.manual_seed(12)
    model = linear_model(1, 4, 4, seed=13)
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    flat = metrics.sensitivity_max(model, x, "saliency", 1, batch_size=8)
    assert torch.equal(flat.score, torch.zeros(2, dtype=torch.float64))  # the gradient of a linear model is constant
    gxi = metrics.sensitivity_max(model, x, px.get_method("gradient_x_input")(model, batch_size=8), 1,
                                  perturb_radius=0.05, n_perturb_samples=5)
    # ||w * (x + d) - w * x|| / ||w * x|| <= 0.05 * ||w|| / ||w * x|| and > 0
    w = model[1].weight[1].view(1, -1)
    bound = 0.05 * w.norm() / (w * x.flatten(1)).norm(dim=1)
    assert (gxi.score > 0).all() and (gxi.score <= bound + 1e-12).all()
    cal = metrics.sensitivity_max(model, x, "gradient_x_input", lambda out: out[:, 1], perturb_radius=0.05,
                                  n_perturb_samples=5)
    assert torch.allclose(cal.score, gxi.score)  # same seeded perturbations, same explained score
    with pytest.raises(ValueError, match="explains a different model"):
        metrics.sensitivity_max(model, x, px.get_method("saliency")(linear_model(1, 4, 4)), 1)


def test_registry_and_metadata():
    names = metrics.list_metrics()
    for name in ("deletion", "insertion", "pointing_game", "sensitivity_n", "completeness", "infidelity",
                 "sensitivity_max"):
        assert name in names
        assert metrics.get_metric(name).info.name == name
    assert metrics.get_metric("deletion").info.higher_is_better is False
    assert metrics.get_metric("Insertion").info.higher_is_better is True
    assert metrics.describe_metrics()["pointing_game"].needs_model is False
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.get_metric("roar")


# ----------------------------------------------------------------------------------------------- SAMP authors' convention
from pathxai.metrics import perturbation


def contrast_model() -> nn.Module:
    """f(x) = 3 x0 + 2 x1 - 2 x2 - 2 x3 + 0.5 on a 2x2 image: removing the positive pixels first drives the logit
    below 0, inserting them first drives it above f(x)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 1).double())
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[3.0, 2.0, -2.0, -2.0]], dtype=torch.float64))
        model[1].bias.fill_(0.5)
    return model


def test_samp_authors_hand_computed_ratio_and_mean():
    model = contrast_model()
    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    sal = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]], dtype=torch.float64)
    # one pixel per step; the default score of the convention is the logit: f(x) = 1.5, f(0) = 0.5
    d = metrics.deletion(model, x, sal, 0, step_pixels=1, normalisation="samp_authors")
    i = metrics.insertion(model, x, sal, 0, step_pixels=1, baseline="zero", normalisation="samp_authors")
    assert d.raw_curve[0].tolist() == pytest.approx([1.5, -1.5, -3.5, -1.5, 0.5])
    assert d.curve[0].tolist() == pytest.approx([1, -1, -7 / 3, -1, 1 / 3])          # logit / f(x)
    assert float(d.score[0]) == pytest.approx(-3 / 5)      # mean of the 5 points, not the trapezoid (-11/12)
    assert i.curve[0].tolist() == pytest.approx([1 / 3, 7 / 3, 11 / 3, 7 / 3, 1])
    assert float(i.score[0]) == pytest.approx(29 / 15)
    assert d.averaging == i.averaging == "mean" and d.meta["score"] == "logit"
    # the same curve under the ratio normalisation keeps the trapezoid area: only the averaging differs
    r = metrics.deletion(model, x, sal, 0, steps=4, score="logit", normalisation="input")
    assert r.curve[0].tolist() == pytest.approx(d.curve[0].tolist())
    assert float(r.score[0]) == pytest.approx(-11 / 12) and r.averaging == "trapezoid"


def curve_at(model: nn.Module, x: torch.Tensor, base: torch.Tensor, sal: torch.Tensor, cls: int,
             n_pixels: list[int], kind: str) -> list[float]:
    """Logit of ``cls`` (a linear model, C = 1) with the first n ranked pixels changed, for each n."""
    lin = model[1]
    wvec, bias = lin.weight[cls].tolist(), float(lin.bias[cls].detach())
    xs, bs, order = x.flatten().tolist(), base.flatten().tolist(), ranked(sal)
    out = []
    for n in n_pixels:
        changed = set(order[:n])
        inserted = [(xs[j] if j in changed else bs[j]) for j in range(len(xs))]
        deleted = [(bs[j] if j in changed else xs[j]) for j in range(len(xs))]
        vals = deleted if kind == "deletion" else inserted
        out.append(bias + sum(wj * vj for wj, vj in zip(wvec, vals)))
    return out


def test_samp_authors_step_rule_10_pixels_on_28x28_and_uneven_last_step():
    torch.manual_seed(4)
    model = linear_model(1, 28, 28, k=3, seed=5)
    x = torch.rand(1, 1, 28, 28, dtype=torch.float64)
    sal = torch.randn(1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        cls = int(model(x).argmax())
    d = metrics.deletion(model, x, sal, None, normalisation="samp_authors")     # the predicted class, 10 px a step
    n_pixels = [min(10 * k, 784) for k in range(80)]                          # 79 steps, the last one 4 pixels
    assert d.curve.shape == (1, 80) and d.n_pixels.tolist() == n_pixels
    assert d.fractions.tolist() == pytest.approx([n / 784 for n in n_pixels])
    want = curve_at(model, x[0], torch.zeros_like(x[0]), sal[0], cls, n_pixels, "deletion")
    assert d.raw_curve[0].tolist() == pytest.approx(want, abs=1e-9)
    assert float(d.score[0]) == pytest.approx(sum(v / want[0] for v in want) / 80, abs=1e-12)
    assert d.meta["target"] == [cls] and d.meta["step_pixels"] == 10
    # 3 pixels a step on 4x4: ceil(16 / 3) = 6 steps, with any normalisation
    small = linear_model(1, 4, 4, seed=6)
    xs, ss = torch.rand(1, 1, 4, 4, dtype=torch.float64), torch.rand(1, 4, 4, dtype=torch.float64)
    r = metrics.insertion(small, xs, ss, 1, step_pixels=3, baseline="zero", score="logit")
    assert r.n_pixels.tolist() == [0, 3, 6, 9, 12, 15, 16]
    assert r.curve[0].tolist() == pytest.approx(curve_at(small, xs[0], torch.zeros_like(xs[0]), ss[0], 1,
                                                         [0, 3, 6, 9, 12, 15, 16], "insertion"), abs=1e-10)
    assert perturbation.samp_authors_step_pixels(28, 28) == 10 and perturbation.samp_authors_step_pixels(32, 32) == 10
    assert perturbation.samp_authors_step_pixels(224, 224) == 224 * 8


def test_samp_authors_blur_is_rise_kernel_with_zero_padding():
    from scipy.ndimage import gaussian_filter
    from scipy.signal import convolve2d

    def reference(img: np.ndarray, klen: int, sigma: float) -> np.ndarray:
        delta = np.zeros((klen, klen))
        delta[klen // 2, klen // 2] = 1
        kern = gaussian_filter(delta, sigma)                     # RISE's gkern (2-D, reflect mode)
        return convolve2d(img, kern, mode="same", boundary="fill", fillvalue=0.0)

    torch.manual_seed(7)
    x = torch.rand(2, 3, 28, 28, dtype=torch.float64)
    got = perturbation.samp_authors_blur(x)                      # 28x28: klen 11, sigma 5
    want = np.stack([[reference(x[n, c].numpy(), 11, 5.0) for c in range(3)] for n in range(2)])
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)
    assert float(got[0, 0, 0, 0]) < float(got[0, 0, 14, 14])   # zero padding darkens the corner
    big = torch.rand(1, 1, 40, 40, dtype=torch.float64)           # larger than 32x32: klen 31
    np.testing.assert_allclose(perturbation.samp_authors_blur(big, sigma=5.0)[0, 0].numpy(),
                               reference(big[0, 0].numpy(), 31, 5.0), atol=1e-12)
    # it is the convention's default insertion start: one step from the blur to x
    model = linear_model(1, 28, 28, k=2, seed=8)
    xx, sal = x[:, :1], torch.rand(2, 28, 28, dtype=torch.float64)
    r = metrics.insertion(model, xx, sal, 0, step_pixels=784, normalisation="samp_authors")
    with torch.no_grad():
        start = model(perturbation.samp_authors_blur(xx))[:, 0]
        full = model(xx)[:, 0]
    assert r.raw_curve[:, 0].tolist() == pytest.approx(start.tolist(), abs=1e-10)
    assert r.curve[:, 0].tolist() == pytest.approx((start / full).tolist(), abs=1e-10)


def test_samp_authors_bad_arguments():
    model = linear_model(1, 4, 4)
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64)
    sal = torch.rand(1, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="either steps.*or step_pixels"):
        metrics.deletion(model, x, sal, steps=4, step_pixels=2)
    with pytest.raises(ValueError, match="step_pixels must be an integer >= 1"):
        metrics.insertion(model, x, sal, step_pixels=0, normalisation="samp_authors")
    with pytest.raises(ValueError, match="klen must be odd"):
        perturbation.samp_authors_blur(x, klen=4)
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.zero_()
    with pytest.warns(RuntimeWarning, match="samp_authors.*score at the full input, which is 0"):
        r = metrics.deletion(model, x, sal, 0, normalisation="samp_authors")
    assert torch.isnan(r.score).all()


def test_samp_authors_runs_where_the_model_is():
    from device_check import VirtualDevice, format_violations

    model = tiny_cnn()
    x = torch.rand(2, 1, 12, 12)
    sal = torch.rand(2, 12, 12)
    with VirtualDevice(model) as mode:
        d = metrics.deletion(model, x, sal, None, normalisation="samp_authors", batch_size=4)
        i = metrics.insertion(model, x, sal, None, normalisation="samp_authors", batch_size=4)
    assert not mode.violations, "\n" + format_violations(mode.violations)
    assert d.curve.shape == i.curve.shape == (2, 16)   # 144 pixels, 10 a step: 15 steps
