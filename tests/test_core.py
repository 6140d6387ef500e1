"""Core pieces on their own: evaluator chunking and counting, the auto probe, targets, baselines, results."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch

import pathxai as px
from pathxai.core import (BatchedEvaluator, Explanation, Target, accumulate_rows, gaussian_blur, item_seed,
                          make_baseline, resolve_target)
from pathxai.core.evaluator import _AutoProbe, estimate_sample_bytes, evaluation_mode
from pathxai.core.streaming import RunningMoments


class Counting(torch.nn.Module):
    """A linear model that records the size of every batch it sees."""

    def __init__(self, d: int = 12, k: int = 4) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(d, k)
        self.sizes: list[int] = []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        return self.lin(x.flatten(1))


def test_forward_chunks_respect_batch_size_and_count():
    model = Counting()
    ev = BatchedEvaluator(model, batch_size=5)
    x = torch.randn(23, 12)
    out = ev.forward(x)
    assert out.shape == (23, 4)
    assert model.sizes == [5, 5, 5, 5, 3]
    assert ev.n_forward == 23 and ev.n_gradient == 0
    assert torch.allclose(out, model.lin(x), atol=1e-6)
    assert not out.is_inference()  # a normal tensor the caller may use with autograd


def test_gradient_chunks_give_per_item_gradients():
    model = Counting()
    ev = BatchedEvaluator(model, batch_size=4)
    x = torch.randn(10, 12)
    grads = torch.zeros_like(x)
    for start, stop, scores, g in ev.gradient_chunks(10, lambda a, b: x[a:b], lambda out, a, b: out[:, 1],
                                                     sample_shape=(12,)):
        grads[start:stop] = g
        assert torch.allclose(scores, model.lin(x[start:stop])[:, 1].detach(), atol=1e-6)
    assert torch.allclose(grads, model.lin.weight[1].detach().expand(10, 12))
    assert ev.n_gradient == 10
    assert max(model.sizes) == 4


def test_gradient_chunks_with_respect_to_a_leaf():
    model = Counting()
    ev = BatchedEvaluator(model, batch_size=3)
    w = torch.randn(7, 1)

    def make(a, b):
        leaf = w[a:b].clone().requires_grad_(True)
        return leaf * torch.ones(1, 12), leaf

    out = torch.cat([g for _, _, _, g in ev.gradient_chunks(7, make, lambda o, a, b: o[:, 0], sample_shape=(12,))])
    assert torch.allclose(out[:, 0], model.lin.weight[0].sum().detach().expand(7), atol=1e-5)


def test_auto_probe_picks_the_fastest_size_and_stops_early():
    probe = _AutoProbe(max_size=64)
    cost = {1: 1.0, 2: 0.8, 4: 0.7, 8: 0.9, 16: 2.0, 32: 3.0, 64: 4.0}  # seconds per sample
    seen = []
    for _ in range(40):
        size = probe.next_size()
        seen.append(size)
        probe.record(size, cost[size] * size)
        if probe.chosen is not None:
            break
    assert probe.chosen == 4
    assert 16 not in seen  # 8 was already > 1.1x the best, so larger sizes were never tried
    assert seen[0] == 1  # warm-up call


def test_auto_probe_prefers_the_smallest_near_tie():
    probe = _AutoProbe(max_size=8)                     # e.g. a previous process chose 4: capped at 8, 1 re-checked
    cost = {1: 0.80, 2: 0.62, 4: 0.60, 8: 0.61}        # 2 is within 5 % of the best (4)
    seen = []
    for _ in range(40):
        size = probe.next_size()
        seen.append(size)
        probe.record(size, cost[size] * size)
        if probe.chosen is not None:
            break
    assert probe.chosen == 2 and 16 not in seen and 1 in seen


def test_auto_probe_respects_the_memory_cap():
    probe = _AutoProbe(max_size=3)
    assert probe.candidates() == [1, 2]


def test_auto_mode_runs_the_real_work_and_caches_the_choice():
    model = Counting()
    ev = BatchedEvaluator(model, batch_size="auto")
    x = torch.randn(200, 12)
    out = ev.forward(x)
    assert torch.allclose(out, model.lin(x), atol=1e-6)
    assert ev.n_forward == 200 and sum(model.sizes[1:]) == 200  # first call: the memory estimate
    sizes_after = BatchedEvaluator(model, batch_size="auto")
    model.sizes.clear()
    sizes_after.forward(x)
    assert len(set(model.sizes[:-1])) == 1  # settled: every chunk but the last has the chosen size


def test_estimate_sample_bytes_counts_activations():
    model = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.ReLU())
    assert estimate_sample_bytes(model, torch.zeros(1, 10)) == (20 + 20 + 10) * 4
    assert estimate_sample_bytes(lambda t: t, torch.zeros(1, 10)) is None


def test_accumulate_rows_is_independent_of_chunking():
    torch.manual_seed(0)
    rows = torch.randn(50, 33) * 1e3
    index = torch.randint(0, 3, (50,))
    weights = torch.rand(50)
    a = torch.zeros(3, 33)
    accumulate_rows(a, index, rows, weights)
    b = torch.zeros(3, 33)
    for s in range(0, 50, 7):
        accumulate_rows(b, index[s:s + 7], rows[s:s + 7], weights[s:s + 7])
    assert torch.equal(a, b)


def test_running_moments_match_two_pass():
    torch.manual_seed(0)
    rows = torch.randn(40, 5) * 3 + 100.0
    index = torch.arange(40) % 2
    m = RunningMoments((2, 5))
    m.add(index, rows)
    for i in range(2):
        assert torch.allclose(m.mean[i], rows[index == i].mean(0), atol=1e-4)
        assert torch.allclose(m.variance()[i], rows[index == i].var(0, unbiased=False), rtol=1e-4)
        assert torch.allclose(m.variance(unbiased=True)[i], rows[index == i].var(0), rtol=1e-4)


def test_evaluation_mode_restores_state():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5))
    model.train()
    model[0].weight.requires_grad_(False)
    with evaluation_mode(model):
        assert not model.training and not model[1].training
        assert not any(p.requires_grad for p in model.parameters())
    assert model.training and model[1].training
    assert not model[0].weight.requires_grad and model[0].bias.requires_grad


def test_evaluation_mode_restores_state_on_error():
    model = torch.nn.Linear(3, 3).train()
    with pytest.raises(RuntimeError):
        with evaluation_mode(model):
            raise RuntimeError("boom")
    assert model.training and model.weight.requires_grad


# ----------------------------------------------------------------------------------------------- targets
def test_resolve_target_forms():
    out = torch.tensor([[0.1, 2.0, 0.3], [5.0, 0.0, 1.0]])
    assert resolve_target(2, 2).classes.tolist() == [2, 2]
    assert resolve_target([0, 2], 2).classes.tolist() == [0, 2]
    assert resolve_target(torch.tensor([1, 0]), 2).classes.tolist() == [1, 0]
    assert resolve_target(np.array([1, 0]), 2).classes.tolist() == [1, 0]
    assert resolve_target(None, 2, predict=lambda: out).classes.tolist() == [1, 0]
    fn = resolve_target(lambda o: o[:, 0] - o[:, 1], 2)
    assert torch.equal(fn.score(out), out[:, 0] - out[:, 1])
    t = resolve_target([2, 0], 2)
    assert torch.equal(t.score(out), torch.tensor([0.3, 5.0]))
    assert torch.allclose(t.score(out, kind="softmax"), out.softmax(1)[[0, 1], [2, 0]])
    assert torch.allclose(t.score(out, kind="log_softmax"), out.log_softmax(1)[[0, 1], [2, 0]])
    rows = torch.tensor([1, 1, 0])
    assert torch.equal(t.score(torch.cat([out[1:], out[1:], out[:1]]), rows), torch.tensor([5.0, 5.0, 0.3]))


def test_resolve_target_errors():
    with pytest.raises(ValueError, match="out of range: the model has 3 outputs"):
        resolve_target(3, 2, num_classes=3)
    with pytest.raises(TypeError, match="class names are resolved by the CLI"):
        resolve_target("cat", 2)
    with pytest.raises(TypeError, match="got a bool"):
        resolve_target(True, 2)
    with pytest.raises(ValueError, match=r"callable must map the model output of shape \(2, 3\) to scores of shape"):
        resolve_target(lambda o: o, 2).score(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="needs a class target"):
        resolve_target(lambda o: o[:, 0], 2).score(torch.zeros(2, 3), kind="softmax")
    with pytest.raises(ValueError, match="needs a model output of shape"):
        resolve_target(None, 2, predict=lambda: torch.zeros(2, 3, 4))


# ----------------------------------------------------------------------------------------------- baselines
def test_gaussian_blur_matches_scipy():
    x = torch.rand(2, 3, 20, 17)
    ours = gaussian_blur(x, 2.0)
    ref = scipy.ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, 2.0, 2.0), mode="mirror", truncate=3.0)
    assert np.allclose(ours.numpy(), ref, atol=1e-5)
    assert torch.equal(gaussian_blur(x, 0.0), x)
    big = gaussian_blur(x, 1000.0)  # kernel clipped to the image: still finite and close to the mean
    assert torch.isfinite(big).all()


def test_make_baseline_variants_and_errors():
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(make_baseline(x, "zero"), torch.zeros_like(x))
    mean = make_baseline(x, "mean")
    assert torch.allclose(mean[:, :, 0, 0], x.mean((2, 3)))
    assert torch.equal(make_baseline(x, 0.5), torch.full_like(x, 0.5))
    assert make_baseline(x, torch.ones(3, 8, 8)).shape == x.shape
    u1, u2 = make_baseline(x, "uniform", seed=1), make_baseline(x, "uniform", seed=1)
    assert torch.equal(u1, u2) and not torch.equal(u1, make_baseline(x, "uniform", seed=2))
    assert make_baseline(x, lambda t: t * 0).abs().sum() == 0
    with pytest.raises(ValueError, match="baseline must be one of zero, mean, blur"):
        make_baseline(x, "grey")
    with pytest.raises(ValueError, match=r"baseline tensor must have shape \(2, 3, 8, 8\)"):
        make_baseline(x, torch.ones(4, 8, 8))
    with pytest.raises(ValueError, match=r"callable must return a tensor of shape"):
        make_baseline(x, lambda t: t[0])


def test_item_seeds_are_distinct_and_stable():
    seeds = {item_seed(0, "s", i) for i in range(1000)}
    assert len(seeds) == 1000
    assert item_seed(3, "a", 5) == item_seed(3, "a", 5) != item_seed(3, "b", 5)


# ----------------------------------------------------------------------------------------------- explanation
def test_explanation_saliency_reductions_and_upsampling(tmp_path):
    a = torch.tensor([[[[1.0, -2.0]], [[3.0, 1.0]]]])  # (1, 2, 1, 2)
    e = Explanation(a, input_shape=(1, 2, 1, 2), saliency_reduction="sum")
    assert torch.equal(e.saliency(), torch.tensor([[[4.0, -1.0]]]))
    assert torch.equal(e.saliency("sum_abs"), torch.tensor([[[4.0, 3.0]]]))
    assert torch.equal(e.saliency("max_abs"), torch.tensor([[[3.0, 2.0]]]))
    assert torch.equal(e.saliency("abs_sum"), torch.tensor([[[4.0, 1.0]]]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        e.saliency("median")
    low = Explanation(torch.ones(2, 1, 7, 7), input_shape=(2, 3, 28, 28))
    assert low.saliency().shape == (2, 28, 28) and torch.allclose(low.saliency(), torch.ones(2, 28, 28))
    text = Explanation(torch.ones(2, 5), input_shape=(2, 5, 8))
    with pytest.raises(ValueError, match="needs image inputs"):
        text.saliency()
    path = tmp_path / "e.npz"
    e.meta = {"method": "x"}
    e.save(str(path))
    data = np.load(path)
    assert np.array_equal(data["attribution"], a.numpy()) and "saliency" in data


def test_top_level_explain_shortcut(digits_model, digit_batch):
    x, y = digit_batch
    e = px.explain(digits_model, x, y, method="gradient_x_input", batch_size=2)
    assert e.method == "gradient_x_input" and len(e) == 3


def test_atomic_writes_give_the_default_file_mode_and_leave_nothing_on_error(tmp_path):
    import os

    from pathxai.core.files import atomic_path, atomic_write_text, default_file_mode

    target = atomic_write_text(tmp_path / "a" / "b.txt", "hello")
    assert target.read_text() == "hello"
    assert os.stat(target).st_mode & 0o777 == default_file_mode()   # not mkstemp's 0600
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "hello"                     # the old file stands
    assert sorted(p.name for p in target.parent.iterdir()) == ["b.txt"]   # no temporary left behind
