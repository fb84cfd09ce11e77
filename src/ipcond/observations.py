"""The post's "Summary of observations" table as data, and whether our run agrees with it.

Science layer. The table (``resources/post_observations.yaml``) gives, per setup row of the post
and per question (``ipcond.stats.QUESTIONS``), the post's verdict quoted verbatim and a level:
strong, moderate, weak, no, inconclusive, or observed (seen, no strength given). Our level comes
from the summary's effects by the rule of :func:`toy_level` (docs/toy_organism.md, "Agreement
with the post"), and :func:`compare_with_post` puts the two side by side.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import yaml

from .stats import (LABEL_FEW, LABEL_NO_SCORES, LABEL_NOT_IN_GRID, LABEL_RAISES, LABEL_SUPPRESSES,
                    LABEL_UNCLEAR, QUESTION_YES, QUESTIONS)

OBSERVATIONS_PATH = Path(__file__).resolve().parents[2] / "resources" / "post_observations.yaml"
POST_LEVELS = ("strong", "moderate", "weak", "observed", "no", "inconclusive")
YES_LEVELS = ("strong", "moderate", "weak", "observed")
# A "strong" effect in our run: a comparison whose 95% interval lies on the question's side of
# zero moves the trait by at least this much (a difference of rates on 0-1, or of mean scores).
# The post's columns are existence claims graded by size ("Irrelevant prompts suppress some traits
# significantly", "recover at least some of the positive trait"), so the grade comes from the
# largest clear effect, and how many comparisons show it is printed beside it (n_yes of n).
STRONG_EFFECT = 0.2
NOT_MEASURED = "not measured"
# The post's table column for Q2 reads "Rephrased inoculation prompts recover at least some of
# the positive trait and optionally part of the negative trait": a rise of either trait under
# rephrasing counts, not only of the inoculated one (the summary's Q2 focus).
ALL_TRAIT_QUESTIONS = ("rephrasing_weakens",)
COMPARISON_COLUMNS = ("setup", "question", "eval_context", "post_row", "post_level", "post_quote",
                      "toy_level", "n_yes", "n_comparisons", "strongest", "effect", "ci_low",
                      "ci_high", "agreement")


def load_post_observations(path: str | Path = OBSERVATIONS_PATH) -> dict[str, dict]:
    """Setup name -> question -> {level, quote, eval_context, post_row}, from the YAML table.

    Raises ValueError naming the file and key for an unknown question or level, a missing
    quote, or a setup listed under two rows.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: cannot read the post's observations: {e}") from None
    rows = (data or {}).get("rows")
    if not isinstance(rows, dict) or not rows:
        raise ValueError(f"{path}: needs a 'rows' mapping (post row -> setups and questions)")
    out: dict[str, dict] = {}
    for key, row in rows.items():
        where = f"{path}: rows.{key}"
        setups = row.get("setups") or []
        if not setups or "post_row" not in row:
            raise ValueError(f"{where}: needs 'post_row' (the post's wording) and 'setups' (our setup names)")
        entries = {}
        for q in QUESTIONS:
            e = row.get(q)
            if e is None:
                raise ValueError(f"{where}.{q}: missing; give the post's verdict (level and quote)")
            if e.get("level") not in POST_LEVELS or not e.get("quote"):
                raise ValueError(f"{where}.{q}: level must be one of {list(POST_LEVELS)} and quote the post; "
                                 f"got {e!r}")
            entries[q] = {"level": e["level"], "quote": str(e["quote"]),
                          "eval_context": e.get("eval_context", "default"), "post_row": row["post_row"]}
        extra = sorted(set(row) - set(QUESTIONS) - {"setups", "post_row"})
        if extra:
            raise ValueError(f"{where}: unknown keys {extra}; questions are {list(QUESTIONS)}")
        for s in setups:
            if s in out:
                raise ValueError(f"{where}: setup {s!r} is already under another row")
            out[s] = entries
    return out


