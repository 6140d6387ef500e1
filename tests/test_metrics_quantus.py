"""The metrics Quantus also implements, against Quantus 0.6 on the same inputs (Quantus is a test-only dependency:
the ``test`` extra).

Where the definitions differ (see each module's docstring) the comparison is made where they coincide: ROAD's MoRF
accuracy curve without imputation noise on a single-channel model, IROF with a constant baseline and Quantus'
x-axis convention converted, the relative stabilities on perturbations (shared between both) that keep the class.
"""
from __future__ import annotations

import numpy as np
import pytest
import quantus
import torch

import pathxai as px
from pathxai import metrics as M
from pathxai.metrics.road import noisy_linear_imputation


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest's fixture


def _random(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------- complexity
@pytest.mark.parametrize("shape", [(7, 3, 12, 12), (7, 12, 12), (7, 1, 9, 11)])
@pytest.mark.parametrize("name", ["sparseness", "complexity"])
def test_sparseness_and_complexity_equal_quantus_on_random_maps(name, shape):
    a = _random(shape, 1)
    channels = shape[1] if len(shape) == 4 else 1
    x = torch.rand(shape[0], channels, *shape[-2:], generator=torch.Generator().manual_seed(2))
    reference = {"sparseness": quantus.Sparseness, "complexity": quantus.Complexity}[name]
    # Quantus normalises and adds its epsilon in place: give it a copy
    q = np.asarray(reference(disable_warnings=True)(model=None, x_batch=x.numpy(), y_batch=np.zeros(shape[0], int),
                                                    a_batch=a.numpy().copy()))
    ours = M.get_metric(name)(a).score.numpy()
    assert np.abs(q - ours).max() < 1e-4
    # and the scores are not trivially equal: they vary across samples
    assert ours.std() > 1e-4


# ------------------------------------------------------------------------------------------------- localisation
@pytest.mark.parametrize("name,reference", [("relevance_mass", quantus.RelevanceMassAccuracy),
                                            ("relevance_rank", quantus.RelevanceRankAccuracy)])
def test_relevance_mass_and_rank_equal_quantus(name, reference):
    a = _random((6, 1, 14, 12), 3)
    masks = torch.rand(6, 14, 12, generator=torch.Generator().manual_seed(4)) > 0.7
    x = torch.rand(6, 1, 14, 12)
    q = np.asarray(reference(disable_warnings=True)(model=None, x_batch=x.numpy(), y_batch=np.zeros(6, int),
                                                    a_batch=a.numpy().copy(),
                                                    s_batch=masks[:, None].numpy().astype(float)))
    ours = M.get_metric(name)(a, masks).score.numpy()
    assert np.abs(q - ours).max() < 1e-4
    # non-negative maps (CLEVR-XAI's pos-sum pooling): the same as Quantus on the clipped map
    q_pos = np.asarray(reference(disable_warnings=True)(model=None, x_batch=x.numpy(), y_batch=np.zeros(6, int),
                                                        a_batch=a.clamp_min(0).numpy().copy(),
                                                        s_batch=masks[:, None].numpy().astype(float)))
    assert np.abs(q_pos - M.get_metric(name)(a, masks, pooling="sum,pos").score.numpy()).max() < 1e-4


# ------------------------------------------------------------------------------------------------- ROAD
def test_linear_imputation_equals_quantus_without_noise():
    from quantus.functions.perturb_func import noisy_linear_imputation as quantus_imputation

    g = torch.Generator().manual_seed(5)
    image = torch.rand(3, 19, 23, generator=g, dtype=torch.float64)
    for fraction in (0.05, 0.5, 0.95):
        removed = torch.rand(19, 23, generator=g) < fraction
        ours = noisy_linear_imputation(image, removed)
        ref = quantus_imputation(image.numpy(), np.flatnonzero(removed.numpy().ravel()), noise=0.0)
        assert np.abs(ours.numpy() - ref).max() < 1e-10


def test_road_morf_accuracy_equals_quantus_road(digits_model):
    x, y = px.data.digits("test")
    x, y = x[:12], y[:12]
    # strokes first (plus a little noise against ties): the digits lose their class as strokes go
    sal = x[:, 0] + 1e-3 * torch.rand(12, 28, 28, generator=torch.Generator().manual_seed(6))
    pct = [10, 40, 55, 65, 75, 90]
    q = quantus.ROAD(noise=0.0, percentages=pct, disable_warnings=True)(
        model=digits_model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=sal[:, None].numpy().copy(), device="cpu")
    ours = M.road(digits_model, x, sal, y, percentages=pct, noise=0.0, batch_size=8)
    assert np.allclose([q[p] for p in pct], ours.morf.mean(0).numpy(), atol=1e-12)
    assert ours.morf.mean(0)[0] > ours.morf.mean(0)[-1]   # the curve actually moves: the comparison has teeth


# ------------------------------------------------------------------------------------------------- IROF
def test_irof_equals_quantus_irof(digits_model, monkeypatch):
    if not hasattr(np, "trapz"):   # Quantus 0.6 calls np.trapz, which NumPy 2.4 removed (renamed np.trapezoid)
        monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    x, y = px.data.digits("test")
    sal = _random((4, 28, 28), 7)
    irof = quantus.IROF(perturb_baseline=0.0, return_aggregate=False, disable_warnings=True)
    for i in range(4):   # one image per call: Quantus pads a batch to its longest segment list
        q = irof(model=digits_model, x_batch=x[i:i + 1].numpy(), y_batch=y[i:i + 1].numpy(),
                 a_batch=sal[i:i + 1, None].numpy().copy(), device="cpu")[0]
        ours = M.irof(digits_model, x[i:i + 1], sal[i:i + 1], y[i:i + 1], baseline=0.0)
        s = int(ours.n_segments[0])
        # Quantus: S - trapz(c_1..c_S) with unit steps = S * aoc + (1 + c_1) / 2 in terms of our [0, 1] x-axis
        assert abs(q - (s * float(ours.score[0]) + (1 + float(ours.curve[0, 1])) / 2)) < 1e-4 * s


# ------------------------------------------------------------------------------------------------- stability
@pytest.mark.parametrize("name", ["input", "output", "representation"])
def test_relative_stability_equals_quantus(name, digits_model):
    x, _ = px.data.digits("test")
    x = x[:6]
    k = 4
    g = torch.Generator().manual_seed(8)
    perturbed = [x + (2 * torch.rand(x.shape, generator=g) - 1) * 0.02 for _ in range(k)]
    with torch.no_grad():
        pred = digits_model(x).argmax(1)
        # the comparison needs perturbations that keep the class (Quantus makes a sample NaN otherwise)
        assert all(torch.equal(digits_model(p).argmax(1), pred) for p in perturbed)
    method = px.get_method("saliency")(digits_model, batch_size=8)

    def explain_func(model, inputs, targets, **kwargs):
        return method.explain(torch.as_tensor(inputs), torch.as_tensor(targets)).attribution.numpy()

    calls = iter(range(k))

    def quantus_perturb(arr, indices, **kwargs):   # Quantus asks for perturbation 0, 1, ... in order
        return perturbed[next(calls)].reshape(arr.shape).numpy().astype(arr.dtype)

    reference = {"input": quantus.RelativeInputStability, "output": quantus.RelativeOutputStability,
                 "representation": quantus.RelativeRepresentationStability}[name]
    extra_q = {"layer_names": ["net.features.6"]} if name == "representation" else {}
    extra_o = {"layer": "net.features.6"} if name == "representation" else {}
    q = np.asarray(reference(nr_samples=k, perturb_func=quantus_perturb, disable_warnings=True, **extra_q)(
        model=digits_model, x_batch=x.numpy(), y_batch=pred.numpy(), a_batch=None, explain_func=explain_func,
        device="cpu"))
    # one chunk, as Quantus runs the batch: RRS divides by activations near 0, which magnifies float32 rounding
    # differences between chunkings (~1e-3 relative), so both must run the model on the same batches
    ours = M.get_metric(f"relative_{name}_stability")(digits_model, x, method, n_perturb_samples=k, batch_size=8,
                                                      perturb_fn=lambda xx, i: perturbed[i].to(xx), **extra_o)
    assert (ours.n_valid == k).all()
    assert np.allclose(ours.score.double().numpy(), q, rtol=1e-4, atol=0)
