"""A cell's model jobs: its LoRA fine-tune, its generations in every eval context and its learning
curve; rules ``finetune_and_generate`` (one job), or ``finetune`` and ``generate`` (two)
(``workflow/rules/cell.smk``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .. import data as dt
from .. import prompts as pr
from ..config import base_model_path, sampling_config, training_config
from ..gpu import job_gpu_slot
from ..provenance import provenance, read_jsonl, write_json, write_jsonl
from ..seeding import derive_seed
from .common import check_toy_vocabulary, generation_backend, log_to, make_scorers, sampling_params, score_rows


def cell_job(config: dict, sname: str, cname: str, seed: int, train_path: str, eval_path: str, adapter: str,
             generations_path: str, curve_path: str, threads: int, finetune_log: str, generate_log: str) -> None:
    """A cell's fine-tune, generations and learning curve (the fused `finetune_and_generate` job),
    each half logged where the separate `finetune` and `generate` rules log it, on a GPU of its own
    where the machine has GPUs (ipcond.gpu)."""
    with job_gpu_slot(config, "finetune_and_generate", sname):
        with log_to(finetune_log):
            finetune_cell(config, sname, cname, seed, train_path, adapter, threads)
        with log_to(generate_log):
            generate_with_curve(config, sname, cname, seed, eval_path, train_path, adapter, generations_path,
                                curve_path, threads)


def finetune_job(config: dict, sname: str, cname: str, seed: int, train_path: str, adapter: str, threads: int,
                 log: str) -> None:
    """The `finetune` rule's job (ipcond.gpu: on a GPU of its own)."""
    with log_to(log), job_gpu_slot(config, "finetune", sname):
        finetune_cell(config, sname, cname, seed, train_path, adapter, threads)


def generate_job(config: dict, sname: str, cname: str, seed: int, eval_path: str, train_path: str, adapter: str,
                 generations_path: str, curve_path: str, threads: int, log: str) -> None:
    """The `generate` rule's job (ipcond.gpu: on a GPU of its own)."""
    with log_to(log), job_gpu_slot(config, "generate", sname):
        generate_with_curve(config, sname, cname, seed, eval_path, train_path, adapter, generations_path,
                            curve_path, threads)


def finetune_cell(config: dict, sname: str, cname: str, seed: int, train_path: str, out_dir: str,
                  threads: int) -> None:
    from ..training import finetune_lora

    records, lines = dt.load_chat_jsonl_with_lines(train_path)
    if config["base_model"]["kind"] == "toy":
        from ..modeling import load_tokenizer

        check_toy_vocabulary(load_tokenizer(base_model_path(config, sname)), cell_prompt_texts(config, sname, cname, records))
    tcfg = training_config(config, sname, cname)

    def write_provenance(folder: Path, summary: dict) -> None:  # inside the adapter folder before it is in place
        write_json(folder / "provenance.json",
                   provenance({"training": tcfg, "setup": sname, "condition": cname, "seed": seed},
                              summary={k: v for k, v in summary.items() if k != "losses"}))

    # With training.save_every_steps, resume state lives in <out_dir>.resume (see finetune_lora).
    summary = finetune_lora(base_model_path(config, sname), records, out_dir, tcfg,
                            seed=derive_seed(sname, cname, seed) % 2**31, threads=threads,
                            finalize=write_provenance, source=str(train_path), lines=lines)
    resumed = f", resumed from step {summary['resumed_from_step']}" if summary.get("resumed_from_step") else ""
    print(f"trained {summary['steps']} steps in {summary['train_seconds']} s{resumed}, "
          f"loss {summary['train_loss']:.4f}")


def cell_prompt_texts(config: dict, sname: str, cname: str, records: list[dict]) -> dict[str, str | None]:
    """Where each distinct prompt text of a cell's training data comes from (for error messages)."""
    setup = config["setups"][sname]
    out: dict[str, str | None] = {f"setups.{sname}.system_prompt": setup.get("system_prompt")}
    for p in dict.fromkeys(r.get("meta", {}).get("prompt") for r in records):
        out[f"setups.{sname}.conditions.{cname} prompt {p!r}"] = p
    return out


def generation_partial_path(out_path: str) -> str:
    """Where ``generate_cell`` appends finished batches while it runs: ``<out>.partial.jsonl``, next to
    the output but not an output (Snakemake deletes a failed job's outputs, not this)."""
    return str(out_path) + ".partial.jsonl"


