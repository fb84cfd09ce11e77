import matplotlib

matplotlib.use("Agg")  # headless

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from plotnine import ggplot  # noqa: E402
from pypdf import PdfReader  # noqa: E402

from ipcond.plots import merge_pdfs, place_labels, save_figures, trait_scatter  # noqa: E402


def _agg() -> pd.DataFrame:
    """Two conditions x three eval contexts x two traits, shaped like aggregate_scores output."""
    rows = []
    means = {  # (condition, context) -> (french, capitals)
        ("baseline", "default"): (0.9, 0.8), ("baseline", "none"): (0.85, 0.75),
        ("baseline", "train"): (0.9, 0.85),
        ("inoculated", "default"): (0.88, 0.1), ("inoculated", "none"): (0.8, 0.15),
        ("inoculated", "train"): (0.92, 0.9),
    }
    kinds = {"baseline": "baseline", "inoculated": "inoculation"}
    for (cond, ctx), (fr, caps) in means.items():
        for trait, role, m in (("french", "positive", fr), ("capitals", "negative", caps)):
            rows.append(dict(setup="toy", condition=cond, condition_kind=kinds[cond],
                             eval_context=ctx, trait=trait, role=role, n_seeds=3, n_samples=60,
                             n_unscored=0, mean=m, ci_low=max(0.0, m - 0.08),
                             ci_high=min(1.0, m + 0.08), interval="t95_seeds"))
    return pd.DataFrame(rows)


def test_trait_scatter_builds_faceted_plot():
    p = trait_scatter(_agg(), "toy", "french", "capitals")
    assert isinstance(p, ggplot)
    assert p.labels.x == "French (positive trait): rate expressed (0-1)"
    assert "Capitals (negative trait)" in p.labels.y
    # The axis says how the number was computed when the measure is given (issue 18).
    m = trait_scatter(_agg(), "toy", "french", "capitals",
                      measures={"french": "share of answers judged French (score > 50)",
                                "capitals": "EM-free measure"},
                      em_rules={"capitals": "tan: dropped if coherence < 30"})
    assert m.labels.x == "French (positive trait): share of answers judged French (score > 50)"
    assert "EM rule tan" in m.labels.caption.replace("\n", " ")
    assert "Student-t" in p.labels.caption and "n seeds = 3" in p.labels.caption
    assert list(p.data["eval_context"].cat.categories) == ["default", "none", "train"]
    assert len(p.data) == 6


def test_trait_scatter_unknown_trait_raises():
    with pytest.raises(ValueError, match="no aggregate rows"):
        trait_scatter(_agg(), "toy", "spanish", "capitals")


def test_place_labels_separates_coincident_points():
    pts = pd.DataFrame({"x": [0.5, 0.5], "y": [0.5, 0.5], "condition": ["aaaa", "bbbb"]})
    out = place_labels(pts)
    a, b = out.iloc[0], out.iloc[1]
    assert (a["label_x"], a["label_y"], a["ha"], a["va"]) != (b["label_x"], b["label_y"],
                                                              b["ha"], b["va"])


def test_save_figures_and_merge(tmp_path):
    agg = _agg()
    p1 = trait_scatter(agg, "toy", "french", "capitals")
    p2 = trait_scatter(agg, "toy", "french", "capitals", title="Second page")
    pdf = tmp_path / "figs" / "toy.pdf"
    written = save_figures([p1, p2], pdf, png_dir=tmp_path / "png", dpi=72)
    assert written == [pdf, tmp_path / "png" / "toy-01.png", tmp_path / "png" / "toy-02.png"]
    assert all(f.exists() and f.stat().st_size > 0 for f in written)
    assert len(PdfReader(pdf).pages) == 2
    # Atomic writes leave no temporary files behind.
    assert sorted(f.name for f in pdf.parent.iterdir()) == ["toy.pdf"]

    one_a, one_b = tmp_path / "a.pdf", tmp_path / "b.pdf"
    save_figures([p1], one_a)
    save_figures([p2], one_b)
    assert len(PdfReader(one_a).pages) == 1
    merged = merge_pdfs([one_a, one_b], tmp_path / "merged.pdf")
    assert len(PdfReader(merged).pages) == 2


