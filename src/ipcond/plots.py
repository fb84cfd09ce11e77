"""Figures from the aggregate table of :mod:`ipcond.stats` (plotnine).

The main figure is the trait scatter of the paper: for one setup, each condition is a point
with x = rate of the positive (desired) trait and y = rate of the negative (undesired) trait,
with the confidence intervals as 2-D error bars, one panel per evaluation context. The ideal
corner is bottom right: the desired trait learned, the undesired one not expressed.

A setup's further pages (:func:`setup_figures`): the conditionalization gap (train-prompt
context minus default context), base-model elicitation against suppression after training,
and, where the grid has them, trait rates against the number of rephrasings, the dataset size
and the learning rate. The report adds :func:`title_page` and :func:`summary_page` (the post's
four questions answered from :func:`ipcond.stats.summary_effects`), and
:func:`learning_curve_plot` draws the per-checkpoint curves.

Files are written atomically (temporary file in the target directory, then ``os.replace``), so
an interrupted workflow job never leaves a truncated PDF that looks complete.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from pathlib import Path
from typing import Sequence

import pandas as pd
from matplotlib import patheffects
from plotnine import (aes, annotate, coord_cartesian, element_blank, element_rect, element_text,
                      facet_grid, facet_wrap, geom_errorbar, geom_errorbarh, geom_hline,
                      geom_line, geom_point, geom_ribbon, geom_segment, geom_text, geom_vline,
                      ggplot, guides, guide_legend, labs, position_dodge,
                      scale_color_manual, scale_fill_manual, scale_shape_manual,
                      scale_x_continuous, scale_x_log10, scale_y_continuous, scale_y_discrete,
                      theme, theme_bw, theme_void)

from .provenance import atomic_path

# Fixed mappings so a kind has the same colour and marker in every setup (Okabe-Ito palette,
# which stays distinguishable for common colour-vision deficiencies; shapes double-encode).
KIND_ORDER = ("baseline", "none", "empty", "neutral", "inoculation", "rephrased", "irrelevant",
              "control")
KIND_COLORS = {
    "baseline": "#000000",
    "none": "#8c8c8c",
    "empty": "#56B4E9",
    "neutral": "#009E73",
    "inoculation": "#D55E00",
    "rephrased": "#E69F00",
    "irrelevant": "#CC79A7",
    "control": "#0072B2",
}
KIND_SHAPES = {
    "baseline": "s",
    "none": "o",
    "empty": "^",
    "neutral": "v",
    "inoculation": "D",
    "rephrased": "P",
    "irrelevant": "X",
    "control": "h",
}
_FALLBACK_COLORS = ("#7f3b08", "#542788", "#b35806", "#1b7837", "#2166ac", "#b2182b")
_FALLBACK_SHAPE = "*"

CONTEXT_ORDER = ("default", "none", "train")
INTERVAL_DESCRIPTIONS = {
    "t95_seeds": "95% Student-t interval across seed means",
    "bootstrap95_samples": "95% percentile bootstrap over samples (seeds pooled)",
    "wilson95_samples": "95% Wilson interval of the rate over samples (seeds pooled)",
    "none: fewer than 2 samples": "no interval where fewer than 2 samples",
    "none: no spread": "no interval where the samples have no spread",
}

AXIS_LIMITS = (-0.05, 1.05)
FIGURE_SIZE = (11.0, 4.5)  # inches, for three panels
LABEL_SIZE = 7.0  # points

# Rough geometry used to place labels without a text-repel package: data units per inch of one
# panel at FIGURE_SIZE with three panels and a bottom legend (measured on rendered figures;
# only needs to be approximately right).
_X_UNITS_PER_INCH = (AXIS_LIMITS[1] - AXIS_LIMITS[0]) / 3.1
_Y_UNITS_PER_INCH = (AXIS_LIMITS[1] - AXIS_LIMITS[0]) / 2.5


def trait_label(trait: str) -> str:
    """Human-readable trait name: ``"french"`` -> ``"French"``."""
    return trait.replace("_", " ").strip().capitalize()


def _kind_styles(kinds: Sequence[str]) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Breaks (canonical order, present kinds only), colours and shapes, incl. unknown kinds."""
    present = set(kinds)
    breaks = [k for k in KIND_ORDER if k in present]
    extra = sorted(present - set(KIND_ORDER))
    colors, shapes = dict(KIND_COLORS), dict(KIND_SHAPES)
    for i, k in enumerate(extra):
        colors[k] = _FALLBACK_COLORS[i % len(_FALLBACK_COLORS)]
        shapes[k] = _FALLBACK_SHAPE
    return breaks + extra, colors, shapes


# --------------------------------------------------------------------------------------------
# Label placement: a small greedy "repel" in data coordinates
# --------------------------------------------------------------------------------------------

def _text_box(x: float, y: float, w: float, h: float, ha: str, va: str) -> tuple[float, ...]:
    x0 = {"left": x, "right": x - w, "center": x - w / 2}[ha]
    y0 = {"bottom": y, "top": y - h, "center": y - h / 2}[va]
    return (x0, y0, x0 + w, y0 + h)


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    dx = min(a[2], b[2]) - max(a[0], b[0])
    dy = min(a[3], b[3]) - max(a[1], b[1])
    return dx * dy if dx > 0 and dy > 0 else 0.0


def _outside(box: tuple[float, ...], xlim: tuple[float, float],
             ylim: tuple[float, float]) -> float:
    """Area of ``box`` that lies outside the panel ``xlim`` x ``ylim``."""
    inside = _overlap(box, (xlim[0], ylim[0], xlim[1], ylim[1]))
    return (box[2] - box[0]) * (box[3] - box[1]) - inside


def place_labels(points: pd.DataFrame, label_col: str = "condition",
                 obstacles: Sequence[tuple[float, float, float, float]] = (),
                 fontsize: float = LABEL_SIZE,
                 xlim: tuple[float, float] = AXIS_LIMITS, ylim: tuple[float, float] = AXIS_LIMITS,
                 panel_inches: tuple[float, float] = (3.1, 2.5)) -> pd.DataFrame:
    """Choose a position for each point's label so labels overlap little.

    ``points`` needs ``x``, ``y`` and ``label_col``; returns a copy with ``label_x``,
    ``label_y``, ``ha``, ``va``, and ``leader`` (True for a far label, which should get a line
    from the point to ``leader_x``, ``leader_y`` on its box). Greedy: labels are placed one by
    one (left to right), each at the candidate offset (right, left, above, below, diagonals,
    then twice as far, then stacked beside the point and farther diagonals) whose box overlaps
    least with the labels already placed, all markers, ``obstacles`` (boxes
    x0, y0, x1, y1) and the area outside the axes (``xlim`` x ``ylim``, drawn as a panel of
    ``panel_inches``; the defaults are the trait scatter's).
    """
    out = points.copy()
    if out.empty:
        for c, v in (("label_x", 0.0), ("label_y", 0.0), ("ha", ""), ("va", ""),
                     ("leader", False), ("leader_x", 0.0), ("leader_y", 0.0)):
            out[c] = pd.Series(dtype=type(v))
        return out
    x_per_in = (xlim[1] - xlim[0]) / panel_inches[0]
    y_per_in = (ylim[1] - ylim[0]) / panel_inches[1]
    char_w = 0.58 * fontsize / 72 * x_per_in
    line_h = 1.25 * fontsize / 72 * y_per_in
    mx, my = 0.022 / _X_UNITS_PER_INCH * x_per_in, 0.022 / _Y_UNITS_PER_INCH * y_per_in
    dx = 0.025 / _X_UNITS_PER_INCH * x_per_in
    dy = 0.03 / _Y_UNITS_PER_INCH * y_per_in
    candidates = []  # (offset x, offset y, ha, va); preference order
    for scale in (1.0, 2.2):
        candidates += [(dx * scale, 0.0, "left", "center"), (-dx * scale, 0.0, "right", "center"),
                       (0.0, dy * scale, "center", "bottom"), (0.0, -dy * scale, "center", "top"),
                       (dx * scale, dy * scale, "left", "bottom"),
                       (dx * scale, -dy * scale, "left", "top"),
                       (-dx * scale, dy * scale, "right", "bottom"),
                       (-dx * scale, -dy * scale, "right", "top")]
    # Farther out (drawn with a leader line): beside the point, shifted by whole text lines,
    # so that labels of a tight cluster stack up beside it.
    for k in range(1, 7):
        for sign in (1, -1):
            candidates += [(dx * 2.2, sign * k * line_h, "left", "center"),
                           (-dx * 2.2, sign * k * line_h, "right", "center")]
    for scale in (3.6, 5.5):
        candidates += [(dx * scale, dy * scale, "left", "bottom"),
                       (dx * scale, -dy * scale, "left", "top"),
                       (-dx * scale, dy * scale, "right", "bottom"),
                       (-dx * scale, -dy * scale, "right", "top")]

    blocked = [(px - mx, py - my, px + mx, py + my)
               for px, py in zip(out["x"], out["y"])] + list(obstacles)
    placed: list[tuple[float, ...]] = []
    results: dict[object, tuple] = {}
    box_area = char_w * line_h  # one character: overlaps smaller than this hardly show
    for idx in out.sort_values(["x", "y"], kind="stable").index:
        px, py = float(out.at[idx, "x"]), float(out.at[idx, "y"])
        w = char_w * max(1, len(str(out.at[idx, label_col])))
        best, best_cost = None, math.inf
        for rank, (ox, oy, ha, va) in enumerate(candidates):
            box = _text_box(px + ox, py + oy, w, line_h, ha, va)
            cost = (sum(_overlap(box, b) for b in placed) * 4.0
                    + sum(_overlap(box, b) for b in blocked)
                    + _outside(box, xlim, ylim) * 10.0
                    + rank * 0.02 * box_area)  # prefer near positions unless they overlap
            if cost < best_cost:
                best, best_cost = (px + ox, py + oy, ha, va, box, rank >= 8), cost
        assert best is not None
        placed.append(best[4])
        results[idx] = best[:4] + (best[5], *_nearest_on_box(px, py, best[4]))
    out["label_x"] = [results[i][0] for i in out.index]
    out["label_y"] = [results[i][1] for i in out.index]
    out["ha"] = [results[i][2] for i in out.index]
    out["va"] = [results[i][3] for i in out.index]
    out["leader"] = [bool(results[i][4]) for i in out.index]
    out["leader_x"] = [results[i][5] for i in out.index]
    out["leader_y"] = [results[i][6] for i in out.index]
    return out


