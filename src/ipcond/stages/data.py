"""A setup's eval and training data and a cell's training file: rules ``eval_set``, ``train_items``,
``rephrase`` and ``cell_train_data`` (``workflow/rules/data.smk``).
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import data as dt
from .. import prompts as pr
from .. import rephrasing as rp
from ..config import base_model_path, dataset_dir, real_data, training_config
from ..provenance import read_jsonl, write_json, write_jsonl
from ..seeding import derive_seed, rng_for
from .common import llm_client


def make_eval_set(config: dict, sname: str, out_path: str) -> None:
    data = real_data(config, sname)
    if data is None:
        items = dt.eval_items(sname, config["setups"][sname], config["generation"]["n_eval"])
    else:
        items = []
        for domain, dataset in data["eval"].items():
            if dataset is None:  # dropped by an overlay
                continue
            n = data.get("n_eval", {}).get(domain, config["generation"]["n_eval"])
            available = read_jsonl(Path(dataset_dir(dataset)) / "eval.jsonl")
            if len(available) < n:
                print(f"{dataset}: {len(available)} eval items for domain {domain!r}, fewer than the {n} asked for "
                      f"(generation.n_eval or setups.{sname}.data.n_eval); all {len(available)} are used")
            items += [{**it, "id": str(it["id"]), "domain": domain} for it in available[:n]]
    write_jsonl(out_path, items)
    print(f"wrote {len(items)} eval instructions to {out_path}")


def make_train_items(config: dict, sname: str, seed: int, eval_path: str, out_path: str,
                     pool_path: str | None = None) -> None:
    """The setup's training items for one seed: drawn from the toy world, or (real data) a seeded
    sample of ``n_train`` items of the setup's training pool, none of them an eval instruction.

    Real data: the usable pool items in one seeded order; the cells take its first ``n_train``,
    the control cells the first ``n_train`` of those with a control answer (School of Reward
    Hacks: Tan et al. trained on every hack, the control on the records that have a control
    answer). The file holds that order up to where both are covered (items ``[:n_train]`` and the
    control items among them and after). Raises ``ValueError`` naming the key to lower when the
    pool is too small for either."""
    exclude = {r["instruction"] for r in read_jsonl(eval_path)}
    n = training_config(config, sname)["n_train"]
    if pool_path is None:
        write_jsonl(out_path, dt.train_items(sname, config["setups"][sname], n, seed, exclude))
        print(f"wrote {n} training items to {out_path}")
        return
    pool = read_jsonl(pool_path)
    # An item whose prompt (or its control dataset's prompt) is an eval instruction never trains.
    usable = [it for it in pool if it["instruction"] not in exclude
              and it.get("control_instruction") not in exclude]
    left_out = {"an eval instruction": len(pool) - len(usable)}
    usable, left_out["longer than training.max_length"], long_controls = drop_too_long(config, sname, usable)
    for reason, k in left_out.items():
        if k:
            print(f"{k} pool item(s) left out: {reason}")
    controls = control_conditions(config, sname)
    n_control = max((training_config(config, sname, c)["n_train"] for c in controls), default=0)
    with_control = sum(1 for it in usable if it.get("control_response"))
    if long_controls:
        print(f"{long_controls} control answer(s) longer than training.max_length: the control cells leave them out")
    write_json(out_path + ".report.json", {
        "pool": len(pool), "left_out": left_out, "usable": len(usable), "n_train": n,
        **({"control_cells": {"conditions": controls, "n_train": n_control, "usable_with_control_answer": with_control,
                              "control_answer_longer_than_max_length": long_controls}} if controls else {})})
    if n > len(usable):
        raise ValueError(f"setup {sname}: training.n_train = {n} but its training pool ({pool_path}) has "
                         f"{len(usable)} usable items; lower setups.{sname}.training.n_train to at most "
                         f"{len(usable)}")
    if n_control > with_control:
        cname = max(controls, key=lambda c: training_config(config, sname, c)["n_train"])
        raise ValueError(f"setup {sname}: its control cell {cname} trains on n_train = {n_control} items with a control "
                         f"answer, but the training pool ({pool_path}) has {with_control} usable ones (of "
                         f"{len(usable)} usable items); lower setups.{sname}.conditions.{cname}.training.n_train "
                         f"(or setups.{sname}.training.n_train) to at most {with_control}")
    rng = rng_for("train", sname, seed)
    order = rng.sample(usable, len(usable))
    end, seen = n, 0
    for i, it in enumerate(order):  # the prefix that also holds n_control items with a control answer
        seen += bool(it.get("control_response"))
        if seen >= n_control:
            end = max(n, i + 1)
            break
    items = [{**it, "id": i} for i, it in enumerate(order[:end])]
    write_jsonl(out_path, items)
    print(f"wrote {len(items)} training items to {out_path} (the cells take the first {n}"
          + (f", the control cells the first {n_control} with a control answer)" if controls else ")"))


def control_conditions(config: dict, sname: str) -> list[str]:
    """The setup's conditions of the control kind (trained on the control answers)."""
    return [c for c, cond in config["setups"][sname]["conditions"].items() if cond["kind"] == "control"]


