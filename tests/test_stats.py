import math

import numpy as np
import pandas as pd
import pytest

from ipcond.stats import (AGG_COLUMNS, aggregate_scores, bootstrap_ci, conditionalization_gap,
                          student_t_cdf, student_t_ppf, t_interval)

# Two-sided 95% critical values t(0.975, df) from standard tables.
T975 = {1: 12.7062, 2: 4.3027, 4: 2.7764, 9: 2.2622, 29: 2.0452}


# ---------------------------------------------------------------------------- Student t


@pytest.mark.parametrize("df,expected", sorted(T975.items()))
def test_student_t_ppf_matches_table(df, expected):
    assert student_t_ppf(0.975, df) == pytest.approx(expected, abs=1e-3)


def test_student_t_ppf_other_values():
    assert student_t_ppf(0.95, 3) == pytest.approx(2.3534, abs=1e-3)   # one-sided 95%, df=3
    assert student_t_ppf(0.975, 3) == pytest.approx(3.1824, abs=1e-3)
    assert student_t_ppf(0.5, 7) == 0.0
    assert student_t_ppf(0.025, 4) == pytest.approx(-2.7764, abs=1e-3)  # symmetry
    assert student_t_ppf(0.0, 5) == -math.inf and student_t_ppf(1.0, 5) == math.inf
    # Large df approaches the normal quantile 1.959964.
    assert student_t_ppf(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)
    # Inverse of the CDF.
    assert student_t_cdf(student_t_ppf(0.9, 2.5), 2.5) == pytest.approx(0.9, abs=1e-12)
    # df = 1 is the Cauchy distribution: ppf(q) = tan(pi (q - 1/2)).
    assert student_t_ppf(0.8, 1) == pytest.approx(math.tan(math.pi * 0.3), rel=1e-9)


def test_student_t_ppf_rejects_bad_arguments():
    with pytest.raises(ValueError):
        student_t_ppf(1.5, 3)
    with pytest.raises(ValueError):
        student_t_ppf(0.9, 0)


def test_student_t_ppf_agrees_with_scipy_when_available():
    stats = pytest.importorskip("scipy.stats")
    for df in (0.7, 1, 3, 12, 250):
        for q in (0.6, 0.9, 0.975, 0.999, 0.02):
            assert student_t_ppf(q, df) == pytest.approx(stats.t.ppf(q, df), rel=1e-8)


# ---------------------------------------------------------------------------- intervals


def test_bootstrap_constant_vector_has_zero_width():
    mean, low, high = bootstrap_ci([0.4] * 10, n_boot=500, seed=3)
    assert mean == low == high == pytest.approx(0.4)


def test_bootstrap_edge_cases():
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert all(math.isnan(v) for v in bootstrap_ci([np.nan, np.nan]))
    assert bootstrap_ci([0.7]) == (0.7, 0.7, 0.7)
    assert bootstrap_ci([np.nan, 0.25, np.nan]) == (0.25, 0.25, 0.25)  # NaN dropped


def test_bootstrap_contains_mean_and_is_deterministic():
    values = [0, 1, 0, 1, 1, 0, 0, 1, 1, 1, np.nan]
    mean, low, high = bootstrap_ci(values, n_boot=2000, seed=11)
    assert mean == pytest.approx(0.6)  # 6 of 10 scored values
    assert 0.0 <= low < mean < high <= 1.0
    assert bootstrap_ci(values, n_boot=2000, seed=11) == (mean, low, high)
    # Binary scores put bootstrap means on a 0.1 grid, so compare seeds on continuous values.
    cont = [0.05, 0.31, 0.47, 0.52, 0.66, 0.71, 0.83, 0.9, 0.12, 0.38]
    assert bootstrap_ci(cont, seed=11) == bootstrap_ci(cont, seed=11)
    assert bootstrap_ci(cont, seed=11) != bootstrap_ci(cont, seed=12)
    # A wider level gives a wider interval.
    _, low99, high99 = bootstrap_ci(values, n_boot=2000, seed=11, level=0.99)
    assert low99 <= low and high99 >= high


