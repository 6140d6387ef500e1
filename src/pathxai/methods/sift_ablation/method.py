"""SIFT-feature ablation paths (thesis Sec. 4.3) and SIFT-RISE (the sampling variant Sec. 4.3.2/4.4 propose).

Both decompose every image once (E_SIFT, :func:`~.decoder.sift_decompose`) into K keypoint features with a linear
decoder D(theta), theta in R^K the feature gains, D(1) = x, D(0) = 0 (implicit baseline, Sec. 4.3.1). The model is
then probed only through F(D(theta)).

* ``sift_ablation_path``: an ablation path phi: [0, 1] -> [0, 1]^K over *masks* phi = 1 - theta (the dummy
  target/baseline construction of Eq. 4.43: phi = 0 keeps the image, phi = 1 gives D(0)), stored as the pixel
  method's path arrays (B, P, n, h = 1, w = K) so that its ascent step (:func:`..ablation_path.ascent_step`:
  mean-free gradient, L-infinity step, saturation, pinching, monotonisation, clamping, constant-speed
  reparametrisation -- with the isotropic L2 metric on R^K) is reused as it is; the spatial state filter is
  switched off (Sec. 4.3.2: "the filtering steps which relied on the function-space nature of M do not make sense
  anymore").
* ``sift_rise``: theta_m ~ Bernoulli(p)^K, importance_i = sum_m F(D(theta_m)) theta_mi / (n_masks p), with the
  gain vectors drawn through :mod:`pathxai.core.sampling` (``sampling="sobol"`` by default: each block of 64 gain
  vectors is one scrambled Sobol net, every keypoint kept in exactly half of them at p = 0.5; ``"mc"`` the thesis's
  iid gains, bit for bit earlier versions'), a standard error from the same samples and ``tol`` stopping.

Pixel heatmaps come from the feature importance through the homogeneous-field extraction I(theta) of Eq. 4.46
(``heatmap="voronoi"``) or the image-statistics one of Eq. 4.48 (``heatmap="image"``).
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch

from ...core import Method, Target, accumulate_rows, item_generator, item_outputs, register_method
from ...core.baselines import gaussian_blur
from ...core.sampling import (BLOCK, MASK_SAMPLINGS, BlockStream, MaskedMean, SamplingMixin, ToleranceStop,
                              binary_cells, check_sampling, check_tol, relative_error, relative_error_from_moments,
                              round_up)
from ...core.validation import (check_choice, check_finite_float, check_fraction, check_positive_float,
                                check_positive_int)
from ..ablation_path import (AblationPath, AscentConfig, ascent_step, should_stop, state_saturation)
from ..ablation_path.paths import affine_path, time_grid, time_weights
from ..ablation_path.reductions import (average_heatmap, class_transition_heatmap, class_transition_index,
                                        contrastive_heatmap, influence_weighted_heatmap)
from ..ablation_path.scores import SCORE_VARIANTS, assemble_score, path_distance
from .decoder import CELL_KINDS, SiftDecoder, sift_decompose
from .metric import weighted_ascent_step

HEATMAPS = ("voronoi", "image")


def image_heatmap(images: torch.Tensor, sigma_lp: float, sigma_hp: float) -> torch.Tensor:
    """Eq. 4.48: gamma_LP * |x - gamma_HP * x|, summed over channels. (B, C, H, W) -> (B, H, W)."""
    return gaussian_blur((images - gaussian_blur(images, sigma_hp)).abs().sum(1), sigma_lp)


class _SiftFeatures:
    """Shared decomposition settings and heatmap extraction of the SIFT methods."""

    def _init_sift(self, *, eta: float, cells: str, sparsity: float, contrast_threshold: float, edge_ratio: float,
                   max_keypoints: int, sigma_min: float, octave_steps: int, n_levels: int, heatmap: str,
                   heatmap_sigmas: tuple[float, float] | None, heat_exponent: float = 0.0) -> None:
        if cells not in CELL_KINDS:
            raise ValueError(f"cells must be one of {CELL_KINDS}, got {cells!r}")
        if heatmap not in HEATMAPS:
            raise ValueError(f"heatmap must be one of {HEATMAPS}, got {heatmap!r}")
        for name, value in (("eta", eta), ("contrast_threshold", contrast_threshold), ("edge_ratio", edge_ratio),
                            ("sigma_min", sigma_min)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
                    or not math.isfinite(value):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        self.sift = {"eta": float(eta), "cells": cells, "sparsity": check_fraction(sparsity, "sparsity", high=0.999),
                     "contrast_threshold": float(contrast_threshold), "edge_ratio": float(edge_ratio),
                     "max_keypoints": check_positive_int(max_keypoints, "max_keypoints"),
                     "sigma_min": float(sigma_min), "octave_steps": check_positive_int(octave_steps, "octave_steps"),
                     "n_levels": check_positive_int(n_levels, "n_levels")}
        if isinstance(heat_exponent, bool) or not isinstance(heat_exponent, (int, float)):
            raise TypeError(f"heat_exponent must be a number, got {heat_exponent!r}")
        self.sift["heat_exponent"] = check_finite_float(heat_exponent, "heat_exponent")
        self.heatmap = heatmap
        if heatmap_sigmas is not None:
            if not (isinstance(heatmap_sigmas, (tuple, list)) and len(heatmap_sigmas) == 2):
                raise TypeError(f"heatmap_sigmas must be None or a pair (sigma_LP, sigma_HP) of pixels, got "
                                f"{heatmap_sigmas!r}")
            heatmap_sigmas = (check_positive_float(heatmap_sigmas[0], "heatmap_sigmas[0]"),
                              check_positive_float(heatmap_sigmas[1], "heatmap_sigmas[1]"))
        self.heatmap_sigmas = heatmap_sigmas

    def decompose(self, image: torch.Tensor) -> SiftDecoder:
        """E_SIFT and the decoder of one image (C, H, W) with this method's settings: the decomposition runs on the
        host (NumPy, SciPy), the decoder is returned on the image's device."""
        return sift_decompose(image.cpu(), **self.sift).to(image.device)

    def pixel_heatmap(self, decoder: SiftDecoder, importance: torch.Tensor) -> torch.Tensor:
        """Feature importance (K,) -> (H, W) pixel heatmap (Eq. 4.46 or 4.48)."""
        imp = importance.to(device=decoder.device, dtype=decoder.matrices[0].dtype)
        if self.heatmap == "voronoi":
            return decoder.heatmap(imp)
        h, w = decoder.image_shape
        lp, hp = self.heatmap_sigmas or (8.0 * min(h, w) / 224.0, 5.0 * min(h, w) / 224.0)  # Table 4.2
        return image_heatmap(decoder.decode(imp.clamp_min(0.0)).unsqueeze(0), lp, hp)[0]


