"""Bring your own model: every registered method on the model's device and dtype, with structured outputs, and with
a model that runs out of memory above a chunk size.

- Device: CI has no GPU, so a *virtual second device* (tests/device_check.py) tags the model's tensors as "on the
  device" and finds every tensor pathxai creates on the host that would meet them -- what fails on a real GPU.
  Tests that need CUDA are written too and skip without it.
- Dtype: a float64 input (work in float64, result in float64), a bfloat16 / float16 model (inputs cast at the call,
  outputs widened, accumulators in float32, result in x's dtype).
- Outputs: a model returning a transformers ``ModelOutput``, a dict or a tuple gives the plain model's result.
- Out of memory: a model that raises ``torch.OutOfMemoryError`` for chunks above 4 gives the chunk-4 result.
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import pathxai as px
from device_check import VirtualDevice, format_violations
from method_params import FAST_PARAMS
from pathxai.core.evaluator import OutOfMemoryBackoffWarning, clear_auto_cache
from pathxai.models.encoders import digits_cnn_features

CLASS_METHODS = [n for n in px.list_methods() if 4 in px.get_method(n).input_ndim and px.get_method(n).needs_target
                 and not getattr(px.get_method(n), "needs_transformer", False)]
TRANSFORMER_METHODS = [n for n in px.list_methods() if getattr(px.get_method(n), "needs_transformer", False)]
REPRESENTATION_METHODS = [n for n in px.list_methods() if not px.get_method(n).needs_target]


pytestmark = pytest.mark.usefixtures("one_thread")   # tiny models: one thread (conftest.py)


@pytest.fixture(scope="module")
def encoder() -> nn.Module:
    return digits_cnn_features()


def make(name: str, model, **kwargs):
    params = dict(FAST_PARAMS.get(name, {}))
    params.update(kwargs)
    return px.get_method(name)(model, **params)


@pytest.fixture(scope="module")
def vit():
    from method_params import tiny_vit

    return tiny_vit()


def model_for(name: str, digits_model, encoder, vit=None):
    if getattr(px.get_method(name), "needs_transformer", False):
        return vit
    return digits_model if px.get_method(name).needs_target else encoder


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12))


# ---------------------------------------------------------------------------------------------------------------
# devices


@pytest.mark.parametrize("name", CLASS_METHODS + REPRESENTATION_METHODS + TRANSFORMER_METHODS)
def test_no_host_tensor_meets_the_models_device(name, digits_model, encoder, vit, digit_batch):
    x, _ = digit_batch
    model = model_for(name, digits_model, encoder, vit)
    method = make(name, model, batch_size=2)
    with VirtualDevice(model) as mode:
        e = method.explain(x[:2])
        e.saliency()
    assert not mode.violations, "\n" + format_violations(mode.violations)


EXTRA_CONFIGS = [
    ("relax", {"n_masks": 128, "control_variate": True}),                          # the control variate's sums
    ("relax", {"n_masks": 24, "sampling": "stratified", "baseline": 0.5}),
    ("fi", {"n_samples": 3, "covariance": "conv"}),
    ("samp++", {"step_size": 0.34, "completeness_rtol": 1e-3}),                   # adaptive refinement
    ("ig", {"n_steps": 4, "baseline": "uniform", "return_delta": True}),
    ("smoothgrad", {"n_samples": 3}),
    ("occlusion", {"window": 7, "stride": 7, "baseline": "blur"}),
]


@pytest.mark.parametrize("name,params", EXTRA_CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(EXTRA_CONFIGS)])
def test_no_host_tensor_meets_the_device_in_other_configurations(name, params, digits_model, encoder, digit_batch):
    x, _ = digit_batch
    model = model_for(name, digits_model, encoder)
    if name == "fi" and params.get("covariance") == "conv":
        from pathxai.methods.fisher import ConvCovariance

        params = {**params, "covariance": ConvCovariance.fit(px.data.digits("train")[0][:64], size=5)}
    with VirtualDevice(model) as mode:
        px.get_method(name)(model, batch_size=2, **params).explain(x[:2])
    assert not mode.violations, "\n" + format_violations(mode.violations)


def test_metrics_run_where_the_model_is(digits_model, digit_batch):
    x, y = digit_batch
    sal = torch.rand(3, 28, 28, generator=torch.Generator().manual_seed(0))
    attr = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    M = px.metrics
    with VirtualDevice(digits_model) as mode:
        M.insertion(digits_model, x, sal, y, steps=4, baseline="blur", batch_size=4)
        M.deletion(digits_model, x, sal, y, steps=4, batch_size=4)
        M.completeness(digits_model, x, attr, y, batch_size=4)
        M.sensitivity_n(digits_model, x, attr, y, ns=[10, 50], n_subsets=3, batch_size=4)
        M.negative_perturbation(digits_model, x, sal, batch_size=4)
        M.infidelity(digits_model, x, attr, y, n_perturb_samples=3, batch_size=4)
        M.sensitivity_max(digits_model, x, "saliency", y, n_perturb_samples=2, batch_size=4)
        M.road(digits_model, x, sal, y, percentages=[20, 60], batch_size=4)
        M.irof(digits_model, x, sal, y, n_segments=10, batch_size=4)
        M.relative_input_stability(digits_model, x, "saliency", y, n_perturb_samples=2, batch_size=4)
        M.relative_output_stability(digits_model, x, "saliency", y, n_perturb_samples=2, batch_size=4)
        M.relative_representation_stability(digits_model, x, "saliency", y, n_perturb_samples=2, batch_size=4)
        M.relative_representation_stability(digits_model, x, "saliency", y, layer="net.features.6",
                                            n_perturb_samples=2, batch_size=4)
    assert not mode.violations, "\n" + format_violations(mode.violations)


class _BuggyMethod(px.core.Method):
    """A method that makes its noise on the host: what the virtual device must catch."""

    name = ""

    def _explain(self, x, target):
        noise = torch.randn(x.shape)                         # no device=: on a GPU this stays on the CPU
        out = self.evaluator.forward(x + 0.01 * noise)
        return target.score(out).view(-1, 1, 1, 1) * torch.ones_like(x), {}


def test_the_virtual_device_catches_a_host_tensor(digits_model, digit_batch):
    x, _ = digit_batch
    with VirtualDevice(digits_model, judge=(__file__,)) as mode:
        _BuggyMethod(digits_model, batch_size=4).explain(x)
    assert any("mixes device tensor" in v.what for v in mode.violations), format_violations(mode.violations)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["ig", "smoothgrad", "rise", "occlusion", "gradcam", "relax", "ablation_path",
                                  "samp"])
def test_on_a_real_gpu(name, digits_model, encoder, digit_batch):
    x, y = digit_batch
    model = copy.deepcopy(model_for(name, digits_model, encoder)).cuda()
    e = make(name, model, batch_size=2).explain(x, None if name == "relax" else y)
    assert e.attribution.device.type == "cpu" and e.meta["device"].startswith("cuda")
    cpu = make(name, model_for(name, digits_model, encoder), batch_size=2).explain(x, None if name == "relax" else y)
    if not px.get_method(name).stochastic:
        assert rel_diff(e.attribution, cpu.attribution) < 1e-3
    e = make(name, model, batch_size=2).explain(x.cuda(), None if name == "relax" else y)
    assert e.attribution.device.type == "cuda"


# ---------------------------------------------------------------------------------------------------------------
# dtypes


@pytest.mark.parametrize("name", CLASS_METHODS + REPRESENTATION_METHODS + TRANSFORMER_METHODS)
def test_a_float64_input_gives_a_float64_result(name, digits_model, encoder, vit, digit_batch):
    x, y = digit_batch
    model = model_for(name, digits_model, encoder, vit)
    target = y if px.get_method(name).needs_target else None
    e64 = make(name, model, batch_size=4).explain(x.double(), target)
    assert e64.attribution.dtype == torch.float64 and torch.isfinite(e64.attribution).all()
    e32 = make(name, model, batch_size=4).explain(x, target)
    # the same explanation: the model computes in float32 either way; the method's own arithmetic is wider
    assert rel_diff(e64.attribution, e32.attribution) < 2e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", CLASS_METHODS + REPRESENTATION_METHODS + TRANSFORMER_METHODS)
def test_a_low_precision_model(name, dtype, digits_model, encoder, vit, digit_batch):
    x, y = digit_batch
    model = copy.deepcopy(model_for(name, digits_model, encoder, vit)).to(dtype)
    target = y if px.get_method(name).needs_target else None
    e = make(name, model, batch_size=4).explain(x, target)
    assert e.attribution.dtype == torch.float32            # x's dtype, not the model's
    assert torch.isfinite(e.attribution).all()
    assert e.meta["model_dtype"] == str(dtype).replace("torch.", "") and e.meta["dtype"] == "float32"
    reference = make(name, model_for(name, digits_model, encoder, vit), batch_size=4).explain(x, target).attribution
    if reference.abs().sum() > 0:    # the same map up to the model's rounding (cosine similarity)
        cos = torch.nn.functional.cosine_similarity(e.attribution.flatten().double(), reference.flatten().double(),
                                                    dim=0)
        assert cos > 0.8, float(cos)


# ---------------------------------------------------------------------------------------------------------------
# outputs


class _Wrapped(nn.Module):
    def __init__(self, net: nn.Module, kind: str) -> None:
        super().__init__()
        self.net, self.kind = net, kind
        self.input_shape = getattr(net, "input_shape", None)

    def forward(self, x: torch.Tensor):
        out = self.net(x)
        if self.kind == "dict":
            return {"logits": out, "hidden": x}
        if self.kind == "tuple":
            return out, x
        from transformers.modeling_outputs import ImageClassifierOutput

        return ImageClassifierOutput(logits=out, hidden_states=(x,))


@pytest.mark.parametrize("kind", ["model_output", "dict", "tuple"])
@pytest.mark.parametrize("name", CLASS_METHODS + TRANSFORMER_METHODS)
def test_structured_model_outputs_are_unwrapped(name, kind, digits_model, encoder, vit, digit_batch):
    if kind == "model_output":
        pytest.importorskip("transformers")
    x, y = digit_batch
    model = model_for(name, digits_model, encoder, vit)
    plain = make(name, model, batch_size=4, seed=3).explain(x, y).attribution
    wrapped = make(name, _Wrapped(model, kind), batch_size=4, seed=3).explain(x, y).attribution
    torch.testing.assert_close(wrapped, plain)


# ---------------------------------------------------------------------------------------------------------------
# out of memory


class _RunsOutOfMemory(nn.Module):
    """The wrapped model, but chunks of more than ``limit`` inputs raise the allocator's error (as a GPU would)."""

    def __init__(self, net: nn.Module, limit: int, error: type[BaseException] = torch.OutOfMemoryError) -> None:
        super().__init__()
        self.net, self.limit, self.error = net, limit, error
        self.input_shape = getattr(net, "input_shape", None)
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(int(x.shape[0]))
        if x.shape[0] > self.limit:
            if self.error is RuntimeError:
                raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                                   "you tried to allocate 8589934592 bytes")
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.net(x)


