"""Single-gradient and noise-averaged gradient methods: saliency, gradient x input, SmoothGrad (and its squared and
variance forms), the noise drawn through :mod:`pathxai.core.sampling`."""
from __future__ import annotations

from typing import Any

import torch

from ..core import Method, Target, accumulate_rows, item_generator, item_gradients, register_method
from ..core.sampling import (NOISE_SAMPLINGS, GaussianNoise, ReplicateMoments, SampleBlocks, SamplingMixin,
                             ToleranceStop, check_sampling, check_tol, gradient_rounds, relative_error, round_up)
from ..core.streaming import RunningMoments
from ..core.validation import check_choice, check_fraction, check_positive_int

SCORES = ("output", "softmax", "log_softmax")
AGGREGATES = ("mean", "mean_square", "variance")
#: draws per independent group (replicate) for each noise sampling
NOISE_GROUPS = {"mc": 1, "antithetic": 2, "sobol": 8}
NOISE_BLOCK = 8   # samples per aligned statistics block; the stopping rule is checked after each


@register_method
class Saliency(Method):
    """Vanilla gradient (Simonyan et al., 2014). Attribution: (N, C, H, W) gradient; saliency = max |grad| over C."""

    name = "saliency"
    description = "Gradient of the target score w.r.t. the input (vanilla saliency)."
    saliency_reduction = "max_abs"
    input_ndim = (2, 3, 4)
    input_expected = "(N, C, H, W) or (N, L, D) or (N, D)"

    def __init__(self, model: Any, *, score: str = "output", **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.score = check_choice(score, "score", SCORES)

    def params(self) -> dict[str, Any]:
        return {"score": self.score}

    def gradient(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, torch.Tensor]:
        """(grad (N, ...), score (N,)) of the target score at ``x``."""
        grad = torch.empty_like(x)
        scores = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
        for s, _, sc, g in item_gradients(self.evaluator, target, x.shape[0], 1, lambda s, k: x[s],
                                          sample_shape=x.shape[1:], score_kind=self.score, desc=self.name):
            grad[s] = g
            scores[s] = sc
        return grad, scores

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        grad, scores = self.gradient(x, target)
        return grad, {"score": scores}


@register_method
class GradientXInput(Saliency):
    """Gradient x input (Shrikumar et al., 2016). Attribution: (N, C, H, W) = x * grad f(x); saliency = sum over C."""

    name = "gradient_x_input"
    description = "Input times gradient: first-order Taylor contribution of each feature."
    saliency_reduction = "sum"

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        grad, scores = self.gradient(x, target)
        return x * grad, {"score": scores, "gradient": grad}


@register_method
class SmoothGrad(SamplingMixin, Method):
    """SmoothGrad (Smilkov et al., 2017): the gradient averaged over noisy copies of the input.

    Args:
        n_samples: noisy copies per input (paper: 50); the cap with ``tol``.
        noise_level: noise std as a fraction of each input's value range (max - min), the paper's 10-20%.
        aggregate: ``"mean"`` (SmoothGrad), ``"mean_square"`` (SmoothGrad-Squared, Hooker et al.) or
            ``"variance"`` (VarGrad, Adebayo et al.).
        sampling: how the noise is drawn (:mod:`pathxai.core.sampling`): ``"antithetic"`` (pairs eps, -eps: removes
            the first-order Taylor term of the noise exactly), ``"sobol"`` (scrambled Sobol nets of 8 draws through
            the inverse normal CDF; inputs of at most 21,201 features) or ``"mc"`` (the paper's iid noise, bit for
            bit earlier versions' results). Default per ``aggregate``: see :attr:`sampling_by_aggregate`. Non-``"mc"``
            samplings round ``n_samples`` up to whole groups (2 or 8).
        tol: stop each input once its relative standard error (RMS standard error over the map's noise-free spatial
            SD, :func:`pathxai.core.sampling.relative_error`) is below ``tol``, checked every 8 samples;
            ``n_samples`` is the cap. ``None``: all ``n_samples``.
    Attribution: (N, C, H, W); saliency = max |.| over channels.
    Extras: ``stderr`` (N, C, H, W) the attribution's standard error from the same gradients (independent groups:
    one sample for ``"mc"``, a pair, a Sobol net; the delta method for VarGrad), ``noise_std`` (N,).
    ``meta``: ``samples_used`` (per input), ``relative_error``, ``tol_reached``.

    VarGrad: ``"mc"`` keeps the paper's population variance (1/n); the other samplings return the unbiased
    E[g²] - E[g]² (their mean of squares minus the squared mean plus the estimated variance of that mean).
    """

    name = "smoothgrad"
    description = "SmoothGrad: gradients averaged over Gaussian-noised copies of the input."
    stochastic = True
    cost_param = "n_samples"
    saliency_reduction = "max_abs"
    input_ndim = (2, 3, 4)
    input_expected = "(N, C, H, W) or (N, L, D) or (N, D)"
    aggregate_default = "mean"
    #: the default ``sampling`` per ``aggregate`` (benchmarks/results/sampling.md). The mean: antithetic pairs, 1.8x
    #: less variance per sample than iid noise on the digits-clutter CNN and 1.05-1.19x on EfficientNet-Lite0 photos.
    #: The mean square: iid noise -- the squared gradient is even in the noise, so a pair's two draws are positively
    #: correlated where the second-order term dominates: antithetic pairs had 0.73-1.14x (geometric mean 0.88x) the
    #: efficiency of iid noise on three photos, though 1.35x on digits. The variance: iid noise (no coupling helped).
    sampling_by_aggregate = {"mean": "antithetic", "mean_square": "mc", "variance": "mc"}
    sampling_default = sampling_by_aggregate[aggregate_default]

    def __init__(self, model: Any, *, n_samples: int = 50, noise_level: float = 0.15, score: str = "output",
                 aggregate: str | None = None, sampling: str | None = None, tol: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.aggregate = check_choice(self.aggregate_default if aggregate is None else aggregate, "aggregate",
                                      AGGREGATES)
        default = self.sampling_by_aggregate[self.aggregate]
        self.sampling = check_sampling(default if sampling is None else sampling, NOISE_SAMPLINGS)
        self.group = NOISE_GROUPS[self.sampling]
        self.n_samples = round_up(check_positive_int(n_samples, "n_samples"), self.group)
        # noise 0 would silently turn SmoothGrad into the plain gradient computed n_samples times
        self.noise_level = check_fraction(noise_level, "noise_level", high=10.0)
        if self.noise_level == 0:
            raise ValueError(f"noise_level must lie in (0.0, 10.0], got {noise_level}")
        self.score = check_choice(score, "score", SCORES)
        self.tol = check_tol(tol)

    def params(self) -> dict[str, Any]:
        return {"n_samples": self.n_samples, "noise_level": self.noise_level, "score": self.score,
                "aggregate": self.aggregate, "sampling": self.sampling, "tol": self.tol}

    def _values(self, g: torch.Tensor) -> torch.Tensor:
        """Per-sample quantities (b, k, ...) whose means the estimate is made of."""
        if self.aggregate == "mean":
            return g.unsqueeze(1)
        if self.aggregate == "mean_square":
            return (g * g).unsqueeze(1)
        return torch.stack([g, g * g], 1)

    def _estimate(self, moments: ReplicateMoments, legacy: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """(estimate, stderr) of one input from its replicate moments (``legacy``: the ``"mc"`` estimate)."""
        if self.aggregate != "variance":
            est = moments.mean[0] if legacy is None else legacy
            return est, moments.stderr(0)
        mean, mean_sq = moments.mean[0], moments.mean[1]
        var_of_mean = moments.covariance_of_mean(0)
        est = (mean_sq - mean * mean + var_of_mean) if legacy is None else legacy
        # delta method: d(E g² - (E g)²) = d(E g²) - 2 E g d(E g)
        se2 = moments.covariance_of_mean(1) - 4 * mean * moments.covariance_of_mean(0, 1) + 4 * mean * mean * var_of_mean
        return est, se2.clamp_min(0.0).sqrt()

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        n = x.shape[0]
        flat = x.flatten(1)
        sigma = (flat.amax(1) - flat.amin(1)) * self.noise_level  # (N,)
        sample_shape = x.shape[1:]
        k = 2 if self.aggregate == "variance" else 1
        moments = [ReplicateMoments(k, sample_shape, x.device) for _ in range(n)]
        blocks = SampleBlocks(n, self.n_samples, NOISE_BLOCK)
        mc = self.sampling == "mc"

        def mc_noise(i: int, j: int) -> torch.Tensor:
            # drawn in float32 whatever x's dtype: the same noise, so the same explanation, for a float64 input
            return torch.randn(sample_shape, device=x.device,
                               generator=item_generator(self.seed, "smoothgrad", i * self.n_samples + j, x.device))

        def add_rows(i: int, j: torch.Tensor, g: torch.Tensor) -> None:
            for row in range(g.shape[0]):
                for _, rows in blocks.add(i, int(j[row]), g[row]):
                    moments[i].add(self._values(torch.stack(rows)).view(-1, self.group, k, *sample_shape).mean(1))

        if mc and self.tol is None:
            # the paper's estimator over all inputs at once, exactly as earlier versions computed it
            def build(s: torch.Tensor, kk: torch.Tensor) -> torch.Tensor:
                noise = torch.stack([mc_noise(int(i), int(j)) for i, j in zip(s, kk)]).to(x.dtype)
                return x[s] + sigma[s].view((-1,) + (1,) * (x.ndim - 1)) * noise

            legacy = RunningMoments(tuple(x.shape), x.dtype, x.device) if self.aggregate == "variance" \
                else torch.zeros_like(x)
            for s, kk, _, g in item_gradients(self.evaluator, target, n, self.n_samples, build,
                                              sample_shape=sample_shape, score_kind=self.score, desc=self.name):
                if isinstance(legacy, RunningMoments):
                    legacy.add(s, g)  # Welford: no cancellation, O(N) memory
                else:
                    accumulate_rows(legacy, s, g * g if self.aggregate == "mean_square" else g)
                for i in torch.unique(s).tolist():
                    add_rows(i, kk[s == i], g[s == i])
            attribution = legacy.variance() if isinstance(legacy, RunningMoments) else legacy / self.n_samples
            results = [self._estimate(moments[i], attribution[i]) for i in range(n)]
            error = relative_error(attribution, torch.stack([r[1] for r in results]))
            self._record_sampling([self.n_samples] * n, error, None)
            extras = {"noise_std": sigma, "stderr": torch.stack([r[1] for r in results]).to(x.dtype)}
            if isinstance(legacy, RunningMoments):
                extras["mean_gradient"] = legacy.mean
            return attribution, extras

        estimates, errors, used, unreached, final_error = [], [], [], [], []
        for i in range(n):
            stop = ToleranceStop(self.tol, self.n_samples, "samples", self.name, self.evaluator, group=self.group)
            noise = None if mc else GaussianNoise(self.seed, "smoothgrad", i, sample_shape, self.sampling, self.group,
                                                  x.device)
            legacy_i = RunningMoments((1, *sample_shape), x.dtype, x.device) if mc and self.aggregate == "variance" \
                else torch.zeros_like(x[:1]) if mc else None

            def make(start: int, stop_: int, i: int = i, noise: GaussianNoise | None = noise) -> torch.Tensor:
                j = torch.arange(start, stop_)
                eps = torch.stack([mc_noise(i, int(jj)) for jj in j]) if noise is None else noise.draws(j)
                return x[i:i + 1] + sigma[i] * eps.to(x.dtype)

            def score(out: torch.Tensor, start: int, stop_: int, i: int = i) -> torch.Tensor:
                return target.score(out, torch.full((stop_ - start,), i, dtype=torch.long),  # type: ignore[arg-type]
                                    kind=self.score)

            stopped, count = False, 0
            for start, stop_, _, g in gradient_rounds(self.evaluator, self.n_samples, make, score,
                                                      round_size=None if self.tol is None else 2 * NOISE_BLOCK,
                                                      sample_shape=sample_shape, desc=self.name):
                for row in range(stop_ - start):
                    if legacy_i is not None:
                        if isinstance(legacy_i, RunningMoments):
                            legacy_i.add(torch.zeros(1, dtype=torch.long), g[row:row + 1])
                        else:
                            legacy_i[0] += g[row] * g[row] if self.aggregate == "mean_square" else g[row]
                    count += 1
                    for _, rows in blocks.add(i, start + row, g[row]):
                        moments[i].add(self._values(torch.stack(rows)).view(-1, self.group, k,
                                                                            *sample_shape).mean(1))
                        legacy_est = None if legacy_i is None else (
                            legacy_i.variance()[0] if isinstance(legacy_i, RunningMoments) else legacy_i[0] / count)
                        est, se = self._estimate(moments[i], legacy_est)
                        if stop.check(est[None], se[None], moments[i].count):
                            stopped = True
                            break
                    if stopped:
                        break
                if stopped:
                    break
            legacy_est = None if legacy_i is None else (
                legacy_i.variance()[0] if isinstance(legacy_i, RunningMoments) else legacy_i[0] / count)
            est, se = self._estimate(moments[i], legacy_est)
            estimates.append(est)
            errors.append(se)
            used.append(count)
            final_error.append(float(relative_error(est[None], se[None])[0]))
            if self.tol is not None and not stopped:
                unreached.append(i)
        self._finish_sampling(used, final_error, unreached, self.n_samples, "samples", n)
        return torch.stack(estimates).to(x.dtype), {"noise_std": sigma, "stderr": torch.stack(errors).to(x.dtype)}


@register_method
class SmoothGradSquared(SmoothGrad):
    """SmoothGrad-Squared (Hooker et al., 2019): mean of squared gradients over noisy copies. Attribution >= 0."""

    name = "smoothgrad_sq"
    description = "SmoothGrad-Squared: mean squared gradient over noisy copies of the input."
    saliency_reduction = "sum"
    aggregate_default = "mean_square"
    sampling_default = SmoothGrad.sampling_by_aggregate[aggregate_default]


@register_method
class VarGrad(SmoothGrad):
    """VarGrad (Adebayo et al., 2018): variance of gradients over noisy copies. Attribution >= 0."""

    name = "vargrad"
    description = "VarGrad: variance of gradients over noisy copies of the input."
    saliency_reduction = "sum"
    aggregate_default = "variance"
    sampling_default = SmoothGrad.sampling_by_aggregate[aggregate_default]