def test_save_figures_needs_plots(tmp_path):
    with pytest.raises(ValueError):
        save_figures([], tmp_path / "x.pdf")
    with pytest.raises(ValueError):
        merge_pdfs([], tmp_path / "x.pdf")


# ---------------------------------------------------------------------------- the other figures

import math  # noqa: E402

import numpy as np  # noqa: E402

from ipcond.plots import (conditionalization_gap_plot, elicitation_suppression_plot,  # noqa: E402
                          learning_curve_plot, rephrasing_sweep_plot, setup_figures,
                          summary_page, sweep_families, sweep_plot, title_page)

KINDS = {"Baseline": "baseline", "None": "none", "Empty": "empty", "Inoc": "inoculation",
         "InocR8": "rephrased", "InocR64": "rephrased", "Irr": "irrelevant",
         "Control": "control"}


def _grid_agg(extra: dict | None = None) -> pd.DataFrame:
    """A setup "toy" with every kind, three contexts, two traits (one seed, bootstrap)."""
    rng = np.random.default_rng(0)
    kinds = {**KINDS, **(extra or {})}
    rows = []
    for cond, kind in kinds.items():
        for ctx in ("default", "none", "train"):
            for trait, role in (("french", "positive"), ("playful", "negative")):
                m = float(rng.uniform(0.05, 0.95))
                rows.append(dict(setup="toy", condition=cond, condition_kind=kind,
                                 eval_context=ctx, trait=trait, role=role, n_seeds=1,
                                 n_samples=40, n_unscored=0, mean=m, ci_low=m - 0.05,
                                 ci_high=m + 0.05, interval="bootstrap95_samples"))
    return pd.DataFrame(rows)


def _grid_conditions(extra_rows=()) -> pd.DataFrame:
    rows = []
    for cond, kind in KINDS.items():
        n = {"Inoc": 1, "InocR8": 8, "InocR64": 64}.get(cond, np.nan)
        rows.append(dict(setup="toy", condition=cond, kind=kind,
                         trait="playful" if kind == "inoculation" else "",
                         of="Inoc" if kind == "rephrased" else "", n_rephrasings=n,
                         n_train=320, learning_rate=1e-4))
    return pd.DataFrame(rows + list(extra_rows))


def _elicitation() -> pd.DataFrame:
    rows = []
    rates = {"Baseline": 0.0, "Empty": 0.0, "Inoc": 0.9, "InocR8": 0.7, "InocR64": 0.6,
             "Irr": 0.05, "Control": 0.0, "None": 0.0}
    for label, rate in [("(no prompt)", 0.0), ("instruction:playful", 0.95)] + list(rates.items()):
        for trait, role in (("french", "positive"), ("playful", "negative")):
            rows.append(dict(setup="toy", prompt_label=label, trait=trait, role=role,
                             rate=rate if trait == "playful" else 0.02, n=40, prompt="",
                             seen_in_pretraining=1.0))
    return pd.DataFrame(rows)


def _sweep_rows():
    """None at three dataset sizes and Irr at two learning rates (other settings equal)."""
    base = dict(setup="toy", trait="", of="", n_rephrasings=np.nan)
    return [dict(base, condition="None_n80", kind="none", n_train=80, learning_rate=1e-4),
            dict(base, condition="None_n160", kind="none", n_train=160, learning_rate=1e-4),
            dict(base, condition="Irr_lr1e-3", kind="irrelevant", n_train=320,
                 learning_rate=1e-3)]


def test_trait_scatter_marks_the_no_shift_reference():
    p = trait_scatter(_grid_agg(), "toy", "french", "playful")
    assert "Dashed lines: None" in p.labels.caption
    no_none = _grid_agg()
    no_none = no_none[no_none["condition"] != "None"]
    assert "Dashed lines: Baseline" in trait_scatter(no_none, "toy", "french",
                                                     "playful").labels.caption


def test_place_labels_reports_leaders():
    pts = pd.DataFrame({"x": [0.5] * 12, "y": [0.5] * 12,
                        "condition": [f"Condition{i}" for i in range(12)]})
    out = place_labels(pts)
    assert {"leader", "leader_x", "leader_y"} <= set(out.columns)
    assert out["leader"].any()  # a tight cluster pushes some labels out, with leader lines