@pytest.mark.parametrize("name", CLASS_METHODS + REPRESENTATION_METHODS + TRANSFORMER_METHODS)
def test_out_of_memory_chunks_are_retried_smaller_with_the_same_result(name, digits_model, encoder, vit,
                                                                        digit_batch):
    x, y = digit_batch
    base = model_for(name, digits_model, encoder, vit)
    target = y if px.get_method(name).needs_target else None
    reference = make(name, base, batch_size=4, seed=5).explain(x, target).attribution
    flaky = _RunsOutOfMemory(base, limit=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        e = make(name, flaky, batch_size=16, seed=5).explain(x, target)
    assert rel_diff(e.attribution, reference) < 1e-5
    assert max(e.meta["chunk_sizes"]) <= 4      # the chunks that ran; the ones that failed are not counted
    if any(s > 4 for s in flaky.sizes):   # it did run out of memory: one warning, the size is remembered
        assert sum(isinstance(w.message, OutOfMemoryBackoffWarning) for w in caught) == 1
        flaky.sizes.clear()
        make(name, flaky, batch_size=16, seed=5).explain(x, target)
        assert max(flaky.sizes) <= 4


def test_the_cpu_allocators_error_is_retried_too_and_other_errors_are_not(digits_model, digit_batch):
    x, y = digit_batch
    reference = make("ig", digits_model, batch_size=2).explain(x, y).attribution
    flaky = _RunsOutOfMemory(digits_model, limit=2, error=RuntimeError)
    with pytest.warns(OutOfMemoryBackoffWarning, match="retrying in chunks of at most"):
        e = make("ig", flaky, batch_size=8).explain(x, y)
    assert rel_diff(e.attribution, reference) < 1e-5
    broken = _RunsOutOfMemory(digits_model, limit=2, error=KeyError)
    with pytest.raises(KeyError):
        make("ig", broken, batch_size=8).explain(x, y)


def test_auto_batch_size_never_probes_a_size_that_ran_out_of_memory(digits_model, digit_batch):
    clear_auto_cache()
    x, y = digit_batch
    flaky = _RunsOutOfMemory(digits_model, limit=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutOfMemoryBackoffWarning)
        e = make("ig", flaky, batch_size="auto", n_steps=32).explain(x, y)
    reference = make("ig", digits_model, batch_size=2, n_steps=32).explain(x, y).attribution
    assert rel_diff(e.attribution, reference) < 1e-5
    flaky.sizes.clear()
    make("ig", flaky, batch_size="auto", n_steps=32).explain(x, y)
    assert max(flaky.sizes) <= 3


def test_the_library_never_picks_a_device_by_name():
    """Work goes where the model is: no `.cuda()` and no hard-coded "cuda" device anywhere in the library (the CLI's
    --device parsing in core/placement.py is the one place that names devices)."""
    import re
    from pathlib import Path

    src = Path(px.__file__).parent
    offenders = []
    for path in src.rglob("*.py"):
        if path.name == "placement.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"\.cuda\(|device\s*=\s*['\"](cuda|mps)", code):
                offenders.append(f"{path.relative_to(src)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