@register_method
class SiftAblationPath(_SiftFeatures, AblationPath):
    """Ablation paths over SIFT keypoint gains (thesis chapter 4, Sec. 4.3.2).

    Args:
        score, n_steps, step_size, saturation, pinch, distance_penalty, saturation_target, min_iterations,
            max_iterations, reduction, score_kind: as for :class:`~..ablation_path.AblationPath` (the path lives in
            [0, 1]^K instead of a mask grid; no spatial filter, no explicit baseline).
        eta: scale weight of the scale-space distance (Eq. 4.18; Table 4.2 uses 1, 2, 4; default 4).
        cells: ``"smooth"`` (decoder version 2, default) or ``"partition"`` (version 1).
        sparsity: cut-off s of Eq. 4.37. contrast_threshold, edge_ratio, max_keypoints: keypoint cut-offs.
        sigma_min, octave_steps, n_levels: the sigma grid (Sec. 4.2.1-4.2.2).
        heatmap: ``"voronoi"`` (Eq. 4.46) or ``"image"`` (Eq. 4.48, ``heatmap_sigmas`` = (sigma_LP, sigma_HP), default
            (8, 5) px per 224 px as in Table 4.2).
        heat_exponent: alpha of the homogeneous field C(sigma) ~ sigma^-alpha of Eq. 4.47 (0 = uniform).
        feature_weights: use the L2 feature weights W_j = ||D(e_j)|| of Eq. 4.45 in the metric (Sec. 4.3.3:
            gradient W^-1 dP, weighted slice masses); default the isotropic L2 metric.

    Attribution: (N, 1, H, W), the pixel heatmap of the reduced feature importance (high = salient).
    ``extras``: ``feature_importance`` / ``keypoints`` (y, x, sigma, response) / ``path`` (n, K) masks phi / (for
    boundary straddling) ``path_down``: lists with one entry per image (K differs); ``n_features`` (N,), ``score``
    (N,), ``score_history`` (N, I + 1) (entry 0 = the affine start), ``iterations`` (N,), ``curve`` (N, V, n + 2),
    ``probabilities`` (N, n + 2), ``times`` (n,), ``transition_index`` (N,), ``decomposition_time_s`` (N,),
    ``path_time_s`` (N,).
    """

    name = "sift_ablation_path"
    description = ("Ablation paths over SIFT keypoint features: a reconstructible scale-space decomposition whose "
                   "feature gains are optimised instead of pixel masks (Sagemueller, ch. 4).")

    def __init__(self, model: Any, *, score: str = "retaining", n_steps: int = 14, step_size: float = 0.5,
                 saturation: float = 0.8, pinch: float = 0.1, distance_penalty: float = 0.0,
                 saturation_target: float = 0.8, min_iterations: int = 6, max_iterations: int = 100,
                 reduction: str = "auto", score_kind: str | None = None, eta: float = 4.0, cells: str = "smooth",
                 sparsity: float = 0.01, contrast_threshold: float = 0.01, edge_ratio: float = 10.0,
                 max_keypoints: int = 300, sigma_min: float = 0.8, octave_steps: int = 3, n_levels: int = 3,
                 heatmap: str = "voronoi", heatmap_sigmas: tuple[float, float] | None = None,
                 heat_exponent: float = 0.0, feature_weights: bool = False, **kwargs: Any) -> None:
        if not isinstance(feature_weights, bool):
            raise TypeError(f"feature_weights must be a bool, got {feature_weights!r}")
        self.feature_weights = feature_weights
        AblationPath.__init__(self, model, score=score, n_steps=n_steps, step_size=step_size, saturation=saturation,
                              pinch=pinch, distance_penalty=distance_penalty, saturation_target=saturation_target,
                              min_iterations=min_iterations, max_iterations=max_iterations, reduction=reduction,
                              score_kind=score_kind, smoothing_sigma=0.0, baseline="zero",
                              schedule="thesis",  # its own loop (below) is Algorithm 2; keeps cost() as it was
                              **kwargs)
        self._init_sift(eta=eta, cells=cells, sparsity=sparsity, contrast_threshold=contrast_threshold,
                        edge_ratio=edge_ratio, max_keypoints=max_keypoints, sigma_min=sigma_min,
                        octave_steps=octave_steps, n_levels=n_levels, heatmap=heatmap, heatmap_sigmas=heatmap_sigmas,
                        heat_exponent=heat_exponent)

    def params(self) -> dict[str, Any]:
        keep = ("score", "n_steps", "step_size", "saturation", "pinch", "distance_penalty", "saturation_target",
                "min_iterations", "max_iterations", "reduction", "score_kind")
        p = {k: v for k, v in AblationPath.params(self).items() if k in keep}
        p.update(self.sift)
        p.update({"heatmap": self.heatmap, "heatmap_sigmas": self.heatmap_sigmas,
                  "feature_weights": self.feature_weights})
        return p

    def path_gradient(self, x: torch.Tensor, target: Any = None, path: torch.Tensor | None = None) -> Any:
        """Not available: the pixel method's mask-grid gradient does not apply to feature paths (use
        :meth:`explain_features`, whose ``history`` holds the score of every iterate)."""
        raise NotImplementedError("path_gradient works on pixel mask grids; SiftAblationPath optimises feature "
                                  "gains -- see explain() extras 'score_history' and 'path'")

    def initial_state(self, n_images: int, image_shape: tuple[int, int]) -> torch.Tensor:
        """Not available: the start path depends on each image's number of keypoints K (affine, (P, n, 1, K))."""
        raise NotImplementedError("the SIFT start path is the affine path over each image's K features")

    # ------------------------------------------------------------------ one image
    def _images(self, decoder: SiftDecoder, masks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Masks phi (B, K) -> images D(1 - phi) (B, C, H, W) (Eq. 4.43)."""
        return decoder.decode(1.0 - masks).to(dtype)

    def _feature_pass(self, decoder: SiftDecoder, i: int, x: torch.Tensor, target: Target, kind: str,
                      state: torch.Tensor, ends: torch.Tensor, grad: bool
                      ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """F along the paths of image ``i``: values (V, n), gradient (P, n, 1, K) (or None), arg-max (V, n)."""
        variants = SCORE_VARIANTS[self.score]
        v_count, n = len(variants), self.n_steps
        v_path = torch.tensor([v.path for v in variants])
        v_comp = torch.tensor([v.complement for v in variants])
        v_sign = torch.tensor([v.sign for v in variants], dtype=torch.float64)
        w, _ = time_weights(n)
        values = torch.zeros(v_count, n, dtype=torch.float64)
        pred = torch.full((v_count, n), -1, dtype=torch.long)
        grads = torch.zeros_like(state) if grad else None
        sample_shape = x.shape[1:]

        def leaf_masks(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            j = torch.arange(start, stop)
            v, k = j // n, j % n
            return v, k, state[v_path[v], k, 0]

        def owner(start: int, stop: int) -> torch.Tensor:
            return torch.full((stop - start,), i, dtype=torch.long)

        if grad:
            def make(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
                v, _, m = leaf_masks(start, stop)
                leaf = m.clone().requires_grad_(True)
                masks = torch.where(v_comp[v].view(-1, 1), 1.0 - leaf, leaf)
                return self._images(decoder, masks, x.dtype), leaf

            def score(out: torch.Tensor, start: int, stop: int) -> torch.Tensor:
                return target.score(out, owner(start, stop), kind=kind)  # type: ignore[arg-type]

            for start, stop, s, g in self.evaluator.gradient_chunks(v_count * n, make, score,
                                                                    sample_shape=sample_shape,
                                                                    desc="sift ablation path"):
                v, k, _ = leaf_masks(start, stop)
                # the path state is small and stays on the host (as for pixel ablation paths)
                values[v, k] = s.double().cpu()
                g = g.double().cpu()
                for row in range(stop - start):  # item order: independent of chunking
                    grads[v_path[v[row]], k[row], 0] += v_sign[v[row]] * w[k[row]] * g[row]
        else:
            def make_fwd(start: int, stop: int) -> torch.Tensor:
                v, _, m = leaf_masks(start, stop)
                return self._images(decoder, torch.where(v_comp[v].view(-1, 1), 1.0 - m, m), x.dtype)

            for start, stop, out in self.evaluator.forward_chunks(v_count * n, make_fwd, sample_shape=sample_shape,
                                                                  desc="sift ablation path curve"):
                v, k, _ = leaf_masks(start, stop)
                values[v, k] = target.score(out, owner(start, stop), kind=kind).double().cpu()  # type: ignore
                if out.ndim == 2:
                    pred[v, k] = out.argmax(1).cpu()
        return values, grads, pred

    def _score(self, values: torch.Tensor, ends: torch.Tensor, state: torch.Tensor, grads: torch.Tensor | None
               ) -> torch.Tensor:
        s = assemble_score(self.score, values.unsqueeze(0), ends.unsqueeze(0))[0]
        if self.n_paths == 2 and self.distance_penalty:
            s = s - self.distance_penalty * path_distance(state[0], state[1])
            if grads is not None:
                w, _ = time_weights(self.n_steps)
                d = self.distance_penalty * torch.sign(state[0] - state[1]) * (w.view(-1, 1, 1) / state.shape[-1])
                grads[0] -= d
                grads[1] += d
        return s

    def explain_features(self, x: torch.Tensor, i: int, target: Target, kind: str,
                         decoder: SiftDecoder | None = None) -> dict[str, Any]:
        """Optimise the feature path of image ``i`` of the validated batch ``x`` (runs inside :meth:`explain`)."""
        t0 = time.perf_counter()
        dec = decoder if decoder is not None else self.decompose(x[i])
        t1 = time.perf_counter()
        k = dec.n_features
        ends_out = self.evaluator.forward(torch.stack([x[i], dec.decode(torch.zeros(k)).to(x.dtype)]),
                                          desc="path ends")
        ends = target.score(ends_out, torch.full((2,), i, dtype=torch.long), kind=kind).double().cpu()  # type: ignore
        end_pred = ends_out.argmax(1).cpu() if ends_out.ndim == 2 else torch.full((2,), -1, dtype=torch.long)
        config = AscentConfig(step_size=self.step_size, smoothing_sigma=0.0, saturation=self.saturation,
                              pinch=self.pinch)
        state = affine_path(self.n_steps, (1, k)).expand(self.n_paths, self.n_steps, 1, k).clone()
        # the affine start phi = t_k has mass t_k in the weighted metric too
        weights = dec.feature_weights().clamp_min(1e-12).cpu() if self.feature_weights else None
        history = [float("nan")] * (self.max_iterations + 1)
        it = 0
        while not bool(should_stop(torch.tensor([it]), state_saturation(state.unsqueeze(0)),
                                   min_iterations=self.min_iterations, max_iterations=self.max_iterations,
                                   saturation_target=self.saturation_target)[0]):
            values, grads, _ = self._feature_pass(dec, i, x, target, kind, state, ends, grad=True)
            history[it] = float(self._score(values, ends, state, grads))
            if weights is None:
                state = ascent_step(state.unsqueeze(0), grads.unsqueeze(0), config)[0]
            else:
                state = weighted_ascent_step(state.unsqueeze(0), grads.unsqueeze(0), weights, config)[0]
            it += 1
        values, _, pred = self._feature_pass(dec, i, x, target, kind, state, ends, grad=False)
        final = self._score(values, ends, state, None)
        history[it] = float(final)

        variants = SCORE_VARIANTS[self.score]
        curve = torch.empty(len(variants), self.n_steps + 2, dtype=torch.float64)
        pred_curve = torch.empty(len(variants), self.n_steps + 2, dtype=torch.long)
        for j, v in enumerate(variants):
            first, last = (1, 0) if v.complement else (0, 1)
            curve[j] = torch.cat([ends[first:first + 1], values[j], ends[last:last + 1]])
            pred_curve[j] = torch.cat([end_pred[first:first + 1], pred[j], end_pred[last:last + 1]])
        main = state[0].unsqueeze(0)  # (1, n, 1, K)
        kept = self.score != "dissipating"
        dominant = None if target.classes is None else (pred[0] == target.classes[i]).unsqueeze(0)
        index, found = class_transition_index(values[0].unsqueeze(0), dominant)
        if self.reduction == "average":
            imp = average_heatmap(main, kept)
        elif self.reduction == "class_transition":
            imp = class_transition_heatmap(main, index, kept)
        elif self.reduction == "influence_weighted":
            imp = influence_weighted_heatmap(main, curve[0].unsqueeze(0))
        else:
            imp = contrastive_heatmap(state[0].unsqueeze(0), state[1].unsqueeze(0))
        importance = imp.reshape(k)
        heat = self.pixel_heatmap(dec, importance).cpu()
        t2 = time.perf_counter()
        out = {"importance": importance, "heat": heat, "keypoints": dec.keypoints.as_tensor(), "path": state[0, :, 0],
               "score": float(final), "history": history[:it + 1], "iterations": it, "curve": curve,
               "predicted_class": pred_curve[0], "transition_index": int(index[0]), "transition_found": bool(found[0]),
               "decomposition_time_s": t1 - t0, "path_time_s": t2 - t1, "n_features": k}
        if self.n_paths == 2:
            out["path_down"] = state[1, :, 0]
        return out

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        kind = self._kind(target)
        results = [self.explain_features(x, i, target, kind) for i in range(x.shape[0])]
        n_img = x.shape[0]
        iters = max(r["iterations"] for r in results)
        history = torch.full((n_img, iters + 1), float("nan"), dtype=torch.float64)
        for i, r in enumerate(results):
            history[i, :len(r["history"])] = torch.tensor(r["history"], dtype=torch.float64)
        extras: dict[str, Any] = {
            "feature_importance": [r["importance"] for r in results],
            "keypoints": [r["keypoints"] for r in results],
            "path": [r["path"] for r in results],
            "n_features": torch.tensor([r["n_features"] for r in results]),
            "score": torch.tensor([r["score"] for r in results], dtype=torch.float64),
            "score_history": history,
            "iterations": torch.tensor([r["iterations"] for r in results]),
            "curve": torch.stack([r["curve"] for r in results]),
            "probabilities": torch.stack([r["curve"][0] for r in results]),
            "predicted_class": torch.stack([r["predicted_class"] for r in results]),
            "times": time_grid(self.n_steps),
            "transition_index": torch.tensor([r["transition_index"] for r in results]),
            "transition_found": torch.tensor([r["transition_found"] for r in results]),
            "decomposition_time_s": torch.tensor([r["decomposition_time_s"] for r in results]),
            "path_time_s": torch.tensor([r["path_time_s"] for r in results]),
            "score_name": self.score, "score_kind": kind, "reduction": self.reduction,
        }
        if self.n_paths == 2:
            extras["path_down"] = [r["path_down"] for r in results]
        heat = torch.stack([r["heat"] for r in results]).unsqueeze(1).to(x.dtype)
        return heat, extras


#: gain vectors per independent group (replicate) for each sampling of ``sift_rise``
SIFT_RISE_GROUPS = {"mc": 1, "antithetic": 2, "stratified": 8, "sobol": BLOCK}


@register_method
class SiftRISE(SamplingMixin, _SiftFeatures, Method):
    """RISE over SIFT keypoint features: random on/off gains, no sub-resolution grid needed (Sec. 4.3.2, 4.4).

    Args:
        n_masks: random gain vectors per image (default 500); the cap with ``tol``. p: probability that a feature is
            kept (0.5).
        score: ``"softmax"`` (default for class targets) or ``"output"`` (default for callable targets).
        sampling: ``"sobol"`` (default), ``"stratified"``, ``"antithetic"`` or ``"mc"`` (iid gains from the
            generators (seed, "sift_rise", m), bit for bit earlier versions'): how gain vectors are drawn jointly
            (:mod:`pathxai.core.sampling`); non-``"mc"`` samplings round ``n_masks`` up to whole groups (64, 8, 2).
        tol: stop an image once the relative error of its heatmap (RMS standard error over the heatmap's
            noise-free spatial SD, :func:`pathxai.core.sampling.relative_error`, computed from the keypoint
            covariance through the linear Voronoi heatmap; for ``heatmap="image"``, of the keypoint importance) is
            below ``tol``, checked every 64 gain vectors; ``None``: all ``n_masks``.
        control_variate: ``"auto"`` (default; on for every sampling but ``"mc"``, used once 4 (K + 1) earlier gain
            vectors have fitted it; the intercept alone before), ``True`` or ``False``: the past-fitted regression of
            the score on the gains (:class:`pathxai.core.sampling.MaskedMean`; unbiased).
        eta, cells, sparsity, contrast_threshold, edge_ratio, max_keypoints, sigma_min, octave_steps, n_levels,
            heatmap, heatmap_sigmas: the decomposition and heatmap settings of :class:`SiftAblationPath`.

    Attribution: (N, 1, H, W) pixel heatmap of the importance sum_m F(D(theta_m)) theta_m / (n_masks p).
    ``extras``: ``feature_importance``, ``feature_stderr`` and ``keypoints`` lists (one entry per image),
    ``stderr`` (N, 1, H, W) the heatmap's standard error (the keypoint covariance from the same samples pushed
    through the heatmap: exact for the linear Eq. 4.46, first order for Eq. 4.48), ``n_features`` (N,),
    ``decomposition_time_s`` (N,). ``meta``: ``samples_used`` (per image), ``relative_error``, ``tol_reached``.
    Mask m of every image comes from its own generator (seed, "sift_rise", m) (per group for the other samplings).
    """

    name = "sift_rise"
    description = "RISE over SIFT keypoint features: random feature gains through the reconstructible decomposition."
    stochastic = True
    cost_param = "n_masks"

    def __init__(self, model: Any, *, n_masks: int = 500, p: float = 0.5, score: str | None = None,
                 eta: float = 4.0, cells: str = "smooth", sparsity: float = 0.01, contrast_threshold: float = 0.01,
                 edge_ratio: float = 10.0, max_keypoints: int = 300, sigma_min: float = 0.8, octave_steps: int = 3,
                 n_levels: int = 3, heatmap: str = "voronoi", heatmap_sigmas: tuple[float, float] | None = None,
                 heat_exponent: float = 0.0, sampling: str = "sobol", tol: float | None = None,
                 control_variate: bool | str = "auto", **kwargs: Any) -> None:
        Method.__init__(self, model, **kwargs)
        self.sampling = check_sampling(sampling, MASK_SAMPLINGS)
        self.group = SIFT_RISE_GROUPS[self.sampling]
        self.n_masks = round_up(check_positive_int(n_masks, "n_masks"), self.group)
        self.p = check_fraction(p, "p", inclusive=False)
        check_choice(score, "score", (None, "softmax", "output"))
        self.score = score
        self.tol = check_tol(tol)
        self.control_variate = check_choice(control_variate, "control_variate", ("auto", True, False))
        if self.control_variate is True and self.sampling == "mc":
            raise ValueError("control_variate=True needs a variance-reduced sampling: sampling='mc' keeps the "
                             "plain estimator (use sampling='sobol', 'stratified' or 'antithetic')")
        self._init_sift(eta=eta, cells=cells, sparsity=sparsity, contrast_threshold=contrast_threshold,
                        edge_ratio=edge_ratio, max_keypoints=max_keypoints, sigma_min=sigma_min,
                        octave_steps=octave_steps, n_levels=n_levels, heatmap=heatmap, heatmap_sigmas=heatmap_sigmas,
                        heat_exponent=heat_exponent)

    def params(self) -> dict[str, Any]:
        return {"n_masks": self.n_masks, "p": self.p, "score": self.score, **self.sift, "heatmap": self.heatmap,
                "heatmap_sigmas": self.heatmap_sigmas, "sampling": self.sampling, "tol": self.tol,
                "control_variate": self.control_variate}

    def gains(self, index: torch.Tensor, k: int) -> torch.Tensor:
        """Random gain vectors number ``index`` (m,) for K = ``k`` features: (m, K) in {0, 1} (``"mc"``: iid;
        otherwise drawn jointly by :func:`pathxai.core.sampling.binary_cells`)."""
        if self.sampling != "mc":
            return binary_cells(index, self.seed, k, self.p, self.sampling, self.group, "sift_rise")[0]
        out = torch.empty(index.numel(), k)
        for j, m in enumerate(index.tolist()):
            out[j] = (torch.rand(k, generator=item_generator(self.seed, "sift_rise", m)) < self.p).float()
        return out

    def heatmap_stderr(self, decoder: SiftDecoder, importance: torch.Tensor, covariance: torch.Tensor
                       ) -> torch.Tensor:
        """(H, W) standard error of :meth:`pixel_heatmap` of ``importance`` (K,) whose covariance is ``covariance``
        (K, K): sqrt(diag(J C J^T)) with J the heatmap's Jacobian (the heatmap itself for the linear Eq. 4.46; Eq.
        4.48 is differentiated by hand: clamp, decoder, |x - blur x|, blur). NaN everywhere when the covariance is
        unknown (fewer than 2 independent groups of masks)."""
        if torch.isnan(covariance).any():
            return torch.full(decoder.image_shape, math.nan, dtype=torch.float64, device=decoder.device)
        evals, evecs = torch.linalg.eigh(covariance.to(torch.float64))
        dirs = (evecs * evals.clamp_min(0.0).sqrt()).t()        # rows: sqrt(lambda) v, so sum_k (J row_k)^2 = diag
        dtype = decoder.matrices[0].dtype
        h, w = decoder.image_shape
        out = torch.zeros(h, w, dtype=torch.float64, device=decoder.device)
        imp = importance.to(device=decoder.device, dtype=dtype)
        if self.heatmap == "image":
            lp, hp = self.heatmap_sigmas or (8.0 * min(h, w) / 224.0, 5.0 * min(h, w) / 224.0)
            u = decoder.decode(imp.clamp_min(0.0)).unsqueeze(0)
            sign = torch.sign(u - gaussian_blur(u, hp))
        for a in range(0, dirs.shape[0], 64):
            t = dirs[a:a + 64].to(device=decoder.device, dtype=dtype)
            if self.heatmap == "voronoi":
                jt = decoder.heatmap(t)
            else:
                d = decoder.decode(t * (imp > 0).to(dtype))
                jt = gaussian_blur((sign * (d - gaussian_blur(d, hp))).sum(1), lp)
            out += jt.double().pow(2).sum(0)
        return out.sqrt()

    @staticmethod
    def heatmap_moments(decoder: SiftDecoder, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """``(H^T H / P (K, K), H^T 1 / P (K,))`` float64 of the linear Voronoi heatmap H (P pixels x K features,
        Eq. 4.46): what :meth:`heatmap_error` needs to measure the heatmap's relative error without building it.
        H is built once per image in the decoder's dtype (K x P: 60 MB for 300 keypoints at 224 x 224 in float32)."""
        k = decoder.n_features
        eye = torch.eye(k, dtype=decoder.matrices[0].dtype, device=decoder.device)
        h = torch.cat([decoder.heatmap(eye[a:a + chunk]).flatten(1) for a in range(0, k, chunk)])   # (K, P)
        n_pix = h.shape[1]
        return (h @ h.t()).double() / n_pix, h.sum(1).double() / n_pix

    @staticmethod
    def heatmap_error(importance: torch.Tensor, covariance: torch.Tensor, moments: tuple[torch.Tensor, torch.Tensor]
                      ) -> torch.Tensor:
        """(1,) the relative error (:func:`pathxai.core.sampling.relative_error`) of the Voronoi heatmap H theta of
        ``importance`` theta (K,) with ``covariance`` C (K, K), from :meth:`heatmap_moments` (G = H^T H / P, h):
        the pixel mean of se² is trace(C G) and the heatmap's spatial variance theta^T G theta - (h . theta)²."""
        gram, col_mean = moments
        t = importance.to(torch.float64)
        variance = t @ gram @ t - (col_mean @ t) ** 2
        se2 = (covariance.to(torch.float64) * gram).sum()
        return relative_error_from_moments(variance[None], se2[None])

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        kind = self.score or ("softmax" if target.fn is None else "output")
        mc = self.sampling == "mc"
        heats, imps, ses, kps, times, heat_ses, used, final_error, unreached = [], [], [], [], [], [], [], [], []
        for i in range(x.shape[0]):
            t0 = time.perf_counter()
            dec = self.decompose(x[i])
            times.append(time.perf_counter() - t0)
            k = dec.n_features
            total = torch.zeros(1, k, dtype=torch.float64, device=x.device) if mc else None
            stream = BlockStream(1, self.n_masks, lambda idx, k=k: (self.gains(idx, k),))
            basis = None
            if not mc and self.control_variate is not False:
                basis = self.p * self.p + self.p * (1 - self.p) * torch.eye(k, dtype=torch.float64)
            stats = MaskedMean(1, k, self.group, basis, self.p, x.device, full_covariance=True)
            stop = ToleranceStop(self.tol, self.n_masks, "masks", self.name, self.evaluator, group=self.group)
            # the stopping rule measures the heatmap the user gets, not the keypoint vector: the Voronoi heatmap
            # weighs each keypoint by its cell's area; the "image" heatmap is nonlinear, so there the keypoint
            # vector's error is used. The running error is needed only to stop on tol or to show it on a progress
            # bar: otherwise it is not computed, the heatmap's moments (H^T H, 0.2 s and 60 MB for 300 keypoints on
            # a 224² photo) are skipped, and the final error is read from the explicit heatmap and its stderr (the
            # same quantity).
            voronoi = self.heatmap == "voronoi"
            running = self.tol is not None or getattr(self.evaluator, "shows_progress", True)
            heat_moments = self.heatmap_moments(dec) if voronoi and running else None
            p2 = self.p * self.p

            def error(importance: torch.Tensor, stats: MaskedMean = stats, heat_moments: Any = heat_moments
                      ) -> torch.Tensor:
                if heat_moments is None:
                    return relative_error(importance[None], (stats.stderr()[0] / self.p)[None])
                return self.heatmap_error(importance, stats.covariance() / p2, heat_moments)

            def build(items: torch.Tensor, dec: SiftDecoder = dec, stream: BlockStream = stream) -> torch.Tensor:
                return dec.decode(stream.rows(items)).to(x.dtype)

            stopped = False
            for items, out in item_outputs(self.evaluator, self.n_masks, build, sample_shape=x.shape[1:],
                                           desc=self.name):
                owner = torch.full((items.numel(),), i, dtype=torch.long)
                scores = target.score(out, owner, kind=kind).double()  # type: ignore[arg-type]
                for idx, (gains,), buf in stream.add(torch.zeros_like(items), items, scores):
                    g = gains.to(device=x.device)
                    if total is not None:   # earlier versions' sum, row by row in mask order: bit for bit the same
                        accumulate_rows(total, torch.zeros(len(idx), dtype=torch.long), g.to(total), buf[0])
                    stats.add_block(g, g, buf)
                    if running and stop.check_error(error(stats.estimate()[0] / self.p), stats.replicates):
                        stopped = True
                        break
                if stopped:
                    break
            stream.close(stopped)
            n_used = stats.n
            importance = total[0] / (n_used * self.p) if total is not None else stats.estimate()[0] / self.p
            se = stats.stderr()[0] / self.p
            imps.append(importance)
            ses.append(se)
            kps.append(dec.keypoints.as_tensor())
            heats.append(self.pixel_heatmap(dec, importance))
            heat_ses.append(self.heatmap_stderr(dec, importance, stats.covariance() / (self.p * self.p)))
            used.append(n_used)
            final_error.append(float(relative_error(heats[-1][None], heat_ses[-1][None])[0]
                                     if voronoi and heat_moments is None else error(importance)[0]))
            if self.tol is not None and not stopped:
                unreached.append(i)
        self._finish_sampling(used, final_error, unreached, self.n_masks, "masks", x.shape[0])
        extras = {"feature_importance": imps, "feature_stderr": ses, "keypoints": kps,
                  "n_features": torch.tensor([len(k) for k in kps]),
                  "decomposition_time_s": torch.tensor(times),
                  "stderr": torch.stack(heat_ses).unsqueeze(1).to(x.dtype)}
        return torch.stack(heats).unsqueeze(1).to(x.dtype), extras
