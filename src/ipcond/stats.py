"""Aggregation of per-sample trait scores into means with confidence intervals.

Input is the long "sample scores" table: one row per (setup, condition, condition_kind, seed,
eval_context, sample_id, trait, role) with ``score`` in [0, 1] or NaN (unscored).

Interval rule (one row per setup, condition, condition_kind, eval_context, trait, role):

* every seed is first reduced to its mean over scored samples;
* with two or more seeds whose means differ, the mean is the mean of seed means and the
  interval is a Student-t interval across seed means (``interval == "t95_seeds"``), which
  captures training noise;
* otherwise (one seed, or seeds with equal means, where a t interval would have zero width),
  binary scores (all 0 or 1: a rate) get a Wilson score interval for the proportion over the
  scored samples, seeds pooled (``"wilson95_samples"``, statsmodels), which stays honest at 0/n
  and n/n; other scores a percentile bootstrap over the samples (``"bootstrap95_samples"``),
  or no interval when the samples cannot give one (``"none: fewer than 2 samples"``, ``"none:
  no spread"``) rather than one of zero width.

Everything here is deterministic: bootstrap generators are seeded from the row's key, so a
row's interval does not depend on which other rows are in the table.

The report's numbers come from :func:`summary_effects` (the post's four questions as
differences between conditions, with Welch or bootstrap intervals) over the conditions table
checked by :func:`validate_conditions`; :func:`aggregate_summary` condenses them per question.

The Student-t quantiles come from SciPy, the proportion intervals (Wilson, Newcombe) from
statsmodels.
"""

from __future__ import annotations

import math
import zlib
from typing import Iterable

import numpy as np
import pandas as pd

SAMPLE_COLUMNS = ("setup", "condition", "condition_kind", "seed", "eval_context", "sample_id",
                  "trait", "role", "score")
GROUP_KEYS = ("setup", "condition", "condition_kind", "eval_context", "trait", "role")
AGG_COLUMNS = GROUP_KEYS + ("n_seeds", "n_samples", "n_unscored", "n_dropped", "mean", "ci_low",
                            "ci_high", "interval")
GAP_KEYS = ("setup", "condition", "condition_kind", "trait", "role")
ROLES = ("positive", "negative")

INTERVAL_BOOTSTRAP = "bootstrap95_samples"
INTERVAL_T_SEEDS = "t95_seeds"
INTERVAL_WILSON = "wilson95_samples"
INTERVAL_NONE_FEW = "none: fewer than 2 samples"
INTERVAL_NONE_FLAT = "none: no spread"
# The score-table status of an answer the EM rule leaves out (ipcond.judge_scoring).
STATUS_DROPPED = "dropped_incoherent"

_NAN3 = (math.nan, math.nan, math.nan)


# --------------------------------------------------------------------------------------------
# Student-t distribution (scipy)
# --------------------------------------------------------------------------------------------

