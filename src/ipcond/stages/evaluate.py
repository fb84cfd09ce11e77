"""Scores and measures of what the models wrote: rules ``score`` (a cell's generations), ``elicit`` (the
base model under every prompt of a setup) and ``curves`` (a setup's learning curves)
(``workflow/rules/evaluate.smk``).
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import data as dt
from .. import prompts as pr
from ..gpu import job_gpu_slot
from ..config import sampling_config
from ..provenance import provenance, read_jsonl, write_json, write_jsonl
from ..toycorpus import corpus_prompt_texts
from .common import (check_toy_vocabulary, generation_backend, log_to, make_scorers, read_table, sampling_params,
                     score_rows, write_scorer_accounting)


def score_cell(config: dict, sname: str, cname: str, seed: int, gens_path: str, out_path: str,
               accounting_path: str, eval_path: str | None = None) -> None:
    import csv

    setup = config["setups"][sname]
    rows = read_jsonl(gens_path)
    scorers = make_scorers(config, setup, read_jsonl(eval_path) if eval_path else None)
    scored = score_rows(setup, rows, scorers)
    write_scorer_accounting(scorers, accounting_path)
    kind = setup["conditions"][cname]["kind"]
    fields = ["setup", "condition", "condition_kind", "seed", "eval_context", "sample_id", "trait", "role", "score",
              "scorer", "status"]
    from ..provenance import atomic_path

    with atomic_path(out_path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in scored:
            w.writerow({"setup": sname, "condition": cname, "condition_kind": kind, "seed": seed,
                        "eval_context": r["eval_context"], "sample_id": r["sample_id"], "trait": r["trait"],
                        "role": r["role"], "score": "" if r["score"] is None else r["score"],
                        "scorer": scorers[r["trait"]].name, "status": r.get("status", "")})
    print(f"scored {len(rows)} generations: {len(scored)} (generation, trait) scores")


def elicit_job(config: dict, sname: str, eval_path: str, rephrasing_paths: dict[str, str], corpus_path: str | None,
               gens_path: str, out_csv: str, threads: int, log: str) -> None:
    """The `elicit` rule's job (ipcond.gpu: on a GPU of its own)."""
    with log_to(log), job_gpu_slot(config, "elicit", sname):
        elicit_setup(config, sname, eval_path, rephrasing_paths, corpus_path, gens_path, out_csv, threads)


def elicitation_prompts(config: dict, sname: str, rephrasing_paths: dict[str, str],
                        n: int | None = None) -> dict[str, list[str | None]]:
    """Label -> per-example prompts for the base model: none, each trait's instruction, each condition
    (``n`` examples each: the eval set's size, ``generation.n_eval`` per eval domain)."""
    setup = config["setups"][sname]
    n = n if n is not None else config["generation"]["n_eval"] * len(dt.eval_domains(setup))
    out: dict[str, list[str | None]] = {"(no prompt)": [None] * n}
    for role in ("positive", "negative"):
        t = setup["traits"][role]
        out[f"instruction:{t['name']}"] = [t["instruction"]] * n
    for cname, cond in setup["conditions"].items():
        if cond["kind"] == "rephrased":
            texts = json.loads(Path(rephrasing_paths[cname]).read_text())["rephrasings"]
            out[cname] = [texts[i % len(texts)] for i in range(n)]
        else:
            out[cname] = [pr.condition_prompt(setup, cname)] * n
    return out