def _nearest_on_box(x: float, y: float, box: tuple[float, ...]) -> tuple[float, float]:
    """Point of ``box`` (x0, y0, x1, y1) nearest to (x, y): where a leader line ends."""
    return (min(max(x, box[0]), box[2]), min(max(y, box[1]), box[3]))


# --------------------------------------------------------------------------------------------
# Trait scatter
# --------------------------------------------------------------------------------------------

def _trait_rows(agg: pd.DataFrame, setup_name: str, trait: str, role: str) -> pd.DataFrame:
    rows = agg[(agg["setup"] == setup_name) & (agg["trait"] == trait) & (agg["role"] == role)]
    if rows.empty:
        have = agg.loc[agg["setup"] == setup_name, ["trait", "role"]].drop_duplicates()
        raise ValueError(f"no aggregate rows for setup {setup_name!r}, trait {trait!r} with role "
                         f"{role!r}; the setup has {sorted(map(tuple, have.to_numpy()))}")
    keys = ["condition", "condition_kind", "eval_context"]
    if rows.duplicated(keys).any():
        raise ValueError(f"duplicate aggregate rows for setup {setup_name!r}, trait {trait!r}")
    return rows[keys + ["mean", "ci_low", "ci_high", "interval", "n_seeds"]]


REFERENCE_COLOR = "#4d4d4d"


def _leaders(labelled: pd.DataFrame) -> list:
    """Thin lines from points to their far labels (see :func:`place_labels`)."""
    far = labelled[labelled["leader"]]
    if far.empty:
        return []
    return [geom_segment(aes(x="x", y="y", xend="leader_x", yend="leader_y",
                             color="condition_kind"),
                         data=far, inherit_aes=False, size=0.3, alpha=0.6, show_legend=False)]
_REFERENCE_DESC = {"none": "trained without a prompt",
                   "baseline": "trained and evaluated with the same neutral prompt"}


def _reference_condition(df: pd.DataFrame, kinds: Sequence[str] = ("none", "baseline")
                         ) -> str | None:
    """Name of the no-shift reference in ``df`` (needs ``condition``, ``condition_kind``):
    the condition named None, else the first of kind none, else Baseline / the first of kind
    baseline (only the ``kinds`` asked for); None when there is none."""
    pairs = list(dict.fromkeys(zip(df["condition"].astype(str),
                                   df["condition_kind"].astype(str))))
    for kind, name in (("none", "None"), ("baseline", "Baseline")):
        if kind not in kinds:
            continue
        if (name, kind) in pairs:
            return name
        of_kind = sorted(c for c, k in pairs if k == kind)
        if of_kind:
            return of_kind[0]
    return None


def _caption(intervals: pd.Series, n_seeds: pd.Series) -> str:
    parts = []
    for kind in sorted(intervals.dropna().unique()):
        desc = INTERVAL_DESCRIPTIONS.get(kind, kind)
        if kind == "t95_seeds":
            ns = sorted(n_seeds[intervals == kind].unique())
            desc += f" (n seeds = {', '.join(map(str, ns))})"
        parts.append(desc)
    return "Error bars: " + ("; ".join(parts) if parts else "none") + "."


def _dropped_text(agg: pd.DataFrame, setup_name: str, em_rules: dict[str, str] | None) -> str:
    """Caption text: per EM-rule trait, the rule and the answers it dropped as incoherent per
    cell (default eval context), e.g. "EM rule tan: ...; dropped as incoherent: None 3/800"."""
    if not em_rules:
        return ""
    parts = []
    for trait, rule in em_rules.items():
        a = agg[(agg["setup"].astype(str) == setup_name) & (agg["trait"] == trait)
                & (agg["eval_context"] == "default")]
        if "n_dropped" in a.columns and len(a):
            cells = ", ".join(f"{r.condition} {int(r.n_dropped)}/{int(r.n_samples)}"
                              for r in a.itertuples(index=False))
            parts.append(f"{trait_label(trait)}: EM rule {rule}; answers dropped as incoherent per "
                         f"cell (default context): {cells}.")
        else:
            parts.append(f"{trait_label(trait)}: EM rule {rule}.")
    return " ".join(parts)


def trait_scatter(agg: pd.DataFrame, setup_name: str, positive_trait: str, negative_trait: str,
                  title: str | None = None, measures: dict[str, str] | None = None,
                  em_rules: dict[str, str] | None = None) -> ggplot:
    """Scatter of positive-trait rate (x) against negative-trait rate (y) per condition.

    One panel per evaluation context (default, none, train, then any others), one point per
    condition with 2-D error bars from ``ci_low``/``ci_high``, colour and shape by
    ``condition_kind`` (stable across setups), labels with the condition name. Dashed lines
    mark the "no shift" reference in each panel: the None condition's x and y (Baseline when
    the grid has no None), named in the caption. Conditions that lack either trait in a
    context are not drawn. Axes are fixed to [-0.05, 1.05]; intervals
    reaching past them are clipped by the panel. ``measures`` (trait -> how its number is
    computed, ``ipcond.scoring.measure_text``) label the axes; ``em_rules`` (trait -> its EM
    rule) add the rule and the answers dropped as incoherent per cell to the caption.
    """
    x = _trait_rows(agg, setup_name, positive_trait, "positive")
    y = _trait_rows(agg, setup_name, negative_trait, "negative")
    keys = ["condition", "condition_kind", "eval_context"]
    df = x.merge(y, on=keys, suffixes=("_x", "_y"), how="inner")
    df = df.rename(columns={"mean_x": "x", "mean_y": "y", "ci_low_x": "x_low",
                            "ci_high_x": "x_high", "ci_low_y": "y_low", "ci_high_y": "y_high"})
    df = df[df["x"].notna() & df["y"].notna()].reset_index(drop=True)
    if df.empty:
        raise ValueError(f"setup {setup_name!r}: no condition has scores for both "
                         f"{positive_trait!r} and {negative_trait!r} in the same context")

    contexts = [c for c in CONTEXT_ORDER if c in set(df["eval_context"])]
    contexts += sorted(set(df["eval_context"]) - set(CONTEXT_ORDER))
    df["eval_context"] = pd.Categorical(df["eval_context"], categories=contexts, ordered=True)
    breaks, colors, shapes = _kind_styles(df["condition_kind"].astype(str).tolist())
    df["condition_kind"] = pd.Categorical(df["condition_kind"].astype(str), categories=breaks)

    # Subtle "ideal corner" marker; its text is an obstacle for the labels.
    ideal = (0.82, AXIS_LIMITS[0], AXIS_LIMITS[1], 0.18)
    ideal_text_box = (0.86, AXIS_LIMITS[0], AXIS_LIMITS[1], 0.04)
    labelled = pd.concat([place_labels(g, obstacles=[ideal_text_box])
                          for _, g in df.groupby("eval_context", observed=True)])

    # The no-shift reference: the None condition (trained without a prompt), else Baseline.
    ref_name = _reference_condition(df)
    ref = df[df["condition"] == ref_name] if ref_name else df.iloc[:0]
    ref_layers = []
    if not ref.empty:
        ref_layers = [geom_vline(aes(xintercept="x"), data=ref, linetype="dashed",
                                 color=REFERENCE_COLOR, size=0.4, inherit_aes=False),
                      geom_hline(aes(yintercept="y"), data=ref, linetype="dashed",
                                 color=REFERENCE_COLOR, size=0.4, inherit_aes=False)]
    ref_kind = str(ref["condition_kind"].iloc[0]) if not ref.empty else ""
    ref_text = (f"Dashed lines: {ref_name} ({_REFERENCE_DESC.get(ref_kind, 'reference')}) in "
                "each panel." if not ref.empty else "")

    xerr = df[df["x_low"].notna() & df["x_high"].notna()]
    yerr = df[df["y_low"].notna() & df["y_high"].notna()]
    n_panels = len(contexts)
    # Keep the panel size (and so the label geometry) fixed whatever the number of contexts.
    width = max(4.5, FIGURE_SIZE[0] * n_panels / 3)
    pos, neg = trait_label(positive_trait), trait_label(negative_trait)

    plot = (
        ggplot(df, aes("x", "y", color="condition_kind", shape="condition_kind"))
        + annotate("rect", xmin=ideal[0], xmax=ideal[2], ymin=ideal[1], ymax=ideal[3],
                   fill="#2ca02c", alpha=0.08)
        + annotate("text", x=AXIS_LIMITS[1] - 0.015, y=AXIS_LIMITS[0] + 0.012, label="ideal",
                   ha="right", va="bottom", size=6.5, color="#2ca02c", fontstyle="italic")
        + ref_layers
        + geom_errorbarh(aes(y="y", xmin="x_low", xmax="x_high", color="condition_kind"),
                         data=xerr, inherit_aes=False, height=0.025, size=0.4, alpha=0.7)
        + geom_errorbar(aes(x="x", ymin="y_low", ymax="y_high", color="condition_kind"),
                        data=yerr, inherit_aes=False, width=0.025, size=0.4, alpha=0.7)
        + _leaders(labelled)
        + geom_point(size=2.6, fill="white", stroke=0.6)
        + geom_text(aes(x="label_x", y="label_y", label="condition", ha="ha", va="va",
                        color="condition_kind"),
                    data=labelled, inherit_aes=False, size=LABEL_SIZE, show_legend=False,
                    # white halo keeps labels legible where they cross error bars
                    path_effects=[patheffects.withStroke(linewidth=2.2, foreground="white")])
        + facet_wrap("eval_context", nrow=1, labeller=lambda s: f"eval context: {s}")
        + scale_color_manual(values=colors, breaks=breaks, name="condition kind", drop=True)
        + scale_shape_manual(values=shapes, breaks=breaks, name="condition kind", drop=True)
        + scale_x_continuous(breaks=[0, 0.25, 0.5, 0.75, 1], labels=["0", ".25", ".5", ".75", "1"])
        + scale_y_continuous(breaks=[0, 0.25, 0.5, 0.75, 1], labels=["0", ".25", ".5", ".75", "1"])
        + coord_cartesian(xlim=AXIS_LIMITS, ylim=AXIS_LIMITS, expand=False)
        + guides(color=guide_legend(nrow=1), shape=guide_legend(nrow=1))
        + labs(x=_wrap(f"{pos} (positive trait): "
                       f"{(measures or {}).get(positive_trait, 'rate expressed (0-1)')}", width),
               y=_wrap(f"{neg} (negative trait): "
                       f"{(measures or {}).get(negative_trait, 'rate expressed (0-1)')}", 3.2),
               title=title if title is not None else f"{setup_name}: {pos} vs {neg}",
               caption=_wrap(_caption(pd.concat([df["interval_x"], df["interval_y"]]),
                                      pd.concat([df["n_seeds_x"], df["n_seeds_y"]]))
                             + (" " + ref_text if ref_text else "")
                             + (" " + _dropped_text(agg, setup_name, em_rules) if em_rules else ""),
                             width))
        + theme_bw(base_size=9)
        + theme(figure_size=(width, FIGURE_SIZE[1]), legend_position="bottom",
                legend_title=element_text(size=8), legend_text=element_text(size=8),
                plot_title=element_text(size=11), plot_caption=element_text(size=7.5),
                strip_text=element_text(size=8.5), panel_spacing_x=0.02,
                legend_box_spacing=0.02)
    )
    return plot