def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` > 0 degrees of freedom (``scipy.stats.t``)."""
    if not df > 0:
        raise ValueError(f"df must be positive, got {df}")
    from scipy.stats import t as student_t

    return float(student_t.cdf(t, df))


def student_t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t with ``df`` > 0 degrees of freedom (``scipy.stats.t``); ``q`` = 0
    or 1 gives -inf or inf."""
    if not df > 0:
        raise ValueError(f"df must be positive, got {df}")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    from scipy.stats import t as student_t

    return float(student_t.ppf(q, df))


# --------------------------------------------------------------------------------------------
# Intervals of a mean
# --------------------------------------------------------------------------------------------

def _clean(values: Iterable[float]) -> np.ndarray:
    arr = np.asarray(list(values) if not isinstance(values, (np.ndarray, pd.Series)) else values,
                     dtype=float).ravel()
    return arr[~np.isnan(arr)]


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def bootstrap_ci(values: Iterable[float], n_boot: int = 2000,
                 seed: int | np.random.SeedSequence | list[int] = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """Percentile bootstrap interval of the mean: ``(mean, low, high)``.

    NaNs are dropped first. No values gives ``(nan, nan, nan)``; a single value ``v`` gives
    ``(v, v, v)``. Deterministic for a given ``seed`` (anything ``numpy.random.default_rng``
    accepts).
    """
    _check_level(level)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    arr = _clean(values)
    n = arr.size
    if n == 0:
        return _NAN3
    mean = float(arr.mean())
    if n == 1 or np.all(arr == arr[0]):
        # Every resample has the same mean; return it exactly rather than float noise.
        return (mean, mean, mean)
    rng = np.random.default_rng(seed)
    # Resample in chunks so that memory stays bounded (n_boot x n indices) for large n.
    chunk = max(1, min(n_boot, 4_000_000 // n))
    boot_means = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        boot_means[start:stop] = arr[idx].mean(axis=1)
    alpha = 1.0 - level
    low, high = np.quantile(boot_means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return (mean, float(low), float(high))


def t_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float]:
    """Student-t interval of the mean with n-1 degrees of freedom: ``(mean, low, high)``.

    NaNs are dropped. Fewer than two values, or values without spread (whose t interval would
    have zero width, claiming certainty that two equal draws do not give), give
    ``(mean, nan, nan)`` (mean is nan when empty).
    """
    _check_level(level)
    arr = _clean(values)
    n = arr.size
    if n == 0:
        return _NAN3
    mean = float(arr.mean())
    if n < 2 or float(arr.std(ddof=1)) == 0.0:
        return (mean, math.nan, math.nan)
    half = student_t_ppf(0.5 + level / 2.0, n - 1) * float(arr.std(ddof=1)) / math.sqrt(n)
    return (mean, mean - half, mean + half)


def is_binary(values: Iterable[float]) -> bool:
    """Whether every non-NaN value is 0 or 1 (a rate's samples); False when there are none."""
    arr = _clean(values)
    return arr.size > 0 and bool(np.isin(arr, (0.0, 1.0)).all())


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float, float]:
    """Wilson score interval of a proportion: ``(k/n, low, high)`` (statsmodels
    ``proportion_confint(method="wilson")``). ``n == 0`` gives NaNs. Never of zero width for
    n >= 1: 0/80 gives an upper bound above 0."""
    _check_level(level)
    if n <= 0:
        return _NAN3
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(int(successes), int(n), alpha=1.0 - level, method="wilson")
    return (successes / n, float(low), float(high))


def newcombe_difference(k_a: int, n_a: int, k_b: int, n_b: int,
                        level: float = 0.95) -> tuple[float, float, float]:
    """Newcombe's hybrid score interval of p_a − p_b from counts: ``(effect, low, high)``
    (statsmodels ``confint_proportions_2indep(method="newcomb")``, built from the two Wilson
    intervals). An empty side gives NaNs."""
    _check_level(level)
    if n_a <= 0 or n_b <= 0:
        return _NAN3
    from statsmodels.stats.proportion import confint_proportions_2indep

    low, high = confint_proportions_2indep(int(k_a), int(n_a), int(k_b), int(n_b), method="newcomb",
                                           compare="diff", alpha=1.0 - level)
    return (k_a / n_a - k_b / n_b, float(low), float(high))


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

def _validate_samples(samples: pd.DataFrame, bounded: bool = True) -> None:
    missing = [c for c in SAMPLE_COLUMNS if c not in samples.columns]
    if missing:
        raise ValueError(f"sample scores lack columns {missing}; need {list(SAMPLE_COLUMNS)}")
    bad_roles = set(samples["role"].dropna().unique()) - set(ROLES)
    if bad_roles or samples["role"].isna().any():
        raise ValueError(f"role must be one of {ROLES}; found {sorted(map(str, bad_roles))}"
                         + (" and missing values" if samples["role"].isna().any() else ""))
    scores = pd.to_numeric(samples["score"], errors="raise").astype(float)
    if not bounded:
        return
    out_of_range = scores.notna() & ((scores < 0) | (scores > 1))
    if out_of_range.any():
        raise ValueError(f"{int(out_of_range.sum())} scores lie outside [0, 1] "
                         f"(e.g. {scores[out_of_range].iloc[0]})")


def _key_seed(key: tuple, seed: int) -> list[int]:
    """Bootstrap seed of one aggregate row: stable across runs, processes and table contents.

    ``hash()`` is salted per process, so a CRC of the key string is used instead.
    """
    crc = zlib.crc32("\x1f".join(str(k) for k in key).encode("utf-8"))
    return [crc, int(seed)]


def _samples_interval(pool: np.ndarray, key: tuple, n_boot: int, seed: int) -> tuple[float, float, float, str]:
    """Interval of the mean of pooled samples: Wilson for a rate, else bootstrap; never of
    zero width (no interval instead)."""
    arr = _clean(pool)
    if arr.size == 0:
        return (*_NAN3, "")
    if is_binary(arr):
        return (*wilson_interval(int(arr.sum()), int(arr.size)), INTERVAL_WILSON)
    mean = float(arr.mean())
    if arr.size < 2:
        return (mean, math.nan, math.nan, INTERVAL_NONE_FEW)
    if np.all(arr == arr[0]):
        return (mean, math.nan, math.nan, INTERVAL_NONE_FLAT)
    m, low, high = bootstrap_ci(arr, n_boot=n_boot, seed=_key_seed(key, seed), level=0.95)
    if low == high:
        return (m, math.nan, math.nan, INTERVAL_NONE_FLAT)
    return (m, low, high, INTERVAL_BOOTSTRAP)


def aggregate_scores(samples: pd.DataFrame, n_boot: int = 2000, seed: int = 0,
                     bounded: bool = True) -> pd.DataFrame:
    """Per-sample scores -> one row per (setup, condition, condition_kind, eval_context, trait, role).

    Columns: the keys, ``n_seeds`` (distinct seeds present), ``n_samples`` (all sample rows,
    scored or not, over all seeds), ``n_unscored`` (rows with NaN score that the scorer could
    not score), ``n_dropped`` (rows with NaN score that a rule left out on purpose: a
    ``status`` column value ``"dropped_incoherent"``, the EM rule; 0 without that column),
    ``mean``, ``ci_low``, ``ci_high`` and ``interval`` (see the module docstring for the rule).

    Seeds whose samples are all unscored have no mean and are left out. Rows are sorted by the
    keys. ``bounded=False`` accepts scores outside [0, 1] (e.g. teacher-forced log-odds).
    """
    _validate_samples(samples, bounded=bounded)
    cols = list(SAMPLE_COLUMNS) + (["status"] if "status" in samples.columns else [])
    df = samples.loc[:, cols].copy()
    df["score"] = pd.to_numeric(df["score"]).astype(float)
    dropped = (df["status"].fillna("").astype(str) == STATUS_DROPPED) if "status" in df else \
        pd.Series(False, index=df.index)
    df["_dropped"] = dropped & df["score"].isna()

    rows = []
    for key, grp in df.groupby(list(GROUP_KEYS), sort=True, dropna=False):
        scores = grp["score"]
        seed_means = scores.groupby(grp["seed"], sort=True).mean()  # NaN if a seed has no score
        valid = seed_means.dropna()
        if len(valid) >= 2 and float(valid.std(ddof=1)) > 0.0:
            mean, low, high = t_interval(valid.to_numpy(), level=0.95)
            interval = INTERVAL_T_SEEDS
        else:
            # One seed with scores, or seeds that agree exactly (a t interval of zero width):
            # the samples, seeds pooled. The mean stays the mean of seed means when they agree.
            mean, low, high, interval = _samples_interval(scores.to_numpy(), key, n_boot, seed)
            if len(valid) >= 2:
                mean = float(valid.mean())
        n_drop = int(grp["_dropped"].sum())
        rows.append((*key, int(grp["seed"].nunique()), int(len(grp)), int(scores.isna().sum()) - n_drop,
                     n_drop, mean, low, high, interval))

    out = pd.DataFrame(rows, columns=list(AGG_COLUMNS))
    for c in ("n_seeds", "n_samples", "n_unscored", "n_dropped"):
        out[c] = out[c].astype("int64")
    for c in ("mean", "ci_low", "ci_high"):
        out[c] = out[c].astype(float)
    return out.sort_values(list(GROUP_KEYS), kind="stable", ignore_index=True)


def conditionalization_gap(agg: pd.DataFrame) -> pd.DataFrame:
    """Train-context mean minus default-context mean, per (setup, condition, condition_kind,
    trait, role).

    Columns: the keys, ``mean_train``, ``mean_default`` and ``gap`` (NaN where either context
    is missing). A positive gap on a negative trait means the trait shows up mainly when the
    training-time prompt is present, i.e. it was conditionalized on that prompt.
    """
    needed = list(GAP_KEYS) + ["eval_context", "mean"]
    missing = [c for c in needed if c not in agg.columns]
    if missing:
        raise ValueError(f"aggregate table lacks columns {missing}")
    dup = agg.duplicated(list(GAP_KEYS) + ["eval_context"])
    if dup.any():
        raise ValueError(f"{int(dup.sum())} duplicate aggregate rows for the same keys and context")
    keys = agg.loc[:, list(GAP_KEYS)].drop_duplicates()

    def context_mean(ctx: str, name: str) -> pd.DataFrame:
        part = agg.loc[agg["eval_context"] == ctx, list(GAP_KEYS) + ["mean"]]
        return part.rename(columns={"mean": name})

    out = (keys.merge(context_mean("train", "mean_train"), on=list(GAP_KEYS), how="left")
               .merge(context_mean("default", "mean_default"), on=list(GAP_KEYS), how="left"))
    out["mean_train"] = out["mean_train"].astype(float)
    out["mean_default"] = out["mean_default"].astype(float)
    out["gap"] = out["mean_train"] - out["mean_default"]
    return out.sort_values(list(GAP_KEYS), kind="stable", ignore_index=True)


# --------------------------------------------------------------------------------------------
# The conditions table (what the figures and the summary group and sweep by)
# --------------------------------------------------------------------------------------------

CONDITION_COLUMNS = ("setup", "condition", "kind", "trait", "of", "n_rephrasings", "n_train",
                     "learning_rate")
CONDITION_KINDS = ("baseline", "none", "empty", "neutral", "inoculation", "rephrased",
                   "irrelevant", "control")


def validate_conditions(conditions: pd.DataFrame) -> pd.DataFrame:
    """Check the conditions table and return a normalised copy.

    One row per (setup, condition), built from the config. Columns:

    * ``setup``, ``condition``: names as in the config (the condition "None" is a name, not a
      missing value);
    * ``kind``: one of :data:`CONDITION_KINDS`;
    * ``trait``: the inoculated trait's name for kind ``inoculation`` (may be empty: the setup's
      negative trait is then assumed), else empty;
    * ``of``: for kind ``rephrased``, the inoculation condition (same setup) it rephrases, else
      empty;
    * ``n_rephrasings``: for ``rephrased`` the number N of distinct paraphrases, for
      ``inoculation`` 1, else NaN;
    * ``n_train``: training examples used; ``learning_rate``: the effective learning rate.

    An optional ``prompt`` column (the condition's training prompt text) is kept; the sweep
    figures use it to tell apart conditions of the same kind. An optional boolean ``no_shift``
    column marks the setup's no-shift references (trained with the prompt they are evaluated
    with); without it, the conditions of kind ``baseline`` are.

    Raises ``ValueError`` naming missing columns, duplicate (setup, condition) rows, unknown
    kinds and rephrased conditions whose ``of`` is not an inoculation condition of the setup.
    Empty cells of ``trait``/``of`` become ``""``; numeric columns become float.
    """
    if not isinstance(conditions, pd.DataFrame):
        raise ValueError(f"conditions must be a pandas DataFrame, got {type(conditions).__name__}")
    missing = [c for c in CONDITION_COLUMNS if c not in conditions.columns]
    if missing:
        raise ValueError(f"conditions table lacks columns {missing}; need {list(CONDITION_COLUMNS)}"
                         " (setup, condition, kind, trait, of, n_rephrasings, n_train, "
                         "learning_rate)")
    out = conditions.copy()
    for c in ("setup", "condition", "kind"):
        if out[c].isna().any() or (out[c].astype(str).str.strip() == "").any():
            raise ValueError(f"conditions table: column {c!r} has empty cells")
        out[c] = out[c].astype(str)
    for c in ("trait", "of") + (("prompt",) if "prompt" in out.columns else ()):
        out[c] = out[c].fillna("").astype(str)
    for c in ("n_rephrasings", "n_train", "learning_rate"):
        try:
            out[c] = pd.to_numeric(out[c], errors="raise").astype(float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"conditions table: column {c!r} must be numeric ({exc})") from None
    if "no_shift" in out.columns:
        ns = out["no_shift"].map(lambda v: str(v).strip().lower() in ("true", "1", "yes"))
        out["no_shift"] = ns.where(out["no_shift"].notna() & (out["no_shift"].astype(str) != ""),
                                   out["kind"] == "baseline").astype(bool)
    else:
        out["no_shift"] = out["kind"] == "baseline"
    dup = out.duplicated(["setup", "condition"])
    if dup.any():
        first = out.loc[dup, ["setup", "condition"]].iloc[0].tolist()
        raise ValueError(f"conditions table: duplicate (setup, condition) rows, e.g. {first}")
    bad = sorted(set(out["kind"]) - set(CONDITION_KINDS))
    if bad:
        raise ValueError(f"conditions table: unknown kind(s) {bad}; known: {list(CONDITION_KINDS)}")
    kinds = dict(zip(zip(out["setup"], out["condition"]), out["kind"]))
    for r in out[out["kind"] == "rephrased"].itertuples(index=False):
        if kinds.get((r.setup, r.of)) != "inoculation":
            raise ValueError(f"conditions table: rephrased condition {r.setup}/{r.condition} has "
                             f"of={r.of!r}, which is not an inoculation condition of the setup")
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# The post's four questions, answered from our numbers
# --------------------------------------------------------------------------------------------

QUESTIONS = {
    "irrelevant_suppresses": "Do irrelevant prompts also suppress traits taught during narrow "
                             "fine-tuning?",
    "rephrasing_weakens": "Does rephrasing inoculation prompts reduce their effectiveness at "
                          "suppressing the inoculated trait?",
    "inoculation_suppresses_other": "Do inoculation prompts also suppress other traits than the "
                                    "one they target?",
    "removing_neutral_suppresses": "Does simply removing a neutral prompt (train without it, "
                                   "evaluate with it) also suppress traits?",
}
# The eval contexts the summary answers each question in: the setup's default eval prompt, and
# no prompt at all (the post's trait-distillation answer to Q4 appears only without the prefix).
SUMMARY_CONTEXTS = ("default", "none")
DEFAULT_MIN_SAMPLES = 20
# Which direction of the effect answers "yes" (a − b below zero: suppresses; above: raises).
QUESTION_YES = {"irrelevant_suppresses": "suppresses", "rephrasing_weakens": "raises",
                "inoculation_suppresses_other": "suppresses",
                "removing_neutral_suppresses": "suppresses"}

EFFECT_COLUMNS = ("setup", "question", "comparison", "condition_a", "condition_b", "trait",
                  "role", "focus", "eval_context", "reference", "effect", "ci_low", "ci_high", "n_a",
                  "n_b", "n_seeds_a", "n_seeds_b", "interval", "label")
LABEL_SUPPRESSES, LABEL_RAISES, LABEL_UNCLEAR = "suppresses", "raises", "no clear effect"
LABEL_NOT_IN_GRID, LABEL_NO_SCORES = "not in grid", "no scores"
LABEL_FEW = "too few samples"
INTERVAL_WELCH = "welch_t95_seed_means"
INTERVAL_BOOT_DIFF = "bootstrap95_samples"
INTERVAL_NEWCOMBE = "newcombe95_samples"
MINUS = "\u2212"


def difference_interval(a_seed_means: Iterable[float], b_seed_means: Iterable[float],
                        level: float = 0.95) -> tuple[float, float, float]:
    """Welch interval of mean(a) − mean(b) from per-seed means: ``(effect, low, high)``.

    Needs at least two values on each side (else ``low``/``high`` are NaN). Degrees of freedom
    by Welch-Satterthwaite. When both sides have zero spread there is no interval (NaN), never
    one of zero width.
    """
    _check_level(level)
    a, b = _clean(a_seed_means), _clean(b_seed_means)
    if a.size == 0 or b.size == 0:
        return _NAN3
    effect = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return (effect, math.nan, math.nan)
    va, vb = float(a.var(ddof=1)) / a.size, float(b.var(ddof=1)) / b.size
    se2 = va + vb
    if se2 == 0.0:
        return (effect, math.nan, math.nan)
    df = se2 ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    half = student_t_ppf(0.5 + level / 2.0, df) * math.sqrt(se2)
    return (effect, effect - half, effect + half)


def bootstrap_difference(a: Iterable[float], b: Iterable[float], n_boot: int = 2000,
                         seed: int | np.random.SeedSequence | list[int] = 0,
                         level: float = 0.95) -> tuple[float, float, float]:
    """Percentile bootstrap of mean(a) − mean(b), resampling ``a`` and ``b`` independently.

    NaNs are dropped; an empty side gives ``(nan, nan, nan)``; resamples without spread (e.g.
    one value a side) give ``(effect, nan, nan)``. Deterministic for a given seed.
    """
    _check_level(level)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    a, b = _clean(a), _clean(b)
    if a.size == 0 or b.size == 0:
        return _NAN3
    effect = float(a.mean() - b.mean())
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    chunk = max(1, min(n_boot, 4_000_000 // max(a.size, b.size)))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        ia = rng.integers(0, a.size, size=(stop - start, a.size))
        ib = rng.integers(0, b.size, size=(stop - start, b.size))
        diffs[start:stop] = a[ia].mean(axis=1) - b[ib].mean(axis=1)
    if np.all(diffs == diffs[0]):
        return (effect, math.nan, math.nan)  # no spread to resample: no interval, not zero width
    alpha = 1.0 - level
    low, high = np.quantile(diffs, [alpha / 2.0, 1.0 - alpha / 2.0])
    return (effect, float(low), float(high))


def effect_label(low: float, high: float, n_a: int | None = None, n_b: int | None = None,
                 min_samples: int = 1) -> str:
    """``"suppresses"`` if the interval lies below 0, ``"raises"`` if above, else
    ``"no clear effect"`` (also for a NaN interval); ``"too few samples"`` when ``n_a`` or
    ``n_b`` (scored samples a side) is below ``min_samples``, whatever the interval."""
    if n_a is not None and n_b is not None and min(n_a, n_b) < min_samples:
        return LABEL_FEW
    if math.isnan(low) or math.isnan(high):
        return LABEL_UNCLEAR
    if high < 0:
        return LABEL_SUPPRESSES
    if low > 0:
        return LABEL_RAISES
    return LABEL_UNCLEAR


def _compare(cell: dict, setup: str, a: str, b: str, trait: str, question: str, n_boot: int,
             seed: int, min_samples: int) -> dict:
    """Effect of condition ``a`` minus condition ``b`` on ``trait`` (see summary_effects)."""
    ga, gb = cell.get((a, trait)), cell.get((b, trait))
    out = {"effect": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n_a": 0, "n_b": 0,
           "n_seeds_a": 0, "n_seeds_b": 0, "interval": ""}
    sa = ga.dropna(subset=["score"]) if ga is not None else None
    sb = gb.dropna(subset=["score"]) if gb is not None else None
    if sa is None or sb is None or sa.empty or sb.empty:
        return {**out, "label": LABEL_NO_SCORES,
                "n_a": 0 if sa is None else len(sa), "n_b": 0 if sb is None else len(sb)}
    ma = sa.groupby("seed")["score"].mean()
    mb = sb.groupby("seed")["score"].mean()
    out.update(n_a=len(sa), n_b=len(sb), n_seeds_a=len(ma), n_seeds_b=len(mb))
    effect, low, high = math.nan, math.nan, math.nan
    if len(ma) >= 2 and len(mb) >= 2:
        effect, low, high = difference_interval(ma.to_numpy(), mb.to_numpy())
        out["interval"] = INTERVAL_WELCH
    if math.isnan(low):
        # One seed a side, or seeds without spread: the samples, seeds pooled.
        xa, xb = sa["score"].to_numpy(dtype=float), sb["score"].to_numpy(dtype=float)
        if is_binary(xa) and is_binary(xb):
            effect, low, high = newcombe_difference(int(xa.sum()), xa.size, int(xb.sum()), xb.size)
            out["interval"] = INTERVAL_NEWCOMBE
        else:
            effect, low, high = bootstrap_difference(
                xa, xb, n_boot=n_boot, seed=_key_seed((setup, question, a, b, trait), seed))
            out["interval"] = INTERVAL_BOOT_DIFF if not math.isnan(low) else INTERVAL_NONE_FLAT
    if len(ma) >= 2 and len(mb) >= 2:
        effect = float(ma.mean() - mb.mean())
    out.update(effect=effect, ci_low=low, ci_high=high,
               label=effect_label(low, high, len(sa), len(sb), min_samples))
    return out


def _same_settings(c: pd.DataFrame, a: str, b: str) -> bool:
    """Whether conditions ``a`` and ``b`` were trained with the same learning rate and n_train."""
    ra, rb = c[c["condition"] == a].iloc[0], c[c["condition"] == b].iloc[0]
    return all((math.isnan(ra[k]) and math.isnan(rb[k])) or math.isclose(ra[k], rb[k], rel_tol=1e-9)
               for k in ("learning_rate", "n_train"))


def _settings_text(c: pd.DataFrame, a: str) -> str:
    r = c[c["condition"] == a].iloc[0]
    return f"LR {r['learning_rate']:g}, n_train {r['n_train']:g}"


def summary_effects(samples: pd.DataFrame, conditions: pd.DataFrame, n_boot: int = 2000,
                    seed: int = 0, eval_context: str = "default",
                    min_samples: int = DEFAULT_MIN_SAMPLES) -> pd.DataFrame:
    """Answers to the post's four questions (:data:`QUESTIONS`) per setup, from the samples.

    The post measures each effect "compared to no distributional shift between training and
    evaluation": the no-shift condition, trained with the prompt it is evaluated with (the
    conditions table's ``no_shift``: Baseline, or e.g. Change My View's Helpful). For each setup
    of ``conditions`` (in its order), in ``eval_context``:

    1. ``irrelevant_suppresses``: each irrelevant condition − the reference, on every trait;
    2. ``rephrasing_weakens``: each rephrased condition − its fixed inoculation (``of``), on
       every trait (``focus`` is True on the inoculated trait, the one the question is about);
    3. ``inoculation_suppresses_other``: each inoculation condition − the reference, on every
       trait it does not inoculate (its ``trait``, or the setup's negative trait when empty);
    4. ``removing_neutral_suppresses``: each None (and ``empty``) condition − the no-shift
       condition, on every trait.

    The reference of questions 1 and 3 is the no-shift condition where the grid has one, else
    None (``reference`` says which). Only cells trained with the same settings are compared
    (learning rate and ``n_train``; question 2 varies the rephrasing count on purpose): a
    condition of a learning-rate or dataset-size sweep is compared with the reference trained
    like it, or, when the grid has none, gets a "not in grid" row saying so.

    ``effect`` is mean(a) − mean(b) with a 95% interval: a Welch t interval on seed means when
    both sides have two or more seeds and a spread (``"welch_t95_seed_means"``); otherwise,
    seeds pooled, Newcombe's interval for a difference of proportions when both sides are
    rates (``"newcombe95_samples"``), else a percentile bootstrap over samples
    (``"bootstrap95_samples"``), or no interval (NaN) where the data cannot give one: never an
    interval of zero width. ``n_a``/``n_b``: scored samples; ``n_seeds_a``/``n_seeds_b``: seeds
    with scores.

    ``label``: ``"suppresses"`` (interval below 0), ``"raises"`` (above 0), ``"no clear
    effect"``, ``"too few samples"`` (a side has fewer than ``min_samples`` scored samples);
    ``"not in grid"`` (one row with NaNs, empty trait) when the setup lacks the conditions a
    question needs; ``"no scores"`` when a needed condition is in the grid but has no scored
    sample in ``eval_context``. The question's "yes" direction is :data:`QUESTION_YES`.

    Columns: :data:`EFFECT_COLUMNS`. Traits and their roles come from the setup's samples
    (positive first).
    """
    if min_samples < 1:
        raise ValueError(f"min_samples must be >= 1, got {min_samples}")
    conds = validate_conditions(conditions)
    _validate_samples(samples, bounded=False)
    unknown = sorted(set(samples["setup"].astype(str)) - set(conds["setup"]))
    if unknown:
        raise ValueError(f"samples have setups {unknown} that the conditions table lacks")
    df = samples.loc[samples["eval_context"].astype(str) == eval_context,
                     ["setup", "condition", "seed", "trait", "role", "score"]].copy()
    df["score"] = pd.to_numeric(df["score"]).astype(float)
    for c in ("setup", "condition", "trait", "role"):
        df[c] = df[c].astype(str)

    rows: list[dict] = []
    for setup in dict.fromkeys(conds["setup"]):
        c = conds[conds["setup"] == setup]
        names = list(c["condition"])
        kind_of = dict(zip(c["condition"], c["kind"]))
        s_all = samples[samples["setup"].astype(str) == setup]
        roles = (s_all[["trait", "role"]].astype(str).drop_duplicates()
                 .assign(_o=lambda t: t["role"].map({r: i for i, r in enumerate(ROLES)}))
                 .sort_values(["_o", "trait"], kind="stable"))
        traits = list(zip(roles["trait"], roles["role"]))
        role_of = dict(traits)
        negatives = [t for t, r in traits if r == "negative"]
        s = df[df["setup"] == setup]
        cell = {key: g for key, g in s.groupby(["condition", "trait"], sort=False)}
        blank = {"effect": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n_a": 0, "n_b": 0,
                 "n_seeds_a": 0, "n_seeds_b": 0, "interval": ""}

        def add(question, a, b, trait_list, reference, focus=lambda t: True):
            if not trait_list:  # nothing to compare on: say why rather than drop the question
                why = "no scores for the setup" if not traits else "no other trait"
                rows.append({"setup": setup, "question": question,
                             "comparison": f"{a} {MINUS} {b} ({why})", "condition_a": a,
                             "condition_b": b, "trait": "", "role": "", "focus": True,
                             "eval_context": eval_context, "reference": reference, **blank,
                             "label": LABEL_NO_SCORES if not traits else LABEL_NOT_IN_GRID})
            for t in trait_list:
                res = _compare(cell, setup, a, b, t, question, n_boot, seed, min_samples)
                rows.append({"setup": setup, "question": question,
                             "comparison": f"{a} {MINUS} {b}", "condition_a": a,
                             "condition_b": b, "trait": t, "role": role_of.get(t, ""),
                             "focus": bool(focus(t)), "eval_context": eval_context,
                             "reference": reference, **res})

        def missing(question, comparison, why, a="", reference=""):
            rows.append({"setup": setup, "question": question,
                         "comparison": f"{comparison} ({why})", "condition_a": a,
                         "condition_b": "", "trait": "", "role": "", "focus": True,
                         "eval_context": eval_context, "reference": reference, **blank,
                         "label": LABEL_NOT_IN_GRID})

        all_traits = [t for t, _ in traits]
        by_kind = {k: [n for n in names if kind_of[n] == k] for k in CONDITION_KINDS}
        no_shift = [n for n in names if bool(c.loc[c["condition"] == n, "no_shift"].iloc[0])]
        nones = by_kind["none"]

        def matching(a: str, candidates: list[str]) -> str | None:
            """The first candidate trained with ``a``'s settings (the post's names first)."""
            ordered = sorted(candidates, key=lambda n: n not in ("Baseline", "None"))
            return next((n for n in ordered if n != a and _same_settings(c, a, n)), None)

        ref_pool, ref_desc = ((no_shift, "no-shift") if no_shift else (nones, "None"))
        ref_note = ("no-shift condition" if no_shift else
                    "None (the grid has no no-shift condition)")

        def vs_reference(question, conds_a, trait_fn, what):
            if not conds_a or not ref_pool:
                missing(question, f"{what} {MINUS} reference",
                        f"no {what} condition" if not conds_a else
                        "no no-shift or None condition")
                return
            for a in conds_a:
                b = matching(a, ref_pool)
                if b is None:
                    missing(question, f"{a} {MINUS} {ref_desc}",
                            f"no {ref_desc} cell at {_settings_text(c, a)}", a=a)
                    continue
                add(question, a, b, trait_fn(a), f"{b}: {ref_note}")

        def inoculated(a):
            return c.loc[c["condition"] == a, "trait"].iloc[0] or (negatives[0] if negatives else "")

        # 1. irrelevant − reference
        vs_reference("irrelevant_suppresses", by_kind["irrelevant"], lambda a: all_traits,
                     "irrelevant")

        # 2. rephrased − fixed inoculation
        q = "rephrasing_weakens"
        if not by_kind["rephrased"]:
            missing(q, f"rephrased {MINUS} inoculation", "no rephrased condition")
        else:
            for a in by_kind["rephrased"]:
                b = c.loc[c["condition"] == a, "of"].iloc[0]
                if not _same_settings(c, a, b):
                    missing(q, f"{a} {MINUS} {b}", f"trained with {_settings_text(c, a)}, its "
                            f"inoculation with {_settings_text(c, b)}", a=a)
                    continue
                inoc = inoculated(b)
                add(q, a, b, all_traits, f"{b}: its fixed inoculation prompt",
                    focus=lambda t, inoc=inoc: t == inoc)

        # 3. inoculation − reference on the other trait(s)
        vs_reference("inoculation_suppresses_other", by_kind["inoculation"],
                     lambda a: [t for t in all_traits if t != inoculated(a)], "inoculation")

        # 4. None (and empty) − no-shift
        q = "removing_neutral_suppresses"
        removed = nones + by_kind["empty"]
        if not no_shift or not nones:
            missing(q, f"None {MINUS} no-shift",
                    "no no-shift condition" if not no_shift else "no None condition")
            removed = by_kind["empty"] if no_shift else []
        for a in removed:
            b = matching(a, no_shift)
            if b is None:
                missing(q, f"{a} {MINUS} no-shift",
                        f"no no-shift cell at {_settings_text(c, a)}", a=a)
                continue
            add(q, a, b, all_traits, f"{b}: no-shift condition")

    out = pd.DataFrame(rows, columns=list(EFFECT_COLUMNS))
    for col in ("effect", "ci_low", "ci_high"):
        out[col] = out[col].astype(float)
    for col in ("n_a", "n_b", "n_seeds_a", "n_seeds_b"):
        out[col] = out[col].astype("int64")
    out["focus"] = out["focus"].astype(bool)
    return out


def summary_effects_contexts(samples: pd.DataFrame, conditions: pd.DataFrame,
                             contexts: Iterable[str] = SUMMARY_CONTEXTS, **kwargs) -> pd.DataFrame:
    """:func:`summary_effects` in each eval context of ``contexts`` that the samples have (by
    default the setup's default eval prompt and no prompt), one table, contexts in order."""
    present = set(samples["eval_context"].astype(str))
    parts = [summary_effects(samples, conditions, eval_context=ctx, **kwargs)
             for ctx in contexts if ctx in present]
    if not parts:
        raise ValueError(f"the samples have none of the eval contexts {list(contexts)}")
    return pd.concat(parts, ignore_index=True)


def aggregate_summary(effects: pd.DataFrame) -> pd.DataFrame:
    """One row per (setup, question, eval context) of :func:`summary_effects`' table, for the page.

    Columns: ``setup``, ``question``, ``eval_context``, ``question_text``, ``reference`` (what the
    comparisons were made against), ``n_comparisons`` (rows with ``focus``
    and scores), ``n_yes`` (focus rows whose label is the question's "yes" direction,
    :data:`QUESTION_YES`), ``n_opposite`` (interval excludes 0 the other way), ``n_unclear``,
    ``strongest`` (focus row with the largest |effect| in the "yes" direction, or the largest
    |effect| if none) with its ``effect``/``ci_low``/``ci_high``, and ``answer``: ``"yes"``
    (all focus comparisons), ``"partly"`` (some), ``"no"`` (none, with at least one opposite),
    ``"unclear"`` (no interval excludes 0), or ``"not in grid"`` / ``"no scores"``.
    """
    needed = ("setup", "question", "comparison", "trait", "focus", "effect", "ci_low", "ci_high",
              "label")
    missing = [c for c in needed if c not in effects.columns]
    if missing:
        raise ValueError(f"effects table lacks columns {missing}")
    rows = []
    ctx = effects["eval_context"] if "eval_context" in effects.columns else pd.Series("default", index=effects.index)
    for (setup, question, context), g in effects.assign(_ctx=ctx).groupby(["setup", "question", "_ctx"],
                                                                           sort=False):
        yes = QUESTION_YES.get(question, LABEL_SUPPRESSES)
        opposite = LABEL_RAISES if yes == LABEL_SUPPRESSES else LABEL_SUPPRESSES
        f = g[g["focus"].astype(bool) & g["label"].isin([LABEL_SUPPRESSES, LABEL_RAISES,
                                                         LABEL_UNCLEAR, LABEL_FEW])]
        refs = [r for r in dict.fromkeys(g["reference"]) if r] if "reference" in g.columns else []
        base = {"setup": setup, "question": question, "eval_context": context,
                "question_text": QUESTIONS.get(question, question), "reference": "; ".join(refs)}
        if f.empty:
            answer = LABEL_NOT_IN_GRID if (g["label"] == LABEL_NOT_IN_GRID).all() else \
                LABEL_NO_SCORES
            rows.append({**base, "n_comparisons": 0, "n_yes": 0, "n_opposite": 0,
                         "n_unclear": 0, "strongest": "", "effect": math.nan,
                         "ci_low": math.nan, "ci_high": math.nan, "answer": answer})
            continue
        n_yes = int((f["label"] == yes).sum())
        n_opp = int((f["label"] == opposite).sum())
        pool = f[f["label"] == yes] if n_yes else f
        signed = pool["effect"] * (-1.0 if yes == LABEL_SUPPRESSES else 1.0)
        best = pool.loc[signed.idxmax()] if n_yes else pool.loc[pool["effect"].abs().idxmax()]
        if n_yes == len(f):
            answer = "yes"
        elif n_yes:
            answer = "partly"
        elif n_opp:
            answer = "no"
        else:
            answer = "unclear"
        rows.append({**base, "n_comparisons": len(f), "n_yes": n_yes, "n_opposite": n_opp,
                     "n_unclear": len(f) - n_yes - n_opp,
                     "strongest": f"{best['comparison']} on {best['trait']}",
                     "effect": float(best["effect"]), "ci_low": float(best["ci_low"]),
                     "ci_high": float(best["ci_high"]), "answer": answer})
    return pd.DataFrame(rows, columns=["setup", "question", "eval_context", "question_text",
                                       "reference", "n_comparisons", "n_yes", "n_opposite",
                                       "n_unclear", "strongest", "effect", "ci_low", "ci_high",
                                       "answer"])


def pearson_r(x: Iterable[float], y: Iterable[float]) -> float:
    """Pearson correlation of paired values (pairs with a NaN dropped).

    NaN when fewer than three pairs remain or either side has zero variance (r undefined).
    """
    xa = np.asarray(list(x) if not isinstance(x, (np.ndarray, pd.Series)) else x, dtype=float)
    ya = np.asarray(list(y) if not isinstance(y, (np.ndarray, pd.Series)) else y, dtype=float)
    if xa.shape != ya.shape:
        raise ValueError(f"x and y differ in length: {xa.size} and {ya.size}")
    ok = ~(np.isnan(xa) | np.isnan(ya))
    xa, ya = xa[ok], ya[ok]
    if xa.size < 3:
        return math.nan
    dx, dy = xa - xa.mean(), ya - ya.mean()
    sxx, syy = float((dx * dx).sum()), float((dy * dy).sum())
    if sxx <= 1e-15 * max(1.0, float((xa * xa).sum())) or \
            syy <= 1e-15 * max(1.0, float((ya * ya).sum())):
        return math.nan
    return float(np.clip((dx * dy).sum() / math.sqrt(sxx * syy), -1.0, 1.0))
