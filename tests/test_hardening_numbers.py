"""No silent wrong answers, checked ranges, checked resource limits.

- non-finite model outputs, target scores and gradients are refused by the shared evaluator, naming the items;
- baselines (numbers, tensors, callables, blur sigmas) must be finite and meaningful;
- seeds are ints in [0, 2**63) (larger ones used to wrap modulo 2**64: seed 2**70 gave seed 0's results);
- gradient methods say why they cannot differentiate (inference mode, a detached model output);
- the cost of a call is estimated and checked against ``pathxai.core.limits`` before any work.

The registry-wide parts (every method refuses a NaN model and out-of-range parameters, works under ``no_grad``) live
in tests/test_contract.py and tests/test_contract_representation.py. New APIs are reached through ``px.core`` inside
the tests, so that on code without them each test fails on its own assertion rather than at import.
"""
from __future__ import annotations

import math
import time
import tracemalloc

import numpy as np
import pytest
import torch

import pathxai as px
from pathxai import metrics as M

NAN, INF = float("nan"), float("inf")


pytestmark = pytest.mark.usefixtures("one_thread")   # tiny models: one thread (conftest.py)


class NanAway(torch.nn.Module):
    """The network, NaN for every input that is not exactly one of ``clean`` (so the probe and the prediction on
    the explained images are fine, and only a method's own perturbed evaluations go wrong)."""

    def __init__(self, net: torch.nn.Module, clean: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.input_shape = net.input_shape
        self.register_buffer("clean", clean.flatten(1).clone())

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        out = self.net(inp)
        known = (inp.flatten(1)[:, None, :] == self.clean[None]).all(-1).any(1)
        return torch.where(known.view(-1, 1), out, torch.full_like(out, NAN))


class RowNan(torch.nn.Module):
    """The network, NaN in the rows whose first pixel is above 0.9."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        out = self.net(inp)
        return torch.where((inp.flatten(1)[:, 0] > 0.9).view(-1, 1), torch.full_like(out, NAN), out)


class Counting(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.input_shape = getattr(net, "input_shape", None)
        self.calls = 0

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(inp)


# ---------------------------------------------------------------------------------------------- 1. non-finite values
def test_the_evaluator_names_the_items_whose_output_is_nan(digits_model, digit_batch):
    x = digit_batch[0].clone()
    x[1, 0, 0, 0] = 1.0
    ev = px.core.BatchedEvaluator(RowNan(digits_model), batch_size=2)
    with pytest.raises(ValueError, match=r"model output contains NaN/Inf for 1 item\(s\) \[1\] \(in the predict "
                                         r"evaluations\): the model itself returned non-finite values") as info:
        ev.forward(x, desc="predict")
    assert isinstance(info.value, px.core.NonFiniteError)
    # the same through a method: target=None predicts on x first
    with pytest.raises(ValueError, match=r"model output contains NaN/Inf for 1 item\(s\) \[1\]"):
        px.get_method("saliency")(RowNan(digits_model), batch_size=2).explain(x, [0, 1, 2])


@pytest.mark.parametrize("name, params", [("ig", {"n_steps": 4}), ("occlusion", {"window": 14, "stride": 14}),
                                          ("rise", {"n_masks": 8}), ("smoothgrad", {"n_samples": 2}),
                                          ("ablation_path", {"n_steps": 2, "mask_size": 7, "blur_sigma": 4.0,
                                                             "min_iterations": 1, "max_iterations": 1})])
def test_nan_outputs_on_perturbed_inputs_are_refused(name, params, digits_model, digit_batch):
    """Main returned a finite IG map and a constant ablation-path heatmap when the model broke off the clean inputs."""
    x, y = digit_batch
    model = NanAway(digits_model, x)
    assert torch.isfinite(model(x)).all()
    with pytest.raises(ValueError, match=r"model output contains NaN/Inf for \d+ item\(s\) \[[0-9, .]+\] \(in the "):
        px.get_method(name)(model, batch_size=4, **params).explain(x, y)


def test_non_finite_target_scores_from_a_callable_target_are_refused(digits_model, digit_batch):
    x, _ = digit_batch
    log_of_logit = lambda out: out[:, 0].log()  # noqa: E731  (the digits CNN's logits include negative ones)
    assert not torch.isfinite(log_of_logit(digits_model(x))).all()
    for name, params in [("ig", {"n_steps": 4}), ("rise", {"n_masks": 8})]:
        with pytest.raises(ValueError, match=r"target score contains NaN/Inf .*the callable target turned a finite "
                                             r"model output into NaN/Inf"):
            px.get_method(name)(digits_model, batch_size=4, **params).explain(x, log_of_logit)


def test_non_finite_gradients_are_refused():
    def norm_model(inp: torch.Tensor) -> torch.Tensor:  # finite at 0, but d|x|/dx = x / |x| = 0 / 0 there
        return (inp.flatten(1) ** 2).sum(1, keepdim=True).sqrt()  # (torch's norm() defines its gradient at 0)

    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"gradient of the target score w.r.t. the input contains NaN/Inf for 2 "
                                         r"item\(s\) \[0, 1\].*undefined gradient"):
        px.get_method("saliency")(norm_model, batch_size=2).explain(x, 0)


def test_gradcam_checks_its_own_model_calls(digits_model, digit_batch):
    """Grad-CAM calls the model through Captum, outside the shared evaluator; the same checks apply."""
    x = digit_batch[0].clone()
    x[2, 0, 0, 0] = 1.0
    with pytest.raises(ValueError, match=r"model output contains NaN/Inf for 1 item\(s\) \[2\] \(in the gradcam"):
        px.get_method("gradcam")(RowNan(digits_model), batch_size=2).explain(x, lambda out: out[:, 1])


def test_selectors_and_energy_nets_with_nan_weights_are_refused():
    import pathxai.structured as st

    x = torch.rand(3, 16)
    selector = st.Selector(16, 3, [3], kind="sointer")
    energy = st.EnergyNet(16, 5)
    with torch.no_grad():
        for p in list(selector.parameters()) + list(energy.parameters()):
            p.fill_(NAN)
    box = torch.nn.Sequential(torch.nn.Linear(16, 5), torch.nn.Sigmoid())
    with pytest.raises(ValueError, match="interpreter output contains NaN/Inf"):
        px.get_method("sointer")(box, interpreter=selector).explain(x)
    with pytest.raises(ValueError, match="energy contains NaN/Inf"):
        px.get_method("energy_occlusion")(box, energy=energy).explain(x, 0)


# ---------------------------------------------------------------------------------------------- 2. baselines
def test_make_baseline_refuses_non_finite_references():
    x = torch.rand(2, 1, 8, 8)
    for bad in (NAN, INF, -INF, np.float64("nan")):
        with pytest.raises(ValueError, match=r"baseline must be a finite number, got"):
            px.core.make_baseline(x, bad)
    with pytest.raises(ValueError, match=r"baseline callable returned NaN/Inf values for 1 sample\(s\) \[1\]"):
        px.core.make_baseline(x, lambda t: torch.where(torch.arange(2).view(-1, 1, 1, 1) == 1, NAN, t))
    with pytest.raises(TypeError, match="baseline callable must return a floating-point tensor"):
        px.core.make_baseline(x, lambda t: torch.zeros(t.shape, dtype=torch.long))
    for sigma in (0.0, -1.0, NAN, INF):  # sigma 0 made the "blur" baseline the input itself: all-zero IG
        with pytest.raises(ValueError, match=r"blur_sigma must be a finite number in \(0, inf\)"):
            px.core.make_baseline(x, "blur", blur_sigma=sigma)


def test_blur_sigma_zero_no_longer_gives_an_all_zero_map(digits_model, digit_batch):
    x, y = digit_batch
    with pytest.raises(ValueError, match="blur_sigma"):
        px.get_method("ig")(digits_model, baseline="blur", blur_sigma=0.0)
    with pytest.raises(ValueError, match="blur_sigma"):
        px.get_method("samp")(digits_model, baseline="blur", blur_sigma=0)
    with pytest.raises(ValueError, match="max_sigma"):
        px.get_method("blur_ig")(digits_model, max_sigma=0.0)


def test_method_baselines_are_checked(digits_model, digit_batch):
    x, y = digit_batch
    for name in ("ig", "occlusion", "guided_ig", "samp"):
        with pytest.raises(ValueError, match="baseline must be a finite number"):
            px.get_method(name)(digits_model, baseline=NAN)
    ig = px.get_method("ig")(digits_model, n_steps=4, baseline=lambda t: t * NAN)
    with pytest.raises(ValueError, match="baseline callable returned NaN/Inf"):
        ig.explain(x, y)
    with pytest.raises(ValueError, match="baseline"):
        px.get_method("relax")(digits_model, baseline=NAN)


def test_metric_baselines_are_checked(digits_model, digit_batch):
    x, y = digit_batch
    sal = torch.rand(3, 28, 28)
    with pytest.raises(ValueError, match="baseline must be a finite number"):
        M.insertion(digits_model, x, sal, y, steps=4, baseline=NAN)
    with pytest.raises(ValueError, match="baseline must be a finite number"):
        M.deletion(digits_model, x, sal, y, steps=4, baseline=INF)
    with pytest.raises(ValueError, match="baseline callable returned NaN/Inf"):
        M.completeness(digits_model, x, torch.rand_like(x), y, baseline=lambda t: t / 0.0 * 0.0)
    with pytest.raises(ValueError, match="baseline must be a finite number"):
        M.sensitivity_n(digits_model, x, torch.rand_like(x), y, baseline=NAN, ns=[2], n_subsets=2)
    with pytest.raises(ValueError, match="baseline must be finite"):
        M.negative_perturbation(digits_model, x, sal, y, baseline=NAN)
    with pytest.raises(ValueError, match="blur_sigma"):
        M.insertion(digits_model, x, sal, y, steps=4, baseline="blur", blur_sigma=0.0)
    box = torch.nn.Sequential(torch.nn.Linear(16, 5), torch.nn.Sigmoid())
    xs = torch.rand(3, 16)
    with pytest.raises(ValueError, match="baseline must be a finite number"):
        M.posthoc_accuracy(box, xs, torch.rand(3, 16), target=0, k=2, baseline=NAN)


def test_gaussian_blur_refuses_bad_sigmas_and_clips_huge_kernels_cheaply():
    x = torch.rand(1, 1, 16, 16)
    with pytest.raises(ValueError, match="sigma must be a finite number"):
        px.core.gaussian_blur(x, NAN)
    with pytest.raises(ValueError, match="sigma must be a finite number"):
        px.core.gaussian_blur(x, -1.0)
    with pytest.raises(ValueError, match=r"sigma=1e\+09 gives a Gaussian kernel of radius 3000000000 taps"):
        px.core.baselines.gaussian_kernel1d(1e9)
    t0 = time.perf_counter()
    wide = px.core.gaussian_blur(x, 1e9)  # used to build a 6e9-tap kernel (48 GB) before clipping it to 16 px
    assert time.perf_counter() - t0 < 1.0
    assert torch.allclose(wide, px.core.gaussian_blur(x, 1e4), atol=1e-6)
    assert torch.equal(px.core.gaussian_blur(x, 0.0), x)  # sigma 0: the identity (the start of a blur path)


# ---------------------------------------------------------------------------------------------- 3. ranges
def test_validation_helpers():
    from pathxai.core import validation as V

    assert V.check_positive_float(2, "sigma") == 2.0
    for bad in (0.0, -1.0, NAN, INF):
        with pytest.raises(ValueError, match=r"sigma must be a finite number in \(0, inf\), got"):
            V.check_positive_float(bad, "sigma")
    with pytest.raises(TypeError, match="sigma must be a finite number"):
        V.check_positive_float("1", "sigma")
    assert V.check_positive_float(0.0, "smoothing", allow_zero=True) == 0.0
    with pytest.raises(ValueError, match=r"gamma must lie in \[0.0, inf\], got inf"):
        V.check_fraction(INF, "gamma", high=math.inf)  # NaN and Inf used to pass with high=inf
    with pytest.raises(ValueError, match=r"p must lie in \[0.0, 1.0\], got nan"):
        V.check_fraction(NAN, "p")
    assert V.check_finite_float(-3, "shift") == -3.0
    with pytest.raises(ValueError, match=r"x must be a finite number in \[0, 1\), got 1.0"):
        V.check_finite_float(1.0, "x", low=0.0, high=1.0, high_open=True)
    assert V.check_choice("mean", "aggregate", ("mean", "max")) == "mean"
    with pytest.raises(ValueError, match=r"aggregate must be one of 'mean', 'max', got 'Mean'"):
        V.check_choice("Mean", "aggregate", ("mean", "max"))
    assert V.check_choice(None, "score", (None, "softmax")) is None
    with pytest.raises(ValueError, match="flag must be one of True, False"):
        V.check_choice(0, "flag", (True, False))
    assert V.check_bool(1, "relu") is True and V.check_bool(np.bool_(False), "relu") is False
    with pytest.raises(TypeError, match=r"relu must be True or False, got 'False'"):
        V.check_bool("False", "relu")  # truthy: would have switched the option on
    assert V.check_positive_int(np.int64(3), "n") == 3
    with pytest.raises(ValueError, match=r"n must be an integer in \[0, 52\], got 53"):
        V.check_positive_int(53, "n", minimum=0, maximum=52)


def test_metric_parameters_are_checked_before_any_model_call(digits_model, digit_batch):
    x, y = digit_batch
    model = Counting(digits_model)
    sal = torch.rand(3, 28, 28)
    cases = [
        (lambda: M.insertion(model, x, sal, y, score="prob"), "score"),
        (lambda: M.deletion(model, x, sal, y, blur_sigma=NAN), "blur_sigma"),
        (lambda: M.negative_perturbation(model, x, sal, y, fractions=[0.1, NAN]), "fractions"),
        (lambda: M.infidelity(model, x, "saliency", y, noise_std=NAN), "noise_std"),
        (lambda: M.infidelity(model, x, "saliency", y, noise_std=0.0), "noise_std"),
        (lambda: M.infidelity(model, x, "saliency", y, normalize="yes"), "normalize"),
        (lambda: M.sensitivity_max(model, x, "saliency", y, perturb_radius=NAN), "perturb_radius"),
        (lambda: M.sensitivity_max(model, x, "saliency", y, max_examples_per_batch=0), "max_examples_per_batch"),
        (lambda: M.top_k_intersection(sal, sal > 0.5, k=NAN), "k"),
        (lambda: M.pointing_game(sal, sal > 0.5, tolerance=NAN), "tolerance"),
        (lambda: M.default_ns(100, count=1), "count"),
        (lambda: M.default_ns(100, max_fraction=NAN), "max_fraction"),
        (lambda: M.monotonicity_correlation(model, x, sal, y, score="prob"), "score"),
    ]
    for call, name in cases:
        with pytest.raises((ValueError, TypeError), match=name):
            call()
    assert model.calls == 0


def test_public_helpers_check_their_ranges(monkeypatch):
    from pathxai.methods import relax_masks, rise_masks

    idx = torch.arange(2)
    with pytest.raises(ValueError, match="grid must be an integer >= 1"):
        rise_masks(idx, 0, 8, 8, grid=0)
    with pytest.raises(ValueError, match=r"p must lie in \[0.0, 1.0\], got nan"):
        rise_masks(idx, 0, 8, 8, p=NAN)
    with pytest.raises(ValueError, match=r"p must lie in \[0.0, 1.0\], got 1.5"):
        relax_masks(idx, 0, (8, 8), p=1.5)
    with pytest.raises(ValueError, match="memory_budget must be an integer >= 1"):
        px.core.BatchedEvaluator(lambda t: t, memory_budget=0)
    monkeypatch.setenv("PATHXAI_MEMORY_BUDGET", "nan")
    with pytest.raises(ValueError, match="PATHXAI_MEMORY_BUDGET must be a number of bytes >= 1, got 'nan'"):
        px.core.evaluator.default_memory_budget()


# ---------------------------------------------------------------------------------------------- 4. seeds
def test_seeds_must_lie_in_0_to_2_to_the_63(digits_model):
    from pathxai.core.seeding import item_generator, item_seed, numpy_rng

    item_seed(2**63 - 1, "s", 0)
    for bad in (2**63, 2**64, 2**70, -1):  # 2**64 and 2**70 used to give seed 0's random numbers
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*63\)"):
            item_seed(bad, "s", 0)
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*63\)"):
            numpy_rng(bad, "s")
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*63\)"):
            px.get_method("rise")(digits_model, seed=bad)
    with pytest.raises(TypeError, match=r"seed must be an integer"):
        item_generator(1.5, "s", 0)
    with pytest.raises(ValueError, match=r"item must be an integer in \[0, 2\*\*63\)"):
        item_seed(0, "s", -1)
    assert item_seed(np.int64(5), "s", 0) == item_seed(5, "s", 0)


def test_seeds_of_suites_evaluations_and_metrics_are_checked(digits_model, digit_batch):
    x, y = digit_batch
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*63\)"):
        px.data.load_suite("digits", n_images=2, seed=-1)
    with pytest.raises(TypeError, match=r"seed must be an integer"):
        px.data.load_suite("digits", n_images=2, seed=1.5)  # int(seed) used to truncate it to 1
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*63\)"):
        px.evaluate("digits", ["saliency"], seed=2**64)
    with pytest.raises(ValueError, match="image_batch must be an integer >= 1"):
        px.evaluate("digits", ["saliency"], image_batch=0)
    assert time.perf_counter() - t0 < 5.0  # refused before any suite is built
    for call in (lambda: M.sensitivity_n(digits_model, x, torch.rand_like(x), y, seed=2**64, ns=[2], n_subsets=2),
                 lambda: M.completeness(digits_model, x, torch.rand_like(x), y, seed=-5),
                 lambda: M.monotonicity_correlation(digits_model, x, torch.rand(3, 28, 28), y, seed=2**70),
                 lambda: M.infidelity(digits_model, x, "saliency", y, seed=2**63)):
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*63\)"):
            call()


# ---------------------------------------------------------------------------------------------- 5. autograd
def test_inference_mode_is_named(digits_model, digit_batch):
    x, y = digit_batch
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match=r"explain was called inside torch.inference_mode\(\).*call explain "
                                               r"outside torch.inference_mode\(\)") as info:
            px.get_method("ig")(digits_model, n_steps=4).explain(x, y)
    assert isinstance(info.value, px.core.GradientUnavailableError)
    with torch.no_grad():  # fine: the evaluator enables grad itself
        e = px.get_method("ig")(digits_model, n_steps=4, batch_size=4).explain(x, y)
    assert torch.equal(e.attribution, px.get_method("ig")(digits_model, n_steps=4, batch_size=4).explain(x, y)
                       .attribution)


def test_models_without_a_gradient_are_named(digits_model, digit_batch):
    x, y = digit_batch

    def through_numpy(inp: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(digits_model(inp).detach().numpy())

    for name in ("saliency", "ig", "smoothgrad", "gradcam"):
        model = through_numpy if name != "gradcam" else torch.nn.Sequential(digits_model, _Detach())
        with pytest.raises(RuntimeError, match=r"model output does not require grad.*does not depend "
                                               r"differentiably on the .*perturbation method.*occlusion, rise"):
            px.get_method(name)(model, batch_size=4).explain(x, y)
    # occlusion needs no gradient
    px.get_method("occlusion")(through_numpy, window=14, stride=14).explain(x, y)
    with pytest.raises(RuntimeError, match="the callable target detaches the output"):
        px.get_method("saliency")(digits_model).explain(x, lambda out: out[:, 1].detach())


class _Detach(torch.nn.Module):
    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        return inp.detach()


# ---------------------------------------------------------------------------------------------- 6. resource limits
def test_ig_with_a_billion_steps_fails_at_once(digits_model):
    t0 = time.perf_counter()  # main: 129 s, then a MemoryError for a 6.94 EiB matrix
    with pytest.raises(ValueError, match=r"n_steps=1000000000 with method='gausslegendre' exceeds 8192 nodes.*"
                                         r"use method='riemann_trapezoid'"):
        px.get_method("ig")(digits_model, n_steps=10**9)
    with pytest.raises(ValueError, match=r"method 'ig' with n_steps=1000000000 needs about 1.00e\+09 model "
                                         r"evaluations .*above the limit of 1.00e\+08 \(PATHXAI_MAX_EVALUATIONS\).*"
                                         r"lower n_steps.*pathxai.core.limits.override"):
        px.get_method("ig")(digits_model, n_steps=10**9, method="riemann_trapezoid")
    assert time.perf_counter() - t0 < 1.0


def test_a_large_gauss_legendre_rule_is_cheap():
    from pathxai.methods import quadrature

    tracemalloc.start()
    t0 = time.perf_counter()
    alphas, weights = quadrature(6000)  # NumPy's leggauss: 11 s and 0.86 GB
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 3.0 and peak < 20 * 2**20
    assert alphas.shape == weights.shape == (6000,)
    assert abs(float(weights.sum()) - 1.0) < 1e-12
    assert abs(float((weights * alphas**9).sum()) - 0.1) < 1e-12  # exact for polynomials of degree < 12000
    # the SciPy rule (above 256 nodes) agrees with NumPy's, which small rules keep using bit for bit
    ref_nodes, ref_weights = np.polynomial.legendre.leggauss(300)
    a, w = quadrature(300)
    assert np.abs(a.numpy() - 0.5 * (ref_nodes + 1)).max() < 1e-14
    assert np.abs(w.numpy() - 0.5 * ref_weights).max() < 1e-13
    a50, w50 = quadrature(50)
    nodes50, weights50 = np.polynomial.legendre.leggauss(50)
    assert np.array_equal(a50.numpy(), 0.5 * (nodes50 + 1)) and np.array_equal(w50.numpy(), 0.5 * weights50)


def test_relax_with_a_tiny_tolerance_is_refused_at_construction():
    enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"method 'relax' with tolerance=1e-06 needs about 2.65e\+12 model "
                                         r"evaluations .*raise tolerance .*PATHXAI_MAX_EVALUATIONS") as info:
        px.get_method("relax")(enc, tolerance=1e-6)
    assert isinstance(info.value, px.core.ResourceLimitError)
    assert time.perf_counter() - t0 < 1.0


def test_limits_come_from_the_environment_and_can_be_lifted(monkeypatch, digits_model, digit_batch):
    x, y = digit_batch
    model = Counting(digits_model)
    ig = px.get_method("ig")(model, n_steps=50, batch_size=8)
    monkeypatch.setenv("PATHXAI_MAX_EVALUATIONS", "100")
    with pytest.raises(ValueError, match=r"needs about 150 model evaluations \(3 input\(s\) x 50 steps\), above the "
                                         r"limit of 100"):
        ig.explain(x, y)
    assert model.calls == 0  # refused before any work
    with px.core.limits.override(max_evaluations=math.inf):
        assert ig.explain(x, y).meta["model_evaluations"] == 150
    monkeypatch.setenv("PATHXAI_MAX_EVALUATIONS", "inf")
    monkeypatch.setenv("PATHXAI_WARN_EVALUATIONS", "10")
    with pytest.warns(px.core.ResourceLimitWarning, match="needs about 150 model evaluations"):
        ig.explain(x, y)
    monkeypatch.setenv("PATHXAI_MAX_EVALUATIONS", "many")
    with pytest.raises(ValueError, match="environment variable PATHXAI_MAX_EVALUATIONS must be a number or 'inf'"):
        ig.explain(x, y)
    with pytest.raises(TypeError, match="unknown limit"):
        with px.core.limits.override(max_evals=1):
            pass


def test_dense_structures_are_checked_before_they_are_allocated():
    def tripwire(inp: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the model must not be called")

    target = lambda out: out[:, 0]  # noqa: E731  (no class probe)
    x = torch.rand(1, 1, 256, 256)
    t0 = time.perf_counter()
    # 65,536 one-pixel windows: a (65536, 256, 256) float mask table of 16 GiB
    with pytest.raises(ValueError, match=r"method 'occlusion' with stride=1 would allocate about 16 GiB up front.*"
                                         r"PATHXAI_MAX_BYTES\); use a larger window or stride"):
        px.get_method("occlusion")(tripwire, window=1, stride=1).explain(x, target)
    with pytest.raises(ValueError, match=r"'rise' with grid=100000 would allocate about .* up front.*lower grid"):
        px.get_method("rise")(tripwire, grid=100_000, n_masks=2).explain(x, target)
    with pytest.raises(ValueError, match=r"metric 'insertion' with steps=1000000000 needs about 1.00e\+09 model "
                                         r"evaluations"):
        M.insertion(tripwire, x, torch.rand(1, 256, 256), target, steps=10**9, score="logit")
    with pytest.raises(ValueError, match=r"metric 'sensitivity_n' with n_subsets=100000000"):
        M.sensitivity_n(tripwire, x, torch.rand_like(x), target, ns=[2], n_subsets=10**8)
    assert time.perf_counter() - t0 < 2.0


def test_every_method_estimates_its_cost(digits_model):
    """cost() is the hook explain() checks: it must at least count N evaluations per input and scale with N."""
    from method_params import required_params, tiny_vit

    vit = tiny_vit()
    for name in px.list_methods():
        model = vit if getattr(px.get_method(name), "needs_transformer", False) else digits_model
        method = px.get_method(name)(model, **required_params(name))
        one, three = method.cost((1, 1, 28, 28)), method.cost((3, 1, 28, 28))
        assert 1 <= one.evaluations <= three.evaluations and three.evaluations >= 3, name
        assert 0 <= one.bytes <= three.bytes, name
        assert method.cost(None).evaluations >= 1, name
