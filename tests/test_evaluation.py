"""The evaluation command and the benchmark harness, end to end on the small digits suites."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import pathxai as px
from pathxai import bench
from pathxai.cli import app

runner = CliRunner()


def test_evaluate_scores_every_method_and_metric(tmp_path):
    r = px.evaluate("digits", ["gradient_x_input", "gradcam"], ["insertion", "deletion", "pointing"], n_images=4,
                    steps=10, batch_size=8)
    assert r.scores[("gradcam", "insertion")].shape == (4,)
    assert r.curves[("gradcam", "deletion")].shape == (4, 11)
    assert r.saliency["gradient_x_input"].shape == (4, 28, 28)
    rows = r.summary()
    assert len(rows) == 6 and all(0 <= row["mean"] <= 1 for row in rows)
    table = r.format_table()
    assert "| gradcam |" in table and "insertion ↑" in table and "deletion ↓" in table
    files = r.save(tmp_path)
    assert {f.name for f in files} == {"items.csv", "summary.csv", "summary.json", "table.md", "curves.png",
                                       "heatmaps.png"}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["settings"]["insertion_baseline"] == "zero"
    assert len((tmp_path / "items.csv").read_text().splitlines()) == 1 + 2 * 4


def test_evaluate_rejects_unknown_metrics_and_methods():
    with pytest.raises(ValueError, match="unknown metric"):
        px.evaluate("digits", ["ig"], ["accuracy"])
    with pytest.raises(ValueError, match="unknown method"):
        px.evaluate("digits", ["nope"], ["insertion"], n_images=1)


def test_evaluate_records_a_method_that_refuses_the_model_and_goes_on(tmp_path):
    # attention rollout needs a vision transformer: on the digits CNN it refuses, the other method is scored
    with pytest.warns(UserWarning, match="'attention_rollout' refused the model"):
        r = px.evaluate("digits", ["gradcam", "attention_rollout"], ["deletion", "pointing"], n_images=3, steps=6,
                        batch_size=8)
    assert r.methods == ["gradcam"] and list(r.refused) == ["attention_rollout"]
    assert "vision transformer" in r.refused["attention_rollout"]
    assert ("attention_rollout", "deletion") not in r.scores and r.scores[("gradcam", "deletion")].shape == (3,)
    assert "Refused: attention_rollout:" in r.format_table()
    r.save(tmp_path, plots=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["refused"]) == {"attention_rollout"}
    assert {row["method"] for row in summary["summary"]} == {"gradcam"}
    # every method refusing is an error naming each reason; a bad parameter still fails at once
    with pytest.raises(px.core.ModelNotSupportedError, match="no method can explain this model: attention_rollout"):
        with pytest.warns(UserWarning):
            px.evaluate("digits", ["attention_rollout"], ["deletion"], n_images=2, steps=4)
    with pytest.raises(ValueError, match="n_steps") as err:
        px.evaluate("digits", ["ig", "attention_rollout"], ["deletion"], n_images=2, steps=4,
                    method_params={"ig": {"n_steps": 0}})
    assert not isinstance(err.value, px.core.ModelNotSupportedError)


def test_evaluate_cli(tmp_path):
    result = runner.invoke(app, ["evaluate", "--suite", "digits", "--methods", "gradcam,rise", "--metrics",
                                 "insertion,pointing", "--n-images", "3", "--steps", "8", "-p", "rise.n_masks=20",
                                 "--out", str(tmp_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "| rise |" in result.output and "pointing" in result.output
    assert (tmp_path / "curves.png").stat().st_size > 5000
    bad = runner.invoke(app, ["evaluate", "--suite", "mnist"])
    assert bad.exit_code == 2 and "unknown suite 'mnist'" in " ".join(bad.output.split())


def test_overhead_ratio_counts_the_same_passes(digits_model, digit_batch):
    x, y = digit_batch
    r = bench.overhead_ratio("ig", digits_model, x[:1], y[:1], repeats=1, batch_size=4, n_steps=8)
    assert r.gradient_evaluations == 8 and r.forward_evaluations == 0 and r.chunk_size == 4
    assert r.seconds > 0 and r.reference_seconds > 0 and r.ratio > 0
    assert r.reference_chunks[0] == 0 and r.reference_chunks[1] in bench.CHUNK_CANDIDATES
    assert r.in_run_ratio is None                       # gradient passes: backward is not timed by hooks


def test_in_run_ratio_times_the_model_inside_a_forward_only_method(digits_model, digit_batch):
    x, y = digit_batch
    r = bench.overhead_ratio("rise", digits_model, x[:1], y[:1], repeats=1, batch_size=8, n_masks=64)
    assert r.in_run_ratio is not None and r.in_run_ratio > 1.0   # the method's own work is never negative
    assert not digits_model._forward_hooks and not digits_model._forward_pre_hooks   # hooks removed


def test_fastest_chunk_is_a_candidate_and_cached(digits_model, digit_batch):
    x, _ = digit_batch
    calls = []

    def model(batch):
        calls.append(len(batch))
        return digits_model(batch)

    c = bench.fastest_chunk(model, x[:1], False, candidates=(1, 4), samples=4, repeats=1)
    assert c in (1, 4) and sorted(set(calls)) == [1, 4] and len(calls) == 4 + 1
    assert bench.fastest_chunk(model, x[:1], False, candidates=(1, 4), samples=4, repeats=1) == c
    assert len(calls) == 5                                   # cached: no new passes


def test_peak_rss_sees_a_large_allocation():
    with bench.PeakRSS() as small:
        torch.zeros(10)
    with bench.PeakRSS() as large:
        big = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        time_to_sample = big.sum()
        del big
    assert float(time_to_sample) > 0
    assert large.peak >= 48 * 2**20 > small.peak


def test_memory_growth_is_flat_when_streaming_and_caught_when_not(digits_model, digit_batch):
    x, y = digit_batch
    r = bench.memory_growth("rise", digits_model, x[:1], y[:1], base=200, batch_size=4)
    assert r is not None and r.values == (200, 2000)
    # streaming: 10x the masks must not cost 10x the memory (allocator noise allowed: 8 MiB)
    assert r.peak_bytes[1] <= r.peak_bytes[0] + 8 * 2**20
    # the harness must see growth where there is some: IG with every step in one batch holds all activations
    unbounded = bench.memory_growth("ig", digits_model, x[:1], y[:1], base=100, batch_size=100_000)
    assert unbounded is not None
    assert unbounded.peak_bytes[1] > unbounded.peak_bytes[0] + 64 * 2**20
    assert bench.memory_growth("gradcam", digits_model, x[:1], y[:1]) is None


# --- statistics: intervals, paired comparisons, best or tied -----------------------------------------------------


def _synthetic_result(n: int = 40) -> px.EvaluationResult:
    """Three methods on n items without a model: ``twin`` is ``good`` item for item, ``bad`` is clearly worse."""
    from pathxai.core.seeding import numpy_rng

    rng = numpy_rng(0, "test-evaluation-stats")
    labels = [i % 3 for i in range(n)]
    good = torch.tensor(rng.random(n) * 0.3 + 0.6, dtype=torch.float32)
    bad = good - 0.3 + torch.tensor(rng.normal(0, 0.05, n), dtype=torch.float32)
    hits = torch.tensor(rng.random(n) < 0.8, dtype=torch.float32)
    sens = torch.tensor(rng.normal(0.5, 0.1, n), dtype=torch.float32)
    sens[[1, 5]] = float("nan")                             # undefined on two items
    r = px.EvaluationResult("synthetic", "none", ["good", "twin", "bad"], ["insertion", "pointing", "sensitivity_n"],
                            [f"item{i}" for i in range(n)], labels, torch.zeros(n, 1, 4, 4))
    for m, ins, point in (("good", good, hits), ("twin", good.clone(), hits.clone()), ("bad", bad, 1 - hits)):
        r.scores[(m, "insertion")] = ins
        r.scores[(m, "pointing")] = point
        r.scores[(m, "sensitivity_n")] = sens.clone()
        r.seconds[m], r.evaluations[m] = 0.01, 1.0
    from pathxai.metrics.pointing import _class_accuracy   # what pointing_game reports as its accuracy

    r.settings = {"seed": 0, "pointing_accuracy": {m: _class_accuracy(r.scores[(m, "pointing")].bool(),
                                                                      torch.tensor(labels))[0] for m in r.methods}}
    return r


def test_summary_carries_intervals_and_comparisons(tmp_path):
    r = _synthetic_result()
    rows = {(row["method"], row["metric"]): row for row in r.summary()}
    for row in rows.values():
        lo, hi = row["ci95"]
        assert lo <= row["mean"] <= hi and row["ci95_method"] in ("BCa", "percentile", "constant")
    # pointing: the interval is of the class-balanced accuracy the table reports
    point = rows[("good", "pointing")]
    assert point["mean"] == pytest.approx(r.statistics()["pointing"].means["good"].mean)
    assert rows[("good", "sensitivity_n")]["n"] == 38                   # NaN dropped
    pairs = r.comparisons()
    assert len(pairs) == 3 * 3 and all(p["n"] == (38 if p["metric"] == "sensitivity_n" else 40) for p in pairs)
    twin = next(p for p in pairs if p["metric"] == "insertion" and {p["method_a"], p["method_b"]} == {"good", "twin"})
    assert twin["p_value"] == 1.0 and not twin["significant"] and twin["mean_difference"] == 0
    worse = next(p for p in pairs if p["metric"] == "insertion" and p["method_b"] == "bad")
    assert worse["significant"] and worse["better"] == worse["method_a"] and worse["mean_difference"] > 0.2
    # identical methods are tied however far ahead of the third they are
    assert {m: v["best"] for m, v in r.best().items()} == {"insertion": "tied", "pointing": "tied",
                                                            "sensitivity_n": "tied"}
    table = r.format_table()
    assert "**" not in table.split("\n\n")[0]                          # nothing bold: every column is tied
    assert "insertion: tied (good vs twin" in table and " [" in table and "(n=38)" in table
    r.save(tmp_path, plots=False)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert {"summary", "comparisons", "best", "statistics"} <= set(saved)
    assert saved["summary"][0]["ci95"] == pytest.approx(rows[("good", "insertion")]["ci95"])
    assert saved["best"]["insertion"]["best"] == "tied" and len(saved["comparisons"]) == 9
    header = (tmp_path / "summary.csv").read_text().splitlines()[0].split(",")
    assert header[:7] == ["method", "metric", "mean", "std", "n", "seconds_per_image", "evaluations_per_image"]
    assert header[7:] == ["ci95_low", "ci95_high", "ci95_method"]      # new columns appended


def test_table_names_a_significantly_better_method():
    r = _synthetic_result()
    r.methods = ["good", "bad"]
    table = r.format_table()
    assert r.best()["insertion"]["best"] == "good" and r.best()["pointing"]["best"] == "good"
    assert "| good | **0." in table and "insertion: **good** (good vs bad" in table
    assert r.best()["sensitivity_n"]["best"] == "tied"                 # the same scores: no winner


def test_evaluate_writes_the_statistics(tmp_path):
    r = px.evaluate("digits", ["gradient_x_input", "saliency"], ["insertion", "pointing"], n_images=8, steps=6,
                    batch_size=8)
    r.save(tmp_path, plots=False)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert [(c["method_a"], c["method_b"], c["n"]) for c in saved["comparisons"]] == \
        [("gradient_x_input", "saliency", 8)] * 2
    assert all(len(row["ci95"]) == 2 for row in saved["summary"])
    assert "Best: insertion:" in (tmp_path / "table.md").read_text()