def elicit_setup(config: dict, sname: str, eval_path: str, rephrasing_paths: dict[str, str], corpus_path: str | None,
                 gens_path: str, out_csv: str, threads: int) -> None:
    """Trait expression of the untrained base model under every prompt of a setup."""
    import pandas as pd

    from ..generation import generate_all, rendered_examples

    setup = config["setups"][sname]
    items = read_jsonl(eval_path)
    seen = corpus_prompt_texts(read_jsonl(corpus_path)) if corpus_path else set()
    backend = generation_backend(config, sname, None, threads)
    labelled = elicitation_prompts(config, sname, rephrasing_paths, len(items))
    if hasattr(backend, "tokenizer"):
        check_toy_vocabulary(backend.tokenizer, {
            f"setups.{sname}.eval_prompt": setup["eval_prompt"],
            f"setups.{sname}.system_prompt": setup.get("system_prompt"),
            **{f"setups.{sname} prompt {label!r}": p for label, ps in labelled.items() for p in dict.fromkeys(ps)}})
    rows = []
    done: dict[tuple, list[str]] = {}  # prompts -> responses: sweep cells repeat a condition's prompt
    for label, prompts in labelled.items():
        if tuple(prompts) not in done:
            convs = [pr.messages(setup, p, it["instruction"]) for it, p in zip(items, prompts)]
            done[tuple(prompts)] = generate_all(backend, convs, sampling_params(config, sname, "elicitation", label))
        outs = done[tuple(prompts)]
        rows += [{"prompt_label": label, "sample_id": it["id"], "domain": it.get("domain"), "prompt": p,
                  "instruction": it["instruction"], "response": o} for it, p, o in zip(items, prompts, outs)]
    # What the model saw under each prompt: one example as the chat template renders it.
    write_json(gens_path + ".provenance.json", provenance(
        {"generation": sampling_config(config, sname)}, backend=backend.info(),
        rendered_examples=rendered_examples(backend, {label: pr.messages(setup, ps[0], items[0]["instruction"])
                                                      for label, ps in labelled.items() if items})))
    write_jsonl(gens_path, rows)
    scorers = make_scorers(config, setup, items)
    scored = pd.DataFrame(score_rows(setup, rows, scorers))
    write_scorer_accounting(scorers, str(Path(out_csv).with_suffix(".accounting.json")))
    table = (scored.groupby(["prompt_label", "trait", "role"], sort=False)["score"]
             .agg(rate="mean", n="count").reset_index())
    by_label: dict[str, list] = {}
    for r in rows:
        by_label.setdefault(r["prompt_label"], []).append(r["prompt"])
    table["prompt"] = table["prompt_label"].map(lambda lab: by_label[lab][0])
    # Share of this label's examples whose prompt pretraining showed verbatim (rephrased
    # conditions mix seen and unseen wordings); empty where there is no prompt or no corpus.
    table["seen_in_pretraining"] = table["prompt_label"].map(
        lambda lab: None if not corpus_path or not any(by_label[lab])
        else sum(p in seen for p in by_label[lab]) / len(by_label[lab]))
    table.insert(0, "setup", sname)
    from ..provenance import atomic_path

    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    print(table.to_string(index=False))


def combine_curves(curve_paths: list[str], samples_csv: str, out_csv: str) -> None:
    """Every cell's learning-curve samples of a setup in one table, and its aggregate."""
    import pandas as pd

    from ..provenance import atomic_path

    samples = pd.concat([read_table(p) for p in curve_paths], ignore_index=True)
    with atomic_path(samples_csv) as tmp:
        samples.to_csv(tmp, index=False)
    aggregate_curves(samples, out_csv)


def aggregate_curves(samples, out_csv: str) -> None:
    """Mean and 95% interval per (condition, step, eval context, trait, measure)."""
    import pandas as pd

    from ..provenance import atomic_path
    from ..stats import aggregate_scores

    parts = []
    for (step, measure), part in samples.groupby(["step", "measure"], sort=True):
        agg = aggregate_scores(part.drop(columns=["step", "measure"]), bounded=measure != "logodds")
        agg.insert(1, "step", step)
        agg.insert(2, "measure", measure)
        parts.append(agg)
    out = pd.concat(parts, ignore_index=True)
    with atomic_path(out_csv) as tmp:
        out.to_csv(tmp, index=False)
    print(f"wrote {len(out)} learning-curve rows to {out_csv}")
