"""Tables, checks and figures: rules ``aggregate``, ``figure``, ``summary``, ``figure_all`` and
``checks`` (``workflow/rules/report.smk``).
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import data as dt
from .. import toyworld as tw
from ..config import training_config
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
    return {"setup": sname, "checks": out}


def collect_checks(check_paths: list[str], out_path: str) -> None:
    lines = ["status\tcheck"]
    for p in check_paths:
        for c in json.loads(Path(p).read_text())["checks"]:
            lines.append({True: "PASS", False: "FAIL", None: "INFO"}[c["ok"]] + "\t" + c["what"])
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
                     "trait": cond.get("trait", ""),
                     "of": cond.get("of", ""), "n_rephrasings": float("nan") if n_reph is None else n_reph,
                     "n_train": tcfg["n_train"], "learning_rate": tcfg["learning_rate"],
                     "no_shift": is_no_shift(setup, cname)})
    return pd.DataFrame(rows)


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
                          em_rules=em_rules(config, sname))
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


def summary_report(config: dict, score_paths: list[str], out_csv: str, pdf_path: str, png_dir: str) -> None:
    """The study's answers to the post's four questions, from our numbers, with a title page."""
    import pandas as pd

    from ..plots import save_figures, summary_page, title_page
    from ..provenance import atomic_path
    from ..stats import DEFAULT_MIN_SAMPLES, summary_effects_contexts

    samples = pd.concat([read_table(p) for p in score_paths], ignore_index=True)
    conds = pd.concat([conditions_table(config, s) for s in config["setups"]], ignore_index=True)
    effects = summary_effects_contexts(
        samples, conds, min_samples=config.get("checks", {}).get("min_samples_for_label", DEFAULT_MIN_SAMPLES))
    with atomic_path(out_csv) as tmp:
        effects.to_csv(tmp, index=False)
    print(effects.to_string(index=False))
    prov = provenance()
    meta = {"title": "Conditionalization confounds inoculation prompting results: reproduction",
            "preset": config["preset"], "seeds": config["seeds"], "setups": list(config["setups"]),
            "base_model": (f"toy ({config['base_model']['toy']['num_layers']} layers, hidden "
                           f"{config['base_model']['toy']['hidden_size']})" if config["base_model"]["kind"] == "toy"
                           else config["base_model"]["path"]),
            "n_cells": len(score_paths), "versions": prov["versions"], "code_revision": prov["code_revision"],
            "date": prov["created"]}
    measures = {t: m for s in config["setups"] for t, m in trait_measures(config, s).items()}
    save_figures([title_page(meta), summary_page(effects, measures=measures)], pdf_path, png_dir=png_dir)


def figure_all(pdf_paths: list[str], out_path: str) -> None:
    from ..plots import merge_pdfs

    merge_pdfs(pdf_paths, out_path)
    print(f"wrote {out_path} with {len(pdf_paths)} setup pages")
