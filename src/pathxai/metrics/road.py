"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci & Kasneci, "A Consistent and Efficient Evaluation
Strategy for Attribution Methods", ICML 2022), with the paper's noisy linear imputation and no retraining.

**Noisy linear imputation** (the paper's Sec. 4 and the authors' reference implementation). Every removed pixel
takes the weighted mean of its 8 neighbours, the 4 direct ones with weight 1/6 and the 4 diagonal ones with weight
1/12; neighbours that are removed themselves are unknowns too, so the values of all removed pixels solve one sparse
linear system per image (one right-hand side per channel)::

    sum_j w_j (v_i - v_j) = 0   for every removed pixel i, j over its neighbours inside the image

Neighbours outside the image are left out and the mean is over the remaining weights (the authors' choice), so a
removed pixel on the border is the weighted mean of its in-image neighbours. Then Gaussian noise of standard deviation
``noise`` (absolute, in the input's units; the paper's 0.01 for inputs in [0, 1]) is added to the imputed values:
the noise hides the shape of the removal mask from the model, the paper's "debiasing". Each connected group of removed
pixels touches at least one kept pixel unless the whole image is removed, so the system has a unique solution
(irreducibly diagonally dominant) for every removal fraction below 100 %; the solution satisfies a discrete maximum
principle (every imputed value is a convex combination of its neighbours, hence of the kept pixels), a constant image
is unchanged, and a linear ramp is reproduced exactly wherever no removed pixel lies on the image border (the
symmetric weights average a linear function to its centre value; the truncated border mean does not). The system is
solved on the host with SciPy's sparse LU, in float64.

**Orderings and curves.** Pixels are ranked by the saliency (N, H, W), highest first (ties: stable sort by pixel
index; the authors break ties with 1e-4 random noise). For every removal percentage p (default 10, 20, ..., 90) the
first ``n_p = int(H * W * p / 100)`` ranked pixels (all channels) are imputed for **MoRF** (most relevant first), the
last ``n_p`` for **LeRF** (least relevant first), and the model is asked again. The curve is the 0/1 accuracy
(``score="accuracy"``: arg-max prediction == target class; with ``target=None`` the class predicted on x, i.e.
consistency) or the target's softmax probability / logit. A faithful map makes the MoRF curve fall fast and the LeRF
curve stay high. Summaries: ``morf_area`` and ``lerf_area`` are each curve's mean over the percentages (the area under
the curve with every percentage weighted equally), and ``score = lerf_area - morf_area`` (higher is better; in
[-1, 1] for accuracy and probabilities), the gap between the two orderings that ROAD recommends to look at together
because either alone mixes the map's quality with how the model reacts to imputed pixels.

**Noise** for item (sample i, ordering o, percentage k) is drawn from the host generator
``item_generator(seed, "road", (i * 2 + o) * K + k)``: results are reproducible and independent of ``batch_size``.
Quantus' ``ROAD`` is the MoRF accuracy curve alone, averaged over samples (``result.morf.mean(0)``), with Quantus'
default percentages 1, 3, ..., 99.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..core import limits
from ..core.evaluator import AUTO, BatchedEvaluator, evaluation_mode
from ..core.limits import Cost
from ..core.method import item_outputs
from ..core.seeding import item_generator
from ..core.targets import TargetLike
from ..core.validation import check_input, check_positive_float, check_saliency, check_seed
from ._common import MetricInfo, MetricResult, as_saliency, metric_target, register_metric, score_kind, target_meta
from .perturbation import pixel_ranks

# (row offset, column offset, weight): direct neighbours 1/6, diagonal neighbours 1/12 (they sum to 1)
ROAD_NEIGHBOURS = ((-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6), (0, 1, 1 / 6),
                   (1, -1, 1 / 12), (1, 0, 1 / 6), (1, 1, 1 / 12))
DEFAULT_PERCENTAGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
ROAD_SCORES = ("accuracy", "softmax", "logit", "log_softmax")


