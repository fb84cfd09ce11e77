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
    assert p.labels.x == "French (positive trait), rate expressed (0-1)"
    assert "Capitals (negative trait)" in p.labels.y
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
