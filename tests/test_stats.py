"""pathxai.stats: bootstrap intervals of means, paired Wilcoxon tests, Holm's correction, the best-or-tied verdict;
the run summary's intervals; the default suite sizes."""
from __future__ import annotations

import json
import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as sps

from pathxai import stats as S
from pathxai.core.seeding import numpy_rng


# --- confidence intervals ----------------------------------------------------------------------------------------


def test_ci_covers_the_mean_and_shrinks_with_n() -> None:
    rng = numpy_rng(0, "test-ci")
    small, large = rng.normal(0.5, 0.2, 20), rng.normal(0.5, 0.2, 320)
    a, b = S.mean_ci(small), S.mean_ci(large)
    for c, x in ((a, small), (b, large)):
        assert c.method == "BCa" and c.n == len(x)
        assert c.mean == pytest.approx(x.mean())
        assert c.low < c.mean < c.high
    # the width goes like 1/sqrt(n): 16x the items, about a quarter of the width
    ratio = (b.high - b.low) / (a.high - a.low)
    assert 0.15 < ratio < 0.4, ratio


def test_ci_agrees_with_the_t_interval_on_a_large_normal_sample() -> None:
    x = numpy_rng(1, "test-ci").normal(0.3, 0.1, 2000)
    c = S.mean_ci(x)
    t = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
    half = (t[1] - t[0]) / 2
    assert abs(c.low - t[0]) < 0.05 * half and abs(c.high - t[1]) < 0.05 * half


def test_ci_coverage_is_about_95_percent() -> None:
    # 200 seeded samples of 30 skewed scores (exponential, mean 1): the interval holds the true mean ~95 % of the time
    hits = [S.mean_ci(numpy_rng(k, "test-coverage").exponential(1.0, 30), n_resamples=999, seed=k)
            for k in range(200)]
    coverage = np.mean([c.low <= 1.0 <= c.high for c in hits])
    assert 0.90 <= coverage <= 0.985, coverage


def test_ci_edge_cases_and_reproducibility() -> None:
    x = numpy_rng(2, "test-ci").random(25)
    assert S.mean_ci(x, seed=3, stream="a") == S.mean_ci(x, seed=3, stream="a")      # seeded: bit for bit
    assert S.mean_ci(x, seed=3, stream="a") != S.mean_ci(x, seed=3, stream="b")
    assert S.mean_ci(torch.tensor(x)) == S.mean_ci(x)                                 # tensors are accepted
    const = S.mean_ci([0.7] * 10)
    assert (const.low, const.high, const.method) == (0.7, 0.7, "constant")
    one = S.mean_ci([0.4])
    assert one.mean == 0.4 and math.isnan(one.low) and one.method == "undefined" and one.n == 1
    empty = S.mean_ci([math.nan, math.nan])
    assert math.isnan(empty.mean) and empty.n == 0
    with_nan = S.mean_ci(np.r_[x, math.nan], seed=3, stream="a")                       # NaN dropped
    assert with_nan == S.mean_ci(x, seed=3, stream="a")


def test_class_balanced_mean_is_the_pointing_accuracy() -> None:
    from pathxai.metrics.pointing import _class_accuracy

    rng = numpy_rng(4, "test-ci")
    classes = np.r_[np.zeros(40, int), np.ones(8, int), np.full(12, 2)]      # unbalanced, like the photos suite
    hits = (rng.random(60) < np.where(classes == 1, 0.2, 0.9)).astype(float)
    c = S.mean_ci(hits, groups=classes)
    expected, _ = _class_accuracy(torch.tensor(hits), torch.tensor(classes))
    assert c.mean == pytest.approx(expected) and c.mean < hits.mean()
    assert c.low < c.mean < c.high
    plain = S.mean_ci(hits)
    # the class-balanced mean leans on the 8 items of class 1: a wider interval than the plain mean's
    assert c.high - c.low > plain.high - plain.low


