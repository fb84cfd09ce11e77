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
from ..config import base_model_path, main_grid_conditions, sampling_config, training_config
from ..gpu import job_gpu_slot
from ..provenance import provenance, read_jsonl, write_json, write_jsonl
from ..seeding import derive_seed
from .common import (check_toy_vocabulary, generation_backend, given_full_model, log_to, make_scorers,
                     sampling_params, score_rows)


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
    """The `finetune` rule's job (ipcond.gpu: on a GPU of its own); for a cell with ``model_from``
    it links the given model instead (no GPU needed, :func:`link_cell_model`)."""
    if config["setups"][sname]["conditions"][cname].get("model_from"):
        with log_to(log):
            link_cell_model(config, sname, cname, seed, adapter)
        return
    with log_to(log), job_gpu_slot(config, "finetune", sname):
        finetune_cell(config, sname, cname, seed, train_path, adapter, threads)


def generate_job(config: dict, sname: str, cname: str, seed: int, eval_path: str, train_path: str, adapter: str,
                 generations_path: str, curve_path: str, threads: int, log: str) -> None:
    """The `generate` rule's job (ipcond.gpu: on a GPU of its own)."""
    with log_to(log), job_gpu_slot(config, "generate", sname):
        generate_with_curve(config, sname, cname, seed, eval_path, train_path, adapter, generations_path,
                            curve_path, threads)


GIVEN_MODEL_RECORD = "model_from.json"  # read by ipcond.stages.common.given_full_model


def resolve_model_from(ref: str) -> Path:
    """The local folder of a ``model_from`` reference: a local folder as it is, else a hub
    repository ``org/name`` (or ``org/name@revision``) downloaded with ``huggingface_hub`` (its
    cache; ``HF_TOKEN`` from the environment for gated ones). Errors name the reference and the fix."""
    p = Path(ref).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ValueError(f"model_from = {ref!r} is a file; point it at a model or adapter folder")
        return p.resolve()
    if ref.startswith(("/", "./", "../", "~")) or ref.count("/") != 1 and "@" not in ref:
        raise ValueError(f"model_from = {ref!r}: no such folder, and not a hub id (org/name[@revision])")
    repo, _, revision = ref.partition("@")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=repo, revision=revision or None))
    except Exception as e:  # network, auth, missing repository: say which and how to go on
        raise ValueError(f"model_from = {ref!r}: could not download it from the hub ({type(e).__name__}: {e}). "
                         "Run on a machine with hub access (HF_TOKEN set for gated repositories), or download "
                         "the repository and give its local folder") from None


def link_cell_model(config: dict, sname: str, cname: str, seed: int, out_dir: str) -> dict:
    """A cell whose model is given (``conditions.<c>.model_from``) instead of trained: its adapter
    folder ``out_dir`` gets, for a LoRA adapter folder (``adapter_config.json``), a copy of the
    adapter's files; for a full model folder (``config.json``, e.g. a merged fine-tune), a record
    ``model_from.json`` that makes the generation backend load that model instead of the setup's
    base model (:func:`given_full_model`). Either way ``model_from.json`` records the reference,
    the folder, its kind and its files' SHA-256, plus ``training_summary.json`` with 0 steps (such a
    cell has no learning curve: :func:`write_curve`) and ``provenance.json``. Returns the record.

    Raises ValueError for a folder that is neither, naming the fix."""
    import shutil

    from ..provenance import atomic_dir
    from ..sources import sha256_of

    ref = config["setups"][sname]["conditions"][cname]["model_from"]
    src = resolve_model_from(ref)
    if (src / "adapter_config.json").is_file():
        kind = "lora_adapter"
        adapter_cfg = json.loads((src / "adapter_config.json").read_text())
        base = base_model_path(config, sname)
        given_base = adapter_cfg.get("base_model_name_or_path") or ""
        if given_base and given_base.rstrip("/").split("/")[-1] != str(base).rstrip("/").split("/")[-1]:
            print(f"WARNING: {ref} is an adapter of {given_base!r}, but setup {sname} has base model {base!r}")
    elif (src / "config.json").is_file():
        kind = "full_model"
    else:
        raise ValueError(f"setups.{sname}.conditions.{cname}.model_from = {ref!r}: {src} has neither "
                         "adapter_config.json (a LoRA adapter) nor config.json (a full model); point it at "
                         "the folder save_pretrained wrote")
    files = sorted(f for f in src.iterdir() if f.is_file())
    record = {"model_from": ref, "folder": str(src), "kind": kind,
              "files": {f.name: sha256_of(f) for f in files}}  # read in chunks: a full model is GBs
    with atomic_dir(out_dir) as tmp:
        tmp = Path(tmp)
        if kind == "lora_adapter":
            ours = (GIVEN_MODEL_RECORD, "training_summary.json", "provenance.json")
            for f in files:  # the adapter's weights and config, and the tokenizer files beside them
                if f.name not in ours and (f.name.startswith("adapter_") or f.suffix in (".json", ".txt", ".model")):
                    shutil.copy2(f, tmp / f.name)
        write_json(tmp / GIVEN_MODEL_RECORD, record)
        write_json(tmp / "training_summary.json", {"steps": 0, "model_from": ref})
        write_json(tmp / "provenance.json", provenance({"setup": sname, "condition": cname, "seed": seed,
                                                        "model_from": ref}, summary={"kind": kind}))
    print(f"model_from {ref!r}: {kind} from {src} ({len(files)} files); not trained")
    return record