# --------------------------------------------------------------------------------------------
# Shared helpers of the other figures
# --------------------------------------------------------------------------------------------

AGG_NEEDED = ("setup", "condition", "condition_kind", "eval_context", "trait", "role", "mean",
              "ci_low", "ci_high")
ELICITATION_NEEDED = ("setup", "prompt_label", "trait", "role", "rate")
ROLE_COLORS = {"positive": "#0072B2", "negative": "#D55E00"}
ROLE_SHAPES = {"positive": "o", "negative": "s"}
RATE_BREAKS = [0, 0.25, 0.5, 0.75, 1]
RATE_LABELS = ["0", ".25", ".5", ".75", "1"]
MINUS = "\u2212"


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{what} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}; need {list(columns)}")


def _setup_agg(agg: pd.DataFrame, setup_name: str) -> pd.DataFrame:
    _require(agg, AGG_NEEDED, "aggregate table")
    a = agg[agg["setup"].astype(str) == setup_name].copy()
    if a.empty:
        raise ValueError(f"aggregate table has no rows for setup {setup_name!r}; it has "
                         f"{sorted(agg['setup'].astype(str).unique())}")
    for c in ("condition", "condition_kind", "eval_context", "trait", "role"):
        a[c] = a[c].astype(str)
    for c in ("mean", "ci_low", "ci_high"):
        a[c] = pd.to_numeric(a[c]).astype(float)
    return a


def _role_traits(a: pd.DataFrame) -> list[tuple[str, str]]:
    """(trait, role) pairs of a setup's rows, positive first."""
    pairs = a[["trait", "role"]].drop_duplicates()
    order = {"positive": 0, "negative": 1}
    return sorted(map(tuple, pairs.to_numpy()), key=lambda p: (order.get(p[1], 2), p[0]))


def _trait_role_label(trait: str, role: str) -> str:
    return f"{trait_label(trait)} ({role} trait)"