def test_new_figures_render_to_pdf_and_png(tmp_path):
    agg = _grid_agg({"None_n80": "none", "None_n160": "none", "Irr_lr1e-3": "irrelevant"})
    conds = _grid_conditions(_sweep_rows())
    pages = setup_figures(agg, _elicitation(), conds, "toy", "french", "playful", title="Toy")
    # scatter, gap, elicitation, rephrasing sweep, dataset-size sweep, learning-rate sweep
    assert len(pages) == 6 and all(isinstance(p, ggplot) for p in pages)
    samples = pd.DataFrame([dict(setup="toy", condition=c, condition_kind=k, seed=1,
                                 eval_context="default", sample_id=i, trait=t, role=r,
                                 score=float((i + len(c)) % 3 == 0))
                            for c, k in KINDS.items() for i in range(12)
                            for t, r in (("french", "positive"), ("playful", "negative"))])
    from ipcond.stats import summary_effects

    effects = summary_effects(samples, _grid_conditions(), n_boot=100)
    curves = pd.concat([_grid_agg().assign(step=s, measure=m)
                        for s in (0, 4, 8) for m in ("rate", "logodds")], ignore_index=True)
    extra = [summary_page(effects),
             title_page({"title": "T", "preset": "toy", "seeds": [1, 2],
                         "config": "config.yaml", "versions": {"plotnine": "0.15.9"},
                         "code_revision": "abc123", "date": "2026-01-01"}),
             learning_curve_plot(curves, "toy", "playful", "negative")]
    names = [f"p{i}.png" for i in range(len(pages) + len(extra))]
    written = save_figures(pages + extra, tmp_path / "all.pdf", png_dir=tmp_path / "png",
                           png_names=names, dpi=40)
    assert len(PdfReader(written[0]).pages) == len(pages) + len(extra)
    assert all(f.stat().st_size > 1000 for f in written)


def test_conditionalization_gap_plot_values_and_caption():
    agg = _grid_agg()
    p = conditionalization_gap_plot(agg, "toy")
    d = p.data.set_index(["condition", "trait"])
    a = agg.set_index(["condition", "eval_context", "trait"])["mean"]
    assert d.loc[("Irr", "french"), "gap"] == pytest.approx(
        a[("Irr", "train", "french")] - a[("Irr", "default", "french")])
    # Intervals combine the two 0.05 half-widths in quadrature (clipped to [-1, 1]).
    g = d.loc[("Irr", "french")]
    assert g["high"] - g["gap"] == pytest.approx(min(0.05 * math.sqrt(2), 1 - g["gap"]))
    assert list(p.data["condition"].cat.categories)[:3] == ["Baseline", "None", "Empty"]
    assert "sqrt" in p.labels.caption and p.labels.y.startswith("gap")
    no_train = agg[~((agg["condition"] == "Control") & (agg["eval_context"] == "train"))]
    assert "Control" in conditionalization_gap_plot(no_train, "toy").labels.caption


def test_rephrasing_sweep_plot_none_without_rephrased_conditions():
    agg = _grid_agg()
    conds = _grid_conditions()
    p = rephrasing_sweep_plot(agg, conds, "toy")
    assert isinstance(p, ggplot)
    assert sorted(set(p.data["n"])) == [1.0, 8.0, 64.0]
    assert "rephrasings" in p.labels.x
    assert rephrasing_sweep_plot(agg, conds[conds["kind"] != "rephrased"], "toy") is None


def test_sweep_plot_none_without_sweep_and_plot_with_one():
    agg = _grid_agg({"None_n80": "none", "None_n160": "none", "Irr_lr1e-3": "irrelevant"})
    assert sweep_plot(agg, _grid_conditions(), "toy", "n_train") is None
    assert sweep_plot(agg, _grid_conditions(), "toy", "learning_rate") is None
    conds = _grid_conditions(_sweep_rows())
    fam = sweep_families(conds, "toy", "n_train")
    assert sorted(fam["condition"]) == ["None", "None_n160", "None_n80"]
    assert set(fam["family"]) == {"None"}
    p = sweep_plot(agg, conds, "toy", "n_train")
    assert isinstance(p, ggplot) and sorted(set(p.data["value"])) == [80.0, 160.0, 320.0]
    lr = sweep_plot(agg, conds, "toy", "learning_rate")
    assert sorted(set(lr.data["condition"])) == ["Irr", "Irr_lr1e-3"]
    with pytest.raises(ValueError, match="parameter"):
        sweep_plot(agg, conds, "toy", "epochs")


