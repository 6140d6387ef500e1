"""SIFT-RELAX: RELAX (Wickstrøm et al., IJCV 2023) for a representation model, sampled over SIFT keypoint gains.

Going beyond the thesis (which proposes RISE-style sampling over keypoint gains, Sec. 4.3.2/4.4, but builds
neither): each image is decomposed once into K keypoint features with the linear decoder D(theta), D(1) = x,
D(0) = 0 (:func:`~.decoder.sift_decompose`). Instead of RELAX's upsampled pixel masks, the masks are random gain
vectors theta_n in {0, 1}^K, the same Bernoulli(p) on/off gains as ``sift_rise`` (drawn iid, antithetic or
stratified per keypoint exactly as RELAX draws its cells, :func:`~..relax.masks_and_cells` with one "token" per
keypoint). With h = f(x), s_n = s(h, f(D(theta_n))) (RELAX's similarity, cosine by default):

    importance   R_i = (1/N) sum_n s_n theta_ni                      (RELAX Eq. 2, ``estimator="mean"``)
                 or   sum_n s_n theta_ni / sum_n theta_ni          (Eq. 12, ``estimator="weighted"``)
    uncertainty  U_i = spread of s_n over the gain vectors that keep feature i   (Eq. 9 / 13, as RELAX)
    U-RELAX      R_i where U_i < gamma * median_j(U_j), 0 elsewhere   (Eq. 10-11)

computed with RELAX's streaming machinery unchanged: gain vectors in aligned blocks of 64
(:class:`~..relax.BlockStream`), merged into :class:`~..relax.MaskedMoments` with "pixels" = keypoints, and (from
enough gain vectors, ``control_variate="auto"``) RELAX's cross-fitted linear control variate on the gains
(:class:`~..relax.CellControlVariate`; the gains are their own cells). Memory per image: the decoder plus O(K)
statistics (O(K^2) with the control variate), whatever the number of gain vectors.

Pixel maps go through the same extractions as the other SIFT methods: the homogeneous-field heatmap I(R) of
Eq. 4.46 (``heatmap="voronoi"``, default; linear, so the similarity offset p E[s] that every keypoint shares only
shifts the map) or the image-statistics heatmap of Eq. 4.48 (``heatmap="image"``). For Eq. 4.48 the importance is
first rescaled to [0, 1] over the image's keypoints (min -> 0, max -> 1): D(R) with the shared offset left in would
be ~ p E[s] x, and the map would show the image's own contrast rather than the explanation.
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch

from ...core import Target, item_outputs, register_method
from ...core.evaluator import AUTO
from ...core.validation import check_fraction
from ..relax import (AGGREGATIONS, RELAX, BlockStream, CellControlVariate, MaskedMoments, SimilarityLike,
                     error_bound, masked_similarities, masks_and_cells, u_relax)
from .decoder import SiftDecoder
from .method import _SiftFeatures

DEFAULT_N_MASKS = 1000


@register_method
class SiftRELAX(_SiftFeatures, RELAX):
    """RELAX over SIFT keypoint features: importance and uncertainty of each keypoint for an encoder's representation.

    The model is an encoder ``x (n, C, H, W) -> representation (n, ...)`` (flattened to (n, D)); no target.

    Args:
        n_masks: random gain vectors N per image (default 1000), or pick N from ``tolerance``/``delta`` by RELAX's
            Theorem 1 (it holds per keypoint for iid gains, as per pixel for RELAX).
        p: probability that a keypoint is kept (0.5). similarity, estimator, sampling, stratum, control_variate:
            as for :class:`~..relax.RELAX` (the gains play the role of RELAX's cells; ``"auto"`` turns the control
            variate on from 4 (K + 1) gain vectors).
        gamma, aggregation: U-RELAX's threshold epsilon = gamma * median (or mean) of the keypoint uncertainties.
        eta, cells, sparsity, contrast_threshold, edge_ratio, max_keypoints, sigma_min, octave_steps, n_levels,
            heatmap, heatmap_sigmas, heat_exponent: the decomposition and heatmap settings of
            :class:`~.method.SiftAblationPath`.

    Attribution: (N, 1, H, W) pixel heatmap of the keypoint importance R (high = the representation stays similar
    when the keypoint is kept). ``extras``: ``feature_importance``, ``feature_uncertainty``,
    ``u_relax_feature_importance``, ``keypoints`` (y, x, sigma, response): lists with one (K,) / (K, 4) entry per
    image (K differs); ``uncertainty`` (N, 1, H, W) = I(U) (Eq. 4.46); ``u_relax`` (N, 1, H, W) the pixel heatmap of
    the U-RELAX-filtered importance; ``threshold`` (N,) epsilon; ``mean_similarity`` (N,); ``representation``
    (N, D); ``n_features`` (N,); ``error_bound`` (Theorem 1's t at ``delta``); ``decomposition_time_s``: list of
    floats. Gain vector n of an image with K keypoints comes from the generator (seed, "sift_relax", n) whatever
    the batch, so an image's result does not depend on the other images explained with it.
    """

    name = "sift_relax"
    description = ("RELAX over SIFT keypoint features: representation similarity under random keypoint gains, with "
                   "U-RELAX uncertainty.")
    input_ndim = (4,)
    input_expected = "(N, C, H, W)"

    def __init__(self, model: Any, *, n_masks: int | None = None, tolerance: float | None = None,
                 delta: float = 0.01, p: float = 0.5, similarity: SimilarityLike = "cosine", estimator: str = "mean",
                 sampling: str = "stratified", stratum: int = 8, control_variate: bool | str = "auto",
                 gamma: float = 1.0, aggregation: str = "median", eta: float = 4.0, cells: str = "smooth",
                 sparsity: float = 0.01, contrast_threshold: float = 0.01, edge_ratio: float = 10.0,
                 max_keypoints: int = 300, sigma_min: float = 0.8, octave_steps: int = 3, n_levels: int = 3,
                 heatmap: str = "voronoi", heatmap_sigmas: tuple[float, float] | None = None,
                 heat_exponent: float = 0.0, batch_size: int | str = AUTO, seed: int = 0,
                 progress: bool | None = None) -> None:
        if n_masks is None and tolerance is None:
            n_masks = DEFAULT_N_MASKS
        # RELAX validates and stores the sampling / estimator settings; its pixel-only ones (grid, baseline) are
        # not accepted here: the baseline is the decoder's implicit D(0) = 0 (Sec. 4.3.1)
        RELAX.__init__(self, model, n_masks=n_masks, tolerance=tolerance, delta=delta, p=p, similarity=similarity,
                       estimator=estimator, sampling=sampling, stratum=stratum, control_variate=control_variate,
                       batch_size=batch_size, seed=seed, progress=progress)
        self.gamma = check_fraction(gamma, "gamma", low=0.0, high=math.inf)
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be 'median' or 'mean', got {aggregation!r}")
        self.aggregation = aggregation
        self._init_sift(eta=eta, cells=cells, sparsity=sparsity, contrast_threshold=contrast_threshold,
                        edge_ratio=edge_ratio, max_keypoints=max_keypoints, sigma_min=sigma_min,
                        octave_steps=octave_steps, n_levels=n_levels, heatmap=heatmap, heatmap_sigmas=heatmap_sigmas,
                        heat_exponent=heat_exponent)

    def params(self) -> dict[str, Any]:
        p = {k: v for k, v in RELAX.params(self).items() if k not in ("grid", "baseline")}
        return {**p, "gamma": self.gamma, "aggregation": self.aggregation, **self.sift, "heatmap": self.heatmap,
                "heatmap_sigmas": self.heatmap_sigmas}

    def gains(self, index: torch.Tensor, k: int) -> torch.Tensor:
        """Gain vectors number ``index`` (m,) for an image with K = ``k`` keypoints: (m, K) float32 in {0, 1}."""
        return masks_and_cells(index, self.seed, (k,), p=self.p, sampling=self.sampling, stratum=self.stratum,
                               stream="sift_relax")[1]

    def feature_statistics(self, decoder: SiftDecoder, h: torch.Tensor, dtype: torch.dtype
                           ) -> tuple[MaskedMoments, CellControlVariate | None, float]:
        """Run the N gain vectors of one image through D and the encoder.

        Args:
            decoder: the image's decoder (K features).
            h: (D,) float64 representation of the image.
            dtype: dtype of the images fed to the encoder.
        Returns:
            ``(moments over (1, K), control-variate sums or None, mean similarity)``.
        """
        k = decoder.n_features
        device = decoder.device
        moments = MaskedMoments(1, k, device)
        group = {"iid": 1, "antithetic": 2, "stratified": self.stratum}[self.sampling]
        cv = CellControlVariate(1, k, k, group, device) if self.uses_control_variate(k) else None
        # float64 gains: the block sums of MaskedMoments are taken in the gains' dtype
        stream = BlockStream(1, self.n_masks, lambda idx: (self.gains(idx, k).to(device=device,
                                                                                  dtype=torch.float64),))
        h_row = h.view(1, -1)
        sim_sum = 0.0

        def build(items: torch.Tensor) -> torch.Tensor:
            return decoder.decode(stream.rows(items)).to(dtype)

        for items, out in item_outputs(self.evaluator, self.n_masks, build, sample_shape=(decoder.channels,
                                                                                         *decoder.image_shape),
                                       desc=self.name):
            sims = masked_similarities(self._similarity, h_row.expand(len(items), -1), out)
            for idx, (gains_b,), buf in stream.add(torch.zeros_like(items), items, sims):
                moments.add_block(gains_b, buf)
                if cv is not None:
                    cv.add_block(idx, gains_b, gains_b, buf)
                sim_sum += float(buf.sum())
        stream.close()
        return moments, cv, sim_sum / self.n_masks

    def feature_estimates(self, moments: MaskedMoments, cv: CellControlVariate | None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """(importance (K,), uncertainty (K,)) float64 from one image's statistics (RELAX's estimators)."""
        importance, uncertainty = moments.estimates(self.estimator)
        if cv is not None:
            k = importance.shape[1]
            importance = cv.importance(torch.eye(k, dtype=torch.float64, device=importance.device),
                                       self.p)  # gains are their own cells
        return importance[0], uncertainty[0]

    def explain_features(self, x: torch.Tensor, i: int, h: torch.Tensor) -> dict[str, Any]:
        """Keypoint importance, uncertainty and pixel maps of image ``i`` of the validated batch ``x`` (N, C, H, W),
        whose representation is ``h`` (D,) float64 (runs inside :meth:`explain`)."""
        t0 = time.perf_counter()
        dec = self.decompose(x[i])
        t1 = time.perf_counter()
        moments, cv, mean_sim = self.feature_statistics(dec, h, x.dtype)
        importance, uncertainty = self.feature_estimates(moments, cv)
        filtered, eps = u_relax(importance[None], uncertainty[None], self.gamma, self.aggregation)
        return {"importance": importance, "uncertainty": uncertainty, "filtered": filtered[0],
                "threshold": float(eps[0]), "mean_similarity": mean_sim, "keypoints": dec.keypoints.as_tensor(),
                "heat": self.importance_heatmap(dec, importance),
                "u_heat": self.importance_heatmap(dec, filtered[0]),
                "uncertainty_heat": dec.heatmap(uncertainty.to(dec.matrices[0].dtype)),
                "decomposition_time_s": t1 - t0}

    def importance_heatmap(self, decoder: SiftDecoder, importance: torch.Tensor) -> torch.Tensor:
        """Keypoint importance (K,) -> (H, W) pixel heatmap (Eq. 4.46, or Eq. 4.48 after rescaling to [0, 1])."""
        if self.heatmap == "image":
            lo, hi = importance.min(), importance.max()
            importance = (importance - lo) / (hi - lo) if hi > lo else torch.ones_like(importance)
        return self.pixel_heatmap(decoder, importance)

    def _explain(self, x: torch.Tensor, target: Target) -> tuple[torch.Tensor, dict[str, Any]]:
        h = self.representation(x)
        results = [self.explain_features(x, i, h[i]) for i in range(x.shape[0])]

        def maps(key: str) -> torch.Tensor:
            return torch.stack([r[key] for r in results]).unsqueeze(1).to(x.dtype)

        extras: dict[str, Any] = {
            "feature_importance": [r["importance"] for r in results],
            "feature_uncertainty": [r["uncertainty"] for r in results],
            "u_relax_feature_importance": [r["filtered"] for r in results],
            "keypoints": [r["keypoints"] for r in results],
            "uncertainty": maps("uncertainty_heat"),
            "u_relax": maps("u_heat"),
            "threshold": torch.tensor([r["threshold"] for r in results], dtype=torch.float64),
            "mean_similarity": torch.tensor([r["mean_similarity"] for r in results], dtype=x.dtype),
            "representation": h.to(x.dtype),
            "n_features": torch.tensor([len(r["keypoints"]) for r in results]),
            "error_bound": error_bound(self.n_masks, self.delta),
            # a list, not a tensor: wall times are not part of the (batch-size invariant) result
            "decomposition_time_s": [r["decomposition_time_s"] for r in results],
        }
        return maps("heat"), extras


__all__ = ["DEFAULT_N_MASKS", "SiftRELAX"]
