"""Evaluate several methods on a suite with several metrics: one table, per-item scores, curves and heatmaps.

    r = px.evaluate("digits-clutter", methods=["ig", "gradcam"], metrics=["insertion", "pointing"])
    print(r.format_table())

Conventions (stated in every output):
- ``insertion`` starts, on photos, from a Gaussian blur of the image (σ = 5 px at 224 px, RISE's choice, since a
  black photo is far from the data) and, on the digit suites, from black, their natural empty background (a blurred
  digit is still recognised by the models, which would saturate every curve); ``deletion`` ends at black. Both use
  the target's softmax probability with ``steps`` points and normalisation ``none`` (RISE); ``--normalisation
  samp_authors`` gives the SAMP authors' curve and average (logit / f(x), mean of the points; the steps and baselines
  stay these), ``samp`` our affine rescaling (see :mod:`pathxai.metrics.perturbation`).
- ``pointing``: the TorchRay pointing game against the suite's object masks (boxes where no mask is known), with the
  15 px tolerance of 224 px images scaled to the image side (4.3 px at 64 px).
- ``sensitivity_n``: Pearson correlation between attribution sums and output drops over random pixel subsets,
  averaged over the subset sizes.
- The explained class is the suite's label (the true class), as in the pointing-game literature.
"""
from __future__ import annotations

import csv
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from . import metrics as M
from .core import get_method
from .core.placement import resolve_device
from .core.validation import ModelNotSupportedError, check_positive_int, check_seed
from .core.files import atomic_path
from . import stats as S
from .suites import load_suite

METRIC_NAMES = ("insertion", "deletion", "pointing", "sensitivity_n")
INSERTION_BASELINE = {"photos": "blur", "digits": "zero", "digits-clutter": "zero"}
HIGHER_IS_BETTER = {"insertion": True, "deletion": False, "pointing": True, "sensitivity_n": True}
# Metrics of Quantus' catalogue (ROAD, IROF, complexity, relative stability, CLEVR-XAI localisation), scored by
# _score_added_metric; their directions come from each metric's MetricInfo.
ADDED_METRIC_NAMES = ("road", "irof", "sparseness", "complexity", "relevance_mass", "relevance_rank",
                      "relative_input_stability", "relative_output_stability", "relative_representation_stability")
METRIC_NAMES = METRIC_NAMES + ADDED_METRIC_NAMES
HIGHER_IS_BETTER.update({m: M.get_metric(m).info.higher_is_better for m in ADDED_METRIC_NAMES})


