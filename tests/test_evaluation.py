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