def test_bad_inputs_name_the_argument() -> None:
    with pytest.raises(ValueError, match="values must be 1-D"):
        S.mean_ci(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="groups must have one class per item"):
        S.mean_ci([1.0, 2.0], groups=[0])
    with pytest.raises(TypeError, match="groups must hold integer"):
        S.mean_ci([1.0, 2.0], groups=[0.5, 1.5])
    with pytest.raises(ValueError, match="confidence"):
        S.mean_ci([1.0, 2.0], confidence=95)
    with pytest.raises(ValueError, match="n_resamples"):
        S.mean_ci([1.0, 2.0], n_resamples=10)
    with pytest.raises(ValueError, match="same items"):
        S.paired_comparison([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="alpha"):
        S.compare_methods({"a": [1.0, 2.0]}, alpha=5)
    with pytest.raises(ValueError, match="p_values must lie in"):
        S.holm([0.5, 1.5])


# --- paired tests ------------------------------------------------------------------------------------------------


def test_wilcoxon_hand_computed_and_against_scipy() -> None:
    # five positive differences with distinct ranks: P(W+ = 15) = 1/32 under the null, two-sided 2/32
    assert S.wilcoxon_p([1.0, 2.0, 3.0, 4.0, 5.0]) == (pytest.approx(2 / 32), "exact")
    d = numpy_rng(5, "test-w").normal(0.1, 1.0, 40)
    p, test = S.wilcoxon_p(d)
    assert test == "exact" and p == pytest.approx(sps.wilcoxon(d, method="exact").pvalue)
    big = numpy_rng(6, "test-w").normal(0.1, 1.0, 120)                        # n > 50: the normal approximation
    p, test = S.wilcoxon_p(big)
    assert test == "normal" and p == pytest.approx(sps.wilcoxon(big, method="approx").pvalue)
    # ties (hits minus hits) with few items: every sign flip; with many: the tie-corrected normal approximation
    assert S.wilcoxon_p([1.0, 1.0, 1.0, -1.0, 0.0, 1.0])[1] == "permutation"
    tied = np.r_[np.ones(30), -np.ones(10), np.zeros(20)]
    p, test = S.wilcoxon_p(tied)
    assert test == "normal" and p == pytest.approx(sps.wilcoxon(tied, zero_method="wilcox", method="approx").pvalue)
    # a sign test by hand: 30 of 40 non-zero differences positive, all |d| tied -> z = (30 - 20) / sqrt(10)
    assert p == pytest.approx(2 * sps.norm.sf(10 / math.sqrt(10)))
    assert S.wilcoxon_p(np.zeros(9)) == (1.0, "all zero")
    assert math.isnan(S.wilcoxon_p([math.nan])[0])


def _paired_scores(seed: int, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Two methods on the same n items: a shared per-item difficulty plus method noise, b shifted by ``shift``."""
    rng = numpy_rng(seed, "test-paired", n)
    base = rng.random(n)
    return base + rng.normal(0, 0.1, n), base + shift + rng.normal(0, 0.1, n)


def test_paired_test_detects_a_known_shift_and_not_its_absence() -> None:
    a, b = _paired_scores(0, 60, 0.08)
    c = S.paired_comparison(a, b)
    assert c.p_value < 1e-3 and c.n == 60
    assert c.low < -0.08 + 0.05 and c.high < 0 and c.low < c.mean_difference < c.high
    assert c.mean_difference == pytest.approx((a - b).mean())
    a0, b0 = _paired_scores(0, 60, 0.0)
    c0 = S.paired_comparison(a0, b0)
    assert c0.p_value > 0.05 and c0.low < 0 < c0.high
    # the same shift hidden by the per-item spread in an unpaired test is found by the paired one
    assert sps.mannwhitneyu(a, b).pvalue > 0.05


def test_false_positive_rate_under_the_null_and_holm() -> None:
    # 1000 seeded draws of 4 methods with the same distribution on the same 30 items (6 pairs each). 1000 rather
    # than 200: Holm's family-wise rate here is about 4 % (4.05 % over 4000 draws), and with 200 draws its Monte
    # Carlo error (1.4 %) alone can push the observed rate above 5 % (it does: 6 % on the first 200 of these seeds)
    draws = 1000
    rejected, any_raw, any_holm = [], 0, 0
    for k in range(draws):
        rng = numpy_rng(k, "test-null")
        base = rng.random(30)
        scores = [np.clip(base + rng.normal(0, 0.1, 30), 0, 1) for _ in range(4)]
        p = np.array([S.wilcoxon_p(scores[i] - scores[j])[0] for i, j in combinations(range(4), 2)])
        rejected += list(p < 0.05)
        any_raw += bool((p < 0.05).any())
        any_holm += bool((S.holm(p) < 0.05).any())
    rate = np.mean(rejected)
    assert 0.04 <= rate <= 0.06, rate                # each uncorrected test: about 5 %
    assert any_raw / draws > 0.12, any_raw           # six uncorrected tests: a false "winner" far more often (~22 %)
    assert any_holm / draws <= 0.05, any_holm        # Holm: family-wise error within 5 %


def test_pairwise_deletion_reports_the_items_used() -> None:
    a, b = _paired_scores(1, 40, 0.05)
    a[[3, 7]] = math.nan
    b[[7, 11, 12]] = math.nan
    c = S.paired_comparison(a, b, seed=1)
    keep = np.isfinite(a) & np.isfinite(b)
    assert c.n == int(keep.sum()) == 36
    ref = S.paired_comparison(a[keep], b[keep], seed=1)
    assert (c.mean_difference, c.low, c.high, c.p_value) == (ref.mean_difference, ref.low, ref.high, ref.p_value)


def test_holm_equals_a_hand_computation() -> None:
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> raised to 0.06 (monotone)
    assert S.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert S.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])                   # capped at 1
    out = S.holm([0.02, math.nan, 0.01])                                      # NaN: not part of the family
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert S.holm([]).shape == (0,)


def test_holm_matches_statsmodels_when_installed() -> None:
    multitest = pytest.importorskip("statsmodels.stats.multitest")   # not a dependency: only where installed
    p = numpy_rng(7, "test-holm").random(15) ** 3
    assert S.holm(p) == pytest.approx(multitest.multipletests(p, method="holm")[1])


# --- several methods: the verdict ---------------------------------------------------------------------------------


def test_identical_methods_are_tied_and_a_clear_winner_is_named() -> None:
    a, b = _paired_scores(2, 60, 0.1)
    c = S.compare_methods({"a": a, "a_again": a.copy(), "worse": a - 0.2}, metric="m", seed=0)
    assert c.best == "tied" and {c.leader, c.runner_up} == {"a", "a_again"}
    same = c.pair("a", "a_again")
    assert same["p_value"] == 1.0 and not same["significant"] and same["better"] is None
    assert same["ci95"] == [0.0, 0.0] and same["ci95_method"] == "constant"
    assert c.pair("a", "worse")["better"] == "a" and c.pair("a", "worse")["significant"]
    won = S.compare_methods({"a": a, "b": b}, higher_is_better=True)
    assert won.best == "b" and won.pairs[0]["better"] == "b" and won.pairs[0]["mean_difference"] < 0
    # lower is better (deletion): the same scores name the other method
    assert S.compare_methods({"a": a, "b": b}, higher_is_better=False).best == "a"


def test_best_needs_significance_against_the_runner_up() -> None:
    # a and b differ by noise only (a a little ahead); both far above c: a beats c, but the best is "tied"
    rng = numpy_rng(3, "test-best")
    base = rng.random(30)
    a, b = base + rng.normal(0, 0.1, 30), base + rng.normal(0, 0.1, 30)
    a = a + max(0.0, b.mean() - a.mean()) + 1e-3                      # make a the leader by a hair
    c = S.compare_methods({"a": a, "b": b, "c": base - 0.3}, seed=0)
    assert c.leader == "a" and c.runner_up == "b" and c.best == "tied"
    assert c.pair("a", "c")["significant"] and c.pair("b", "c")["significant"]
    assert len(c.pairs) == 3 and all(p["p_holm"] >= p["p_value"] for p in c.pairs)
    assert c.verdict() == {"best": "tied", "leader": "a", "runner_up": "b", "p_holm": c.pair("a", "b")["p_holm"]}
    assert S.compare_methods({"only": a}).best is None


# --- pathxai run's summary -----------------------------------------------------------------------------------------


def test_run_summary_reports_intervals(tmp_path: Path) -> None:
    from pathxai.runs.api import RunTable, _write_summary, format_summary

    rng = numpy_rng(8, "test-run")
    rows = []
    for i in range(40):
        for m, shift in (("ig", 0.0), ("rise", 0.1)):
            rows.append({"item": f"x{i}", "method": m, "status": "done", "error": None, "seconds": 0.1,
                         "insertion": float(rng.random() * 0.5 + shift), "pointing": None if i < 4 else 1.0})
    table = RunTable(tmp_path, {"methods": ["ig", "rise"], "metrics": ["insertion", "pointing"], "seed": 0}, rows)
    summary = {(r["method"], r["metric"]): r for r in table.summary()}
    ins = summary[("ig", "insertion")]
    assert ins["n"] == 40 and ins["ci95_method"] == "BCa" and ins["ci95"][0] < ins["mean"] < ins["ci95"][1]
    vals = np.array([r["insertion"] for r in rows if r["method"] == "ig"])
    assert ins["ci95"] == S.mean_ci(vals, seed=0, stream="ci:insertion:ig").interval
    point = summary[("rise", "pointing")]
    assert point["n"] == 36 and point["ci95"] == [1.0, 1.0]
    text = format_summary(table)
    assert "[95% CI " in text and "(n=40" in text
    _write_summary(tmp_path, table, engine="local", workers=1, wall=1.0, n_pairs=80, store_seconds=0.0, invalid={},
                   rebuilt=None)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["table"][0]["ci95"] == ins["ci95"]


def test_default_suites_are_large_enough_to_separate_methods() -> None:
    import pathxai as px
    from pathxai.suites import CLUTTER_DEFAULT, PHOTOS_DEFAULT

    assert PHOTOS_DEFAULT >= 60 and CLUTTER_DEFAULT >= 300
    clutter = px.data.load_suite("digits-clutter")      # about 0.1 s; the photos default is built in test_suites
    assert len(clutter) == CLUTTER_DEFAULT
    assert len({it.meta["digit_index"] for it in clutter.items}) == CLUTTER_DEFAULT   # no test digit twice
