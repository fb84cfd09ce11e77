"""Aggregation of per-sample trait scores into means with confidence intervals.

Input is the long "sample scores" table: one row per (setup, condition, condition_kind, seed,
eval_context, sample_id, trait, role) with ``score`` in [0, 1] or NaN (unscored).

Interval rule (one row per setup, condition, condition_kind, eval_context, trait, role):

* every seed is first reduced to its mean over scored samples;
* with one seed, the interval is a percentile bootstrap of the mean over that seed's samples
  (``interval == "bootstrap95_samples"``); it captures sampling noise only;
* with two or more seeds, the mean is the mean of seed means and the interval is a Student-t
  interval across seed means (``interval == "t95_seeds"``), which captures training noise.

Everything here is deterministic: bootstrap generators are seeded from the row's key, so a
row's interval does not depend on which other rows are in the table.

The Student-t quantile is computed here (regularized incomplete beta + bisection) so that the
package does not need scipy.
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
AGG_COLUMNS = GROUP_KEYS + ("n_seeds", "n_samples", "n_unscored", "mean", "ci_low", "ci_high",
                            "interval")
GAP_KEYS = ("setup", "condition", "condition_kind", "trait", "role")
ROLES = ("positive", "negative")

INTERVAL_BOOTSTRAP = "bootstrap95_samples"
INTERVAL_T_SEEDS = "t95_seeds"

_NAN3 = (math.nan, math.nan, math.nan)


# --------------------------------------------------------------------------------------------
# Student-t quantile without scipy
# --------------------------------------------------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = tiny if abs(d) < tiny else d
    d = 1.0 / d
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = tiny if abs(d) < tiny else d
        c = 1.0 + aa / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = tiny if abs(d) < tiny else d
        c = 1.0 + aa / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            return h
    raise RuntimeError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if not (a > 0 and b > 0):
        raise ValueError(f"a and b must be positive, got a={a}, b={b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], got {x}")
    if x == 0.0 or x == 1.0:
        return x
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    front = math.exp(log_front)
    # The continued fraction converges fast for x < (a+1)/(a+b+2); use the symmetry
    # I_x(a, b) = 1 - I_{1-x}(b, a) on the other side.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` > 0 degrees of freedom."""
    if not df > 0:
        raise ValueError(f"df must be positive, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    # P(|T| > |t|) = I_{df/(df+t^2)}(df/2, 1/2)
    tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def student_t_ppf(q: float, df: float) -> float:
    """Quantile (inverse CDF) of Student's t with ``df`` > 0 degrees of freedom.

    Bisection on :func:`student_t_cdf`; accurate to ~1e-12 relative, which is far beyond what
    an interval needs. ``q`` = 0 or 1 gives -inf or inf.
    """
    if not df > 0:
        raise ValueError(f"df must be positive, got {df}")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    if q == 0.0:
        return -math.inf
    if q == 1.0:
        return math.inf
    if q == 0.5:
        return 0.0
    if q < 0.5:  # symmetric distribution
        return -student_t_ppf(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while student_t_cdf(hi, df) < q:  # bracket the root; cdf is increasing
        lo, hi = hi, hi * 2.0
        if hi > 1e300:
            return math.inf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if student_t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


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

    NaNs are dropped. Fewer than two values gives ``(mean, nan, nan)`` (mean is nan when empty).
    """
    _check_level(level)
    arr = _clean(values)
    n = arr.size
    if n == 0:
        return _NAN3
    mean = float(arr.mean())
    if n < 2:
        return (mean, math.nan, math.nan)
    half = student_t_ppf(0.5 + level / 2.0, n - 1) * float(arr.std(ddof=1)) / math.sqrt(n)
    return (mean, mean - half, mean + half)


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

def _validate_samples(samples: pd.DataFrame) -> None:
    missing = [c for c in SAMPLE_COLUMNS if c not in samples.columns]
    if missing:
        raise ValueError(f"sample scores lack columns {missing}; need {list(SAMPLE_COLUMNS)}")
    bad_roles = set(samples["role"].dropna().unique()) - set(ROLES)
    if bad_roles or samples["role"].isna().any():
        raise ValueError(f"role must be one of {ROLES}; found {sorted(map(str, bad_roles))}"
                         + (" and missing values" if samples["role"].isna().any() else ""))
    scores = pd.to_numeric(samples["score"], errors="raise").astype(float)
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


def aggregate_scores(samples: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per-sample scores -> one row per (setup, condition, condition_kind, eval_context, trait, role).

    Columns: the keys, ``n_seeds`` (distinct seeds present), ``n_samples`` (all sample rows,
    scored or not, over all seeds), ``n_unscored`` (rows with NaN score), ``mean``, ``ci_low``,
    ``ci_high`` and ``interval`` (see the module docstring for the rule).

    Seeds whose samples are all unscored have no mean and are left out of the interval; if that
    leaves a single seed, its samples are bootstrapped. Rows are sorted by the keys.
    """
    _validate_samples(samples)
    df = samples.loc[:, list(SAMPLE_COLUMNS)].copy()
    df["score"] = pd.to_numeric(df["score"]).astype(float)

    rows = []
    for key, grp in df.groupby(list(GROUP_KEYS), sort=True, dropna=False):
        scores = grp["score"]
        seed_means = scores.groupby(grp["seed"], sort=True).mean()  # NaN if a seed has no score
        valid = seed_means.dropna()
        if len(valid) >= 2:
            mean, low, high = t_interval(valid.to_numpy(), level=0.95)
            interval = INTERVAL_T_SEEDS
        else:
            # Zero or one seed with scores: bootstrap over that seed's samples (all NaN -> nan).
            pool = grp.loc[grp["seed"] == valid.index[0], "score"] if len(valid) else scores
            mean, low, high = bootstrap_ci(pool.to_numpy(), n_boot=n_boot,
                                           seed=_key_seed(key, seed), level=0.95)
            interval = INTERVAL_BOOTSTRAP
        rows.append((*key, int(grp["seed"].nunique()), int(len(grp)), int(scores.isna().sum()),
                     mean, low, high, interval))

    out = pd.DataFrame(rows, columns=list(AGG_COLUMNS))
    for c in ("n_seeds", "n_samples", "n_unscored"):
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