def _linear_fill(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Solve the imputation system for one image: ``image`` (C, H, W) float64, ``removed`` (H, W) bool.

    Returns the (C, m) values of the m removed pixels in flattened (row-major) pixel order, without noise.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import splu

    c, h, w = image.shape
    flat_removed = removed.reshape(-1)
    idx = np.flatnonzero(flat_removed)
    m = idx.size
    if m == 0:
        return np.zeros((c, 0))
    if m == h * w:
        raise ValueError(f"cannot impute an image with all {h * w} pixels removed: no kept pixel to impute from")
    var = np.full(h * w, -1, dtype=np.int64)
    var[idx] = np.arange(m)
    r, col = idx // w, idx % w
    flat = image.reshape(c, -1)
    diag = np.zeros(m)
    rhs = np.zeros((m, c))
    rows, cols, vals = [np.arange(m)], [np.arange(m)], []
    for dr, dc, wt in ROAD_NEIGHBOURS:
        rr, cc = r + dr, col + dc
        inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        eq = np.flatnonzero(inside)           # equations (removed pixels) with this neighbour inside the image
        nb = rr[inside] * w + cc[inside]      # the neighbour's flat index
        diag[eq] += wt
        unknown = flat_removed[nb]
        rows.append(eq[unknown])
        cols.append(var[nb[unknown]])
        vals.append(np.full(int(unknown.sum()), -wt))
        # each equation meets each offset once, so this fancy-index += has no repeated rows
        rhs[eq[~unknown]] += wt * flat[:, nb[~unknown]].T
    a = coo_matrix((np.concatenate([diag] + vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m, m))
    return splu(a.tocsc()).solve(rhs).T


def noisy_linear_imputation(image: torch.Tensor, removed: torch.Tensor, *, noise: float = 0.0,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """ROAD's noisy linear imputation of the removed pixels (see the module doc).

    Args:
        image: (C, H, W) or (N, C, H, W) float tensor.
        removed: (H, W) or (N, H, W) bool: the pixels to impute (all channels).
        noise: standard deviation of the Gaussian noise added to every imputed value (0 = none; ROAD uses 0.01).
        generator: a CPU ``torch.Generator`` for the noise (default: torch's global one).
    Returns:
        The image with the removed pixels imputed: same shape, dtype and device as ``image``; kept pixels unchanged.
    """
    if not isinstance(image, torch.Tensor) or not torch.is_floating_point(image):
        raise TypeError(f"image must be a floating-point torch.Tensor (C, H, W) or (N, C, H, W), got "
                        f"{type(image).__name__ if not isinstance(image, torch.Tensor) else image.dtype}")
    if image.ndim not in (3, 4) or image.numel() == 0:
        raise ValueError(f"image must have shape (C, H, W) or (N, C, H, W), got {tuple(image.shape)}")
    if not torch.isfinite(image).all():
        raise ValueError(f"image contains NaN/Inf values (shape {tuple(image.shape)})")
    if not isinstance(removed, torch.Tensor) or removed.dtype != torch.bool:
        raise TypeError("removed must be a bool torch.Tensor of the image's (H, W) (or (N, H, W))")
    batched = image.ndim == 4
    expected = (image.shape[0],) + tuple(image.shape[2:]) if batched else tuple(image.shape[1:])
    if tuple(removed.shape) != expected:
        raise ValueError(f"removed must have shape {expected} to match image of shape {tuple(image.shape)}, got "
                         f"{tuple(removed.shape)}")
    noise = check_positive_float(noise, "noise", allow_zero=True)
    imgs = image.detach().cpu().double().numpy().reshape((-1,) + tuple(image.shape[-3:]))
    masks = removed.detach().cpu().numpy().reshape((-1,) + tuple(image.shape[-2:]))
    out = imgs.copy()
    for i in range(imgs.shape[0]):
        values = _linear_fill(imgs[i], masks[i])
        if noise > 0 and values.size:
            values = values + noise * torch.randn(values.shape, generator=generator, dtype=torch.float64).numpy()
        out[i].reshape(imgs.shape[1], -1)[:, np.flatnonzero(masks[i].reshape(-1))] = values
    return torch.from_numpy(out.reshape(image.shape)).to(device=image.device, dtype=image.dtype)


def check_percentages(percentages: Any, name: str = "percentages") -> torch.Tensor:
    """A non-empty increasing sequence of removal percentages in [0, 100) as a float64 tensor."""
    try:
        values = [float(p) for p in percentages]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of numbers in [0, 100), got {percentages!r}") from None
    t = torch.tensor(values, dtype=torch.float64)
    if t.numel() == 0 or not bool(torch.isfinite(t).all()) or (t < 0).any() or (t >= 100).any() \
            or (t.diff() <= 0).any():
        raise ValueError(f"{name} must be >= 1 increasing values in [0, 100) (100 % leaves nothing to impute "
                         f"from), got {list(percentages)}")
    return t


@dataclass(kw_only=True)
class RoadResult(MetricResult):
    """Result of :func:`road`.

    Attributes:
        score: (N,) ``lerf_area - morf_area`` (higher is better).
        curve: (N, 2, K) the MoRF (index 0) and LeRF (index 1) curves.
        morf, lerf: (N, K) the two curves; morf_area, lerf_area: (N,) their means over the percentages.
        percentages: (K,) removal percentages; n_removed: (K,) pixels imputed at each.
        measure: what the curves hold (``"accuracy"``, ``"softmax"``, ``"logit"`` or ``"log_softmax"``).
    """

    morf: torch.Tensor
    lerf: torch.Tensor
    morf_area: torch.Tensor
    lerf_area: torch.Tensor
    percentages: torch.Tensor
    n_removed: torch.Tensor
    measure: str


@register_metric(MetricInfo(
    name="road", category="faithfulness", score_direction="higher", needs_model=True, input="saliency (N, H, W)",
    score_range="[-1, 1] for accuracy and softmax; unbounded for logits",
    reference="Rong, Leemann, Borisov, Kasneci & Kasneci, A Consistent and Efficient Evaluation Strategy for "
              "Attribution Methods (ROAD), ICML 2022",
    description="Accuracy (or score) after noisy linear imputation of the most (MoRF) and least (LeRF) relevant "
                "p % of pixels; score = mean LeRF - mean MoRF."))
def road(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, saliency: Any, target: TargetLike = None,
         *, percentages: Sequence[float] = DEFAULT_PERCENTAGES, score: str = "accuracy", noise: float = 0.01,
         seed: int = 0, batch_size: int | str = AUTO, progress: bool | None = None) -> RoadResult:
    """ROAD curves (MoRF and LeRF) with noisy linear imputation, without retraining (see the module doc).

    Args:
        model: classifier ``(N, C, H, W) -> (N, K)``.
        x: (N, C, H, W) inputs.
        saliency: (N, H, W) or (N, 1, H, W) map (or an Explanation: its ``.saliency()``); higher = more relevant.
        target: int class, N ints (e.g. the true labels: the paper's accuracy), ``None`` (the class predicted on x)
            or, with ``score="logit"``, a callable ``output -> (N,)``.
        percentages: increasing removal percentages in [0, 100).
        score: ``"accuracy"`` (0/1, default, the paper's), ``"softmax"``, ``"logit"`` or ``"log_softmax"``.
        noise: std of the imputation noise (absolute; 0.01 as in the paper, for inputs in [0, 1]).
        seed: seed of the noise.
        batch_size: most model evaluations in flight (positive int or ``"auto"``).
    Returns:
        :class:`RoadResult`: ``score`` (N,), ``curve`` (N, 2, K), ``morf`` / ``lerf`` (N, K).
    Cost: 2 · N · K model evaluations and as many sparse solves on the host.
    """
    start_time = time.perf_counter()
    x = check_input(x, "x", ndim=4, expected="(N, C, H, W)").detach()
    saliency = check_saliency(as_saliency(saliency), x).detach().cpu()
    pct = check_percentages(percentages)
    if not isinstance(score, str) or score.lower() not in ROAD_SCORES:
        raise ValueError(f"score must be one of {', '.join(map(repr, ROAD_SCORES))}, got {score!r}")
    score = score.lower()
    noise = check_positive_float(noise, "noise", allow_zero=True)
    seed = check_seed(seed)
    n, c, h, w = x.shape
    k = pct.numel()
    limits.check(Cost(evaluations=2 * n * k, bytes=8.0 * n * h * w * (c + 2), param="percentages",
                      value=f"{k} values", detail=f"{n} input(s) x 2 orderings x {k} percentages"), "metric 'road'")
    evaluator = BatchedEvaluator(model, batch_size=batch_size, progress=progress)
    dtype = x.dtype
    host = x.cpu().double().numpy()                 # the imputation runs on the host (SciPy)
    x = evaluator.work_input(x)                     # the model runs where it lives
    ranks = pixel_ranks(saliency).reshape(n, -1)    # (N, H*W) host, 0 = most relevant
    n_removed = [int(h * w * float(p) / 100) for p in pct]   # int() as the authors and Quantus
    per_sample = 2 * k
    with evaluation_mode(model):
        resolved = metric_target(evaluator, x, target)
        if score == "accuracy":
            if resolved.classes is None:
                raise ValueError("score='accuracy' compares the predicted class with a class target; a callable "
                                 "target needs score='logit'")
            kind = None
        else:
            kind = score_kind(score, resolved)
        classes = resolved.classes.to(x.device) if resolved.classes is not None else None

        def build(items: torch.Tensor) -> torch.Tensor:
            batch = []
            for item in items.tolist():
                s, rest = divmod(item, per_sample)
                order, step = divmod(rest, k)
                cut = n_removed[step]
                removed = ranks[s] < cut if order == 0 else ranks[s] >= h * w - cut
                filled = host[s].copy()
                values = _linear_fill(filled, removed.numpy().reshape(h, w))
                if noise > 0 and values.size:
                    gen = item_generator(seed, "road", item)
                    values = values + noise * torch.randn(values.shape, generator=gen, dtype=torch.float64).numpy()
                filled.reshape(c, -1)[:, np.flatnonzero(removed.numpy())] = values
                batch.append(torch.from_numpy(filled))
            return torch.stack(batch).to(device=x.device, dtype=x.dtype)

        raw = torch.empty(n * per_sample, dtype=torch.float64)
        for items, out in item_outputs(evaluator, n * per_sample, build, sample_shape=x.shape[1:], desc="road"):
            sample = items // per_sample
            if kind is None:
                hit = out.argmax(dim=1) == classes[sample.to(x.device)]
                raw[items] = hit.double().cpu()
            else:
                raw[items] = resolved.score(out, sample, kind=kind).double().cpu()
    curves = raw.view(n, 2, k)
    morf, lerf = curves[:, 0], curves[:, 1]
    morf_area, lerf_area = morf.mean(1), lerf.mean(1)
    meta = {"metric": "road", "percentages": pct.tolist(), "score": score, "noise": noise, "seed": seed,
            "batch_size": evaluator.batch_size, "model_evaluations": evaluator.n_evaluations,
            "probe_evaluations": evaluator.n_probe, "target": target_meta(resolved),
            "wall_time_s": time.perf_counter() - start_time}
    return RoadResult(score=(lerf_area - morf_area).to(dtype), curve=curves.to(dtype), meta=meta,
                      morf=morf.to(dtype), lerf=lerf.to(dtype), morf_area=morf_area.to(dtype),
                      lerf_area=lerf_area.to(dtype), percentages=pct,
                      n_removed=torch.tensor(n_removed, dtype=torch.int64), measure=score)


__all__ = ["DEFAULT_PERCENTAGES", "ROAD_NEIGHBOURS", "RoadResult", "check_percentages", "noisy_linear_imputation",
           "road"]
