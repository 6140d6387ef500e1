"""LIME and Kernel SHAP through Captum (``captum.attr.Lime`` / ``captum.attr.KernelShap``), under pathxai's contract.

Interpretable features: square patches of a ``grid`` x ``grid`` partition spanning all channels for images
(N, C, H, W), every token for sequences (N, L, D), every feature for vectors (N, D); or any feature groups given as a
``groups`` index tensor of the per-sample input shape (:mod:`pathxai.structured.groups`), in which case the
attribution is one value per group, (N, G). Each sample draws its perturbations from its own seeded generator
(Captum samples from torch's global RNG, so each sample runs inside ``torch.random.fork_rng()`` seeded from
``item_seed(seed, name, sample)``); the perturbations of one sample go to the model through the shared evaluator, so
``batch_size`` bounds memory and the result does not depend on it.

Sampling (:mod:`pathxai.core.sampling`): ``sampling="mc"`` is Captum's own sampler (LIME: independent Bernoulli(1/2)
features; Kernel SHAP: the all-on and all-off coalitions, then coalitions drawn from the Shapley kernel), bit for bit
what earlier versions returned. ``"antithetic"`` draws the random perturbations in complementary pairs (z, 1 - z),
each pair from its own generator (seed, "<name>-antithetic", sample, pair): every single draw keeps Captum's
distribution (the Shapley kernel's size distribution is symmetric, p(k) = p(M - k)), and the pairs balance the
design -- Kernel SHAP's "paired sampling" (Covert & Lee, AISTATS 2021). ``n_samples`` is rounded up to even.

Standard error (``extras["stderr"]``, shaped like the attribution), from the same samples, no model call. The
surrogate is a regression, not a mean, and its independent units are single draws (``"mc"``) or pairs
(``"antithetic"``); Kernel SHAP's two fixed end coalitions are not random.

- Kernel SHAP (weighted least squares): the cluster-robust sandwich A^-1 (sum_u psi_u psi_u^T) A^-1, A = X^T W X,
  psi_u = sum_{i in u} w_i x_i r_i over each unit's rows (intercept included), scaled by G / (G - p) (HC1; G units,
  p coefficients). Measured against the spread over 12 seeds on the digits-clutter CNN at 200 samples: 0.90x
  (``"mc"``) and 0.91x (``"antithetic"``); the pairs bootstrap over-estimated it 1.08x / 1.86x (with p / G ~ 0.5
  the bootstrap of a regression is known to inflate the variance, El Karoui & Purdom 2018), HC0 under-estimated it
  0.78x / 0.64x.
- LIME (Lasso, alpha = 0.01): no closed form; the bootstrap over the units (``BOOTSTRAP`` refits of Captum's Lasso,
  seeded from (seed, name, sample)): 1.11x the spread over seeds in the same measurement (only approximate at
  coefficients the penalty sets to zero, a known limitation of the Lasso bootstrap).

Both need more independent units than coefficients (:func:`min_units`: features + 2); below that the fit is
underdetermined and the standard error is NaN (the Lasso then keeps a few features that every bootstrap refit
agrees on, so a bootstrap would read a small, false error: on EfficientNet-Lite0 with 49 patches it let ``tol`` stop
at 32-48 samples, 0.2x the samples needed).

``tol``: the perturbations are sent to the model in blocks of 16; before each new block (from ``min_units`` and at
least 8 independent units on), the surrogate is refitted on what has been evaluated and sampling stops once its
relative error (:func:`pathxai.core.sampling.relative_error` of the coefficients and their standard errors) is
below ``tol``; ``n_samples`` is the cap. The final attribution is Captum's fit on exactly the samples drawn. For
Kernel SHAP the error also counts the fit's drift from its first half of the units (:func:`coefficient_error`): the
weighted regression is biased at small samples, which the sandwich does not see (without the drift its error at the
stop was up to 5.7x tol), so its first stop comes after 2 ``min_units`` pairs (about 210 samples for 49 patches).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from ..core import Method, Target, register_method
from ..core.limits import Cost
from ..core.sampling import SamplingMixin, check_sampling, check_tol, relative_error_from_moments, round_up
from ..core.seeding import item_generator, item_seed, numpy_rng
from ..core.validation import check_positive_int

SAMPLINGS = ("antithetic", "mc")
BOOTSTRAP = 32    # refits of the surrogate for the standard error
CHECK = 16        # with tol: perturbations per model call, and the stopping rule is checked between them
MIN_UNITS = 8     # independent units (draws or pairs) before the stopping rule, whatever the number of features


def grid_feature_mask(h: int, w: int, grid: int) -> torch.Tensor:
    """(1, 1, H, W) int64 feature ids of a grid x grid patch partition (row-major)."""
    rows = torch.div(torch.arange(h) * grid, h, rounding_mode="floor")
    cols = torch.div(torch.arange(w) * grid, w, rounding_mode="floor")
    return (rows[:, None] * grid + cols[None, :]).view(1, 1, h, w)


class _Recorder:
    """Captum's interpretable model, with the data of its last ``fit`` kept (for the bootstrap)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.data: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def fit(self, train_data: Any, **kwargs: Any) -> Any:
        xs, ys, ws = [], [], []
        for batch in train_data:   # Captum passes one batch holding every sample
            xs.append(batch[0].detach().cpu().float().numpy())
            ys.append(batch[1].detach().cpu().float().numpy())
            ws.append(batch[2].detach().cpu().float().numpy() if len(batch) > 2 else np.ones(len(batch[0]), np.float32))
        self.data = (np.concatenate(xs), np.concatenate(ys), np.concatenate(ws))
        return self.inner.fit(train_data, **kwargs)

    def representation(self) -> torch.Tensor:
        return self.inner.representation()

    def __getattr__(self, name: str) -> Any:   # anything else Captum may ask of its model
        return getattr(self.inner, name)