def finetune_cell(config: dict, sname: str, cname: str, seed: int, train_path: str, out_dir: str,
                  threads: int) -> None:
    """Fine-tune the cell's LoRA adapter into ``out_dir``; a cell with ``model_from`` is not
    trained: its given model is linked there instead (:func:`link_cell_model`)."""
    from ..training import finetune_lora

    if config["setups"][sname]["conditions"][cname].get("model_from"):
        link_cell_model(config, sname, cname, seed, out_dir)
        return

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


def cell_train_prompts(config: dict, sname: str, cname: str, train_path: str | None) -> list[str | None]:
    """The prompts a cell was trained with, which its ``train`` eval context cycles through: read
    from its training file, or, for a cell evaluated from a given model (``model_from``: its
    ``train_path`` is then its rephrasings file, or empty for a fixed prompt), the condition's
    rephrasings or its one prompt."""
    if not config["setups"][sname]["conditions"][cname].get("model_from"):
        return [r["meta"]["prompt"] for r in read_jsonl(train_path)]
    if train_path:
        return list(json.loads(Path(train_path).read_text())["rephrasings"])
    return [pr.condition_prompt(config["setups"][sname], cname)]


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
    train_prompts = cell_train_prompts(config, sname, cname, train_path)
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
                   "base_model": files_fingerprint(given_full_model(adapter) or base_model_path(config, sname)),
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
    train_prompts = cell_train_prompts(config, sname, cname, train_path)
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
    (``generation.curve_n_eval: 0``, or a sweep cell with ``generation.curve_sweep_cells: false``:
    its size or learning rate is its setup's dose-response, and its curve repeats the grid's)."""
    import csv

    from ..provenance import atomic_path

    t0 = time.time()
    n = config["generation"].get("curve_n_eval", 0)
    if n and config["setups"][sname]["conditions"][cname].get("model_from"):
        # A given model has no training steps here: its rates are in scores.csv, and a curve of
        # the base model and the given model at one step would read as a training curve.
        print("no learning curve: the cell's model is given (model_from), not trained here")
        n = 0
    if n and not config["generation"].get("curve_sweep_cells", True) and \
            cname not in main_grid_conditions(config, sname):
        print(f"{cname} is a sweep cell (trained at other settings than its setup's) and "
              "generation.curve_sweep_cells is off: no learning curve")
        n = 0
    rows = curve_cell(config, sname, cname, seed, eval_path, train_path, adapter_dir, threads) if n else []
    with atomic_path(out_path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CURVE_FIELDS)
        w.writeheader()
        w.writerows(rows)
    print(f"learning curve: {len(rows)} rows in {time.time() - t0:.1f} s")