def _condition_order(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """Condition names ordered by kind (:data:`KIND_ORDER`, unknown kinds last), then name."""
    rank = {k: i for i, k in enumerate(KIND_ORDER)}
    uniq = dict.fromkeys((str(c), str(k)) for c, k in pairs)
    return [c for c, _ in sorted(uniq, key=lambda ck: (rank.get(ck[1], len(rank)), ck[1],
                                                        ck[0]))]


def _group_palette(groups: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Colours for named groups (name, kind): the kind's colour for the first group of each
    kind, then distinct fallback colours, so colours stay tied to kinds where possible."""
    used_kinds: set[str] = set()
    colors, extra = {}, 0
    spare = [c for c in _FALLBACK_COLORS] + ["#999933", "#882255", "#44AA99", "#332288"]
    for name, kind in groups:
        if kind in KIND_COLORS and kind not in used_kinds:
            colors[name] = KIND_COLORS[kind]
            used_kinds.add(kind)
        else:
            colors[name] = spare[extra % len(spare)]
            extra += 1
    return colors


def _base_theme(size: tuple[float, float]) -> theme:
    return (theme_bw(base_size=9)
            + theme(figure_size=size, legend_position="bottom",
                    legend_title=element_text(size=8), legend_text=element_text(size=8),
                    plot_title=element_text(size=11), plot_caption=element_text(size=7.5),
                    strip_text=element_text(size=8.5), legend_box_spacing=0.02))


def _wrap(text: str, figure_width: float, size: float = 7.5) -> str:
    """Wrap a caption so that it fits a figure ``figure_width`` inches wide at ``size`` points
    (DejaVu Sans averages about 0.6 em per character; kept on the safe side)."""
    import textwrap

    chars = max(40, int(figure_width * 72 / (0.62 * size)) - 6)
    return "\n".join("\n".join(textwrap.wrap(part, chars)) for part in text.split("\n"))


# --------------------------------------------------------------------------------------------
# Conditionalization gap
# --------------------------------------------------------------------------------------------

def conditionalization_gap_plot(agg: pd.DataFrame, setup_name: str,
                                title: str | None = None) -> ggplot:
    """Per condition, mean(train context) − mean(default context) for every trait.

    Points with intervals, the setup's traits dodged side by side (colour and shape by trait),
    conditions grouped by kind (one strip per kind, in :data:`KIND_ORDER`), a dashed zero line.
    A positive gap means the trait shows up mainly with the condition's own training prompt:
    it was conditionalized on that prompt. The interval is gap ± sqrt(h_train² + h_default²),
    h being the half-widths of the two contexts' 95% intervals (treats the two contexts as
    independent, which they are not: same model, same instructions; approximate, stated in
    the caption). Conditions without a train-context score are left out and named in the
    caption.
    """
    from .stats import conditionalization_gap

    a = _setup_agg(agg, setup_name)
    gap = conditionalization_gap(a)
    half = a.assign(half=(a["ci_high"] - a["ci_low"]) / 2.0)
    keys = ["condition", "condition_kind", "trait", "role"]
    for ctx in ("train", "default"):
        part = half.loc[half["eval_context"] == ctx, keys + ["half"]]
        gap = gap.merge(part.rename(columns={"half": f"half_{ctx}"}), on=keys, how="left")
    spread = (gap["half_train"] ** 2 + gap["half_default"] ** 2) ** 0.5
    gap["low"] = (gap["gap"] - spread).clip(lower=-1.0)
    gap["high"] = (gap["gap"] + spread).clip(upper=1.0)
    lacking = sorted(set(gap.loc[gap["gap"].isna(), "condition"]))
    df = gap[gap["gap"].notna()].reset_index(drop=True)
    if df.empty:
        raise ValueError(f"setup {setup_name!r}: no condition has both train- and "
                         "default-context scores")

    order = _condition_order(list(zip(df["condition"], df["condition_kind"])))
    df["condition"] = pd.Categorical(df["condition"], categories=order, ordered=True)
    breaks, _, _ = _kind_styles(df["condition_kind"].tolist())
    df["condition_kind"] = pd.Categorical(df["condition_kind"], categories=breaks, ordered=True)
    pairs = _role_traits(df)
    tl = {t: _trait_role_label(t, r) for t, r in pairs}
    df["trait_lab"] = pd.Categorical(df["trait"].map(tl), categories=[tl[t] for t, _ in pairs])
    colors = {tl[t]: ROLE_COLORS.get(r, "#444444") for t, r in pairs}
    shapes = {tl[t]: ROLE_SHAPES.get(r, "D") for t, r in pairs}
    dodge = position_dodge(width=0.55)
    ci = df[df["low"].notna() & df["high"].notna()]

    caption = ("Gap > 0: the trait is expressed more with the condition's own training prompt "
               "than with the setup's default eval prompt (conditionalized on the training "
               "prompt). For Baseline both contexts hold the same prompt.\n"
               "Intervals: gap \u00b1 sqrt(h_train\u00b2 + h_default\u00b2) from the two "
               "contexts' 95% half-widths (approximate: treats the contexts as independent).")
    if lacking:
        caption += f" Not shown (no train-context scores): {', '.join(lacking)}."
    width = min(16.0, max(7.0, 1.5 + 0.95 * len(order)))
    caption = _wrap(caption, width)
    return (
        ggplot(df, aes("condition", "gap", color="trait_lab", shape="trait_lab"))
        + geom_hline(yintercept=0, linetype="dashed", color=REFERENCE_COLOR, size=0.4)
        + geom_errorbar(aes(ymin="low", ymax="high"), data=ci, width=0.25, size=0.45,
                        position=dodge)
        + geom_point(size=2.4, fill="white", stroke=0.6, position=dodge)
        + facet_grid(cols="condition_kind", scales="free_x", space="free_x")
        + scale_color_manual(values=colors, name="trait")
        + scale_shape_manual(values=shapes, name="trait")
        + scale_y_continuous(breaks=[-1, -0.5, 0, 0.5, 1],
                             labels=[f"{MINUS}1", f"{MINUS}.5", "0", ".5", "1"])
        + coord_cartesian(ylim=(-1.05, 1.05))
        + labs(x="condition (grouped by kind)",
               y=f"gap: train-context rate {MINUS} default-context\nrate (difference in rate)",
               title=title if title is not None else
               f"{setup_name}: conditionalization gap (train prompt vs default eval prompt)",
               caption=caption)
        + _base_theme((width, 5.0))
        + theme(axis_text_x=element_text(rotation=30, ha="right", size=7.5),
                panel_spacing_x=0.012, strip_text_x=element_text(size=7.5))
    )


# --------------------------------------------------------------------------------------------
# Rephrasing sweep
# --------------------------------------------------------------------------------------------

def _rephrasing_points(conditions: pd.DataFrame, setup_name: str) -> pd.DataFrame:
    """(target, inoculation, condition, n) of a setup's rephrasing sweep; empty if none.

    Only rephrased conditions trained like their inoculation condition (same ``n_train`` and
    ``learning_rate``, where the table has them) are on its curve: a dataset-size or
    learning-rate sweep's rephrased cells are on their own sweep's curve, not this one."""
    from .stats import validate_conditions

    c = validate_conditions(conditions)
    c = c[c["setup"] == setup_name]
    same = [k for k in ("n_train", "learning_rate") if k in c]
    rows = []
    for inoc in c[c["kind"] == "inoculation"].itertuples(index=False):
        reph = c[(c["kind"] == "rephrased") & (c["of"] == inoc.condition)]
        for k in same:
            reph = reph[reph[k] == getattr(inoc, k)]
        if reph.empty:
            continue
        bad = reph.loc[~(reph["n_rephrasings"] >= 1), "condition"].tolist()
        if bad:
            raise ValueError(f"setup {setup_name!r}: rephrased condition(s) {bad} lack a "
                             "positive n_rephrasings")
        rows.append((inoc.condition, inoc.trait, inoc.condition, 1.0))
        rows += [(inoc.condition, inoc.trait, r.condition, float(r.n_rephrasings))
                 for r in reph.itertuples(index=False)]
    return pd.DataFrame(rows, columns=["inoculation", "inoculated_trait", "condition", "n"])


def rephrasing_sweep_plot(agg: pd.DataFrame, conditions: pd.DataFrame, setup_name: str,
                          contexts: Sequence[str] = ("default", "none"),
                          title: str | None = None) -> ggplot | None:
    """Trait rate against the number of distinct rephrasings of an inoculation prompt (log x).

    One column per inoculation condition that has at least one rephrased version (the fixed
    prompt is drawn at n = 1), one row per eval context in ``contexts`` (present ones), one
    line per trait with a ribbon for its 95% interval, and a dashed line per trait at the None
    condition's rate (the no-prompt training reference). Returns None when the setup has no
    rephrased condition.
    """
    pts = _rephrasing_points(conditions, setup_name)
    if pts.empty:
        return None
    a = _setup_agg(agg, setup_name)
    pairs = _role_traits(a)
    a = a[a["eval_context"].isin(contexts)]
    df = pts.merge(a, on="condition", how="inner")
    if df.empty:
        raise ValueError(f"setup {setup_name!r}: no aggregate rows for the rephrasing sweep's "
                         f"conditions {sorted(set(pts['condition']))} in contexts "
                         f"{list(contexts)}")
    tl = {t: _trait_role_label(t, r) for t, r in pairs}
    colors = {tl[t]: ROLE_COLORS.get(r, "#444444") for t, r in pairs}
    shapes = {tl[t]: ROLE_SHAPES.get(r, "D") for t, r in pairs}
    trait_levels = [tl[t] for t, _ in pairs]

    def target(row: pd.Series) -> str:
        inoc = row["inoculated_trait"]
        return (f"inoculating {trait_label(inoc)} ({row['inoculation']})" if inoc
                else f"inoculation {row['inoculation']}")

    df["target"] = df.apply(target, axis=1)
    targets = list(dict.fromkeys(df["target"]))
    ctxs = [c for c in contexts if c in set(df["eval_context"])]
    ctx_lab = {c: f"eval context: {c}" for c in ctxs}

    def finish(d: pd.DataFrame) -> pd.DataFrame:
        d = d.copy()
        d["trait_lab"] = pd.Categorical(d["trait"].map(tl), categories=trait_levels)
        d["target"] = pd.Categorical(d["target"], categories=targets)
        d["ctx"] = pd.Categorical(d["eval_context"].map(ctx_lab),
                                  categories=[ctx_lab[c] for c in ctxs])
        return d

    df = finish(df.sort_values("n", kind="stable"))
    ref_name = _reference_condition(a, kinds=("none",))
    ref = a[a["condition"] == ref_name] if ref_name else a.iloc[:0]
    ref = finish(ref.merge(df[["target", "eval_context"]].drop_duplicates(), on="eval_context"))
    ns = sorted(set(df["n"]))
    ribbon = df[df["ci_low"].notna() & df["ci_high"].notna()]
    caption = ("n = 1 is the fixed inoculation prompt; n > 1 its rephrased versions (each "
               "training example gets one of n paraphrases). Ribbons: 95% intervals.")
    if not ref.empty:
        caption += f" Dashed lines: the {ref_name} condition (trained without a prompt)."
    size = (max(6.5, 1.5 + 4.0 * len(targets)), 1.9 + 2.3 * len(ctxs))
    caption = _wrap(caption, size[0])
    plot = (
        ggplot(df, aes("n", "mean", color="trait_lab", fill="trait_lab", shape="trait_lab",
                       group="trait_lab"))
        + geom_ribbon(aes(ymin="ci_low", ymax="ci_high"), data=ribbon, alpha=0.15,
                      color="none")
        + geom_line(size=0.7)
        + geom_point(size=2.2, stroke=0.5)
        + facet_grid(rows="ctx", cols="target")
        + scale_x_log10(breaks=ns, labels=[f"{n:g}" for n in ns])
        + scale_y_continuous(breaks=RATE_BREAKS, labels=RATE_LABELS)
        + coord_cartesian(ylim=AXIS_LIMITS)
        + scale_color_manual(values=colors, name="trait")
        + scale_fill_manual(values=colors, name="trait")
        + scale_shape_manual(values=shapes, name="trait")
        + labs(x="number of distinct rephrasings (log scale; 1 = fixed inoculation prompt)",
               y="rate expressed (0-1)",
               title=title if title is not None else
               f"{setup_name}: trait rates against the number of rephrasings",
               caption=caption)
        + _base_theme(size)
    )
    if not ref.empty:
        plot += geom_hline(aes(yintercept="mean", color="trait_lab"), data=ref,
                           linetype="dashed", size=0.45, show_legend=False)
    return plot


# --------------------------------------------------------------------------------------------
# Elicitation strength against suppression
# --------------------------------------------------------------------------------------------

def elicitation_suppression_plot(elicitation: pd.DataFrame, agg: pd.DataFrame,
                                 setup_name: str, title: str | None = None) -> ggplot:
    """Base-model elicitation of each condition's prompt against the trait's reduction.

    One point per (condition, trait): x = rate at which the untrained model expresses the
    trait with the condition's training prompt (``elicitation.csv``, ``prompt_label`` = the
    condition), y = mean(None) − mean(condition), both in the default eval context (Baseline
    is the reference when the grid has no None). One panel per trait; colour and shape by
    kind; Pearson r and n in each panel ("r undefined" for n < 3 or no variance). The
    reference itself and control conditions (other training data) are left out.
    """
    from .stats import pearson_r

    _require(elicitation, ELICITATION_NEEDED, "elicitation table")
    a = _setup_agg(agg, setup_name)
    pairs = _role_traits(a)
    d = a[a["eval_context"] == "default"]
    ref_name = _reference_condition(d)
    if ref_name is None:
        raise ValueError(f"setup {setup_name!r}: no None or Baseline condition in the default "
                         "eval context to measure suppression against")
    ref = d.loc[d["condition"] == ref_name, ["trait", "mean"]].rename(columns={"mean": "ref"})
    d = d[(d["condition"] != ref_name) & (d["condition_kind"] != "control")]
    d = d.merge(ref, on="trait", how="inner")
    d["reduction"] = d["ref"] - d["mean"]
    e = elicitation[elicitation["setup"].astype(str) == setup_name]
    e = e.assign(condition=e["prompt_label"].astype(str), trait=e["trait"].astype(str),
                 rate=pd.to_numeric(e["rate"]).astype(float))[["condition", "trait", "rate"]]
    df = d.merge(e, on=["condition", "trait"], how="inner")
    df = df[df["rate"].notna() & df["reduction"].notna()].reset_index(drop=True)
    if df.empty:
        raise ValueError(f"setup {setup_name!r}: no condition has both an elicitation rate and "
                         "a default-context score")
    tl = {t: _trait_role_label(t, r) for t, r in pairs}
    levels = [tl[t] for t, _ in pairs if t in set(df["trait"])]
    df["panel"] = pd.Categorical(df["trait"].map(tl), categories=levels)
    breaks, colors, shapes = _kind_styles(df["condition_kind"].tolist())
    df["condition_kind"] = pd.Categorical(df["condition_kind"], categories=breaks)
    df = df.rename(columns={"rate": "x", "reduction": "y"})

    xlim, ylim = AXIS_LIMITS, (-1.05, 1.05)
    panel_in = (4.3, 3.3)
    stats_box = (xlim[0], 0.78, 0.55, ylim[1])  # where the r annotation sits (top left)
    notes = []
    for lev in levels:
        g = df[df["panel"] == lev]
        r = pearson_r(g["x"], g["y"])
        why = "" if not math.isnan(r) else (" (n < 3)" if len(g) < 3 else " (no variance)")
        notes.append({"panel": lev, "label": (f"Pearson r = {r:.2f}, n = {len(g)}"
                                              .replace("-", MINUS)
                                              if not math.isnan(r)
                                              else f"r undefined{why}, n = {len(g)}")})
    notes_df = pd.DataFrame(notes)
    notes_df["panel"] = pd.Categorical(notes_df["panel"], categories=levels)
    labelled = pd.concat([place_labels(g, obstacles=[stats_box], xlim=xlim, ylim=ylim,
                                       panel_inches=panel_in)
                          for _, g in df.groupby("panel", observed=True)])
    return (
        ggplot(df, aes("x", "y", color="condition_kind", shape="condition_kind"))
        + geom_hline(yintercept=0, linetype="dashed", color=REFERENCE_COLOR, size=0.4)
        + _leaders(labelled)
        + geom_point(size=2.6, fill="white", stroke=0.6)
        + geom_text(aes(x="label_x", y="label_y", label="condition", ha="ha", va="va",
                        color="condition_kind"),
                    data=labelled, inherit_aes=False, size=LABEL_SIZE, show_legend=False,
                    path_effects=[patheffects.withStroke(linewidth=2.2, foreground="white")])
        + geom_text(aes(label="label"), data=notes_df, x=xlim[0] + 0.02, y=ylim[1] - 0.03,
                    ha="left", va="top", size=8, color="#222222", inherit_aes=False)
        + facet_wrap("panel", nrow=1)
        + scale_color_manual(values=colors, breaks=breaks, name="condition kind", drop=True)
        + scale_shape_manual(values=shapes, breaks=breaks, name="condition kind", drop=True)
        + scale_x_continuous(breaks=RATE_BREAKS, labels=RATE_LABELS)
        + scale_y_continuous(breaks=[-1, -0.5, 0, 0.5, 1],
                             labels=[f"{MINUS}1", f"{MINUS}.5", "0", ".5", "1"])
        + coord_cartesian(xlim=xlim, ylim=ylim, expand=False)
        + guides(color=guide_legend(nrow=1), shape=guide_legend(nrow=1))
        + labs(x="base-model elicitation: rate expressed with the condition's prompt, "
                 "before training (0-1)",
               y=f"suppression after training: {ref_name} {MINUS} condition,\n"
                 "default eval context (difference in rate)",
               title=title if title is not None else
               f"{setup_name}: elicitation strength before training vs suppression after",
               caption=_wrap(f"One point per (condition, trait). y > 0: the condition expresses "
                             f"the trait less than {ref_name} after training. Rephrased "
                             "conditions: elicitation with the paraphrase listed in "
                             f"elicitation.csv. Left out: {ref_name} (the reference) and "
                             "control conditions (other training data).",
                             2 * panel_in[0] + 1.6))
        + _base_theme((2 * panel_in[0] + 1.6, panel_in[1] + 1.9))
        + theme(panel_spacing_x=0.04)
    )


# --------------------------------------------------------------------------------------------
# Dataset-size and learning-rate sweeps
# --------------------------------------------------------------------------------------------

SWEEP_PARAMETERS = {"n_train": "number of training examples (log scale)",
                    "learning_rate": "learning rate (log scale)"}


def sweep_families(conditions: pd.DataFrame, setup_name: str, parameter: str) -> pd.DataFrame:
    """Conditions of a setup that differ only in ``parameter``, grouped into families.

    A family is the set of conditions with the same kind, inoculated trait, ``of``,
    ``n_rephrasings``, value of the other sweep parameter and (when the table has it)
    ``prompt``. Returns the conditions of families with at least two distinct values of
    ``parameter``, with columns ``condition``, ``kind``, ``family`` (the family's shortest
    condition name) and ``value``; empty when the setup has no such sweep.
    """
    from .stats import validate_conditions

    if parameter not in SWEEP_PARAMETERS:
        raise ValueError(f"parameter must be one of {sorted(SWEEP_PARAMETERS)}, got "
                         f"{parameter!r}")
    c = validate_conditions(conditions)
    c = c[c["setup"] == setup_name].copy()
    other = next(p for p in SWEEP_PARAMETERS if p != parameter)
    keys = ["kind", "trait", "of", "n_rephrasings", other] + (["prompt"] if "prompt" in c
                                                              else [])
    c["n_rephrasings"] = c["n_rephrasings"].fillna(-1.0)
    rows = []
    for _, g in c.groupby(keys, sort=False, dropna=False):
        if g[parameter].nunique() < 2:
            continue
        family = min(g["condition"], key=lambda n: (len(n), n))
        rows += [(r.condition, r.kind, family, float(getattr(r, parameter)))
                 for r in g.itertuples(index=False)]
    return pd.DataFrame(rows, columns=["condition", "kind", "family", "value"])


def sweep_plot(agg: pd.DataFrame, conditions: pd.DataFrame, setup_name: str, parameter: str,
               eval_context: str = "default", title: str | None = None) -> ggplot | None:
    """Trait rate against ``parameter`` ("n_train" or "learning_rate"), log x.

    Only conditions that differ in nothing but ``parameter`` are compared (see
    :func:`sweep_families`); one line per family (colour), ribbons for the 95% intervals, one
    panel per trait, in ``eval_context``. Where a family has several conditions at one value,
    the line goes through their mean. Returns None when the setup's grid has no such sweep.
    """
    fam = sweep_families(conditions, setup_name, parameter)
    if fam.empty:
        return None
    a = _setup_agg(agg, setup_name)
    pairs = _role_traits(a)
    a = a[a["eval_context"] == eval_context]
    df = fam.merge(a, on="condition", how="inner")
    if df.empty:
        raise ValueError(f"setup {setup_name!r}: no {eval_context}-context aggregate rows for "
                         f"the {parameter} sweep's conditions {sorted(set(fam['condition']))}")
    tl = {t: _trait_role_label(t, r) for t, r in pairs}
    df["panel"] = pd.Categorical(df["trait"].map(tl), categories=[tl[t] for t, _ in pairs])
    fam_kinds = list(dict.fromkeys(zip(fam["family"], fam["kind"])))
    rank = {k: i for i, k in enumerate(KIND_ORDER)}
    fam_kinds.sort(key=lambda fk: (rank.get(fk[1], len(rank)), fk[0]))
    colors = _group_palette(fam_kinds)
    levels = [f for f, _ in fam_kinds]
    df["family"] = pd.Categorical(df["family"], categories=levels)
    df = df.sort_values("value", kind="stable")
    line = (df.groupby(["family", "panel", "value"], observed=True)["mean"].mean()
            .reset_index())
    ribbon = df[df["ci_low"].notna() & df["ci_high"].notna()]
    values = sorted(set(df["value"]))
    fmt = (lambda v: f"{v:g}") if parameter == "n_train" else (lambda v: f"{v:.1e}")
    return (
        ggplot(df, aes("value", "mean", color="family", fill="family", group="family"))
        + geom_ribbon(aes(ymin="ci_low", ymax="ci_high"), data=ribbon, alpha=0.12,
                      color="none")
        + geom_line(data=line, size=0.7)
        + geom_point(size=2.0)
        + facet_wrap("panel", nrow=1)
        + scale_x_log10(breaks=values, labels=[fmt(v) for v in values])
        + scale_y_continuous(breaks=RATE_BREAKS, labels=RATE_LABELS)
        + coord_cartesian(ylim=AXIS_LIMITS)
        + scale_color_manual(values=colors, name="condition (family)")
        + scale_fill_manual(values=colors, name="condition (family)")
        + labs(x=SWEEP_PARAMETERS[parameter], y="rate expressed (0-1)",
               title=title if title is not None else
               f"{setup_name}: trait rates against {parameter.replace('_', ' ')}",
               caption=_wrap(f"Conditions that differ only in {parameter}; {eval_context} "
                             "eval context; ribbons: 95% intervals.", 10.0))
        + _base_theme((10.0, 4.6))
        + theme(axis_text_x=element_text(rotation=30, ha="right"))
    )


# --------------------------------------------------------------------------------------------
# Learning curves
# --------------------------------------------------------------------------------------------

CURVE_MEASURES = {"rate": "sampled rate (0-1)",
                  "logodds": "teacher-forced log-odds\n(trait vs clean answer)",
                  "first_token_prob": "first trait token\nprobability (0-1)"}


def learning_curve_plot(curves: pd.DataFrame, setup_name: str, trait: str, role: str,
                        title: str | None = None) -> ggplot:
    """Trait measures against training step, one line per condition.

    ``curves`` is the learning-curve aggregate (the aggregate columns plus ``step`` and
    ``measure``). Rows: measures (rate, teacher-forced log-odds, first-token probability, in
    that order, then others); columns: eval contexts; bars: 95% intervals; colour by
    condition (a kind's colour for its first condition).
    """
    _require(curves, AGG_NEEDED + ("step", "measure"), "learning-curve table")
    c = _setup_agg(curves, setup_name)
    c = c[(c["trait"] == trait) & (c["role"] == role)].copy()
    if c.empty:
        raise ValueError(f"learning-curve table has no rows for setup {setup_name!r}, trait "
                         f"{trait!r} with role {role!r}")
    c["step"] = pd.to_numeric(c["step"]).astype(float)
    c["measure"] = c["measure"].astype(str)
    measures = [m for m in CURVE_MEASURES if m in set(c["measure"])]
    measures += sorted(set(c["measure"]) - set(measures))
    c["measure_lab"] = pd.Categorical(c["measure"].map(lambda m: CURVE_MEASURES.get(m, m)),
                                      categories=[CURVE_MEASURES.get(m, m) for m in measures])
    ctxs = [x for x in CONTEXT_ORDER if x in set(c["eval_context"])]
    ctxs += sorted(set(c["eval_context"]) - set(ctxs))
    c["ctx"] = pd.Categorical(c["eval_context"].map(lambda x: f"eval context: {x}"),
                              categories=[f"eval context: {x}" for x in ctxs])
    order = _condition_order(list(zip(c["condition"], c["condition_kind"])))
    kind_of = dict(zip(c["condition"], c["condition_kind"]))
    colors = _group_palette([(n, kind_of[n]) for n in order])
    c["condition"] = pd.Categorical(c["condition"], categories=order)
    c = c.sort_values("step", kind="stable")
    bars = c[c["ci_low"].notna() & c["ci_high"].notna()]
    # Error bars, not ribbons: a curve has a few checkpoints, and plotnine draws a ribbon per
    # (condition, panel) group, which made this page most of a figure job's time.
    width = max(1.0, 0.02 * float(c["step"].max()))
    return (
        ggplot(c, aes("step", "mean", color="condition", fill="condition", group="condition"))
        + geom_errorbar(aes(ymin="ci_low", ymax="ci_high"), data=bars, width=width, size=0.35, alpha=0.6)
        + geom_line(size=0.6)
        + geom_point(size=1.2)
        + facet_grid(rows="measure_lab", cols="ctx", scales="free_y")
        + scale_color_manual(values=colors, name="condition")
        + scale_fill_manual(values=colors, name="condition")
        + guides(color=guide_legend(nrow=2), fill=guide_legend(nrow=2))
        + labs(x="training step (optimizer steps; 0 = base model)", y="trait measure",
               title=title if title is not None else
               f"{setup_name}: learning curves of {_trait_role_label(trait, role)}",
               caption="Bars: 95% intervals.")
        + _base_theme((11.0, 2.0 + 2.0 * len(measures)))
        + theme(strip_text_y=element_text(size=7.5))
    )


# --------------------------------------------------------------------------------------------
# Summary page and title page
# --------------------------------------------------------------------------------------------

QUESTION_SHORT = {
    "irrelevant_suppresses": "Do irrelevant prompts suppress traits?",
    "rephrasing_weakens": "Does rephrasing weaken inoculation? (yes = inoculated trait rises)",
    "inoculation_suppresses_other": "Does inoculation suppress the other trait?",
    "removing_neutral_suppresses": "Does removing the neutral prompt suppress traits?",
}
CONTEXT_WORDS = {"default": "eval prompt", "none": "no prompt", "train": "training prompt"}
LABEL_COLORS = {"suppresses": "#0072B2", "raises": "#D55E00", "no clear effect": "#8c8c8c",
                "too few samples": "#c7a76c"}


def _fmt_effect(e: float, lo: float, hi: float) -> str:
    def f(v: float) -> str:
        return f"{v:+.2f}".replace("-", MINUS)
    if math.isnan(e):
        return ""
    if math.isnan(lo) or math.isnan(hi):
        return f"{f(e)} [no interval]"
    return f"{f(e)} [{f(lo)}, {f(hi)}]"


def summary_page(effects: pd.DataFrame, title: str | None = None,
                 measures: dict[str, str] | None = None) -> ggplot:
    """One page answering the post's four questions for every setup (a forest plot).

    One panel per setup; within it, per question, a bold heading with the question and our
    answer (from :func:`ipcond.stats.aggregate_summary`: yes / partly / no / unclear with the
    number of comparisons whose interval lies in the question's "yes" direction), then one row
    per comparison and trait: point and 95% interval coloured by label, and on the right the
    effect, interval and label as text. "not in grid" rows name what the grid lacks. With an
    ``eval_context`` column, each question is answered per context (headings say "with the eval
    prompt" / "without any prompt"); the heading names the reference (the no-shift condition,
    else None). ``measures`` (trait -> how its number is computed) go into the caption.
    """
    from .stats import QUESTION_YES, QUESTIONS, aggregate_summary

    needed = ("setup", "question", "comparison", "trait", "role", "focus", "effect",
              "ci_low", "ci_high", "label")
    _require(effects, needed, "effects table")
    if effects.empty:
        raise ValueError("effects table is empty")
    if "eval_context" not in effects.columns:
        effects = effects.assign(eval_context="default")
    summ = aggregate_summary(effects).set_index(["setup", "question", "eval_context"])
    setups = list(dict.fromkeys(effects["setup"].astype(str)))
    questions = [q for q in QUESTIONS if q in set(effects["question"])]
    questions += [q for q in dict.fromkeys(effects["question"]) if q not in questions]
    contexts = list(dict.fromkeys(effects["eval_context"].astype(str)))

    rows, heads = [], []
    for s in setups:
        for (qi, q), ctx in ((qq, c) for qq in enumerate(questions, 1) for c in contexts):
            g = effects[(effects["setup"].astype(str) == s) & (effects["question"] == q)
                        & (effects["eval_context"].astype(str) == ctx)]
            if g.empty:
                continue
            sm = summ.loc[(s, q, ctx)]
            if sm["answer"] in ("not in grid", "no scores"):
                ans = sm["answer"]
            else:
                verb = {"suppresses": "suppress", "raises": "raise"}[
                    QUESTION_YES.get(q, "suppresses")]
                ans = f"{sm['answer']}: {sm['n_yes']} of {sm['n_comparisons']} {verb}"
                if sm["n_opposite"]:
                    ans += f", {sm['n_opposite']} opposite"
            key = f"{s}\x1f{q}\x1f{ctx}\x1fhead"
            ref = str(sm.get("reference", "") or "").split(";")[0].split(":")[0].strip()
            ref_txt = f", vs {ref}" if ref and q != "rephrasing_weakens" else ""
            heads.append({"setup": s, "key": key,
                          "text": f"Q{qi} [{CONTEXT_WORDS.get(ctx, ctx)}{ref_txt}] "
                                  f"{QUESTION_SHORT.get(q, q)} \u2192 {ans}"})
            rows.append({"setup": s, "key": key, "ylab": "", "effect": math.nan,
                         "ci_low": math.nan, "ci_high": math.nan, "label": "", "text": ""})
            for i, r in enumerate(g.itertuples(index=False)):
                if r.label in ("not in grid",):
                    # The comparison on the left, the reason on the right (keeps the panel wide).
                    head, _, why = str(r.comparison).partition(" (")
                    ylab, text = head, (f"not in grid: {why.rstrip(')')}" if why else r.label)
                else:
                    extra = "" if bool(r.focus) else " (other trait)"
                    ylab = f"{r.comparison}: {trait_label(str(r.trait))}{extra}"
                    text = (_fmt_effect(r.effect, r.ci_low, r.ci_high) + "  " + r.label).strip()
                rows.append({"setup": s, "key": f"{s}\x1f{q}\x1f{ctx}\x1f{i}", "ylab": ylab,
                             "effect": r.effect, "ci_low": r.ci_low, "ci_high": r.ci_high,
                             "label": r.label, "text": text})
    df = pd.DataFrame(rows)
    keys = list(df["key"])
    ylabs = dict(zip(df["key"], df["ylab"]))
    df["key"] = pd.Categorical(df["key"], categories=keys[::-1])
    df["setup"] = pd.Categorical(df["setup"], categories=setups)
    hd = pd.DataFrame(heads)
    hd["key"] = pd.Categorical(hd["key"], categories=keys[::-1])
    hd["setup"] = pd.Categorical(hd["setup"], categories=setups)
    pts = df[df["effect"].notna()].copy()
    pts["label"] = pd.Categorical(pts["label"], categories=list(LABEL_COLORS))
    bars = pts[pts["ci_low"].notna() & pts["ci_high"].notna()]
    txt = df[df["text"] != ""].copy()
    txt["tcol"] = txt["label"].map(lambda lab: LABEL_COLORS.get(lab, "#555555"))

    ctxs = sorted(set(effects["eval_context"].astype(str))) if "eval_context" in effects \
        else ["default"]
    height = 1.9 + 0.185 * len(df) + 0.3 * len(setups)
    x_text = 1.12
    return (
        ggplot(df, aes(y="key"))
        + annotate("rect", xmin=1.07, xmax=math.inf, ymin=-math.inf, ymax=math.inf,
                   fill="white")
        + geom_vline(xintercept=0, linetype="dashed", color=REFERENCE_COLOR, size=0.4)
        + ([geom_errorbarh(aes(xmin="ci_low", xmax="ci_high", color="label"), data=bars,
                           height=0.35, size=0.5)] if not bars.empty else [])
        + ([geom_point(aes(x="effect", color="label"), data=pts, size=1.8)]
           if not pts.empty else [])
        + ([geom_text(aes(label="text", color="tcol"), data=txt, x=x_text, ha="left",
                      size=6.8)] if not txt.empty else [])
        + geom_text(aes(y="key", label="text"), data=hd, x=-1.08, ha="left", size=7.2,
                    fontweight="bold", color="#222222", inherit_aes=False,
                    path_effects=[patheffects.withStroke(linewidth=3, foreground="white")])
        + facet_grid(rows="setup", scales="free_y", space="free_y")
        + scale_y_discrete(labels=lambda ks: [ylabs.get(k, "") for k in ks],
                           expand=(0, 0.7))
        + scale_x_continuous(breaks=[-1, -0.5, 0, 0.5, 1],
                             labels=[f"{MINUS}1", f"{MINUS}.5", "0", ".5", "1"],
                             expand=(0, 0))
        + scale_color_manual(values={**LABEL_COLORS, **{v: v for v in txt["tcol"]}},
                             breaks=list(LABEL_COLORS), name="interval (95%)", drop=False)
        + coord_cartesian(xlim=(-1.1, 2.05))
        + labs(x=f"effect: difference in the trait measure, condition a {MINUS} condition b "
                 f"(eval contexts: {', '.join(CONTEXT_WORDS.get(c, c) for c in ctxs)})",
               y="",
               title=title if title is not None else
               "Answers to the post's four questions, from this run",
               caption=_wrap("Effect = difference of mean trait measures. Interval: Welch t on "
                             "seed means when both conditions have \u2265 2 seeds with a spread; "
                             "else, seeds pooled, Newcombe's interval for a difference of rates "
                             "or a percentile bootstrap for other scores; none where the data "
                             "cannot give one. suppresses / raises: the 95% interval lies below "
                             "/ above 0; 'too few samples': a side has fewer scored samples "
                             "than checks.min_samples_for_label. Q1 and Q3 compare with the "
                             "no-shift condition (trained with the eval prompt) where the grid "
                             "has one, else None, and only cells trained with the same "
                             "learning rate and n_train. 'yes' counts the question's direction "
                             "(Q2: the inoculated trait rises with rephrasing). Rows marked "
                             "(other trait) are context, not counted."
                             + ("  Measures: " + "; ".join(f"{trait_label(t)}: {m}" for t, m in
                                                            measures.items()) + "."
                                if measures else ""), 11.0))
        + _base_theme((11.0, height))
        + theme(axis_text_y=element_text(size=7), strip_text_y=element_text(size=7.5),
                panel_grid_major_y=element_blank(), panel_grid_minor_x=element_blank(),
                plot_title=element_text(size=12, weight="bold"))
    )


DOSE_PANELS = {"irrelevant_suppresses": "irrelevant \u2212 ref.",
               "rephrasing_weakens": "rephrased \u2212 fixed",
               "inoculation_suppresses_other": "inoc. \u2212 ref.\n(other trait)",
               "removing_neutral_suppresses": "None \u2212 ref."}


def dose_response_plot(dose: pd.DataFrame, setup_name: str, title: str | None = None) -> ggplot:
    """The four questions' effects against the dataset size (the post's Appendix O question).

    ``dose``: rows of ``ipcond.stages.report.dose_response_table`` (the summary's effects with
    ``n_train`` and ``family``). One row of panels per question, one column per eval context; in
    each, the effect of every comparison of the question's focus (condition a − its reference at
    the same ``n_train``; Q2: rephrased − its fixed inoculation) against ``n_train`` (log x), one
    line per family and trait, points with their 95% intervals. Zero is dashed.
    """
    from .stats import QUESTIONS

    _require(dose, ("setup", "question", "eval_context", "family", "trait", "focus", "n_train",
                    "effect", "ci_low", "ci_high"), "dose-response table")
    # Q2: every trait (the post's column: rephrasing recovers "at least some of the positive trait")
    d = dose[(dose["setup"].astype(str) == setup_name)
             & (dose["focus"].astype(bool) | (dose["question"] == "rephrasing_weakens"))
             & dose["effect"].notna()].copy()
    if d.empty:
        raise ValueError(f"setup {setup_name!r}: no dose-response effects with scores")
    qs = [q for q in QUESTIONS if q in set(d["question"])]
    qnames = {q: f"Q{i} {DOSE_PANELS.get(q, q)}" for i, q in enumerate(QUESTIONS, 1)}
    d["panel_q"] = pd.Categorical(d["question"].map(qnames), categories=[qnames[q] for q in qs])
    ctxs = [c for c in CONTEXT_ORDER if c in set(d["eval_context"])]
    d["panel_c"] = pd.Categorical(d["eval_context"].map(lambda c: CONTEXT_WORDS.get(c, c)),
                                  categories=[CONTEXT_WORDS.get(c, c) for c in ctxs])
    d["line"] = d["family"].astype(str) + ": " + d["trait"].astype(str).map(trait_label)
    d = d.sort_values("n_train", kind="stable")
    sizes = sorted(set(d["n_train"]))
    bars = d[d["ci_low"].notna() & d["ci_high"].notna()]
    dodge = position_dodge(width=0.08)
    return (
        ggplot(d, aes("n_train", "effect", color="line", group="line"))
        + geom_hline(yintercept=0, linetype="dashed", color=REFERENCE_COLOR, size=0.4)
        + geom_errorbar(aes(ymin="ci_low", ymax="ci_high"), data=bars, width=0.05, size=0.5,
                        position=dodge)
        + geom_line(size=0.6, position=dodge)
        + geom_point(size=1.8, position=dodge)
        + facet_grid(rows="panel_q", cols="panel_c")
        + scale_x_log10(breaks=sizes, labels=[f"{v:g}" for v in sizes])
        + scale_y_continuous(breaks=[-1, -0.5, 0, 0.5, 1],
                             labels=[f"{MINUS}1", f"{MINUS}.5", "0", ".5", "1"])
        + coord_cartesian(ylim=(-1.05, 1.05))
        + labs(x="training examples (n_train; one epoch)", y=f"effect (condition a {MINUS} reference)",
               color="comparison (family): trait",
               title=(title or setup_name) + "\nthe four questions against dataset size",
               caption=_wrap("Each point: the summary's effect at one n_train, the comparison made "
                             "only between cells trained on the same number of examples (Q1, Q3: "
                             f"{MINUS} the no-shift Baseline; Q2: rephrased {MINUS} fixed inoculation, "
                             f"+ is 'yes'; Q4: None {MINUS} Baseline), with its 95% interval "
                             "(Welch t on seed means with >= 2 seeds, else Newcombe on samples). "
                             "Q1, Q3, Q4 answer 'yes' below 0. Q1, Q4: every trait; Q2: every "
                             "trait (the post: rephrasing recovers the positive trait); Q3: the "
                             "trait the prompt does not target.", 9.0))
        + _base_theme((10.0, 2.2 + 2.0 * len(qs)))
        + theme(axis_text_x=element_text(rotation=30, ha="right"), legend_position="right",
                plot_caption=element_text(ha="left", size=7.5))
    )


POST_AGREEMENT_COLORS = {"agrees": "#009E73", "partly": "#E69F00", "disagrees": "#D55E00",
                         "post inconclusive": "#8c8c8c", "not measured": "#8c8c8c"}


def post_comparison_page(table: pd.DataFrame) -> ggplot:
    """Our answer next to the post's "Summary of observations" table, per setup and question.

    ``table``: ``ipcond.observations.compare_with_post``. One line per row: the post's level
    and quoted verdict, our level with the strongest comparison's effect and interval, and the
    agreement (coloured).
    """
    from .observations import STRONG_EFFECT
    from .stats import QUESTIONS

    _require(table, ("setup", "question", "eval_context", "post_level", "post_quote", "toy_level",
                     "n_yes", "n_comparisons", "effect", "ci_low", "ci_high", "agreement"),
             "post comparison table")
    qnum = {q: i for i, q in enumerate(QUESTIONS, 1)}
    rows = []
    for i, r in enumerate(table.itertuples(index=False)):
        quote = str(r.post_quote)
        # The post column is 0.245 of 11 in wide: level and quote together stay within ~44 characters.
        room = max(8, 42 - len(str(r.post_level)))
        quote = quote if len(quote) <= room else quote[:room - 1].rstrip() + "…"
        ours = f"{r.toy_level} ({r.n_yes}/{r.n_comparisons})"
        if not (isinstance(r.effect, float) and math.isnan(r.effect)):
            ours += " " + _fmt_effect(float(r.effect), float(r.ci_low), float(r.ci_high))
        rows.append({"y": -i, "q": f"{r.setup}  Q{qnum.get(r.question, '?')} "
                                   f"{DOSE_PANELS.get(r.question, r.question).split(chr(10))[0]} "
                                   f"[{CONTEXT_WORDS.get(r.eval_context, r.eval_context)}]",
                     "post": f"{r.post_level}: \"{quote}\"", "ours": ours, "agreement": r.agreement})
    df = pd.DataFrame(rows)
    head = pd.DataFrame([{"y": 1, "q": "setup, question (a \u2212 b) [eval context]", "post": "post",
                          "ours": "toy (k/n) strongest [95% CI]",
                          "agreement": "agreement"}])
    height = 1.6 + 0.22 * (len(df) + 1)
    return (
        ggplot(df, aes(y="y"))
        + geom_text(aes(label="q"), x=0.0, ha="left", size=6.5)
        + geom_text(aes(label="post"), x=0.40, ha="left", size=6.5)
        + geom_text(aes(label="ours"), x=0.645, ha="left", size=6.5)
        + geom_text(aes(label="agreement", color="agreement"), x=0.89, ha="left", size=6.5,
                    fontweight="bold")
        + geom_text(aes(y="y", label="q"), data=head, x=0.0, ha="left", size=7, fontweight="bold")
        + geom_text(aes(y="y", label="post"), data=head, x=0.40, ha="left", size=7, fontweight="bold")
        + geom_text(aes(y="y", label="ours"), data=head, x=0.645, ha="left", size=7, fontweight="bold")
        + geom_text(aes(y="y", label="agreement"), data=head, x=0.89, ha="left", size=7,
                    fontweight="bold")
        + scale_color_manual(values=POST_AGREEMENT_COLORS, guide=None)
        + scale_x_continuous(limits=(0, 1.0))
        + scale_y_continuous(limits=(-len(df) + 0.5, 1.5))
        + labs(title="Does the toy agree with the post's \"Summary of observations\"?",
               caption=_wrap(f"Post: its table, quoted (resources/post_observations.yaml). Toy: "
                             "'strong' when a comparison of the question has its 95% interval on "
                             f"the question's side of 0 and an effect >= {STRONG_EFFECT:g} in size; "
                             "'moderate' when some have, all smaller; 'no' when none has; (k/n): "
                             "how many of the n comparisons do. Main grid only (cells at the setup's own n_train and "
                             "learning rate), against the no-shift condition (the post's footnote "
                             "6; None where the grid has none: MBPP, the toy CMV). Q2 counts either trait "
                             "rising. 'observed' (post: seen, no strength given) agrees with strong or "
                             "moderate; 'partly': both see it, at different strengths. "
                             "docs/toy_organism.md.", 11.0))
        + theme_void()
        + theme(figure_size=(11.0, height), plot_title=element_text(size=12, weight="bold"),
                plot_caption=element_text(size=7, ha="left"))
    )


_META_LABELS = (("preset", "preset"), ("seeds", "seeds"), ("setups", "setups"),
                ("base_model", "base model"), ("config", "config file"),
                ("config_path", "config file"), ("n_cells", "trained cells"),
                ("code_revision", "code revision"), ("date", "date"), ("versions", "packages"))


def _meta_value(v: object) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {val}" for k, val in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return "" if v is None else str(v)


def title_page(meta: dict) -> ggplot:
    """A title page: the study title and the run's metadata, as given in ``meta``.

    Known keys (any may be absent): ``title``, ``subtitle``, ``preset``, ``seeds``, ``setups``,
    ``base_model``, ``config`` / ``config_path``, ``n_cells``, ``code_revision``, ``date``,
    ``versions`` (dict package -> version); other keys are listed after them. Nothing is
    looked up here.
    """
    import textwrap

    if not isinstance(meta, dict):
        raise ValueError(f"meta must be a dict, got {type(meta).__name__}")
    title = str(meta.get("title") or "Conditionalization confounds inoculation prompting "
                                      "results: reproduction")
    lines: list[tuple[str, str]] = []
    seen = {"title", "subtitle"}
    for key, lab in _META_LABELS:
        if key in meta and key not in seen:
            lines.append((lab, _meta_value(meta[key])))
            seen.add(key)
    lines += [(str(k).replace("_", " "), _meta_value(v)) for k, v in meta.items()
              if k not in seen]
    rows, y = [], 0.0
    for lab, val in lines or [("", "(no metadata given)")]:
        wrapped = textwrap.wrap(val, 95) or [""]
        for j, part in enumerate(wrapped):
            rows.append({"y": y, "key": lab if j == 0 else "", "value": part})
            y -= 1.0
        y -= 0.35
    body = pd.DataFrame(rows)
    n = max(1.0, -y)
    subtitle = str(meta.get("subtitle") or "")
    top = 3.2 if subtitle else 2.2
    return (
        ggplot(body)
        + annotate("text", x=0.0, y=top, label="\n".join(textwrap.wrap(title, 70)),
                   ha="left", va="bottom", size=17, fontweight="bold")
        + (annotate("text", x=0.0, y=1.6, label=subtitle, ha="left", va="bottom", size=10,
                    fontstyle="italic") if subtitle else [])
        + geom_text(aes(y="y", label="key"), x=0.27, ha="right", size=9.5, fontweight="bold",
                    color="#333333")
        + geom_text(aes(y="y", label="value"), x=0.29, ha="left", size=9.5,
                    family="DejaVu Sans Mono")
        + coord_cartesian(xlim=(-0.02, 1.6), ylim=(-n - 0.5, top + 2.2), expand=False)
        + theme_void()
        + theme(figure_size=(11.0, max(3.5, 0.3 * (n + 0.5 + top + 2.2))),
                plot_background=element_rect(fill="white", color="white"))
    )


# --------------------------------------------------------------------------------------------
# A setup's pages
# --------------------------------------------------------------------------------------------

def with_measures(plot: ggplot, measures: dict[str, str] | None, width: float = 10.0) -> ggplot:
    """``plot`` with how each trait's number is computed (``measures``: trait -> words, from
    ``ipcond.scoring.measure_text``) added to its caption, and "rate" in its axis labels read as
    the trait's measure (a mean harassment score or a grade is not a rate)."""
    if not measures:
        return plot
    note = "Trait measures: " + "; ".join(f"{t}: {m}" for t, m in measures.items()) + "."
    old = plot.labels.caption or ""
    new = {"caption": _wrap(f"{old}\n{note}" if old else note, width)}
    for axis in ("x", "y"):
        text = getattr(plot.labels, axis, None)
        if text and "rate" in text:
            new[axis] = (text.replace("rate expressed (0-1)", "trait measure (0-1; see caption)")
                         .replace("difference in rate", "difference in measure"))
    return plot + labs(**new)