def coefficient_error(coef: np.ndarray, se: np.ndarray, drift: np.ndarray | None = None) -> float:
    """The surrogate's relative error (p,) coefficients with standard errors (p,): the norm every sampling method
    stops on (:func:`pathxai.core.sampling.relative_error`); 0 for no coefficients.

    ``drift`` (p,): the change of the coefficients from the fit on the first half of the units to the fit on all.
    A surrogate fitted on n samples is biased at small n (Kernel SHAP's weighted regression is a ratio estimator,
    LIME's Lasso shrinks noisy coefficients), and its standard error does not see bias. For a bias of order 1/n the
    drift estimates the bias at n, with the noise of the half fit on top (variance se² for nested samples), so the
    error is taken as max(RMS se, RMS drift) over the map: the standard error once the fit has settled, the drift
    while it still moves. Measured on the digits-clutter CNN (two canvases, 6 seeds, tol 0.5 and 0.3): without it
    Kernel SHAP's error at the stop was 1.3-5.7x tol, with it 0.52-0.87x."""
    if not coef.size:
        return 0.0
    c = torch.as_tensor(coef, dtype=torch.float64)
    se2 = torch.as_tensor(se, dtype=torch.float64).pow(2).mean()
    if drift is not None:
        se2 = torch.maximum(se2, torch.as_tensor(drift, dtype=torch.float64).pow(2).mean())
    return float(relative_error_from_moments(c.var(unbiased=False)[None], se2[None])[0])


