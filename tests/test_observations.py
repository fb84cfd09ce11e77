"""The post's "Summary of observations" as data, our level and agreement, the dose-response table,
the per-condition elicitation checks, and their pages."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from ipcond.observations import (agreement, compare_with_post, comparison_lines, load_post_observations,
                                 toy_level)

REPO = Path(__file__).resolve().parents[1]
POST = REPO.parent / "shared" / "seed" / "conditionalization-in-inoculation-prompting.txt"


def _row(q, comparison, trait, effect, lo, hi, label, focus=True, ctx="default", setup="s"):
    return {"setup": setup, "question": q, "comparison": comparison, "condition_a": comparison.split(" ")[0],
            "condition_b": "Baseline", "trait": trait, "role": "positive", "focus": focus, "eval_context": ctx,
            "reference": "Baseline: no-shift condition", "effect": effect, "ci_low": lo, "ci_high": hi,
            "n_a": 80, "n_b": 80, "n_seeds_a": 1, "n_seeds_b": 1, "interval": "newcombe95_samples", "label": label}


def test_the_table_has_every_setup_row_and_question_and_quotes_the_post():
    obs = load_post_observations()
    td = obs["trait_distillation_french_playful"]
    assert [td[q]["level"] for q in ("irrelevant_suppresses", "rephrasing_weakens",
                                     "inoculation_suppresses_other")] == ["strong"] * 3
    assert td["removing_neutral_suppresses"]["eval_context"] == "none"
    assert obs["spanish_caps"]["irrelevant_suppresses"]["level"] == "no"
    assert obs["mbpp"]["rephrasing_weakens"]["level"] == "inconclusive"
    if not POST.exists():
        pytest.skip(f"the post's text is not at {POST}")
    text = " ".join(POST.read_text().split())
    for entries in obs.values():
        for e in entries.values():
            first = e["quote"].split("[")[0].strip()  # the verdict, before any footnote mark
            assert first in text, first
        assert entries["irrelevant_suppresses"]["post_row"] in text


def test_a_bad_table_is_named_with_its_key(tmp_path):
    p = tmp_path / "obs.yaml"
    p.write_text("rows:\n  x:\n    post_row: X\n    setups: [a]\n    irrelevant_suppresses: {level: huge, quote: q}\n")
    with pytest.raises(ValueError, match=r"rows.x.irrelevant_suppresses: level must be one of"):
        load_post_observations(p)


def test_our_level_follows_the_documented_rule():
    q = "irrelevant_suppresses"
    strong = pd.DataFrame([_row(q, "IrrA − Baseline", "french", -0.45, -0.6, -0.3, "suppresses"),
                           _row(q, "IrrB − Baseline", "french", -0.05, -0.2, 0.1, "no clear effect")])
    level, d = toy_level(strong, q)
    assert level == "strong" and d["n_yes"] == 1 and d["n_comparisons"] == 2 and d["effect"] == -0.45
    # a clear but small effect: moderate
    small = strong.assign(effect=[-0.15, -0.05], ci_low=[-0.25, -0.2], ci_high=[-0.05, 0.1])
    assert toy_level(small, q)[0] == "moderate"
    # one clear of three, large: strong (the post's columns say "some traits"), and the count says 1 of 3
    three = pd.concat([strong, strong.iloc[[1]]], ignore_index=True)
    assert toy_level(three, q)[0] == "strong" and toy_level(three, q)[1]["n_comparisons"] == 3
    # only the opposite direction or unclear: no; the largest |effect| is reported
    opposite = pd.DataFrame([_row(q, "IrrA − Baseline", "french", 0.3, 0.1, 0.5, "raises")])
    level, d = toy_level(opposite, q)
    assert level == "no" and d["effect"] == 0.3
    # Q2's yes is "raises"
    q2 = pd.DataFrame([_row("rephrasing_weakens", "R − I", "playful", 0.5, 0.3, 0.7, "raises")])
    assert toy_level(q2, "rephrasing_weakens")[0] == "strong"
    # other-trait rows and rows without enough samples do not count
    few = pd.DataFrame([_row(q, "IrrA − Baseline", "french", -0.5, -0.9, -0.1, "too few samples"),
                        _row(q, "IrrA − Baseline", "playful", -0.5, -0.6, -0.4, "suppresses", focus=False)])
    assert toy_level(few, q)[0] == "not measured"


@pytest.mark.parametrize("post, ours, expected", [
    ("strong", "strong", "agrees"), ("strong", "moderate", "partly"), ("strong", "no", "disagrees"),
    ("no", "no", "agrees"), ("no", "moderate", "disagrees"), ("observed", "moderate", "agrees"),
    ("weak", "moderate", "partly"), ("inconclusive", "strong", "post inconclusive"),
    ("strong", "not measured", "not measured")])
def test_agreement(post, ours, expected):
    assert agreement(post, ours) == expected


def test_comparison_uses_the_context_the_post_names_and_prints_a_line():
    obs = load_post_observations()
    rows = [_row("irrelevant_suppresses", "Irr − Baseline", "french", -0.4, -0.55, -0.25, "suppresses",
                 setup="trait_distillation_french_playful"),
            _row("removing_neutral_suppresses", "None − Baseline", "french", -0.02, -0.1, 0.06, "no clear effect",
                 setup="trait_distillation_french_playful"),
            _row("removing_neutral_suppresses", "None − Baseline", "french", -0.3, -0.45, -0.15, "suppresses",
                 ctx="none", setup="trait_distillation_french_playful"),
            _row("irrelevant_suppresses", "Irr − Baseline", "french", 0.0, -0.1, 0.1, "no clear effect",
                 setup="not_in_the_post")]
    table = compare_with_post(pd.DataFrame(rows), obs)
    assert set(table["setup"]) == {"trait_distillation_french_playful"}
    t = table.set_index("question")
    assert t.loc["irrelevant_suppresses", "toy_level"] == "strong"
    assert t.loc["irrelevant_suppresses", "agreement"] == "agrees"
    # Q4: the post's verdict is for evaluation without a prompt, so the none context is compared
    assert t.loc["removing_neutral_suppresses", "eval_context"] == "none"
    assert t.loc["removing_neutral_suppresses", "agreement"] == "agrees"
    assert t.loc["rephrasing_weakens", "toy_level"] == "not measured"
    # Q2 as the post's column reads it: the positive trait's recovery counts too
    q2 = compare_with_post(pd.DataFrame([
        _row("rephrasing_weakens", "R − I", "playful", 0.0, -0.05, 0.05, "no clear effect",
             setup="trait_distillation_french_playful"),
        _row("rephrasing_weakens", "R − I", "french", 0.3, 0.2, 0.4, "raises", focus=False,
             setup="trait_distillation_french_playful")]), obs).set_index("question")
    assert q2.loc["rephrasing_weakens", "toy_level"] == "strong"
    lines = comparison_lines(table)
    assert lines[0].startswith("trait_distillation_french_playful Q1 (irrelevant_suppresses, default eval context): "
                               "toy strong (1 of 1 comparisons; strongest Irr − Baseline on french: -0.40")
    assert "post strong (\"Strong\"" in lines[0] and lines[0].endswith("-> agrees")


def test_checks_tsv_gets_one_post_line_per_question(tmp_path):
    from ipcond.stages.report import collect_checks

    (tmp_path / "c.json").write_text(json.dumps({"setup": "s", "checks": [{"what": "x", "ok": True}]}))
    table = compare_with_post(pd.DataFrame([_row("irrelevant_suppresses", "Irr − Baseline", "french", -0.4,
                                                 -0.55, -0.25, "suppresses", setup="spanish_caps")]),
                              load_post_observations())
    table.to_csv(tmp_path / "cmp.csv", index=False)
    collect_checks([str(tmp_path / "c.json")], str(tmp_path / "checks.tsv"), str(tmp_path / "cmp.csv"))
    lines = (tmp_path / "checks.tsv").read_text().splitlines()
    post = [line for line in lines if line.startswith("POST\t")]
    assert len(post) == 4 and lines[1] == "PASS\tx"
    assert "spanish_caps Q1" in post[0] and "post no" in post[0] and post[0].endswith("-> disagrees")


def _config():
    import yaml

    from ipcond.config import validate_config

    return validate_config(yaml.safe_load((REPO / "config.yaml").read_text()))


def test_inoculation_prompts_must_elicit_and_irrelevant_ones_must_not():
    from ipcond.stages.report import condition_elicitation_checks

    cfg = _config()
    setup = cfg["setups"]["trait_distillation_french_playful"]
    inoc = next(c for c, d in setup["conditions"].items() if d["kind"] == "inoculation")
    irr = next(c for c, d in setup["conditions"].items() if d["kind"] == "irrelevant")
    elic = pd.DataFrame([{"prompt_label": inoc, "trait": "playful", "rate": 0.55},
                         {"prompt_label": irr, "trait": "french", "rate": 0.0},
                         {"prompt_label": irr, "trait": "playful", "rate": 0.3}])
    out = condition_elicitation_checks(setup, "td", cfg["checks"], elic)
    ok = {c["what"].removeprefix("td: ").rsplit(": ", 1)[0]: c["ok"] for c in out}
    assert ok[f"base model expresses playful under inoculation prompt {inoc} "
              f"({setup['conditions'][inoc]['prompt']!r})"] is False
    assert ok[f"base model expresses french under irrelevant prompt {irr}"] is True
    assert ok[f"base model expresses playful under irrelevant prompt {irr}"] is False
    assert condition_elicitation_checks(setup, "td", cfg["checks"], elic, conditions=set()) == []


def test_dose_response_groups_sweep_cells_with_their_grid_condition():
    from ipcond.stages.report import condition_families, dose_response_table, main_grid_conditions

    cfg = _config()
    sname = "trait_distillation_french_playful"
    setup = cfg["setups"][sname]
    n = cfg["training"]["n_train"] if "n_train" not in setup.get("training", {}) else setup["training"]["n_train"]
    small = {c: d for c, d in setup["conditions"].items() if not d.get("training")}
    for size in (n // 4, n // 2):
        for c, d in small.items():
            new = {**d, "training": {"n_train": size}}
            if d["kind"] == "rephrased":
                new["of"] = f"{d['of']}N{size}"
            setup["conditions"][f"{c}N{size}"] = new
    main = main_grid_conditions(cfg, sname)
    assert main == set(small)
    fam = condition_families(cfg, sname)
    assert {fam[f"{c}N{n // 4}"] for c in small} == set(small)
    assert fam[f"PlayfulInocRephrasedN{n // 2}"] == "PlayfulInocRephrased"
    effects = pd.DataFrame([
        {**_row("irrelevant_suppresses", f"{a} − {b}", "french", -0.1 * k, -0.1 * k - 0.1, -0.1 * k + 0.1,
                "no clear effect", setup=sname), "condition_a": a, "condition_b": b, "n_train": size,
         "learning_rate": cfg["training"]["learning_rate"]}
        for k, (a, b, size) in enumerate([("IrrelevantJamesPHD", "Baseline", n),
                                          (f"IrrelevantJamesPHDN{n // 4}", f"BaselineN{n // 4}", n // 4),
                                          (f"IrrelevantJamesPHDN{n // 2}", f"BaselineN{n // 2}", n // 2)])])
    dose = dose_response_table(cfg, effects)
    assert sorted(dose["n_train"]) == sorted([n, n // 4, n // 2])
    assert set(dose["family"]) == {"IrrelevantJamesPHD"}
    # without three sizes there is no dose-response
    del setup["conditions"][f"IrrelevantJamesPHDN{n // 2}"]
    for c in small:
        setup["conditions"].pop(f"{c}N{n // 2}", None)
    assert dose_response_table(cfg, effects).empty


def test_dose_response_and_comparison_pages_render(tmp_path):
    from pypdf import PdfReader

    from ipcond.plots import dose_response_plot, post_comparison_page, save_figures

    rows = []
    for size, e in ((80, -0.05), (160, -0.2), (320, -0.4)):
        for q, fam in (("irrelevant_suppresses", "Irr"), ("rephrasing_weakens", "Reph")):
            for ctx in ("default", "none"):
                rows.append({**_row(q, f"{fam} − B", "french", e, e - 0.1, e + 0.1, "suppresses", ctx=ctx),
                             "n_train": size, "family": fam})
    dose = pd.DataFrame(rows)
    p = dose_response_plot(dose, "s", title="Toy")
    assert set(p.data["n_train"]) == {80, 160, 320}
    with pytest.raises(ValueError, match="no dose-response effects"):
        dose_response_plot(dose, "other")
    table = compare_with_post(pd.DataFrame([_row("irrelevant_suppresses", "Irr − Baseline", "french", -0.4, -0.55,
                                                 -0.25, "suppresses", setup="spanish_caps")]),
                              load_post_observations())
    written = save_figures([p, post_comparison_page(table)], tmp_path / "x.pdf", png_dir=tmp_path / "png",
                           png_names=["a.png", "b.png"], dpi=40)
    assert len(PdfReader(written[0]).pages) == 2
    assert not math.isnan(table["effect"].iloc[0])
