"""SOInter, energy occlusion, L2X, LIME/Kernel SHAP on structured black boxes with known relevant features.

Trained nets (energy net, interpreters) are cached atomically under ``px.models.cache_dir()/structured``; the first
run trains them (about a minute on 2 busy cores), later runs load them.
"""
from __future__ import annotations

import pytest
import torch

import pathxai as px
import pathxai.structured as st
from pathxai.metrics import median_rank, posthoc_accuracy, posthoc_f1

D = 16  # features of the synthetic task
RANDOM_MEDIAN_RANK = (D + 1) / 2


@pytest.fixture(scope="module")
def task() -> st.StructuredTask:
    return st.synthetic_task()


@pytest.fixture(scope="module")
def energy() -> st.EnergyNet:
    return st.pretrained_energy("synthetic")


@pytest.fixture(scope="module")
def interp3() -> st.Selector:
    return st.pretrained_selector("synthetic", target=3, k=3)  # y3 depends on x0, x1 (through y0) and x6


# ---------------------------------------------------------------------------------------------- energy network
def test_energy_ranks_black_box_output_below_random_and_perturbed(task, energy):
    x = task.x_test
    m = st.energy_margins(energy, task.black_box, x, seed=1)
    y_hat = st.harden(task.black_box(x))
    rand = (torch.rand(y_hat.shape, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    differs = (rand != y_hat).any(1)
    # E(x, random) - E(x, ŷ): measured mean ~17 (random differs in ~2.5 of 5 variables), positive on ~99% of rows
    assert m["random"][differs].mean() > 5.0
    assert (m["random"][differs] > 0).float().mean() > 0.95
    # the closest competitor: ŷ with one variable flipped; measured mean margin ~1.3, ŷ lowest on ~83% of inputs
    assert m["flip"].mean() > 0.5
    assert (m["flip"] > 0).float().mean() > 0.7
    # and on masked inputs (what SOInter feeds it): the black box's own output on the masked input ranks lowest
    keep = st.energy.random_keep_masks(len(x), D, torch.Generator().manual_seed(2))
    mm = st.energy_margins(energy, task.black_box, x * keep, seed=3)
    assert mm["flip"].mean() > 0.3 and (mm["random"] > 0).float().mean() > 0.9


def test_energy_save_load_roundtrip(tmp_path, task, energy):
    energy.save(tmp_path / "e.pt")
    again = st.EnergyNet.load(tmp_path / "e.pt")
    x = task.x_test[:5]
    y = st.harden(task.black_box(x))
    assert torch.equal(energy(x, y), again(x, y))


def test_energy_shape_mismatch_is_a_clear_error(task, energy):
    with pytest.raises(ValueError, match=r"output shape does not fit.*\(N, 5\).*\(3, 4\)"):
        energy(task.x_test[:3], torch.zeros(3, 4))
    wrong = st.EnergyNet(D, 7)
    with pytest.raises(ValueError, match="output shape does not fit"):
        px.get_method("energy_occlusion")(task.black_box, energy=wrong).explain(task.x_test[:2], target=0)


# ---------------------------------------------------------------------------------------------- Gumbel k-hot
def test_gumbel_khot_relaxation_sums_to_k_and_is_seeded():
    logits = torch.randn(64, 20, generator=torch.Generator().manual_seed(0))
    for k in (1, 3, 7):
        z = st.gumbel_khot(logits, k, 0.5, torch.Generator().manual_seed(5))
        assert z.shape == (64, 20) and z.min() >= 0 and z.max() <= 1
        # every relaxed sample sums to k (hence so does its expectation over the Gumbel noise)
        torch.testing.assert_close(z.sum(1), torch.full((64,), float(k)), atol=1e-4, rtol=0)
        again = st.gumbel_khot(logits, k, 0.5, torch.Generator().manual_seed(5))
        assert torch.equal(z, again)
        other = st.gumbel_khot(logits, k, 0.5, torch.Generator().manual_seed(6))
        assert not torch.equal(z, other)
    # the expectation over draws follows the logits: the largest logit is selected most often
    zs = torch.stack([st.gumbel_khot(logits[:1], 3, 0.5, torch.Generator().manual_seed(s)) for s in range(300)])
    assert int(zs.mean(0).argmax()) == int(logits[0].argmax())
    # low temperature: the relaxation tends to the hard k-hot of the same perturbed logits (straight-through forward)
    st_out = st.gumbel_khot(logits, 3, 0.001, torch.Generator().manual_seed(9), straight_through=True)
    soft = st.gumbel_khot(logits, 3, 0.001, torch.Generator().manual_seed(9))
    assert torch.equal(st_out.sum(1), torch.full((64,), 3.0)) and set(st_out.unique().tolist()) == {0.0, 1.0}
    close_rows = ((st_out - soft).abs().max(1).values < 0.05).float().mean()
    assert close_rows > 0.9  # rows with a near-tie between the k-th and (k+1)-th perturbed logit stay soft


def test_hard_khot_selects_exactly_k():
    logits = torch.randn(10, 12, generator=torch.Generator().manual_seed(0))
    m = st.hard_khot(logits, 4)
    assert torch.equal(m.sum(1), torch.full((10,), 4.0))
    assert torch.equal(m.bool(), torch.zeros_like(m).scatter_(1, logits.topk(4, 1).indices, 1.0).bool())


def test_k_larger_than_features_and_empty_target_are_clear_errors(task, energy):
    with pytest.raises(ValueError, match=r"k=17 is larger than the number of features D=16"):
        st.hard_khot(torch.zeros(2, 16), 17)
    with pytest.raises(ValueError, match="k=20 is larger"):
        st.train_sointer(task.black_box, energy, task.x_train[:10], 0, 20, epochs=1)
    with pytest.raises(ValueError, match="target selects no output variable"):
        st.train_sointer(task.black_box, energy, task.x_train[:10], [], 2, epochs=1)
    with pytest.raises(ValueError, match=r"target output index 9 out of range.*5 output"):
        st.pretrained_selector("synthetic", target=9, k=2)
    with pytest.raises(ValueError, match="k=0|k must be an integer >= 1"):
        st.gumbel_khot(torch.zeros(2, 5), 0, 0.5)


# ---------------------------------------------------------------------------------------------- sointer method
def test_sointer_recovers_relevant_features(task, interp3):
    """y3 = σ(4(2 y0 − 1 + x6)), y0 = σ(4(x0 + x1)): relevant {0, 1, 6}, two of them only through y0."""
    e = px.get_method("sointer")(task.black_box, interpreter=interp3).explain(task.x_test, target=3)
    r = median_rank(e.attribution, task.relevant[3])
    assert r.summary < 3.0, r.summary                      # measured 2.0 (= perfect for 3 features)
    assert r.summary < RANDOM_MEDIAN_RANK - 4              # random: 8.5
    acc = posthoc_accuracy(task.black_box, task.x_test, e.attribution, target=3, k=3)
    assert acc.summary > 0.95


def test_sointer_contract(task, interp3):
    x = task.x_test[:37]
    m1 = px.get_method("sointer")(task.black_box, interpreter=interp3, batch_size=1)
    m64 = px.get_method("sointer")(task.black_box, interpreter=interp3, batch_size=64)
    e1, e64 = m1.explain(x, target=3), m64.explain(x, target=3)
    assert e1.attribution.shape == (37, D) and e1.extras["mask"].shape == (37, D)
    assert e1.extras["selected"].shape == (37, 3)
    assert torch.equal(e1.extras["mask"].sum(1), torch.full((37,), 3.0))        # exactly k at test time
    torch.testing.assert_close(e1.attribution, e64.attribution, rtol=1e-5, atol=1e-6)
    assert torch.equal(e1.attribution, m1.explain(x, target=3).attribution)     # deterministic
    assert e1.meta["params"]["k"] == 3


def test_sointer_bad_inputs(task, interp3):
    m = px.get_method("sointer")(task.black_box, interpreter=interp3)
    with pytest.raises(ValueError, match=r"trained for output 3"):
        m.explain(task.x_test[:2], target=1)
    with pytest.raises(ValueError, match=r"x must have shape \(N, D\)"):
        m.explain(task.x_test[:2].view(2, 4, 4), target=3)
    with pytest.raises(ValueError, match=r"shape \(N, 16\)"):
        m.explain(torch.zeros(2, 15), target=3)
    with pytest.raises(TypeError, match="interpreter must be a trained"):
        px.get_method("sointer")(task.black_box, interpreter=torch.nn.Linear(16, 16))
    with pytest.raises(ValueError, match="NaN"):
        m.explain(torch.full((2, 16), float("nan")), target=3)


def test_selector_save_load_roundtrip(tmp_path, task, interp3):
    interp3.save(tmp_path / "s.pt")
    again = st.Selector.load(tmp_path / "s.pt")
    assert again.k == 3 and again.target == (3,)
    assert torch.equal(interp3(task.x_test[:4]), again(task.x_test[:4]))


# ---------------------------------------------------------------------------------------------- energy occlusion
def test_energy_occlusion_finds_direct_features_and_is_chunk_invariant(task, energy):
    x = task.x_test[:60]
    e1 = px.get_method("energy_occlusion")(task.black_box, energy=energy, batch_size=7).explain(x, target=0)
    e2 = px.get_method("energy_occlusion")(task.black_box, energy=energy, batch_size=64).explain(x, target=0)
    assert e1.attribution.shape == (60, D)
    torch.testing.assert_close(e1.attribution, e2.attribution, rtol=1e-5, atol=1e-5)
    r = median_rank(e1.attribution, task.relevant[0], absolute=True)
    assert r.summary < 3.0, r.summary                       # y0 = σ(4(x0 + x1)): measured 1.5
    whole = px.get_method("energy_occlusion")(task.black_box, energy=energy, whole_structure=True).explain(x, 0)
    assert whole.attribution.shape == (60, D) and not torch.equal(whole.attribution, e1.attribution)
    with pytest.raises(ValueError, match="output index"):
        px.get_method("energy_occlusion")(task.black_box, energy=energy).explain(x, target=lambda o: o[:, 0])


# ---------------------------------------------------------------------------------------------- baselines
@pytest.mark.parametrize("name", ["lime", "kernel_shap"])
def test_captum_baselines_on_vectors_seeded(task, name):
    x = task.x_test[:3]
    a = px.get_method(name)(task.black_box, n_samples=64, seed=3, batch_size=5).explain(x, target=0).attribution
    b = px.get_method(name)(task.black_box, n_samples=64, seed=3, batch_size=64).explain(x, target=0).attribution
    c = px.get_method(name)(task.black_box, n_samples=64, seed=4, batch_size=64).explain(x, target=0).attribution
    assert a.shape == (3, D)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(b, c)


def test_l2x_contract(task):
    sel = st.pretrained_selector("synthetic", target=0, k=2, kind="l2x")
    e = px.get_method("l2x")(task.black_box, interpreter=sel).explain(task.x_test[:10], target=0)
    assert e.attribution.shape == (10, D) and torch.equal(e.extras["mask"].sum(1), torch.full((10,), 2.0))


# ---------------------------------------------------------------------------------------------- metrics
def test_structured_metrics_on_oracle_and_anti_oracle(task):
    x = task.x_test
    oracle = task.relevant[0].float().expand(len(x), D).clone()
    anti = 1 - oracle
    assert posthoc_accuracy(task.black_box, x, oracle, 0, k=2).summary == 1.0
    assert posthoc_f1(task.black_box, x, oracle, 0, k=2).summary == 1.0
    assert posthoc_accuracy(task.black_box, x, anti, 0, k=2).summary < 0.7
    assert median_rank(oracle, task.relevant[0]).summary == 1.5
    assert median_rank(anti, task.relevant[0]).summary == D - 0.5
    with pytest.raises(ValueError, match="relevant marks no feature"):
        median_rank(oracle, torch.zeros(D, dtype=torch.bool))
    with pytest.raises(ValueError, match="target selects no output"):
        posthoc_f1(task.black_box, x, oracle, [], k=2)
    with pytest.raises(ValueError, match=r"attribution must have the shape of x"):
        posthoc_accuracy(task.black_box, x, oracle[:, :5], 0, k=2)


def test_image_contract_skips_trained_methods():
    for name in ("sointer", "l2x", "energy_occlusion"):
        assert 4 not in px.get_method(name).input_ndim


# ---------------------------------------------------------------------------------------------- ground truth
@pytest.mark.parametrize("name", ["synthetic", "multilabel"])
def test_ground_truth_relevant_sets_are_exact(name):
    """Keeping only the relevant features of output t leaves t's output exactly unchanged; dropping any one
    relevant feature changes it on some inputs (so the sets are neither too small nor padded)."""
    task = st.load_task(name)
    x = task.x_test
    full = task.black_box(x)
    for t in range(task.n_outputs):
        rel = task.relevant[t]
        torch.testing.assert_close(task.black_box(x * rel.float())[:, t], full[:, t])
        for i in torch.nonzero(rel).flatten().tolist():
            keep = rel.clone()
            keep[i] = False
            assert (st.harden(task.black_box(x * keep.float()))[:, t] != st.harden(full)[:, t]).any()


@pytest.mark.slow
def test_sointer_recovers_chained_multilabel_features():
    task = st.load_task("multilabel")
    sel = st.pretrained_selector("multilabel", target=1, k=6)   # label 1 follows label 0: 6 relevant features
    e = px.get_method("sointer")(task.black_box, interpreter=sel).explain(task.x_test, target=1)
    assert median_rank(e.attribution, task.relevant[1]).summary < 4.5   # optimum 3.5, random 15.5