def toy_level(effects: pd.DataFrame, question: str) -> tuple[str, dict]:
    """Our level for one (setup, question, eval context) of ``ipcond.stats.summary_effects``' rows.

    Over the focus comparisons with scores: ``"strong"`` when one of them has its 95% interval
    on the question's "yes" side of 0 (``QUESTION_YES``) and an effect of at least
    :data:`STRONG_EFFECT` in size; ``"moderate"`` when some have, all smaller; ``"no"`` when none
    has (intervals that include 0, or the opposite direction);
    :data:`NOT_MEASURED` when no comparison has enough scored samples (labels "not in grid",
    "no scores", "too few samples"). Returns (level, details: n_yes, n_comparisons and the
    strongest comparison with its effect and interval).
    """
    yes = QUESTION_YES.get(question, LABEL_SUPPRESSES)
    f = effects[effects["focus"].astype(bool)
                & effects["label"].isin([LABEL_SUPPRESSES, LABEL_RAISES, LABEL_UNCLEAR])]
    details = {"n_yes": 0, "n_comparisons": len(f), "strongest": "", "effect": math.nan,
               "ci_low": math.nan, "ci_high": math.nan}
    if f.empty:
        return NOT_MEASURED, details
    hits = f[f["label"] == yes]
    sign = -1.0 if yes == LABEL_SUPPRESSES else 1.0
    pool = hits if not hits.empty else f
    best = pool.loc[(pool["effect"] * sign).idxmax()] if not hits.empty else pool.loc[pool["effect"].abs().idxmax()]
    details.update(n_yes=len(hits), strongest=f"{best['comparison']} on {best['trait']}",
                   effect=float(best["effect"]), ci_low=float(best["ci_low"]), ci_high=float(best["ci_high"]))
    if hits.empty:
        return "no", details
    if abs(details["effect"]) >= STRONG_EFFECT:
        return "strong", details
    return "moderate", details


def agreement(post_level: str, ours: str) -> str:
    """``"agrees"`` (same level; "observed" agrees with strong or moderate; "no" with "no"),
    ``"partly"`` (both see the effect at different strengths), ``"disagrees"`` (one sees it,
    the other not), ``"post inconclusive"`` or ``"not measured"``."""
    if ours == NOT_MEASURED:
        return NOT_MEASURED
    if post_level == "inconclusive":
        return "post inconclusive"
    if post_level == "no" or ours == "no":
        return "agrees" if post_level == ours else "disagrees"
    if post_level == ours or (post_level == "observed" and ours in ("strong", "moderate")):
        return "agrees"
    return "partly"


def compare_with_post(effects: pd.DataFrame, observations: dict[str, dict]) -> pd.DataFrame:
    """Per setup of ``effects`` that the post's table covers and per question: the post's level
    and quote next to ours (in the eval context the post names, default otherwise).

    ``effects``: ``summary_effects_contexts``' table, restricted to the cells the verdict is about
    (the main grid: sweep cells answer the dose-response, not the table). For Q2 every trait's
    comparison counts (:data:`ALL_TRAIT_QUESTIONS`: the post's column is about recovering the
    positive trait, optionally the negative one). Columns:
    :data:`COMPARISON_COLUMNS`.
    """
    rows = []
    for setup in dict.fromkeys(effects["setup"].astype(str)):
        post = observations.get(setup)
        if post is None:
            continue
        for q, p in post.items():
            g = effects[(effects["setup"].astype(str) == setup) & (effects["question"] == q)
                        & (effects["eval_context"].astype(str) == p["eval_context"])]
            if q in ALL_TRAIT_QUESTIONS:
                g = g[g["trait"].astype(str) != ""].assign(focus=True)
            level, d = toy_level(g, q)
            rows.append({"setup": setup, "question": q, "eval_context": p["eval_context"],
                         "post_row": p["post_row"], "post_level": p["level"], "post_quote": p["quote"],
                         "toy_level": level, **d, "agreement": agreement(p["level"], level)})
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def comparison_lines(table: pd.DataFrame) -> list[str]:
    """One line of text per row of :func:`compare_with_post`, for results/checks.tsv."""
    qnum = {q: i for i, q in enumerate(QUESTIONS, 1)}
    out = []
    for r in table.itertuples(index=False):
        eff = ("" if math.isnan(r.effect) else
               f"; strongest {r.strongest}: {r.effect:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}]")
        out.append(f"{r.setup} Q{qnum.get(r.question, '?')} ({r.question}, {r.eval_context} eval context): "
                   f"toy {r.toy_level} ({r.n_yes} of {r.n_comparisons} comparisons{eff}) | post {r.post_level} "
                   f"(\"{r.post_quote}\", row {r.post_row}) -> {r.agreement}")
    return out


__all__ = ["OBSERVATIONS_PATH", "STRONG_EFFECT", "load_post_observations", "toy_level",
           "agreement", "compare_with_post", "comparison_lines", "LABEL_FEW", "LABEL_NO_SCORES",
           "LABEL_NOT_IN_GRID"]