def surrogate_error(name: str, model: Any, x: np.ndarray, y: np.ndarray, w: np.ndarray, units: list[np.ndarray],
                    fixed: np.ndarray, rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """``(relative error, standard errors (F,))`` of the surrogate fitted on (x, y, w), from
    :func:`surrogate_stderr`; for Kernel SHAP also from the drift from the fit on the ``fixed`` rows and the first
    half of ``units`` (:func:`coefficient_error`), NaN while that half fit would be underdetermined (fewer than
    2 :func:`min_units` units). LIME's bootstrap error was not measured to need it (error at the stop 0.5-0.95 x
    tol on the digits-clutter CNN without it), and the half fit would double its minimum sample count."""
    se = surrogate_stderr(name, model, x, y, w, units, fixed, rng)
    coef = _refit(model, x, y, w)
    if name != "kernel_shap":
        return coefficient_error(coef, se), se
    half = units[:len(units) // 2]
    if len(half) < min_units(x.shape[1]):
        return math.nan, se
    idx = np.concatenate([fixed] + half)
    drift = coef - _refit(model, x[idx], y[idx], w[idx])
    return coefficient_error(coef, se, drift), se


def _refit(model: Any, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Coefficients (F,) of a fresh copy of Captum's sklearn surrogate ``model`` fitted on (x, y, w)."""
    import sklearn.linear_model  # noqa: F401  (Captum's surrogates are sklearn models)
    import sklearn

    cls: Any = sklearn
    for part in str(getattr(model, "sklearn_module", "linear_model.Lasso")).split("."):
        cls = getattr(cls, part)
    kwargs = dict(getattr(model, "construct_kwargs", {}) or {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # convergence warnings of tiny resamples
        est = cls(**kwargs).fit(x, y, sample_weight=w)
    return np.asarray(est.coef_, dtype=np.float64).reshape(-1)


def min_units(n_features: int) -> int:
    """Independent units (draws or pairs) a surrogate with ``n_features`` coefficients and an intercept needs before
    its standard error means anything: more units than coefficients. With fewer, the fit is underdetermined (the
    Lasso then keeps a few features and its refits agree on them, so a bootstrap reads a small, false error; the
    sandwich is singular), and the standard error is NaN."""
    return int(n_features) + 2


def bootstrap_stderr(model: Any, x: np.ndarray, y: np.ndarray, w: np.ndarray, units: list[np.ndarray],
                     fixed: np.ndarray, rng: np.random.Generator, n_boot: int = BOOTSTRAP) -> np.ndarray:
    """(F,) bootstrap standard error of the surrogate's coefficients: ``n_boot`` refits on ``units`` (index arrays of
    independent draws) resampled with replacement, the ``fixed`` rows always kept. NaN with fewer units than
    :func:`min_units` (an underdetermined fit)."""
    if len(units) < min_units(x.shape[1]):
        return np.full(x.shape[1], np.nan)
    coefs = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(units), len(units))
        idx = np.concatenate([fixed] + [units[u] for u in pick])
        coefs.append(_refit(model, x[idx], y[idx], w[idx]))
    return np.std(np.stack(coefs), axis=0, ddof=1)


def sandwich_stderr(x: np.ndarray, y: np.ndarray, w: np.ndarray, units: list[np.ndarray]) -> np.ndarray:
    """(F,) cluster-robust (HC1) standard error of the weighted least-squares coefficients of y on [1, x] (module
    doc); NaN while there are no more units than coefficients."""
    xd = np.concatenate([np.ones((len(x), 1)), x], 1).astype(np.float64)
    wd, yd = w.astype(np.float64), y.astype(np.float64)
    g, p = len(units), xd.shape[1]
    if g < min_units(x.shape[1]):   # g <= p: the HC1 factor and the sandwich are undefined
        return np.full(x.shape[1], np.nan)
    a = xd.T @ (wd[:, None] * xd)
    a_inv = np.linalg.pinv(a)
    r = yd - xd @ (a_inv @ (xd.T @ (wd * yd)))
    psi = np.stack([xd[u].T @ (wd[u] * r[u]) for u in units])     # (G, p)
    cov = a_inv @ (psi.T @ psi) @ a_inv * (g / (g - p))
    return np.sqrt(np.clip(np.diag(cov)[1:], 0.0, None))


def surrogate_stderr(name: str, model: Any, x: np.ndarray, y: np.ndarray, w: np.ndarray, units: list[np.ndarray],
                     fixed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(F,) standard error of the surrogate's coefficients: the sandwich for Kernel SHAP, the bootstrap for LIME."""
    if name == "kernel_shap":
        return sandwich_stderr(x, y, w, units)
    return bootstrap_stderr(model, x, y, w, units, fixed, rng)


class _Session:
    """One input's perturbations: the sampler Captum pulls from, the records the ``tol`` checks refit on, and the
    independent units of the bootstrap."""

    def __init__(self, method: "_CaptumPerturbation", item: int, target_column: int | None, model: Any) -> None:
        self.method, self.item, self.column, self.model = method, item, target_column, model
        self.samples: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []
        self.weights: list[float] = []
        self.paired = method.sampling == "antithetic"
        self.fixed = 2 if method.name == "kernel_shap" else 0   # Kernel SHAP's all-on / all-off coalitions
        self.rng = numpy_rng(method.seed, f"{method.name}-bootstrap", item)
        self.stopped = False
        self.error = math.nan

    def units(self, n: int) -> tuple[list[np.ndarray], np.ndarray]:
        """Independent units among the first ``n`` samples, and the fixed rows."""
        size = 2 if self.paired else 1
        starts = range(self.fixed, n - size + 1, size)
        return [np.arange(a, a + size) for a in starts], np.arange(min(self.fixed, n))

    def record_output(self, out: torch.Tensor) -> None:
        out = out.detach()
        self.outputs.append(out[:, self.column] if self.column is not None and out.ndim == 2 else out.reshape(-1))

    def converged(self, n: int) -> bool:
        """Refit on the first ``n`` (evaluated) samples; True once the relative standard error is below ``tol``."""
        units, fixed = self.units(n)
        n_features = int(self.samples[0].shape[-1]) if self.samples else 0
        if len(units) < max(MIN_UNITS, min_units(n_features)):
            return False
        x = torch.cat(self.samples[:n]).float().cpu().numpy()
        y = torch.cat(self.outputs).float().cpu().numpy()[:n]
        w = np.asarray(self.weights[:n], dtype=np.float32)
        self.error, _ = surrogate_error(self.method.name, self.model, x, y, w, units, fixed, self.rng)
        self.method.evaluator.progress_note(f"rel.err {self.error:.3g} (tol {self.method.tol:g})")
        return self.error < self.method.tol  # type: ignore[operator]

    def stream(self, source: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Samples from ``source``, recorded; with ``tol``, stopped before a block once the estimate has converged
        (Captum then fits on the samples drawn so far)."""
        for j, sample in enumerate(source):
            if self.method.tol is not None and j > 0 and j % CHECK == 0 and self.converged(j):
                self.stopped = True
                return
            self.samples.append(sample)
            yield sample

    def antithetic(self, n_features: int, device: torch.device, probs: torch.Tensor | None) -> Iterator[torch.Tensor]:
        """Complementary pairs (z, 1 - z): LIME's Bernoulli(1/2) features, or (``probs`` over the coalition size)
        Kernel SHAP's kernel coalitions after its two end coalitions."""
        if probs is not None:
            yield torch.ones(1, n_features, dtype=torch.long, device=device)
            yield torch.zeros(1, n_features, dtype=torch.long, device=device)
        k = 0
        while True:
            g = item_generator(self.method.seed, f"{self.method.name}-antithetic", (self.item << 32) | k)
            if probs is None:
                z = (torch.rand(1, n_features, generator=g) < 0.5).long()
            else:
                size = int(torch.multinomial(probs.double(), 1, generator=g))
                z = torch.zeros(1, n_features, dtype=torch.long)
                z[0, torch.randperm(n_features, generator=g)[:size]] = 1
            yield z.to(device)
            yield (1 - z).to(device)
            k += 1


class _CaptumPerturbation(SamplingMixin, Method):
    input_ndim = (2, 3, 4)
    input_expected = "(N, C, H, W), (N, L, D) or (N, D)"
    stochastic = True
    cost_param = "n_samples"
    _captum_cls = ""
    #: the default ``sampling``: complementary pairs, 7x (LIME) and 9x (Kernel SHAP) lower variance than Captum's
    #: sampler at 200 samples on the digits-clutter CNN (benchmarks/results/sampling.md)
    sampling_default = "antithetic"

    def __init__(self, model: Any, *, n_samples: int = 200, grid: int = 7, groups: torch.Tensor | None = None,
                 sampling: str | None = None, tol: float | None = None, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.sampling = check_sampling(self.sampling_default if sampling is None else sampling, SAMPLINGS)
        self.n_samples = check_positive_int(n_samples, "n_samples", minimum=2)
        if self.sampling == "antithetic":
            self.n_samples = round_up(self.n_samples, 2)
        self.grid = check_positive_int(grid, "grid")
        if groups is not None and not isinstance(groups, torch.Tensor):
            raise TypeError(f"groups must be None or an integer tensor of the per-sample input shape, got "
                            f"{type(groups).__name__}")
        self.groups = groups
        self.tol = check_tol(tol)

    def cost(self, input_shape: Sequence[int] | None) -> Cost:
        """N x n_samples forward evaluations; memory: Captum builds all n_samples perturbed copies of one input (and
        their interpretable representations) at once."""
        n = 1 if input_shape is None else int(input_shape[0])
        d = 0 if input_shape is None else math.prod(input_shape[1:])
        return Cost(evaluations=n * self.n_samples, bytes=8.0 * self.n_samples * d, param="n_samples",
                    value=self.n_samples, detail=f"{n} input(s) x {self.n_samples} samples")

    def params(self) -> dict[str, Any]:
        return {"n_samples": self.n_samples, "grid": self.grid, "grouped": self.groups is not None,
                "sampling": self.sampling, "tol": self.tol}

    def _make(self, forward: Any, session: _Session | None = None) -> Any:
        """Captum's explainer, with its interpretable model recorded and, when ``session`` is given, its sampler
        (and the sample weights) going through the session."""
        import captum.attr as ca

        if session is None:
            explainer = getattr(ca, self._captum_cls)(forward)
        elif self._captum_cls == "KernelShap":
            explainer = _session_kernel_shap(ca.KernelShap)(forward, session)
        else:
            from captum.attr._core.lime import default_perturb_func, get_exp_kernel_similarity_function

            kernel = get_exp_kernel_similarity_function()

            def similarity(*args: Any, **kwargs: Any) -> Any:
                w = kernel(*args, **kwargs)
                session.weights.append(float(w))
                return w

            def perturb(original_inp: Any, **kwargs: Any) -> Iterator[torch.Tensor]:
                n_features = int(kwargs["num_interp_features"])  # type: ignore[arg-type]
                if session.paired:
                    source = session.antithetic(n_features, original_inp.device, None)
                else:
                    source = iter(lambda: default_perturb_func(original_inp, **kwargs), None)
                yield from session.stream(source)

            explainer = ca.Lime(forward, similarity_func=similarity, perturb_func=perturb)
        explainer.interpretable_model = _Recorder(explainer.interpretable_model)
        return explainer

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        if self.groups is not None:
            from ..structured.groups import check_groups
            mask = check_groups(self.groups, x.shape[1:]).unsqueeze(0)
        elif x.ndim == 4:
            h, w = x.shape[2:]
            if self.grid > min(h, w):
                raise ValueError(f"grid={self.grid} exceeds the input's spatial size {h}x{w}")
            mask = grid_feature_mask(h, w, self.grid).expand(1, x.shape[1], h, w)
        elif x.ndim == 3:
            mask = torch.arange(x.shape[1]).view(1, -1, 1).expand(1, *x.shape[1:])
        else:
            mask = torch.arange(x.shape[1]).view(1, -1)
        ev = self.evaluator
        # Captum's own sampler and one model call for all samples unless the session must see them (mc, no tol:
        # exactly earlier versions' computation)
        plain = self.sampling == "mc" and self.tol is None
        out, stderrs, used, errors, unreached = [], [], [], [], []
        for j in range(x.shape[0]):
            tgt = None if target.classes is None else int(target.classes[j])
            session = None if plain else _Session(self, j, tgt if target.fn is None else None, None)

            def forward(inp: torch.Tensor, session: _Session | None = session) -> torch.Tensor:
                res = ev.forward(inp) if target.fn is None else target.fn(ev.forward(inp))
                if session is not None:
                    session.record_output(res)
                return res

            explainer = self._make(forward, session)
            if session is not None:
                session.model = explainer.interpretable_model.inner
            with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Generator completed prior")   # tol stopped the sampler
                torch.manual_seed(item_seed(self.seed, self.name, j))
                a = explainer.attribute(x[j:j + 1], target=tgt, n_samples=self.n_samples, feature_mask=mask,
                                        baselines=0.0,
                                        perturbations_per_eval=self.n_samples if self.tol is None else CHECK)
            out.append(a.detach().float())
            recorder = explainer.interpretable_model
            xs, ys, ws = recorder.data
            n_drawn = xs.shape[0]
            probe = session or _Session(self, j, None, None)
            units, fixed = probe.units(n_drawn)
            error, se = surrogate_error(self.name, recorder.inner, xs, ys, ws, units, fixed,
                                        numpy_rng(self.seed, f"{self.name}-bootstrap-final", j))
            se_t = torch.from_numpy(se).to(device=a.device, dtype=torch.float32)
            stderrs.append(se_t[mask.to(a.device)])
            used.append(n_drawn)
            errors.append(error)
            if self.tol is not None and not (session is not None and session.stopped):
                unreached.append(j)
        self._finish_sampling(used, errors, unreached, self.n_samples, "samples", x.shape[0])
        attribution = torch.cat(out)
        stderr = torch.cat(stderrs)
        if self.groups is not None:
            from ..structured.groups import group_mean
            # every element of a group holds its value
            return group_mean(attribution, mask[0]), {"groups": mask[0], "stderr": group_mean(stderr, mask[0])}
        if x.ndim == 4:
            attribution, stderr = attribution[:, :1], stderr[:, :1]  # the same value on every channel of a patch
        return attribution, {"stderr": stderr}


def _session_kernel_shap(base: type) -> type:
    """A ``captum.attr.KernelShap`` whose sampler and kernel weights go through a :class:`_Session`."""

    class SessionKernelShap(base):  # type: ignore[misc, valid-type]
        def __init__(self, forward: Callable[..., Any], session: _Session) -> None:
            self._session = session
            super().__init__(forward)

        def kernel_shap_similarity_kernel(self, *args: Any, **kwargs: Any) -> torch.Tensor:
            w = super().kernel_shap_similarity_kernel(*args, **kwargs)
            self._session.weights.append(float(w))
            return w

        def kernel_shap_perturb_generator(self, original_inp: Any, **kwargs: Any) -> Iterator[torch.Tensor]:
            if self._session.paired:
                device = original_inp.device if isinstance(original_inp, torch.Tensor) else original_inp[0].device
                source = self._session.antithetic(int(kwargs["num_interp_features"]), device,
                                                  kwargs["num_select_distribution"].probs)
            else:
                source = super().kernel_shap_perturb_generator(original_inp, **kwargs)
            yield from self._session.stream(source)

    return SessionKernelShap


@register_method
class Lime(_CaptumPerturbation):
    """LIME (Ribeiro et al. 2016) via ``captum.attr.Lime`` (Lasso surrogate, exponential cosine kernel).

    Args:
        n_samples: perturbations per input (the cap with ``tol``).  grid: patches per side for images.
        groups: optional (*S) feature-group index tensor (overrides ``grid``).
        sampling: ``"antithetic"`` (default: complementary pairs) or ``"mc"`` (Captum's sampler, bit for bit
            earlier versions' results); see the module doc. tol: stop at this relative standard error.
    Attribution: (N, 1, H, W) for images (one value per patch), (N, L, D) for sequences (one value per token),
    (N, D) for feature vectors; (N, G) with ``groups``. Extras: ``stderr`` (same shape; see the module doc).
    ``meta``: ``samples_used`` (per input), ``relative_error``, ``tol_reached``.
    """

    name = "lime"
    description = "LIME via Captum: sparse linear surrogate on seeded random patch/feature perturbations."
    _captum_cls = "Lime"


@register_method
class KernelShap(_CaptumPerturbation):
    """Kernel SHAP (Lundberg & Lee 2017) via ``captum.attr.KernelShap``.

    Args:
        n_samples: coalitions per input (the cap with ``tol``).  grid: patches per side for images.
        groups: optional (*S) feature-group index tensor (overrides ``grid``).
        sampling: ``"antithetic"`` (default: complementary pairs) or ``"mc"`` (Captum's sampler, bit for bit
            earlier versions' results); see the module doc. tol: stop at this relative standard error.
    Attribution: (N, 1, H, W) for images (one value per patch), (N, L, D) for sequences (one value per token),
    (N, D) for feature vectors; (N, G) with ``groups``. Extras: ``stderr`` (same shape; see the module doc).
    ``meta``: ``samples_used`` (per input), ``relative_error``, ``tol_reached``.
    """

    name = "kernel_shap"
    description = "Kernel SHAP via Captum: Shapley-kernel weighted regression on seeded coalitions."
    _captum_cls = "KernelShap"