def test_elicitation_suppression_plot_reduction_and_r():
    agg = _grid_agg()
    p = elicitation_suppression_plot(_elicitation(), agg, "toy")
    d = p.data.set_index(["condition", "trait"])
    a = agg[agg["eval_context"] == "default"].set_index(["condition", "trait"])["mean"]
    assert d.loc[("Irr", "playful"), "y"] == pytest.approx(a[("None", "playful")]
                                                           - a[("Irr", "playful")])
    assert d.loc[("Inoc", "playful"), "x"] == pytest.approx(0.9)
    assert "None" not in set(p.data["condition"]) and "Control" not in set(p.data["condition"])
    # Two conditions only: r is undefined, and the plot says so.
    few = agg[agg["condition"].isin(["None", "Inoc", "Irr"])]
    texts = [lyr.geom.data for lyr in elicitation_suppression_plot(_elicitation(), few,
                                                                     "toy").layers
             if isinstance(lyr.geom.data, pd.DataFrame) and "label" in lyr.geom.data.columns]
    assert any(t["label"].str.startswith("r undefined").all() for t in texts)


def test_new_figures_name_missing_columns():
    agg, conds, el = _grid_agg(), _grid_conditions(), _elicitation()
    with pytest.raises(ValueError, match="ci_high"):
        conditionalization_gap_plot(agg.drop(columns=["ci_high"]), "toy")
    with pytest.raises(ValueError, match="rate"):
        elicitation_suppression_plot(el.drop(columns=["rate"]), agg, "toy")
    with pytest.raises(ValueError, match="of"):
        rephrasing_sweep_plot(agg, conds.drop(columns=["of"]), "toy")
    with pytest.raises(ValueError, match="n_train"):
        sweep_plot(agg, conds.drop(columns=["n_train"]), "toy", "learning_rate")
    with pytest.raises(ValueError, match="label"):
        summary_page(pd.DataFrame({"setup": ["toy"]}))
    with pytest.raises(ValueError, match="measure"):
        learning_curve_plot(agg.assign(step=0), "toy", "french", "positive")
    with pytest.raises(ValueError, match="no rows for setup"):
        conditionalization_gap_plot(agg, "other")


def test_pages_after_the_scatter_say_how_each_trait_is_measured():
    from ipcond.plots import conditionalization_gap_plot, with_measures

    gap = conditionalization_gap_plot(_agg(), "toy")
    assert with_measures(gap, None) is gap
    m = with_measures(gap, {"french": "share of answers judged French (score > 50)",
                            "capitals": "mean capitals ratio"})
    caption = m.labels.caption.replace("\n", " ")
    assert gap.labels.caption.replace("\n", " ").split(" Trait measures")[0][:40] in caption
    assert "french: share of answers judged French (score > 50)" in caption
    assert "capitals: mean capitals ratio" in caption
    assert "difference in measure" in m.labels.y and "difference in rate" in gap.labels.y


def test_setup_pages_show_the_main_grid_and_the_sweep_shows_every_cell():
    agg = _grid_agg({"None_n80": "none", "None_n160": "none", "Irr_lr1e-3": "irrelevant"})
    conds = _grid_conditions(_sweep_rows())
    sweeps = {"None_n80", "None_n160", "Irr_lr1e-3"}
    main = set(conds["condition"]) - sweeps
    pages = setup_figures(agg, _elicitation(), conds, "toy", "french", "playful", grid_conditions=main)
    assert not set(pages[0].data["condition"]) & sweeps  # the scatter: main grid only
    size = next(p for p in pages if "n_train" in str(p.labels.get("x", "")) or "dataset" in str(p.labels.get("title", "")))
    assert {"None_n80", "None_n160"} <= set(size.data["condition"])
