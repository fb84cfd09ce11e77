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
    # No spread: no interval rather than one of zero width (issue 18).
    mean, low, high = t_interval([0.5, 0.5, 0.5])
    assert mean == 0.5 and math.isnan(low) and math.isnan(high)


# ---------------------------------------------------------------------------- aggregation


def _rows(setup, condition, kind, seed, context, trait, role, scores):
    return [dict(setup=setup, condition=condition, condition_kind=kind, seed=seed,
                 eval_context=context, sample_id=i, trait=trait, role=role, score=s)
            for i, s in enumerate(scores)]


Z95 = 1.959963984540054  # the standard normal's 0.975 quantile


def wilson_by_hand(k, n, z=Z95):
    """The Wilson score interval from its formula (Wilson 1927), independent of statsmodels."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_aggregate_one_seed_rate_uses_wilson_and_counts_unscored():
    samples = pd.DataFrame(
        _rows("s", "inoc", "inoculation", 0, "default", "french", "positive", [1, 0, 1, np.nan]))
    agg = aggregate_scores(samples, n_boot=1000)
    assert list(agg.columns) == list(AGG_COLUMNS)
    assert len(agg) == 1
    row = agg.iloc[0]
    # Binary scores are a rate: Wilson on 2 of 3 scored (was a bootstrap before issue 18).
    assert row["interval"] == "wilson95_samples"
    assert (row["n_seeds"], row["n_samples"], row["n_unscored"], row["n_dropped"]) == (1, 4, 1, 0)
    assert row["mean"] == pytest.approx(2 / 3)
    low, high = wilson_by_hand(2, 3)
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low), pytest.approx(high))
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


def test_aggregate_seed_without_scores_falls_back_to_the_samples():
    samples = pd.DataFrame(
        _rows("s", "c", "neutral", 0, "none", "french", "positive", [1, 1, 0, 1])
        + _rows("s", "c", "neutral", 1, "none", "french", "positive", [np.nan, np.nan]))
    row = aggregate_scores(samples).iloc[0]
    assert row["interval"] == "wilson95_samples"
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


# ---------------------------------------------------------------------------- conditions table


def _conditions(setup="s", names=("Baseline", "None", "Inoc", "InocRephrased", "Irr"),
                **overrides):
    spec = {"Baseline": ("baseline", "", "", np.nan), "None": ("none", "", "", np.nan),
            "Empty": ("empty", "", "", np.nan),
            "Inoc": ("inoculation", "playful", "", 1),
            "InocRephrased": ("rephrased", "", "Inoc", 8),
            "Irr": ("irrelevant", "", "", np.nan)}
    rows = [dict(setup=setup, condition=n, kind=spec[n][0], trait=spec[n][1], of=spec[n][2],
                 n_rephrasings=spec[n][3], n_train=100, learning_rate=1e-4) for n in names]
    df = pd.DataFrame(rows)
    for k, v in overrides.items():
        df[k] = v
    return df


def test_validate_conditions_normalises_and_names_missing_columns():
    from ipcond.stats import CONDITION_COLUMNS, validate_conditions

    c = _conditions()
    c.loc[c["condition"] == "None", "trait"] = np.nan
    out = validate_conditions(c)
    assert list(out.columns[:len(CONDITION_COLUMNS)]) == list(CONDITION_COLUMNS)
    assert out.loc[out["condition"] == "None", "trait"].iloc[0] == ""
    assert out["n_train"].dtype == float
    with pytest.raises(ValueError, match="learning_rate"):
        validate_conditions(c.drop(columns=["learning_rate"]))
    with pytest.raises(ValueError, match="of="):
        validate_conditions(c.assign(of=np.where(c["kind"] == "rephrased", "Nope", "")))
    with pytest.raises(ValueError, match="unknown kind"):
        validate_conditions(c.assign(kind="weird"))
    with pytest.raises(ValueError, match="duplicate"):
        validate_conditions(pd.concat([c, c.iloc[:1]]))


# ---------------------------------------------------------------------------- summary effects


def _cell(condition, kind, trait, role, scores, seed=1, setup="s", context="default"):
    return _rows(setup, condition, kind, seed, context, trait, role, scores)


def _one_seed_samples():
    rows = []
    for cond, kind, fr, pl in (("Baseline", "baseline", [1, 1, 1, 1], [1, 1, 1, 0]),
                               ("None", "none", [1, 1, 0, 0], [1, 1, 1, 1]),
                               ("Inoc", "inoculation", [1, 0, 0, 0], [0, 0, 0, 0]),
                               ("InocRephrased", "rephrased", [1, 1, 1, 0], [1, 0, 0, 0]),
                               ("Irr", "irrelevant", [0, 0, 0, 1], [1, 1, 0, np.nan])):
        rows += _cell(cond, kind, "french", "positive", fr)
        rows += _cell(cond, kind, "playful", "negative", pl)
        # Another context must not leak into the default-context effects.
        rows += _cell(cond, kind, "french", "positive", [0, 0, 0, 0], context="none")
    return pd.DataFrame(rows)


def test_summary_effects_one_seed_newcombe_matches_hand_differences():
    from ipcond.stats import EFFECT_COLUMNS, summary_effects

    eff = summary_effects(_one_seed_samples(), _conditions(), n_boot=500, seed=3)
    assert list(eff.columns) == list(EFFECT_COLUMNS)
    got = {(r.question, r.comparison, r.trait): r for r in eff.itertuples(index=False)}
    # Q1 and Q3 against the no-shift condition (Baseline), as the post (issue 18; was None).
    expected = {  # (question, comparison, trait) -> a - b by hand
        ("irrelevant_suppresses", "Irr \u2212 Baseline", "french"): 0.25 - 1.0,
        ("irrelevant_suppresses", "Irr \u2212 Baseline", "playful"): 2 / 3 - 0.75,  # NaN dropped
        ("rephrasing_weakens", "InocRephrased \u2212 Inoc", "french"): 0.75 - 0.25,
        ("rephrasing_weakens", "InocRephrased \u2212 Inoc", "playful"): 0.25 - 0.0,
        ("inoculation_suppresses_other", "Inoc \u2212 Baseline", "french"): 0.25 - 1.0,
        ("removing_neutral_suppresses", "None \u2212 Baseline", "french"): 0.5 - 1.0,
        ("removing_neutral_suppresses", "None \u2212 Baseline", "playful"): 1.0 - 0.75,
    }
    assert set(got) == set(expected)  # Inoc − Baseline is not computed on the inoculated trait
    for key, value in expected.items():
        r = got[key]
        assert r.effect == pytest.approx(value)
        assert r.interval == "newcombe95_samples"
        assert r.ci_low <= r.effect <= r.ci_high and r.ci_low < r.ci_high
        assert r.n_seeds_a == r.n_seeds_b == 1
        # 3-4 scored samples a side: below the default minimum, so no direction is claimed.
        assert r.label == "too few samples"
    assert got[("irrelevant_suppresses", "Irr \u2212 Baseline", "playful")].n_a == 3
    assert got[("irrelevant_suppresses", "Irr \u2212 Baseline", "french")].reference.startswith(
        "Baseline: no-shift")
    # Focus: question 2 is about the inoculated trait (playful).
    assert got[("rephrasing_weakens", "InocRephrased \u2212 Inoc", "playful")].focus
    assert not got[("rephrasing_weakens", "InocRephrased \u2212 Inoc", "french")].focus
    # Deterministic for a seed.
    again = summary_effects(_one_seed_samples(), _conditions(), n_boot=500, seed=3)
    pd.testing.assert_frame_equal(eff, again)


def test_summary_effects_bootstrap_labels_clear_effects():
    from ipcond.stats import summary_effects

    rows = (_cell("None", "none", "french", "positive", [1] * 40)
            + _cell("None", "none", "playful", "negative", [0] * 40)
            + _cell("Irr", "irrelevant", "french", "positive", [0] * 40)
            + _cell("Irr", "irrelevant", "playful", "negative", [1] * 30 + [0] * 10))
    eff = summary_effects(pd.DataFrame(rows), _conditions(names=("None", "Irr")), n_boot=300)
    q1 = eff[eff["question"] == "irrelevant_suppresses"].set_index("trait")
    # No no-shift condition in this grid: the reference is None, and the rows say so.
    assert "no no-shift" in q1.loc["french", "reference"]
    assert q1.loc["french", "label"] == "suppresses"
    # 0/40 - 40/40: Newcombe from the two Wilson intervals, never [-1, -1] (issue 18).
    lo0, hi0 = wilson_by_hand(0, 40)
    lo1, hi1 = wilson_by_hand(40, 40)
    assert q1.loc["french", "effect"] == -1.0
    assert q1.loc["french", "ci_low"] == pytest.approx(-1.0 + math.hypot(0 - lo0, hi1 - 1.0))
    assert q1.loc["french", "ci_high"] == pytest.approx(-1.0 + math.hypot(hi0 - 0, 1.0 - lo1))
    assert q1.loc["french", "ci_high"] > -1.0
    assert q1.loc["playful", "label"] == "raises"
    assert q1.loc["playful", "ci_low"] > 0


def test_summary_effects_multi_seed_uses_welch_interval_on_seed_means():
    from ipcond.stats import summary_effects

    rows = []
    # Irr seed means 0.6, 0.8; None seed means 0.2, 0.3 (samples of 10 per seed).
    for seed, (irr, none) in enumerate(((6, 2), (8, 3)), start=1):
        rows += _cell("Irr", "irrelevant", "french", "positive", [1] * irr + [0] * (10 - irr),
                      seed=seed)
        rows += _cell("None", "none", "french", "positive", [1] * none + [0] * (10 - none),
                      seed=seed)
    eff = summary_effects(pd.DataFrame(rows), _conditions(names=("None", "Irr")))
    r = eff[(eff["question"] == "irrelevant_suppresses")].iloc[0]
    # Hand computation: effect 0.7 - 0.25 = 0.45; var/n: 0.02/2 = 0.01 and 0.005/2 = 0.0025;
    # se^2 = 0.0125; Welch df = 0.0125^2 / (0.01^2 / 1 + 0.0025^2 / 1) = 1.470588.
    df = 0.0125 ** 2 / (0.01 ** 2 + 0.0025 ** 2)
    assert df == pytest.approx(1.470588, abs=1e-6)
    half = student_t_ppf(0.975, df) * math.sqrt(0.0125)
    assert r["interval"] == "welch_t95_seed_means"
    assert r["effect"] == pytest.approx(0.45)
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(0.45 - half), pytest.approx(0.45 + half))
    assert (r["n_a"], r["n_b"], r["n_seeds_a"], r["n_seeds_b"]) == (20, 20, 2, 2)
    assert r["label"] == ("raises" if 0.45 - half > 0 else "no clear effect")


def test_difference_interval_matches_scipy_when_available():
    from ipcond.stats import difference_interval

    stats = pytest.importorskip("scipy.stats")
    a, b = [0.61, 0.7, 0.55, 0.8], [0.2, 0.33, 0.31]
    effect, low, high = difference_interval(a, b)
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(0.95)
    assert (low, high) == (pytest.approx(ci.low, rel=1e-8), pytest.approx(ci.high, rel=1e-8))


def test_summary_effects_records_what_the_grid_lacks():
    from ipcond.stats import summary_effects

    samples = _one_seed_samples()
    samples = samples[samples["condition"].isin(["None", "Inoc"])]
    eff = summary_effects(samples, _conditions(names=("None", "Inoc")), n_boot=100)
    lacking = eff[eff["label"] == "not in grid"].set_index("question")
    assert set(lacking.index) == {"irrelevant_suppresses", "rephrasing_weakens",
                                  "removing_neutral_suppresses"}
    assert "no irrelevant condition" in lacking.loc["irrelevant_suppresses", "comparison"]
    assert "no no-shift condition" in lacking.loc["removing_neutral_suppresses", "comparison"]
    assert lacking["effect"].isna().all() and (lacking["trait"] == "").all()
    # Every question has at least one row for the setup: nothing silently missing.
    assert set(eff["question"]) == {"irrelevant_suppresses", "rephrasing_weakens",
                                    "inoculation_suppresses_other",
                                    "removing_neutral_suppresses"}


def test_summary_effects_marks_conditions_without_scores():
    from ipcond.stats import summary_effects

    samples = _one_seed_samples()
    samples = samples[samples["condition"] != "Irr"]  # in the grid, not (yet) scored
    eff = summary_effects(samples, _conditions(), n_boot=100)
    q1 = eff[eff["question"] == "irrelevant_suppresses"]
    assert len(q1) == 2 and (q1["label"] == "no scores").all() and q1["effect"].isna().all()


def test_summary_effects_empty_string_rows_and_validation():
    from ipcond.stats import summary_effects

    samples = pd.concat([_one_seed_samples(), pd.DataFrame(
        _cell("Empty", "empty", "french", "positive", [1, 0, 0, 0])
        + _cell("Empty", "empty", "playful", "negative", [1, 1, 1, 1]))])
    conds = _conditions(names=("Baseline", "None", "Inoc", "InocRephrased", "Irr", "Empty"))
    eff = summary_effects(samples, conds, n_boot=100)
    q4 = eff[(eff["question"] == "removing_neutral_suppresses")].set_index(["comparison", "trait"])
    assert q4.loc[("Empty \u2212 Baseline", "french"), "effect"] == pytest.approx(0.25 - 1.0)
    with pytest.raises(ValueError, match="n_rephrasings"):
        summary_effects(samples, conds.drop(columns=["n_rephrasings"]))
    with pytest.raises(ValueError, match="score"):
        summary_effects(samples.drop(columns=["score"]), conds)
    with pytest.raises(ValueError, match="lacks"):
        summary_effects(samples.assign(setup="other"), conds)


def test_aggregate_summary_one_row_per_setup_and_question():
    from ipcond.stats import aggregate_summary, summary_effects

    eff = summary_effects(_one_seed_samples(), _conditions(names=("None", "Inoc", "Irr")),
                          n_boot=200)
    summ = aggregate_summary(eff)
    assert len(summ) == 4 and not summ.duplicated(["setup", "question"]).any()
    s = summ.set_index("question")
    assert s.loc["rephrasing_weakens", "answer"] == "not in grid"
    assert s.loc["irrelevant_suppresses", "n_comparisons"] == 2
    with pytest.raises(ValueError, match="label"):
        aggregate_summary(eff.drop(columns=["label"]))


def test_pearson_r():
    from ipcond.stats import pearson_r

    assert pearson_r([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert pearson_r([1, 2, 3], [3, 1, 2]) == pytest.approx(-0.5)
    assert math.isnan(pearson_r([1, 2], [1, 2]))  # n < 3
    assert math.isnan(pearson_r([1, 1, 1], [1, 2, 3]))  # no variance
    assert pearson_r([1, 2, np.nan, 3], [1, 2, 5, 3]) == pytest.approx(1.0)


def test_aggregate_unbounded_scores():
    samples = pd.DataFrame(_rows("s", "c", "none", 0, "none", "french", "positive",
                                 [-2.5, 3.0, 1.0]))
    with pytest.raises(ValueError, match="outside"):
        aggregate_scores(samples)
    row = aggregate_scores(samples, bounded=False).iloc[0]
    assert row["mean"] == pytest.approx(0.5)


def test_summary_effects_setup_without_scores_and_renamed_references():
    from ipcond.stats import summary_effects

    samples = _one_seed_samples()
    samples = samples.assign(condition=samples["condition"].replace({"None": "NoPrompt"}))
    conds = _conditions()
    conds["condition"] = conds["condition"].replace({"None": "NoPrompt"})
    other = _conditions(setup="empty_setup")
    eff = summary_effects(samples, pd.concat([conds, other]), n_boot=100)
    # The kind-none condition is the one question 4 removes the prompt from, whatever its name.
    assert "NoPrompt \u2212 Baseline" in set(eff["comparison"])
    # A setup in the grid without any scores still answers every question: "no scores".
    e = eff[eff["setup"] == "empty_setup"]
    assert set(e["question"]) == set(eff["question"]) and (e["label"] == "no scores").all()


# ---------------------------------------------------------------------------- issue 18 edge cases


def test_one_scored_sample_against_one_gives_no_raises_label():
    from ipcond.stats import newcombe_difference, summary_effects

    # One sample scored per cell, the rest unscorable: the old summary said "raises" [1.0, 1.0].
    rows = (_cell("None", "none", "french", "positive", [1.0] + [np.nan] * 79)
            + _cell("Irr", "irrelevant", "french", "positive", [0.0] + [np.nan] * 79))
    eff = summary_effects(pd.DataFrame(rows), _conditions(names=("None", "Irr")))
    r = eff[eff["question"] == "irrelevant_suppresses"].iloc[0]
    assert (r["n_a"], r["n_b"]) == (1, 1)
    assert r["label"] == "too few samples"
    # Newcombe by hand: Wilson(0/1) and Wilson(1/1) give 0 - 1 in [-1, 1 - ...] with width > 0.
    lo0, hi0 = wilson_by_hand(0, 1)
    lo1, hi1 = wilson_by_hand(1, 1)
    assert r["effect"] == -1.0
    assert r["ci_low"] == pytest.approx(-1.0 - math.hypot(0 - lo0, hi1 - 1.0))
    assert r["ci_high"] == pytest.approx(-1.0 + math.hypot(hi0 - 0, 1.0 - lo1))
    assert r["ci_high"] > 0  # the interval covers 0: even without the minimum, no label
    eff1 = summary_effects(pd.DataFrame(rows), _conditions(names=("None", "Irr")), min_samples=1)
    assert eff1[eff1["question"] == "irrelevant_suppresses"].iloc[0]["label"] == "no clear effect"
    assert newcombe_difference(1, 1, 0, 1)[1] < 0 < newcombe_difference(1, 1, 0, 1)[2]


def test_zero_of_eighty_has_a_wilson_interval_above_zero():
    from ipcond.stats import wilson_interval

    row = aggregate_scores(pd.DataFrame(_rows("s", "c", "none", 1, "default", "capitals", "negative",
                                              [0.0] * 80))).iloc[0]
    z2 = Z95 ** 2
    assert row["mean"] == 0.0 and row["ci_low"] == 0.0
    assert row["ci_high"] == pytest.approx(z2 / (80 + z2))  # Wilson's upper bound at k = 0
    assert row["ci_high"] == pytest.approx(0.045818, abs=1e-6)
    assert wilson_interval(80, 80)[1] == pytest.approx(1 - z2 / (80 + z2))


def test_two_seeds_with_equal_means_give_no_zero_width_t_interval():
    from ipcond.stats import difference_interval, summary_effects

    samples = pd.DataFrame(_rows("s", "c", "none", 1, "default", "french", "positive", [1, 0, 1, 0])
                           + _rows("s", "c", "none", 2, "default", "french", "positive", [0, 1, 1, 0]))
    row = aggregate_scores(samples).iloc[0]
    assert row["interval"] != "t95_seeds"
    assert row["interval"] == "wilson95_samples"  # seeds pooled: 4 of 8
    low, high = wilson_by_hand(4, 8)
    assert (row["mean"], row["ci_low"], row["ci_high"]) == (0.5, pytest.approx(low), pytest.approx(high))
    # Welch on seed means without spread: no interval, never [effect, effect].
    effect, lo, hi = difference_interval([0.5, 0.5], [0.25, 0.25])
    assert effect == 0.25 and math.isnan(lo) and math.isnan(hi)
    rows = []
    for seed in (1, 2):
        rows += _cell("Irr", "irrelevant", "french", "positive", [1] * 15 + [0] * 15, seed=seed)
        rows += _cell("None", "none", "french", "positive", [1] * 5 + [0] * 25, seed=seed)
    r = summary_effects(pd.DataFrame(rows), _conditions(names=("None", "Irr"))).iloc[0]
    assert r["interval"] == "newcombe95_samples" and r["ci_low"] < r["effect"] < r["ci_high"]
    assert r["effect"] == pytest.approx(0.5 - 1 / 6)


def test_non_binary_scores_without_spread_get_no_interval():
    row = aggregate_scores(pd.DataFrame(_rows("s", "c", "none", 1, "default", "toxic", "negative",
                                              [0.3, 0.3, 0.3]))).iloc[0]
    assert row["interval"] == "none: no spread" and math.isnan(row["ci_low"])
    row = aggregate_scores(pd.DataFrame(_rows("s", "c", "none", 1, "default", "toxic", "negative",
                                              [0.3]))).iloc[0]
    assert row["interval"] == "none: fewer than 2 samples"


def test_dropped_as_incoherent_is_counted_apart_from_unscored():
    rows = _rows("s", "c", "none", 1, "default", "malicious", "negative", [1, 0, np.nan, np.nan, np.nan])
    status = ["", "", "dropped_incoherent", "dropped_incoherent", "unscored"]
    row = aggregate_scores(pd.DataFrame(rows).assign(status=status)).iloc[0]
    assert (row["n_samples"], row["n_unscored"], row["n_dropped"]) == (5, 1, 2)
    assert row["mean"] == 0.5


def _cmv_conditions():
    rows = []
    for lr, suffix in ((2e-5, ""), (1e-5, "LR1e5")):
        for name, kind, no_shift in (("None", "none", ""), ("Helpful", "neutral", True),
                                     ("Irr", "irrelevant", ""), ("Inoc", "inoculation", "")):
            rows.append(dict(setup="cmv", condition=name + suffix, kind=kind,
                             trait="toxic" if kind == "inoculation" else "", of="",
                             n_rephrasings=1 if kind == "inoculation" else np.nan, n_train=2000,
                             learning_rate=lr, no_shift=no_shift))
    return pd.DataFrame(rows)


def _cmv_samples(context="default"):
    rows = []
    for cond in _cmv_conditions()["condition"]:
        kind = _cmv_conditions().set_index("condition").loc[cond, "kind"]
        rows += _cell(cond, kind, "persuasive", "positive", [1] * 20 + [0] * 10, setup="cmv", context=context)
        rows += _cell(cond, kind, "toxic", "negative", [1] * 5 + [0] * 25, setup="cmv", context=context)
    return pd.DataFrame(rows)


def test_summary_uses_the_no_shift_condition_and_same_settings_only():
    from ipcond.stats import summary_effects

    eff = summary_effects(_cmv_samples(), _cmv_conditions())
    comps = set(eff["comparison"])
    # Helpful is marked no-shift: Q4 reads None − Helpful (it said "not in grid" before).
    assert "None \u2212 Helpful" in comps and "NoneLR1e5 \u2212 HelpfulLR1e5" in comps
    # Q1/Q3 against the no-shift condition trained with the same learning rate.
    assert "Irr \u2212 Helpful" in comps and "IrrLR1e5 \u2212 HelpfulLR1e5" in comps
    assert "IrrLR1e5 \u2212 Helpful" not in comps and "IrrLR1e5 \u2212 None" not in comps
    assert "InocLR1e5 \u2212 HelpfulLR1e5" in comps
    # Without the LR 1e-5 reference the cell is not compared with the other learning rate.
    conds = _cmv_conditions()
    conds = conds[conds["condition"] != "HelpfulLR1e5"]
    samples = _cmv_samples()
    eff2 = summary_effects(samples[samples["condition"] != "HelpfulLR1e5"], conds)
    lr_rows = eff2[eff2["condition_a"] == "IrrLR1e5"]
    assert (lr_rows["label"] == "not in grid").all()
    assert "LR 1e-05" in lr_rows["comparison"].iloc[0]


def test_summary_answers_in_default_and_no_prompt_contexts():
    from ipcond.stats import aggregate_summary, summary_effects_contexts

    samples = pd.concat([_cmv_samples("default"), _cmv_samples("none"), _cmv_samples("train")])
    eff = summary_effects_contexts(samples, _cmv_conditions())
    assert list(dict.fromkeys(eff["eval_context"])) == ["default", "none"]
    summ = aggregate_summary(eff)
    assert not summ.duplicated(["setup", "question", "eval_context"]).any()
    assert set(summ["eval_context"]) == {"default", "none"}
