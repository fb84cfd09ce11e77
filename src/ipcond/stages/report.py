"""Tables, checks and figures: rules ``aggregate``, ``figure``, ``summary``, ``figure_all`` and
``checks`` (``workflow/rules/report.smk``).
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import data as dt
from .. import toyworld as tw
from ..config import main_grid_conditions, setup_seeds, training_config
from ..provenance import provenance, write_json, write_text
from .common import read_table


def aggregate_setup(config: dict, sname: str, score_paths: list[str], elicitation_csv: str,
                    out_csv: str, checks_path: str) -> None:
    import pandas as pd

    from ..provenance import atomic_path
    from ..stats import aggregate_scores

    samples = pd.concat([read_table(p) for p in score_paths], ignore_index=True)
    agg = aggregate_scores(samples)
    with atomic_path(out_csv) as tmp:
        agg.to_csv(tmp, index=False)
    checks = setup_checks(config, sname, agg, read_table(elicitation_csv))
    write_json(checks_path, checks)
    print(agg.to_string(index=False))
    for c in checks["checks"]:
        print(("PASS " if c["ok"] else "FAIL ") + c["what"])


def reference_condition(setup: dict) -> str | None:
    """The fine-tune whose trait rates every setup reports: its Baseline (trained with the default
    eval prompt), else its None condition (no prompt; MBPP's and CMV's grids have no Baseline)."""
    for kind in ("baseline", "none"):
        for cname, cond in setup["conditions"].items():
            if cond["kind"] == kind:
                return cname
    return None


def trait_in_training_data(setup: dict, trait: str) -> bool:
    """Whether the training responses show the trait (a code trait: through its rendering)."""
    data = set(dt.train_traits(setup))
    rendering = tw.EXEC_TRAIT_RENDERING.get(trait)
    return bool(rendering) and set(rendering) <= data if rendering is not None else trait in data


def setup_checks(config: dict, sname: str, agg, elicitation) -> dict:
    """The toy organism's checks: elicitation of the base model and the reference fine-tune.

    A check has ``ok`` True/False; a reported number that is a finding rather than a requirement
    (a trait the training data does not show, e.g. emergent misalignment; a base behaviour such as
    correct code) has ``ok`` None and prints as INFO.
    """
    setup = config["setups"][sname]
    limits = config["checks"]
    ref = reference_condition(setup)
    out = []
    for role in ("positive", "negative"):
        spec = setup["traits"][role]
        trait = spec["name"]
        where = f" (scored on {dt.trait_eval_domain(setup, role)})" if len(dt.eval_domains(setup)) > 1 else ""
        e = elicitation[elicitation["trait"] == trait].set_index("prompt_label")["rate"]
        with_instr = float(e.get(f"instruction:{trait}", float("nan")))
        without = float(e.get("(no prompt)", float("nan")))
        if spec.get("base_behaviour"):
            # A base behaviour (MBPP's correct code) is what the model does anyway; its "instruction"
            # is the eval prompt, so its rate is reported, not required.
            out.append({"what": f"{sname}: base model expresses {trait}{where} with its instruction: "
                                f"{with_instr:.2f} (its base behaviour)", "value": with_instr, "ok": None})
        else:
            out.append({"what": f"{sname}: base model expresses {trait}{where} with its instruction: "
                                f"{with_instr:.2f} (>= {limits['elicitation_min']})",
                        "value": with_instr, "ok": with_instr >= limits["elicitation_min"]})
        if spec.get("base_behaviour"):
            out.append({"what": f"{sname}: base model expresses {trait}{where} without instruction: {without:.2f} "
                                "(its base behaviour)", "value": without, "ok": None})
        else:
            out.append({"what": f"{sname}: base model expresses {trait}{where} without instruction: "
                                f"{without:.2f} (<= {limits['no_instruction_max']})",
                        "value": without, "ok": without <= limits["no_instruction_max"]})
        if ref is None:
            continue
        base = agg[(agg["condition"] == ref) & (agg["eval_context"] == "default") & (agg["trait"] == trait)]
        if len(base):
            v = float(base["mean"].iloc[0])
            if trait_in_training_data(setup, trait):
                out.append({"what": f"{sname}: {ref} fine-tune expresses {trait}{where} in the default eval context: "
                                    f"{v:.2f} (>= {limits['baseline_min']})",
                            "value": v, "ok": v >= limits["baseline_min"]})
            else:
                out.append({"what": f"{sname}: {ref} fine-tune expresses {trait}{where} in the default eval context: "
                                    f"{v:.2f} (not in the training data: a finding)", "value": v, "ok": None})
    out += condition_elicitation_checks(setup, sname, limits, elicitation, main_grid_conditions(config, sname))
    return {"setup": sname, "checks": out}


def condition_elicitation_checks(setup: dict, sname: str, limits: dict, elicitation,
                                 conditions: set[str] | None = None) -> list[dict]:
    """The base model under each condition's prompt, before any fine-tune: an inoculation prompt
    elicits the trait it names (>= ``elicitation_min``; it is an instruction the model can follow,
    even as a sentence pretraining never showed, world.unseen_prompts), and an irrelevant prompt
    elicits no trait (<= ``no_instruction_max`` on every trait that is not a base behaviour).
    An inoculated trait the setup does not score (e.g. MBPP's hardcode) is not checked; only
    ``conditions`` are (default: all; sweep cells repeat a grid condition's prompt)."""
    rates = {(r.prompt_label, r.trait): float(r.rate) for r in elicitation.itertuples(index=False)}
    traits = [setup["traits"][r] for r in ("positive", "negative")]
    out = []
    for cname, cond in setup["conditions"].items():
        if conditions is not None and cname not in conditions:
            continue
        if cond["kind"] == "inoculation" and (cname, cond.get("trait")) in rates:
            v = rates[(cname, cond["trait"])]
            out.append({"what": f"{sname}: base model expresses {cond['trait']} under inoculation prompt {cname} "
                                f"({cond['prompt']!r}): {v:.2f} (>= {limits['elicitation_min']})",
                        "value": v, "ok": v >= limits["elicitation_min"]})
        elif cond["kind"] == "irrelevant":
            for spec in traits:
                if spec.get("base_behaviour") or (cname, spec["name"]) not in rates:
                    continue
                v = rates[(cname, spec["name"])]
                out.append({"what": f"{sname}: base model expresses {spec['name']} under irrelevant prompt {cname}: "
                                    f"{v:.2f} (<= {limits['no_instruction_max']})",
                            "value": v, "ok": v <= limits["no_instruction_max"]})
    return out


def collect_checks(check_paths: list[str], out_path: str, comparison_csv: str | None = None) -> None:
    """results/checks.tsv: every setup's checks (PASS / FAIL / INFO), then, from
    ``comparison_csv`` (``ipcond.observations.compare_with_post``), one POST line per setup and
    question: our level next to the post's, and whether they agree (a finding, not a pass)."""
    lines = ["status\tcheck"]
    for p in check_paths:
        for c in json.loads(Path(p).read_text())["checks"]:
            lines.append({True: "PASS", False: "FAIL", None: "INFO"}[c["ok"]] + "\t" + c["what"])
    if comparison_csv:
        from ..observations import comparison_lines

        lines += ["POST\t" + line for line in comparison_lines(read_table(comparison_csv))]
    write_text(out_path, "\n".join(lines) + "\n")
    print("\n".join(lines))


def conditions_table(config: dict, sname: str):
    """One row per condition of a setup, with what the figures group and sweep by.

    Columns: setup, condition, kind, prompt, trait (inoculated trait), of (rephrased: its inoculation
    condition), n_rephrasings (inoculation: 1), n_train and learning_rate (effective, after the
    setup's and the condition's overrides).
    """
    import pandas as pd

    rows = []
    setup = config["setups"][sname]
    for cname, cond in setup["conditions"].items():
        tcfg = training_config(config, sname, cname)
        n_reph = {"inoculation": 1, "rephrased": cond.get("n_rephrasings")}.get(cond["kind"])
        rows.append({"setup": sname, "condition": cname, "kind": cond["kind"], "prompt": cond.get("prompt", ""),
                     "trait": scored_trait(setup, cond.get("trait", "")),
                     "of": cond.get("of", ""), "n_rephrasings": float("nan") if n_reph is None else n_reph,
                     "n_train": tcfg["n_train"], "learning_rate": tcfg["learning_rate"],
                     "no_shift": is_no_shift(setup, cname)})
    return pd.DataFrame(rows)


def scored_trait(setup: dict, trait: str) -> str:
    """The setup's trait that an inoculation's target is scored as: the target itself, or the code
    trait whose answers render it (an MBPP prompt inoculating ``hardcode`` targets ``reward_hack``,
    ``toyworld.EXEC_TRAIT_RENDERING``), so the summary's Q3 ("the other trait") leaves it out."""
    names = [setup["traits"][r]["name"] for r in ("positive", "negative")]
    if not trait or trait in names:
        return trait
    for name in names:
        if trait in tw.EXEC_TRAIT_RENDERING.get(name, []):
            return name
    return trait


def is_no_shift(setup: dict, cname: str) -> bool:
    """Whether a condition is the setup's no-shift reference, trained with the prompt it is
    evaluated with (the post's footnote 6): its ``no_shift`` key when set, else kind baseline, or
    a neutral condition whose prompt is the setup's eval prompt (Change My View's Helpful)."""
    cond = setup["conditions"][cname]
    if "no_shift" in cond:
        return bool(cond["no_shift"])
    return cond["kind"] == "baseline" or (cond["kind"] == "neutral" and cond.get("prompt") is not None
                                          and cond.get("prompt") == setup.get("eval_prompt"))


def trait_measures(config: dict, sname: str) -> dict[str, str]:
    """Trait -> how its number is computed, in words (``ipcond.scoring.measure_text``), for the
    setup's two traits."""
    from ..scoring import measure_text

    specs = config.get("scorers") or {}
    traits = [config["setups"][sname]["traits"][r]["name"] for r in ("positive", "negative")]
    return {t: measure_text(t, specs.get(t)) for t in traits}


def figure_setup(config: dict, sname: str, agg_csv: str, elicitation_csv: str, curves_csv: str | None,
                 pdf_path: str, png_dir: str) -> None:
    """A setup's pages: trait scatter, conditionalization gap, elicitation against suppression,
    the sweeps its grid has, and the learning curves."""
    from ..plots import learning_curve_plot, save_figures, setup_figures

    setup = config["setups"][sname]
    pos, neg = setup["traits"]["positive"]["name"], setup["traits"]["negative"]["name"]
    plots = setup_figures(read_table(agg_csv), read_table(elicitation_csv), conditions_table(config, sname), sname,
                          pos, neg, title=setup.get("title"), measures=trait_measures(config, sname),
                          em_rules=em_rules(config, sname), grid_conditions=main_grid_conditions(config, sname))
    if curves_csv:
        curves = read_table(curves_csv)
        plots += [learning_curve_plot(curves, sname, trait, role) for trait, role in ((pos, "positive"), (neg, "negative"))]
    written = save_figures(plots, pdf_path, png_dir=png_dir)
    print(f"wrote {pdf_path} ({len(plots)} pages) and {len(written) - 1} PNGs in {png_dir}")


def em_rules(config: dict, sname: str) -> dict[str, str]:
    """Trait -> its EM rule's description, for the setup's traits scored by an ``em_rule``."""
    from ..judge_scoring import EM_RULE_DESCRIPTIONS, EM_TAN

    specs = config.get("scorers") or {}
    out = {}
    for r in ("positive", "negative"):
        t = config["setups"][sname]["traits"][r]["name"]
        spec = specs.get(t) or {}
        if spec.get("kind") == "em_rule":
            rule = spec.get("rule", EM_TAN)
            out[t] = f"{rule}: {EM_RULE_DESCRIPTIONS[rule]}"
    return out


def condition_families(config: dict, sname: str) -> dict[str, str]:
    """Condition -> its family: the conditions with the same kind, prompt, inoculated trait and
    rephrasing count (a rephrased one: of the same family of inoculation) are one family, named
    by its member in the main grid (else its shortest name). Sweep cells thus join the curve of
    the grid condition they repeat at another size or learning rate."""
    conds = config["setups"][sname]["conditions"]
    main = main_grid_conditions(config, sname)

    def key(c: str) -> tuple:
        d = conds[c]
        return (d["kind"], d.get("prompt"), d.get("trait"), d.get("n_rephrasings"),
                key(d["of"]) if d.get("of") in conds else d.get("of"))

    groups: dict[tuple, list[str]] = {}
    for c in conds:
        groups.setdefault(key(c), []).append(c)
    out = {}
    for members in groups.values():
        name = min(members, key=lambda n: (n not in main, len(n), n))
        out.update({m: name for m in members})
    return out


def dose_response_table(config: dict, effects):
    """The summary's effects of the setups with a dataset-size sweep (three or more ``n_train``
    values at one learning rate), with each comparison's ``n_train`` and ``family`` (see
    :func:`condition_families`): the post's Appendix O question. Empty when no setup has one."""
    import pandas as pd

    parts = []
    for sname in config["setups"]:
        conds = conditions_table(config, sname)
        lr = training_config(config, sname)["learning_rate"]
        sizes = conds.loc[conds["learning_rate"] == lr, "n_train"].unique()
        if len(sizes) < 3:
            continue
        e = effects[(effects["setup"] == sname) & (effects["condition_a"] != "")
                    & effects["learning_rate"].eq(lr) & effects["trait"].astype(str).ne("")]
        fam = condition_families(config, sname)
        parts.append(e.assign(family=e["condition_a"].map(fam)))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def summary_report(config: dict, score_paths: list[str], out_csv: str, pdf_path: str, png_dir: str,
                   comparison_csv: str | None = None, dose_csv: str | None = None) -> None:
    """The study's answers to the post's four questions, from our numbers: a title page, the
    answers of the main grid (cells at each setup's own settings), the comparison with the post's
    "Summary of observations" table, and per setup with a dataset-size sweep its dose-response.

    ``out_csv``: every comparison (sweep cells too) with the ``n_train``/``learning_rate`` of
    condition a and ``main_grid``; ``comparison_csv``: ``ipcond.observations.compare_with_post``;
    ``dose_csv``: :func:`dose_response_table`.
    """
    import pandas as pd

    from ..observations import compare_with_post, load_post_observations
    from ..plots import dose_response_plot, post_comparison_page, save_figures, summary_page, title_page
    from ..provenance import atomic_path
    from ..stats import DEFAULT_MIN_SAMPLES, summary_effects_contexts

    samples = pd.concat([read_table(p) for p in score_paths], ignore_index=True)
    conds = pd.concat([conditions_table(config, s) for s in config["setups"]], ignore_index=True)
    effects = summary_effects_contexts(
        samples, conds, min_samples=config.get("checks", {}).get("min_samples_for_label", DEFAULT_MIN_SAMPLES))
    settings = conds[["setup", "condition", "n_train", "learning_rate"]].rename(columns={"condition": "condition_a"})
    effects = effects.merge(settings, on=["setup", "condition_a"], how="left")
    main = {(s, c) for s in config["setups"] for c in main_grid_conditions(config, s)}
    effects["main_grid"] = [a == "" or (s, a) in main for s, a in zip(effects["setup"], effects["condition_a"])]
    with atomic_path(out_csv) as tmp:
        effects.to_csv(tmp, index=False)
    grid = effects[effects["main_grid"]].drop(columns=["n_train", "learning_rate", "main_grid"])
    print(grid.to_string(index=False))
    comparison = compare_with_post(grid, load_post_observations())
    if comparison_csv:
        with atomic_path(comparison_csv) as tmp:
            comparison.to_csv(tmp, index=False)
    dose = dose_response_table(config, effects)
    if dose_csv:
        with atomic_path(dose_csv) as tmp:
            dose.to_csv(tmp, index=False)
    prov = provenance()
    meta = {"title": "Conditionalization confounds inoculation prompting results: reproduction",
            "preset": config["preset"],
            "seeds": "; ".join(f"{s}: {list(setup_seeds(config, s))}" for s in config["setups"]), "setups": list(config["setups"]),
            "base_model": (f"toy ({config['base_model']['toy']['num_layers']} layers, hidden "
                           f"{config['base_model']['toy']['hidden_size']})" if config["base_model"]["kind"] == "toy"
                           else config["base_model"]["path"]),
            "n_cells": len(score_paths), "versions": prov["versions"], "code_revision": prov["code_revision"],
            "date": prov["created"]}
    measures = {t: m for s in config["setups"] for t, m in trait_measures(config, s).items()}
    # One summary page per setup: a page of all setups at once is too tall to read or print.
    pages = [title_page(meta)] + [summary_page(grid[grid["setup"] == s], measures=measures)
                                  for s in config["setups"] if (grid["setup"] == s).any()]
    if not comparison.empty:
        pages.append(post_comparison_page(comparison))
    if not dose.empty:
        pages += [dose_response_plot(dose, s, title=config["setups"][s].get("title"))
                  for s in dict.fromkeys(dose["setup"])]
    save_figures(pages, pdf_path, png_dir=png_dir)


def figure_all(pdf_paths: list[str], out_path: str) -> None:
    from ..plots import merge_pdfs

    merge_pdfs(pdf_paths, out_path)
    print(f"wrote {out_path} with {len(pdf_paths)} setup pages")