def cell_items(config: dict, sname: str, cname: str, items: list[dict]) -> list[dict]:
    """The training items of one cell: the first ``n_train`` of the setup's items, for a control
    cell the first ``n_train`` that have a control answer. Raises ``ValueError`` when too few."""
    n = training_config(config, sname, cname)["n_train"]
    if config["setups"][sname]["conditions"][cname]["kind"] == "control":
        items = [it for it in items if it.get("control_response")]
    if len(items) < n:
        raise ValueError(f"setup {sname}, condition {cname}: n_train = {n} but the training items hold {len(items)} "
                         "for it; re-run train_items (its file is older than the config), or lower "
                         f"setups.{sname}.conditions.{cname}.training.n_train")
    return items[:n]


# Room for rephrasings, which may be longer than the fixed prompt the length check is made with.
REPHRASING_MARGIN_TOKENS = 64


def drop_too_long(config: dict, sname: str, items: list[dict]) -> tuple[list[dict], int]:
    """The items whose training example fits ``training.max_length`` with the setup's longest
    condition prompt, counted by the base model's tokenizer and chat template, how many were left
    out, and how many kept items lost a control answer that does not fit (``control_response``
    None: the control cells leave them out). A real dataset's long records would otherwise stop every cell's
    fine-tune (``check_lengths``) on the GPU, late."""
    from ..modeling import load_tokenizer

    setup = config["setups"][sname]
    limit = training_config(config, sname)["max_length"]
    prompts = [p for c in setup["conditions"] if (p := pr.condition_prompt(setup, c))]
    longest = max(prompts, key=len) if prompts else None
    path = base_model_path(config, sname)
    try:
        tokenizer = load_tokenizer(path)
    except OSError as e:  # not on disk, and the hub cannot be reached (or the id is wrong)
        raise RuntimeError(f"setup {sname}: the base model's tokenizer ({path}) could not be loaded to check "
                           f"example lengths ({type(e).__name__}). Run where the hub is reachable (or the model is "
                           "in the Hugging Face cache), or set setups.<name>.base_model / base_model.path to a "
                           "local folder") from None
    count = dt.chat_token_counter(tokenizer)
    margin = REPHRASING_MARGIN_TOKENS if any(c["kind"] == "rephrased" for c in setup["conditions"].values()) else 0
    kept, long_controls = [], 0
    for it in items:
        if count(pr.messages(setup, longest, it["instruction"], it["response"])) + margin > limit:
            continue
        if it.get("control_response") and count(pr.messages(
                setup, longest, it.get("control_instruction", it["instruction"]), it["control_response"])) + margin > limit:
            it, long_controls = {**it, "control_response": None}, long_controls + 1  # the control cells leave it out
        kept.append(it)
    return kept, len(items) - len(kept), long_controls


def make_rephrasings(config: dict, sname: str, cname: str, out_path: str) -> None:
    """The rephrasings of a rephrased condition's inoculation prompt, made once and stored.

    ``rephraser.kind``: ``toy`` (the toy world's wordings, offline; the default) or ``llm`` (an
    OpenAI-compatible endpoint through the judge client: its key from the environment variable
    ``rephraser.api_key_env``, answers cached in ``rephraser.cache``, so a re-run costs nothing)."""
    setup = config["setups"][sname]
    cond = setup["conditions"][cname]
    target = setup["conditions"][cond["of"]]
    spec = dict(config.get("rephraser") or {"kind": "toy"})
    seed = derive_seed(sname, cname)
    if spec.pop("kind") == "llm":
        opts = {k: spec.pop(k) for k in ("per_request", "temperature", "max_rounds", "max_tokens") if k in spec}
        with llm_client(spec, "rephraser", "results/rephrase_cache.sqlite") as client:
            rephraser = rp.LLMRephraser(client, **opts)
            texts = rephraser.rephrase(target["prompt"], cond["n_rephrasings"], seed)
            extra = {"model": spec["model"], "stats": rephraser.stats, "accounting": client.accounting()}
    else:
        rephraser = rp.ToyRephraser(target["trait"])
        texts = rephraser.rephrase(target["prompt"], cond["n_rephrasings"], seed)
        extra = {}
    write_json(out_path, {"prompt": target["prompt"], "rephraser": rephraser.name, "rephrasings": texts, **extra})
    print(f"wrote {len(texts)} rephrasings of {target['prompt']!r}" +
          (f" ({extra['stats']['requests']} requests, {extra['stats']['duplicates']} duplicates dropped)"
           if extra else ""))


def make_cell_train_data(config: dict, sname: str, cname: str, seed: int, items_path: str,
                         rephrasings_path: str | None, out_path: str) -> None:
    setup = config["setups"][sname]
    cond = setup["conditions"][cname]
    # A dataset-size sweep's condition trains on a prefix of the setup's items (validated <= them).
    items = cell_items(config, sname, cname, read_jsonl(items_path))
    if cond["kind"] == "rephrased":
        texts = json.loads(Path(rephrasings_path).read_text())["rephrasings"]
        prompts = rp.assign_rephrasings(len(items), texts, cond.get("max_uses"), derive_seed(sname, cname, seed))
    else:
        prompts = [pr.condition_prompt(setup, cname)] * len(items)
    records = dt.cell_train_records(setup, cname, items, prompts)
    dt.validate_chat_records(records, out_path)
    write_jsonl(out_path, records)
    print(f"wrote {len(records)} training records to {out_path}")