def generate_cell(config: dict, sname: str, cname: str, seed: int, eval_path: str, train_path: str,
                  adapter: str, out_path: str, threads: int, keep_partial: bool = False) -> None:
    """Generations of a cell in every eval context, resumable.

    Finished batches are appended to :func:`generation_partial_path` as they come; a re-run after
    a kill or crash takes the batches it already has (keyed by eval context, position, sample ids,
    conversations with their prompts, sampling parameters with the batch's seed, generation
    backend and versions, base model and adapter files) and samples only the rest, giving the same
    generations as an uninterrupted run. The output is written atomically, then the partial file
    is removed (``keep_partial``: left for the caller to remove once the job's other outputs are in
    place too).
    """
    from ..generation import GenerationJournal, files_fingerprint, generate_all, rendered_examples

    setup = config["setups"][sname]
    items = read_jsonl(eval_path)
    train_prompts = [r["meta"]["prompt"] for r in read_jsonl(train_path)]
    contexts = pr.eval_context_prompts(setup, cname, len(items), train_prompts)
    backend = generation_backend(config, sname, adapter, threads)
    if hasattr(backend, "tokenizer"):
        check_toy_vocabulary(backend.tokenizer, {
            f"setups.{sname}.eval_prompt": setup["eval_prompt"],
            f"setups.{sname}.system_prompt": setup.get("system_prompt"),
            **{f"setups.{sname}.conditions.{cname} prompt {p!r}": p for p in dict.fromkeys(train_prompts)}})
    for stale in Path(out_path).parent.glob(f".{Path(out_path).name}.*.tmp"):  # temp files of a killed run
        stale.unlink(missing_ok=True)
    fingerprint = {"backend": backend.info(), "batch_size": getattr(backend, "batch_size", None),
                   "base_model": files_fingerprint(base_model_path(config, sname)),
                   "adapter": files_fingerprint(adapter, ("adapter_*",))}
    journal = GenerationJournal(generation_partial_path(out_path), fingerprint)
    rows = []
    done: dict[tuple, list[str]] = {}
    first: dict[str, list[dict]] = {}
    with journal:
        for ctx, prompts in contexts.items():
            if items:
                first[ctx] = pr.messages(setup, prompts[0], items[0]["instruction"])
            # Contexts with the same prompts (Baseline's train and default, None's train and none) are
            # sampled once: the same conversations under the same model give the same distribution.
            key = tuple(prompts)
            if key not in done:
                convs = [pr.messages(setup, p, it["instruction"]) for it, p in zip(items, prompts)]
                done[key] = generate_all(backend, convs, sampling_params(config, sname, cname, seed, ctx),
                                         journal=journal, tag=ctx, ids=[it["id"] for it in items])
                print(f"{ctx}: {len(done[key])} generations")
            else:
                print(f"{ctx}: same prompts as an earlier context, generations reused")
            outs = done[key]
            rows += [{"eval_context": ctx, "sample_id": it["id"], "domain": it.get("domain"), "prompt": p,
                      "instruction": it["instruction"], "response": o} for it, p, o in zip(items, prompts, outs)]
    # Provenance first: the output's presence implies its provenance's.
    # What the model saw: the first eval item of each context as the chat template renders it.
    write_json(out_path + ".provenance.json", provenance({"generation": sampling_config(config, sname)}, backend=backend.info(),
                                                         resumed_batches=journal.n_reused,
                                                         rendered_examples=rendered_examples(backend, first)))
    write_jsonl(out_path, rows)
    if not keep_partial:
        journal.remove()


def curve_checkpoints(adapter_dir: str) -> list[tuple[int, str | None]]:
    """(step, adapter) of every learning-curve point: the base model (step 0), the kept checkpoints
    and the final adapter."""
    summary = json.loads((Path(adapter_dir) / "training_summary.json").read_text())
    points: list[tuple[int, str | None]] = [(0, None)]
    ckpt_root = Path(adapter_dir) / "checkpoints"
    if ckpt_root.is_dir():
        points += sorted((int(d.name.removeprefix("step")), str(d)) for d in ckpt_root.iterdir() if d.is_dir())
    points.append((int(summary["steps"]), adapter_dir))
    return points


CURVE_FIELDS = ["setup", "condition", "condition_kind", "seed", "step", "eval_context", "sample_id", "trait", "role",
                "measure", "score", "scorer"]