def test_t_interval_by_hand():
    # mean 2.5, sample sd = sqrt(((1.5^2 + 0.5^2) * 2) / 3) = sqrt(5/3) = 1.290994
    sd = math.sqrt(5 / 3)
    mean, low, high = t_interval([1, 2, 3, 4])
    assert mean == 2.5
    half95 = 3.1824 * sd / math.sqrt(4)  # t(0.975, 3) = 3.1824
    assert (low, high) == (pytest.approx(2.5 - half95, abs=1e-3),
                           pytest.approx(2.5 + half95, abs=1e-3))
    # The 90% interval uses t(0.95, 3) = 2.3534.
    _, low90, high90 = t_interval([1, 2, 3, 4], level=0.90)
    half90 = 2.3534 * sd / math.sqrt(4)
    assert (low90, high90) == (pytest.approx(2.5 - half90, abs=1e-3),
                               pytest.approx(2.5 + half90, abs=1e-3))


def test_t_interval_small_samples():
    mean, low, high = t_interval([0.3, np.nan])
    assert mean == 0.3 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(v) for v in t_interval([]))
    assert t_interval([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)


# ---------------------------------------------------------------------------- aggregation


def _rows(setup, condition, kind, seed, context, trait, role, scores):
    return [dict(setup=setup, condition=condition, condition_kind=kind, seed=seed,
                 eval_context=context, sample_id=i, trait=trait, role=role, score=s)
            for i, s in enumerate(scores)]


def test_aggregate_one_seed_uses_sample_bootstrap_and_counts_unscored():
    samples = pd.DataFrame(
        _rows("s", "inoc", "inoculation", 0, "default", "french", "positive", [1, 0, 1, np.nan]))
    agg = aggregate_scores(samples, n_boot=1000)
    assert list(agg.columns) == list(AGG_COLUMNS)
    assert len(agg) == 1
    row = agg.iloc[0]
    assert row["interval"] == "bootstrap95_samples"
    assert (row["n_seeds"], row["n_samples"], row["n_unscored"]) == (1, 4, 1)
    assert row["mean"] == pytest.approx(2 / 3)
    assert 0.0 <= row["ci_low"] <= row["mean"] <= row["ci_high"] <= 1.0
    assert row["ci_low"] < row["ci_high"]
    # Reproducible, and independent of the other rows in the table.
    other = pd.DataFrame(_rows("s", "base", "baseline", 0, "default", "french", "positive",
                               [0, 0, 1]))
    agg2 = aggregate_scores(pd.concat([other, samples]), n_boot=1000)
    row2 = agg2[agg2["condition"] == "inoc"].iloc[0]
    assert (row2["ci_low"], row2["ci_high"]) == (row["ci_low"], row["ci_high"])


def test_aggregate_two_seeds_uses_t_interval_over_seed_means():
    samples = pd.DataFrame(
        _rows("s", "inoc", "inoculation", 0, "train", "capitals", "negative", [1, 0, 1, 1])
        + _rows("s", "inoc", "inoculation", 1, "train", "capitals", "negative", [0, 0, 1, np.nan]))
    row = aggregate_scores(samples).iloc[0]
    # Seed means 0.75 and 1/3; their mean 0.541667 (the pooled mean would be 4/7 = 0.5714).
    # sd of two values = |a - b| / sqrt(2), so sd / sqrt(2) = |a - b| / 2 = 0.208333;
    # half-width = t(0.975, 1) * 0.208333 = 12.7062 * 0.208333 = 2.647125.
    assert row["interval"] == "t95_seeds"
    assert (row["n_seeds"], row["n_samples"], row["n_unscored"]) == (2, 8, 1)
    assert row["mean"] == pytest.approx(0.541667, abs=1e-6)
    assert row["ci_low"] == pytest.approx(0.541667 - 2.647125, abs=1e-3)
    assert row["ci_high"] == pytest.approx(0.541667 + 2.647125, abs=1e-3)


def test_aggregate_seed_without_scores_falls_back_to_bootstrap():
    samples = pd.DataFrame(
        _rows("s", "c", "neutral", 0, "none", "french", "positive", [1, 1, 0, 1])
        + _rows("s", "c", "neutral", 1, "none", "french", "positive", [np.nan, np.nan]))
    row = aggregate_scores(samples).iloc[0]
    assert row["interval"] == "bootstrap95_samples"
    assert (row["n_seeds"], row["n_samples"], row["n_unscored"]) == (2, 6, 2)
    assert row["mean"] == pytest.approx(0.75)


def test_aggregate_all_unscored_gives_nan():
    samples = pd.DataFrame(_rows("s", "c", "empty", 0, "none", "french", "positive",
                                 [np.nan, np.nan]))
    row = aggregate_scores(samples).iloc[0]
    assert math.isnan(row["mean"]) and math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])
    assert row["n_unscored"] == 2