@dataclass
class EvaluationResult:
    """Scores of every (method, metric) on every item of a suite.

    Attributes:
        scores: ``{(method, metric): (n,) tensor}``; curves: ``{(method, metric): (n, steps + 1)}`` for
            insertion/deletion; saliency: ``{method: (n, H, W)}``; seconds: ``{method: wall seconds per image}``.
        methods: the methods that explained the model; refused: ``{method: reason}`` for those that cannot explain
            it (:class:`~pathxai.core.ModelNotSupportedError`, e.g. DeepLIFT on a ViT): they have no scores.
    """

    suite: str
    model: str
    methods: list[str]
    metrics: list[str]
    item_names: list[str]
    labels: list[int]
    images: torch.Tensor
    scores: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    curves: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    saliency: dict[str, torch.Tensor] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    evaluations: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)   # method -> why it cannot explain this model
    # the statistics of the last call, keyed by the scores' identities and versions (bootstraps take seconds)
    _stats_cache: tuple[Any, dict[str, S.MethodComparison]] | None = field(default=None, init=False, repr=False,
                                                                            compare=False)

    def statistics(self) -> dict[str, S.MethodComparison]:
        """``{metric: MethodComparison}``: every method's mean with its 95 % bootstrap CI, every pair of methods
        compared on the same items (paired Wilcoxon, Holm-corrected per metric) and the best method or "tied"
        (see :mod:`pathxai.stats`). Seeded with the evaluation's seed; computed once per set of scores."""
        key = (tuple(self.methods), tuple(self.metrics), tuple(self.labels),
               tuple((k, id(v), v._version) for k, v in sorted(self.scores.items())))
        if self._stats_cache is not None and self._stats_cache[0] == key:
            return self._stats_cache[1]
        seed = int(self.settings.get("seed", 0))
        out = {}
        for metric in self.metrics:
            groups = torch.as_tensor(self.labels, dtype=torch.long) if metric in CLASS_BALANCED else None
            out[metric] = S.compare_methods({m: self.scores[(m, metric)] for m in self.methods}, metric=metric,
                                            higher_is_better=HIGHER_IS_BETTER.get(metric, True), groups=groups,
                                            seed=seed)
        self._stats_cache = (key, out)
        return out

    def summary(self) -> list[dict[str, Any]]:
        """One row per (method, metric): mean, std (over items; pointing: the per-class accuracy), n, and
        ``ci95`` ([low, high], the 95 % BCa bootstrap interval of the mean over items) with ``ci95_method``."""
        stats = self.statistics()
        rows = []
        for method in self.methods:
            for metric in self.metrics:
                s = self.scores[(method, metric)].double()
                ok = s[torch.isfinite(s)]
                mean = float(ok.mean()) if len(ok) else math.nan
                std = float(ok.std(unbiased=False)) if len(ok) > 1 else 0.0
                if metric == "pointing":
                    mean = float(self.settings["pointing_accuracy"][method])
                ci = stats[metric].means[method]
                rows.append({"method": method, "metric": metric, "mean": mean, "std": std, "n": int(len(ok)),
                             "seconds_per_image": self.seconds[method],
                             "evaluations_per_image": self.evaluations[method],
                             "ci95": ci.interval, "ci95_method": ci.method})
        return rows

    def comparisons(self) -> list[dict[str, Any]]:
        """Every pair of methods on every metric, paired by item: ``metric, method_a, method_b, n,
        mean_difference`` (a - b), ``ci95``, ``ci95_method``, ``p_value`` (Wilcoxon signed-rank), ``test``,
        ``p_holm`` (Holm over the pairs of the metric), ``significant`` (p_holm < 0.05) and ``better``."""
        return [pair for c in self.statistics().values() for pair in c.pairs]

    def best(self) -> dict[str, dict[str, Any]]:
        """``{metric: {"best", "leader", "runner_up", "p_holm"}}``: ``best`` is the method with the best mean when
        it is significantly better than the runner-up (Holm-corrected paired test), ``"tied"`` when not, None
        with a single method."""
        return {metric: c.verdict() for metric, c in self.statistics().items()}

    def format_table(self) -> str:
        """Markdown table: methods as rows, metrics as columns (mean [95 % CI]), the best method of a column in
        bold only when it is significantly better than the runner-up; a note below names the best or "tied"."""
        stats = self.statistics()
        summary = {(r["method"], r["metric"]): r for r in self.summary()}
        arrows = {m: ("↑" if HIGHER_IS_BETTER.get(m, True) else "↓") for m in self.metrics}
        n_items = len(self.item_names)
        lines = ["| method | " + " | ".join(f"{m} {arrows[m]}" for m in self.metrics) + " | s / image |",
                 "|---|" + "---:|" * (len(self.metrics) + 1)]
        for method in self.methods:
            cells = []
            for metric in self.metrics:
                r = summary[(method, metric)]
                lo, hi = r["ci95"]
                text = f"{r['mean']:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if math.isfinite(lo) else "")
                if r["n"] < n_items:   # missing scores were dropped: say how many items remain
                    text += f" (n={r['n']})"
                cells.append(f"**{text}**" if stats[metric].best == method else text)
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {self.seconds[method]:.2f} |")
        lines += ["", "Cells: mean [95 % BCa bootstrap CI over items]. Best: the best mean when a paired Wilcoxon "
                  "test over the same items finds it better than the runner-up (Holm-corrected over the pairs of "
                  f"methods, p < {S.ALPHA}); otherwise tied."]
        verdicts = []
        for metric, c in stats.items():
            if c.leader is None:
                continue
            p = c.verdict()["p_holm"]
            p_text = "n/a" if p is None or not math.isfinite(p) else f"{p:.2g}"
            what = f"**{c.best}**" if c.best != "tied" else "tied"
            verdicts.append(f"{metric}: {what} ({c.leader} vs {c.runner_up}, p_holm = {p_text})")
        if verdicts:
            lines.append("Best: " + "; ".join(verdicts) + ".")
        for method, reason in self.refused.items():
            lines.append(f"Refused: {method}: {reason}")
        return "\n".join(lines)

    def save(self, out: str | Path, plots: bool = True) -> list[Path]:
        """Write ``items.csv`` (per item), ``summary.csv`` (with ``ci95_low`` / ``ci95_high``), ``summary.json``
        (``summary`` rows with ``ci95``; ``comparisons``, ``best`` and the ``statistics`` conventions), ``table.md``
        and, with ``plots``, ``curves.png`` and ``heatmaps.png`` into ``out``. Every file is written atomically."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        header = ["item", "label", "method"] + self.metrics
        rows = [[name, label, method] + [f"{float(self.scores[(method, m)][i]):.6g}" for m in self.metrics]
                for method in self.methods for i, (name, label) in enumerate(zip(self.item_names, self.labels))]
        written.append(_write_csv(out / "items.csv", header, rows))
        summary = self.summary()
        # CSV: the interval as two columns (appended: the old columns keep their places)
        flat = [{**{k: v for k, v in r.items() if k not in ("ci95", "ci95_method")}, "ci95_low": r["ci95"][0],
                 "ci95_high": r["ci95"][1], "ci95_method": r["ci95_method"]} for r in summary]
        written.append(_write_csv(out / "summary.csv", list(flat[0]), [list(r.values()) for r in flat]))
        written.append(_write_text(out / "summary.json", json.dumps(
            {"suite": self.suite, "model": self.model, "settings": _jsonable(self.settings),
             "summary": [{**r, "ci95": _json_finite(r["ci95"])} for r in summary],
             "statistics": S.STATISTICS_NOTE, "comparisons": _json_finite(self.comparisons()),
             "best": _json_finite(self.best()), "refused": self.refused}, indent=1)))
        written.append(_write_text(out / "table.md", self.format_table() + "\n"))
        if plots:
            from .viz.curves import save_curves, save_heatmap_grid

            curves = {k: v for k, v in self.curves.items()}
            if curves:
                written.append(save_curves(curves, out / "curves.png", title=f"{self.suite}: {self.model}"))
            written.append(save_heatmap_grid(self.images, self.saliency, out / "heatmaps.png",
                                             row_titles=self.item_names, max_rows=8))
        return written


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value


# metrics whose table mean is class-balanced (TorchRay's pointing accuracy: the mean of the per-class hit rates); their
# intervals and comparisons use the same statistic, resampling items with their labels
CLASS_BALANCED = frozenset({"pointing"})


def _json_finite(value: Any) -> Any:
    """NaN/Inf -> None in the new statistics records (strict JSON readers reject NaN)."""
    if isinstance(value, dict):
        return {k: _json_finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _atomic(path: Path, write: Any) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        write(f)
    return path


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    def write(f: Any) -> None:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)

    return _atomic(path, write)


def _write_text(path: Path, text: str) -> Path:
    return _atomic(path, lambda f: f.write(text))


def evaluate(suite: str, methods: Sequence[str], metrics: Sequence[str] = ("insertion", "deletion", "pointing"), *,
             n_images: int | None = None, seed: int = 0, batch_size: int | str = "auto", steps: int = 50,
             normalisation: str = "none", image_batch: int = 8,
             method_params: dict[str, dict[str, Any]] | None = None, progress: bool | None = None,
             model: str | Path | torch.nn.Module | None = None, weights: str | Path | None = None,
             trust: bool = False, device: str | torch.device | None = None) -> EvaluationResult:
    """Explain ``n_images`` items of ``suite`` with every method and score every explanation with every metric.

    Args:
        suite: a name from :func:`pathxai.suites.list_suites`.
        methods: registered method names; ``method_params`` gives per-method constructor parameters.
        metrics: names from :data:`METRIC_NAMES`.
        steps: points of the insertion/deletion curves.
        image_batch: images explained per call (bounds the memory of stored attributions).
        model: the model to explain instead of the suite's own: a name or file for :func:`pathxai.models.load`
            (e.g. ``"clutter-vit"`` on ``digits-clutter``) or a module taking the suite's images; ``None`` = the
            suite's model.
        weights, trust: passed to :func:`pathxai.models.load` with a model name (hub weights; pickled files).
        device: move the model there first (``"auto"`` = CUDA when available); ``None`` leaves it where it is.
    """
    unknown = [m for m in metrics if m not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; available: {', '.join(METRIC_NAMES)}")
    if not methods:
        raise ValueError("methods must name at least one method")
    # checked before the suite is built (which can take minutes): a bad number should fail at once
    seed = check_seed(seed)
    steps = check_positive_int(steps, "steps")
    image_batch = check_positive_int(image_batch, "image_batch")
    if n_images is not None:
        n_images = check_positive_int(n_images, "n_images")
    if not isinstance(normalisation, str) or normalisation.lower() not in M.NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {', '.join(map(repr, M.NORMALISATIONS))}, got "
                         f"{normalisation!r}")
    classes = {m: get_method(m) for m in methods}
    if model is not None and not isinstance(model, (str, Path, torch.nn.Module)):
        raise TypeError(f"model must be a model name, a model file path or an nn.Module, got {type(model).__name__}")
    if weights is not None and not isinstance(model, (str, Path)):
        raise ValueError("weights= goes with a model name or file (e.g. model='timm:vit_tiny_patch16_224')")
    where = None if device is None else resolve_device(device)   # a missing GPU fails before the suite is built
    data = load_suite(suite, n_images=n_images, seed=seed)
    if model is None:
        model, model_name = data.model(), data.model_name
    elif isinstance(model, (str, Path)):
        from .models import load

        requested = str(model)
        model = load(requested, trust=trust, weights=weights)
        model_name = str(getattr(model, "model_name", requested))
    else:
        model_name = str(getattr(model, "model_name", type(model).__name__))
    if where is not None:
        model = model.to(where)
    x, labels, _ = data.batch()
    masks = data.masks()
    h, w = x.shape[-2:]
    scale = min(h, w) / 224.0
    tolerance = 15.0 * scale
    blur_sigma = max(1.0, 5.0 * scale)
    insertion_baseline = INSERTION_BASELINE.get(data.name, "blur")
    result = EvaluationResult(data.name, model_name, list(methods), list(metrics),
                              [it.name for it in data], labels.tolist(), x)
    result.settings = {"steps": steps, "normalisation": normalisation, "pointing_tolerance_px": tolerance,
                       "insertion_baseline": (f"blur sigma={blur_sigma:g}px" if insertion_baseline == "blur"
                                              else insertion_baseline),
                       "deletion_baseline": "zero",
                       "score": "logit" if normalisation.lower() == "samp_authors" else "softmax", "seed": seed,
                       "batch_size": batch_size, "n_images": len(data),
                       "method_params": method_params or {}, "pointing_accuracy": {}}
    # every method is built before any work: a bad parameter fails at once; a method that cannot explain this model
    # (ModelNotSupportedError, when built or on the first batch) is recorded as refused and the others go on
    built: dict[str, Any] = {}
    for name, cls in classes.items():
        try:
            built[name] = cls(model, batch_size=batch_size, seed=seed, progress=progress,
                              **(method_params or {}).get(name, {}))
        except ModelNotSupportedError as err:
            _refuse(result, name, err)
    for name, method in built.items():
        sal, attr_parts, evals = [], [], 0
        t0 = time.perf_counter()
        try:
            for s in range(0, len(data), image_batch):
                e = method.explain(x[s:s + image_batch], labels[s:s + image_batch])
                sal.append(e.saliency())
                attr_parts.append(e.attribution)
                evals += e.meta["model_evaluations"]
        except ModelNotSupportedError as err:
            _refuse(result, name, err)
            continue
        result.seconds[name] = (time.perf_counter() - t0) / len(data)
        result.evaluations[name] = evals / len(data)
        saliency = torch.cat(sal)
        result.saliency[name] = saliency
        for metric in metrics:
            if metric in ("insertion", "deletion"):
                fn = M.insertion if metric == "insertion" else M.deletion
                baseline = insertion_baseline if metric == "insertion" else "zero"
                r = fn(model, x, saliency, labels, steps=steps, baseline=baseline, blur_sigma=blur_sigma,
                       normalisation=normalisation, batch_size=batch_size, progress=progress)
                result.scores[(name, metric)] = r.score
                result.curves[(name, metric)] = r.curve
            elif metric == "pointing":
                r = M.pointing_game(saliency, masks, tolerance=tolerance, classes=labels.tolist())
                result.scores[(name, metric)] = r.score.float()
                result.settings["pointing_accuracy"][name] = float(r.accuracy)
            elif metric == "sensitivity_n":
                attribution = torch.cat(attr_parts)
                if attribution.shape[-2:] != x.shape[-2:] or attribution.ndim != 4:
                    attribution = saliency.unsqueeze(1)
                r = M.sensitivity_n(model, x, attribution, labels, seed=seed, batch_size=batch_size,
                                    progress=progress)
                result.scores[(name, metric)] = r.score.float()
            elif metric in ADDED_METRIC_NAMES:
                result.scores[(name, metric)] = _score_added_metric(
                    metric, model, x, saliency, labels, masks, method=name,
                    method_params=(method_params or {}).get(name, {}), seed=seed, batch_size=batch_size,
                    progress=progress, settings=result.settings)
    if not result.methods:
        raise ModelNotSupportedError("no method can explain this model: " + "; ".join(
            f"{m}: {why}" for m, why in result.refused.items()))
    return result


def _refuse(result: EvaluationResult, method: str, err: Exception) -> None:
    """Record that ``method`` cannot explain the model (and warn once): it leaves ``result.methods``."""
    reason = " ".join(str(err).split())
    result.refused[method] = reason
    result.methods.remove(method)
    warnings.warn(f"evaluate: method {method!r} refused the model and is left out: {reason}", stacklevel=3)


def _score_added_metric(metric: str, model: Any, x: torch.Tensor, saliency: torch.Tensor, labels: torch.Tensor,
                        masks: torch.Tensor, *, method: str, method_params: dict[str, Any], seed: int,
                        batch_size: int | str, progress: bool | None, settings: dict[str, Any]) -> torch.Tensor:
    """(n,) scores of one of :data:`ADDED_METRIC_NAMES` for one method's saliency maps (n, H, W).

    Conventions: ``road`` is LeRF - MoRF accuracy against the suite's labels (10..90 %, noise 0.01); ``irof`` the
    area over the softmax curve with SLIC superpixels and per-image mean replacement; ``sparseness`` / ``complexity``
    score the saliency maps (one value per pixel, comparable across methods whatever their attribution's shape);
    ``relevance_mass`` / ``relevance_rank`` the saliency against the suite's object masks; the relative stabilities
    re-run the method on 10 seeded perturbations (uniform, radius 0.02) that keep the predicted class, explaining
    the label; the representation is the input of the model's last linear layer.
    """
    notes = settings.setdefault("added_metrics", {})
    if metric == "road":
        notes[metric] = "LeRF - MoRF accuracy, percentages 10..90, noisy linear imputation (noise 0.01)"
        r = M.road(model, x, saliency, labels, seed=seed, batch_size=batch_size, progress=progress)
    elif metric == "irof":
        notes[metric] = "area over the softmax curve, SLIC (100 segments), per-image mean baseline"
        r = M.irof(model, x, saliency, labels, batch_size=batch_size, progress=progress)
    elif metric in ("sparseness", "complexity"):
        notes[metric] = "Quantus' definition on the (n, H, W) saliency maps"
        r = M.get_metric(metric)(saliency)
    elif metric in ("relevance_mass", "relevance_rank"):
        notes[metric] = "saliency map against the suite's object masks (signed map, as Quantus)"
        r = M.get_metric(metric)(saliency, masks)
    else:
        notes[metric] = "10 perturbations, uniform radius 0.02, class-preserving; explains the label"
        r = M.get_metric(metric)(model, x, method, labels, seed=seed, batch_size=batch_size, progress=progress,
                                 **method_params)
    return r.score.float()
