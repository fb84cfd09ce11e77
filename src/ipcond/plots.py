"""Figures from the aggregate table of :mod:`ipcond.stats` (plotnine).

The main figure is the trait scatter of the paper: for one setup, each condition is a point
with x = rate of the positive (desired) trait and y = rate of the negative (undesired) trait,
with the confidence intervals as 2-D error bars, one panel per evaluation context. The ideal
corner is bottom right: the desired trait learned, the undesired one not expressed.

Files are written atomically (temporary file in the target directory, then ``os.replace``), so
an interrupted workflow job never leaves a truncated PDF that looks complete.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Sequence

import pandas as pd
from matplotlib import patheffects
from plotnine import (aes, annotate, coord_cartesian, element_text, facet_wrap, geom_errorbar,
                      geom_errorbarh, geom_point, geom_text, ggplot, guides, guide_legend, labs,
                      save_as_pdf_pages, scale_color_manual, scale_shape_manual,
                      scale_x_continuous, scale_y_continuous, theme, theme_bw)

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
    "bootstrap95_samples": "95% percentile bootstrap over samples (single seed)",
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


def _outside(box: tuple[float, ...], lo: float, hi: float) -> float:
    """Area of ``box`` that lies outside the square panel [lo, hi]^2."""
    inside = _overlap(box, (lo, lo, hi, hi))
    return (box[2] - box[0]) * (box[3] - box[1]) - inside


def place_labels(points: pd.DataFrame, label_col: str = "condition",
                 obstacles: Sequence[tuple[float, float, float, float]] = (),
                 fontsize: float = LABEL_SIZE) -> pd.DataFrame:
    """Choose a position for each point's label so labels overlap little.

    ``points`` needs ``x``, ``y`` and ``label_col``; returns a copy with ``label_x``,
    ``label_y``, ``ha`` and ``va``. Greedy: labels are placed one by one (left to right), each
    at the candidate offset (right, left, above, below, diagonals, then twice as far) whose box
    overlaps least with the labels already placed, all markers, ``obstacles`` (boxes
    x0, y0, x1, y1) and the area outside the axes.
    """
    out = points.copy()
    if out.empty:
        for c, v in (("label_x", 0.0), ("label_y", 0.0), ("ha", ""), ("va", "")):
            out[c] = pd.Series(dtype=type(v))
        return out
    char_w = 0.55 * fontsize / 72 * _X_UNITS_PER_INCH
    line_h = 1.25 * fontsize / 72 * _Y_UNITS_PER_INCH
    marker = 0.022  # half-size of a marker box, data units
    dx, dy = 0.025, 0.03
    candidates = []  # (offset x, offset y, ha, va); preference order
    for scale in (1.0, 2.2):
        candidates += [(dx * scale, 0.0, "left", "center"), (-dx * scale, 0.0, "right", "center"),
                       (0.0, dy * scale, "center", "bottom"), (0.0, -dy * scale, "center", "top"),
                       (dx * scale, dy * scale, "left", "bottom"),
                       (dx * scale, -dy * scale, "left", "top"),
                       (-dx * scale, dy * scale, "right", "bottom"),
                       (-dx * scale, -dy * scale, "right", "top")]

    blocked = [(px - marker, py - marker, px + marker, py + marker)
               for px, py in zip(out["x"], out["y"])] + list(obstacles)
    placed: list[tuple[float, ...]] = []
    lo, hi = AXIS_LIMITS
    results: dict[object, tuple[float, float, str, str]] = {}
    for idx in out.sort_values(["x", "y"], kind="stable").index:
        px, py = float(out.at[idx, "x"]), float(out.at[idx, "y"])
        w = char_w * max(1, len(str(out.at[idx, label_col])))
        best, best_cost = None, math.inf
        for rank, (ox, oy, ha, va) in enumerate(candidates):
            box = _text_box(px + ox, py + oy, w, line_h, ha, va)
            cost = (sum(_overlap(box, b) for b in placed) * 4.0
                    + sum(_overlap(box, b) for b in blocked)
                    + _outside(box, lo, hi) * 10.0
                    + rank * 1e-6)  # ties: keep the preferred (nearest) position
            if cost < best_cost:
                best, best_cost = (px + ox, py + oy, ha, va, box), cost
        assert best is not None
        placed.append(best[4])
        results[idx] = best[:4]
    out["label_x"] = [results[i][0] for i in out.index]
    out["label_y"] = [results[i][1] for i in out.index]
    out["ha"] = [results[i][2] for i in out.index]
    out["va"] = [results[i][3] for i in out.index]
    return out


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


def _caption(intervals: pd.Series, n_seeds: pd.Series) -> str:
    parts = []
    for kind in sorted(intervals.dropna().unique()):
        desc = INTERVAL_DESCRIPTIONS.get(kind, kind)
        if kind == "t95_seeds":
            ns = sorted(n_seeds[intervals == kind].unique())
            desc += f" (n seeds = {', '.join(map(str, ns))})"
        parts.append(desc)
    return "Error bars: " + ("; ".join(parts) if parts else "none") + "."


def trait_scatter(agg: pd.DataFrame, setup_name: str, positive_trait: str, negative_trait: str,
                  title: str | None = None) -> ggplot:
    """Scatter of positive-trait rate (x) against negative-trait rate (y) per condition.

    One panel per evaluation context (default, none, train, then any others), one point per
    condition with 2-D error bars from ``ci_low``/``ci_high``, colour and shape by
    ``condition_kind`` (stable across setups), labels with the condition name. Conditions that
    lack either trait in a context are not drawn. Axes are fixed to [-0.05, 1.05]; intervals
    reaching past them are clipped by the panel.
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
        + geom_errorbarh(aes(y="y", xmin="x_low", xmax="x_high", color="condition_kind"),
                         data=xerr, inherit_aes=False, height=0.025, size=0.4, alpha=0.7)
        + geom_errorbar(aes(x="x", ymin="y_low", ymax="y_high", color="condition_kind"),
                        data=yerr, inherit_aes=False, width=0.025, size=0.4, alpha=0.7)
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
        + labs(x=f"{pos} (positive trait), rate expressed (0-1)",
               y=f"{neg} (negative trait),\nrate expressed (0-1)",
               title=title if title is not None else f"{setup_name}: {pos} vs {neg}",
               caption=_caption(pd.concat([df["interval_x"], df["interval_y"]]),
                                pd.concat([df["n_seeds_x"], df["n_seeds_y"]])))
        + theme_bw(base_size=9)
        + theme(figure_size=(width, FIGURE_SIZE[1]), legend_position="bottom",
                legend_title=element_text(size=8), legend_text=element_text(size=8),
                plot_title=element_text(size=11), plot_caption=element_text(size=7.5),
                strip_text=element_text(size=8.5), panel_spacing_x=0.02,
                legend_box_spacing=0.02)
    )
    return plot


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
    # Draw copies: plotnine keeps the drawn figure on a ggplot object, and drawing the same
    # object again (PDF page, then PNG) overplots text with a stale layout.
    with atomic_path(pdf_path, ".pdf") as tmp:
        save_as_pdf_pages([copy.deepcopy(p) for p in plots], filename=tmp, verbose=False)
    written = [pdf_path]
    if png_dir is not None:
        png_dir = Path(png_dir)
        for i, plot in enumerate(plots):
            name = png_names[i] if png_names is not None else f"{pdf_path.stem}-{i + 1:02d}.png"
            target = png_dir / name
            with atomic_path(target, ".png") as tmp:
                copy.deepcopy(plot).save(tmp, dpi=dpi, verbose=False)
            written.append(target)
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