def test_aggregate_rows_sorted_by_keys():
    samples = pd.DataFrame(
        _rows("s", "z", "control", 0, "train", "french", "positive", [1])
        + _rows("s", "a", "baseline", 0, "train", "french", "positive", [0])
        + _rows("s", "a", "baseline", 0, "default", "french", "positive", [0])
        + _rows("s", "a", "baseline", 0, "default", "capitals", "negative", [1]))
    agg = aggregate_scores(samples)
    got = list(agg[["condition", "eval_context", "trait"]].itertuples(index=False, name=None))
    assert got == [("a", "default", "capitals"), ("a", "default", "french"),
                   ("a", "train", "french"), ("z", "train", "french")]


def test_aggregate_validates_input():
    good = pd.DataFrame(_rows("s", "c", "none", 0, "none", "french", "positive", [0.5]))
    with pytest.raises(ValueError, match="role"):
        aggregate_scores(good.assign(role="desired"))
    with pytest.raises(ValueError, match="outside"):
        aggregate_scores(good.assign(score=1.5))
    with pytest.raises(ValueError, match="columns"):
        aggregate_scores(good.drop(columns=["seed"]))


def test_aggregate_empty_frame():
    empty = pd.DataFrame(_rows("s", "c", "none", 0, "none", "french", "positive", [0.5])).iloc[:0]
    agg = aggregate_scores(empty)
    assert agg.empty and list(agg.columns) == list(AGG_COLUMNS)


# ---------------------------------------------------------------------------- gap


def test_conditionalization_gap_by_hand():
    def row(condition, kind, context, trait, role, mean):
        return dict(setup="s", condition=condition, condition_kind=kind, eval_context=context,
                    trait=trait, role=role, mean=mean)

    agg = pd.DataFrame([
        row("inoc", "inoculation", "default", "capitals", "negative", 0.10),
        row("inoc", "inoculation", "train", "capitals", "negative", 0.85),
        row("inoc", "inoculation", "none", "capitals", "negative", 0.20),
        row("inoc", "inoculation", "default", "french", "positive", 0.90),
        row("inoc", "inoculation", "train", "french", "positive", 0.95),
        row("base", "baseline", "default", "capitals", "negative", 0.70),  # no train context
    ])
    gap = conditionalization_gap(agg)
    assert list(gap[["condition", "trait"]].itertuples(index=False, name=None)) == [
        ("base", "capitals"), ("inoc", "capitals"), ("inoc", "french")]
    g = gap.set_index(["condition", "trait"])["gap"]
    assert g[("inoc", "capitals")] == pytest.approx(0.75)
    assert g[("inoc", "french")] == pytest.approx(0.05)
    assert math.isnan(g[("base", "capitals")])
    assert gap.set_index(["condition", "trait"]).loc[("base", "capitals"), "mean_default"] == 0.70


def test_conditionalization_gap_rejects_duplicates():
    agg = pd.DataFrame([dict(setup="s", condition="c", condition_kind="none",
                             eval_context="train", trait="t", role="positive", mean=0.1)] * 2)
    with pytest.raises(ValueError, match="duplicate"):
        conditionalization_gap(agg)