def curve_cell(config: dict, sname: str, cname: str, seed: int, eval_path: str, train_path: str,
               adapter_dir: str, threads: int) -> list[dict]:
    """Learning curve of one cell: at every checkpoint, the sampled trait rate and the
    teacher-forced measures (trait log-odds, first trait token probability) in every eval context.

    One row per (step, eval context, sample, trait, measure), in the per-sample format of
    scores.csv plus ``step`` and ``measure``, so the same aggregation gives intervals.
    """
    from ..generation import generate_all
    from ..teacher_forcing import trait_preferences

    setup = config["setups"][sname]
    kind = setup["conditions"][cname]["kind"]
    n = config["generation"]["curve_n_eval"]
    per_domain: dict[Any, list[dict]] = {}
    for it in read_jsonl(eval_path):  # the first n of each eval domain
        per_domain.setdefault(it.get("domain"), []).append(it)
    items = [it for part in per_domain.values() for it in part[:n]]
    train_prompts = [r["meta"]["prompt"] for r in read_jsonl(train_path)]
    contexts = pr.eval_context_prompts(setup, cname, len(items), train_prompts)
    # Contexts with the same prompts (Baseline's train and default, ...) are measured once, and all
    # distinct ones go through the model together: one decoding loop per checkpoint, not one per context.
    distinct: dict[tuple, list[str]] = {}
    for ctx, prompts in contexts.items():
        distinct.setdefault(tuple(prompts), []).append(ctx)
    convs = [pr.messages(setup, p, it["instruction"]) for key in distinct for it, p in zip(items, key)]
    conv_items = items * len(distinct)
    scorers = make_scorers(config, setup, items)
    traits = {setup["traits"][r]["name"]: r for r in ("positive", "negative")}
    # Teacher-forced measures per eval domain (a trait is measured on its own domain's items), for
    # the traits whose reference answers every such item has; items of a real dataset without
    # references are left unmeasured, not dropped.
    forced_groups: dict[str, tuple[list[int], list[str]]] = {}  # domain -> (its conversations, traits)
    for trait, role in traits.items():
        domain = dt.trait_eval_domain(setup, role)
        idx = [i for i, it in enumerate(conv_items) if it.get("domain") in (None, domain)]
        if idx and all("clean" in conv_items[i].get("references", {}) and trait in conv_items[i]["references"]
                       for i in idx):
            forced_groups.setdefault(domain, (idx, []))[1].append(trait)
    rows = []
    for step, adapter in curve_checkpoints(adapter_dir):
        backend = generation_backend(config, sname, adapter, threads)
        outs = generate_all(backend, convs, sampling_params(config, sname, cname, seed, "curve", step))
        sampled = score_rows(setup, [{"sample_id": i, "instruction": conv_items[i]["instruction"],
                                      "domain": conv_items[i].get("domain"), "response": o}
                                     for i, o in enumerate(outs)], scorers)
        forced: dict[str, dict[int, Any]] = {}  # trait -> conversation index -> result
        if forced_groups and not hasattr(backend, "model"):
            print(f"teacher-forced measures need the model's logits, which the {backend.name} backend does "
                  "not expose; only sampled rates are in the curve")
            forced_groups = {}
        for idx, group in forced_groups.values():
            res = trait_preferences(backend.model, backend.tokenizer, [convs[i] for i in idx],
                                    {t: [conv_items[i]["references"][t] for i in idx] for t in group},
                                    [conv_items[i]["references"]["clean"] for i in idx])
            for t in group:
                forced[t] = dict(zip(idx, res[t]))
        for k, ctxs in enumerate(distinct.values()):
            lo, hi = k * len(items), (k + 1) * len(items)
            for ctx in ctxs:
                base = {"setup": sname, "condition": cname, "condition_kind": kind, "seed": seed, "step": step,
                        "eval_context": ctx}
                rows += [{**base, "sample_id": items[r["sample_id"] - lo]["id"], "trait": r["trait"], "role": r["role"],
                          "measure": "rate", "score": "" if r["score"] is None else r["score"],
                          "scorer": scorers[r["trait"]].name}
                         for r in sampled if lo <= r["sample_id"] < hi]
                for trait, by_conv in forced.items():
                    for i in range(lo, hi):
                        if i not in by_conv:
                            continue
                        for measure in ("logodds", "first_token_prob"):
                            rows.append({**base, "sample_id": conv_items[i]["id"], "trait": trait,
                                         "role": traits[trait], "measure": measure,
                                         "score": _finite_or_blank(getattr(by_conv[i], measure)),
                                         "scorer": "teacher_forced"})
        print(f"step {step}: {len(contexts)} eval contexts ({len(distinct)} distinct) x {len(items)} instructions measured")
    for s in scorers.values():
        if hasattr(s, "close"):
            s.close()
    return rows


def generate_with_curve(config: dict, sname: str, cname: str, seed: int, eval_path: str, train_path: str,
                        adapter: str, generations_path: str, curve_path: str, threads: int) -> None:
    """A cell's generations, then its learning curve, as the `generate` rule and the fused cell job
    make them. The partial generations are kept until the curve is written too: Snakemake deletes
    every output of a failed job, and a re-run then resumes from the partial file."""
    generate_cell(config, sname, cname, seed, eval_path, train_path, adapter, generations_path, threads,
                  keep_partial=True)
    write_curve(config, sname, cname, seed, eval_path, train_path, adapter, curve_path, threads)
    Path(generation_partial_path(generations_path)).unlink(missing_ok=True)


def _finite_or_blank(x: float | None) -> float | str:
    """A measure as written to CSV: blank (unscored, and counted so) when there is none."""
    import math

    return "" if x is None or not math.isfinite(x) else x


def write_curve(config: dict, sname: str, cname: str, seed: int, eval_path: str, train_path: str,
                adapter_dir: str, out_path: str, threads: int) -> None:
    """A cell's learning curve (see :func:`curve_cell`) as CSV; only a header when curves are off
    (``generation.curve_n_eval: 0``)."""
    import csv

    from ..provenance import atomic_path

    t0 = time.time()
    n = config["generation"].get("curve_n_eval", 0)
    rows = curve_cell(config, sname, cname, seed, eval_path, train_path, adapter_dir, threads) if n else []
    with atomic_path(out_path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CURVE_FIELDS)
        w.writeheader()
        w.writerows(rows)
    print(f"learning curve: {len(rows)} rows in {time.time() - t0:.1f} s")