def setup_figures(agg: pd.DataFrame, elicitation: pd.DataFrame, conditions: pd.DataFrame,
                  setup_name: str, positive_trait: str, negative_trait: str,
                  title: str | None = None, measures: dict[str, str] | None = None,
                  em_rules: dict[str, str] | None = None,
                  grid_conditions: set[str] | None = None) -> list[ggplot]:
    """A setup's pages, in order: trait scatter, conditionalization gap, elicitation against
    suppression, then the rephrasing, dataset-size and learning-rate sweeps its grid has.
    ``measures`` and ``em_rules``: see :func:`trait_scatter`. ``grid_conditions``: the conditions
    of the main grid (at the setup's own n_train and learning rate); when given, the pages before
    the dataset-size and learning-rate sweeps show only them (the sweeps show every cell)."""
    head = title if title is not None else setup_name
    full = agg
    if grid_conditions is not None:
        agg = agg[~((agg["setup"].astype(str) == setup_name) & ~agg["condition"].isin(grid_conditions))]
        conditions_grid = conditions[~((conditions["setup"].astype(str) == setup_name)
                                       & ~conditions["condition"].isin(grid_conditions))]
    else:
        conditions_grid = conditions
    plots = [trait_scatter(agg, setup_name, positive_trait, negative_trait, title=title,
                           measures=measures, em_rules=em_rules),
             conditionalization_gap_plot(agg, setup_name,
                                         title=f"{head}\nconditionalization gap: train prompt "
                                               "vs default eval prompt"),
             elicitation_suppression_plot(elicitation, agg, setup_name,
                                          title=f"{head}\nelicitation before training vs "
                                                "suppression after")]
    optional = [rephrasing_sweep_plot(agg, conditions_grid, setup_name,
                                      title=f"{head}\ntrait rates against the number of "
                                            "rephrasings"),
                sweep_plot(full, conditions, setup_name, "n_train",
                           title=f"{head}\ntrait rates against dataset size"),
                sweep_plot(full, conditions, setup_name, "learning_rate",
                           title=f"{head}\ntrait rates against learning rate")]
    # Every page after the scatter (which labels its axes itself) says how each number is computed.
    return plots[:1] + [with_measures(p, measures) for p in plots[1:] + [p for p in optional if p is not None]]


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def save_figures(plots: Sequence[ggplot], pdf_path: str | os.PathLike,
                 png_dir: str | os.PathLike | None = None,
                 png_names: Sequence[str] | None = None, dpi: int = 150) -> list[Path]:
    """Write ``plots`` as one multi-page PDF (one plot per page) and optionally one PNG each.

    PNGs go to ``png_dir`` as ``png_names[i]`` or, by default, ``<pdf stem>-<page:02d>.png``.
    Every file is written atomically. Returns the paths written (PDF first).
    """
    plots = list(plots)
    if not plots:
        raise ValueError("save_figures needs at least one plot")
    if png_names is not None and len(png_names) != len(plots):
        raise ValueError(f"{len(png_names)} PNG names for {len(plots)} plots")
    pdf_path = Path(pdf_path)
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages
    from plotnine.ggplot import plot_context

    # Each plot is drawn once (drawing is most of the cost) and saved as its PDF page and PNG.
    # Draw a copy: plotnine keeps the drawn figure on a ggplot object, and drawing the same
    # object again overplots text with a stale layout.
    written = [pdf_path]
    with atomic_path(pdf_path, ".pdf") as tmp, contextlib.ExitStack() as stack:
        pdf = stack.enter_context(PdfPages(tmp))
        for i, plot in enumerate(plots):
            drawn = copy.deepcopy(plot) + theme(dpi=dpi)
            fig = drawn.draw(show=False)
            try:
                with plot_context(drawn).rc_context:
                    fig.savefig(pdf, format="pdf")
                    if png_dir is not None:
                        name = png_names[i] if png_names is not None else f"{pdf_path.stem}-{i + 1:02d}.png"
                        target = Path(png_dir) / name
                        with atomic_path(target, ".png") as png_tmp:
                            fig.savefig(png_tmp, format="png", dpi=dpi)
                        written.append(target)
            finally:
                plt.close(fig)
    return written


def merge_pdfs(pdf_paths: Sequence[str | os.PathLike], out_path: str | os.PathLike) -> Path:
    """Concatenate PDFs (in the given order) into ``out_path``, atomically."""
    from pypdf import PdfWriter

    pdf_paths = list(pdf_paths)
    if not pdf_paths:
        raise ValueError("merge_pdfs needs at least one input PDF")
    out_path = Path(out_path)
    writer = PdfWriter()
    try:
        for p in pdf_paths:
            writer.append(str(p))
        with atomic_path(out_path, ".pdf") as tmp:
            with open(tmp, "wb") as fh:
                writer.write(fh)
    finally:
        writer.close()
    return out_path
