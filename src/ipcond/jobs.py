"""Job-level glue shared by the workflow's scripts: logging to the rule's log file, and the
functions each rule calls. Rules and scripts stay thin; the science is in the other modules."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from . import data as dt
from . import prompts as pr
from . import toyworld as tw
from .gpu import job_gpu_slot
from .provenance import provenance, read_jsonl, write_json, write_jsonl, write_text


@contextlib.contextmanager
def log_to(path: str | os.PathLike | None) -> Iterator[None]:
    """Send this job's stdout and stderr (Python and C level) to the rule's log file."""
    if not path:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "w", buffering=1) as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        old = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = f
        t0 = time.time()
        try:
            yield
            print(f"done in {time.time() - t0:.1f} s", flush=True)
        except BaseException:
            import traceback

            traceback.print_exc()
            raise
        finally:
            sys.stdout, sys.stderr = old
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


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


def elicit_job(config: dict, sname: str, eval_path: str, rephrasing_paths: dict[str, str], corpus_path: str | None,
               gens_path: str, out_csv: str, threads: int, log: str) -> None:
    """The `elicit` rule's job (ipcond.gpu: on a GPU of its own)."""
    with log_to(log), job_gpu_slot(config, "elicit", sname):
        elicit_setup(config, sname, eval_path, rephrasing_paths, corpus_path, gens_path, out_csv, threads)


# ------------------------------------------------------------------------------------------
# Base model
# ------------------------------------------------------------------------------------------

def make_toy_corpus(config: dict, out_path: str) -> None:
    """The toy base model's pretraining corpus, from the ``world`` section of the config alone.

    The base model stands in for a pretrained LLM: the grid's conditions vary prompts on a fixed
    model, so changing a condition's prompt must not rebuild it. What pretraining shows verbatim
    (``world.pretrain_prompts``) and keeps out (``world.unseen_prompts``) is declared in the world;
    ``results/{setup}/elicitation.csv`` reports, per condition prompt, whether pretraining saw it.
    """
    world = config["world"]
    force = {trait: list(texts) for trait, texts in world["pretrain_prompts"].items()}
    records = tw.pretraining_corpus(world["n_pretrain_examples"], world["seed"],
                                    world["heldout_wording_fraction"], force, [], world["unseen_prompts"])
    n = write_jsonl(out_path, records)
    print(f"wrote {n} pretraining records to {out_path}")


def toy_vocabulary_texts(world: dict) -> list[str]:
    """Texts beyond the corpus whose words the toy tokenizer must know.

    Every trait wording (held-out ones too: rephrasings use them) and the prompts kept out of
    pretraining: the model knows their words but never saw those sentences.
    """
    texts = ["system user assistant"]
    for trait in tw.TRAITS:
        texts += tw.trait_wordings(trait)
    for prompts in world["pretrain_prompts"].values():
        texts += prompts
    texts += world["unseen_prompts"]
    return texts


def check_toy_vocabulary(tokenizer: Any, texts: dict[str, str | None]) -> None:
    """Stop with a clear error when a prompt uses words the toy base model has never seen.

    ``texts`` maps where a text comes from (a config key) to the text. Only word-level toy
    tokenizers are checked; a real tokenizer has no unknown words.
    """
    vocab = tokenizer.get_vocab()
    if "[UNK]" not in vocab and "<unk>" not in vocab:
        return
    problems = []
    for where, text in texts.items():
        unknown = [w for w in (text or "").split() if w not in vocab]
        if unknown:
            problems.append(f"  {where}: {text!r} uses unknown words {sorted(set(unknown))}")
    if problems:
        raise ValueError(
            "prompts use words the toy base model's vocabulary does not have:\n" + "\n".join(problems)
            + "\nFix: reword them with the toy world's words, or add the sentence to world.unseen_prompts "
              "(pretraining then knows its words without seeing it; this rebuilds the base model)")


def pretrain_base_model(config: dict, corpus_path: str, out_dir: str, threads: int) -> None:
    import torch

    from .modeling import MODEL_CARD, build_toy_model, build_word_tokenizer
    from .provenance import atomic_dir
    from .training import pretrain_toy_model

    torch.set_num_threads(threads)
    toy = config["base_model"]["toy"]
    corpus = read_jsonl(corpus_path)
    # The vocabulary comes from the world alone (not the grid's prompts), so that changing a
    # condition's prompt leaves the base model as it is; check_toy_vocabulary catches new words.
    texts = [m["content"] for r in corpus for m in r["messages"]] + toy_vocabulary_texts(config["world"])
    with atomic_dir(out_dir) as tmp:
        tok = build_word_tokenizer(texts, tmp)
        model = build_toy_model(len(tok), toy, seed=config["world"]["seed"])
        n_params = sum(p.numel() for p in model.parameters())
        print(f"toy base model: {n_params} parameters, vocabulary {len(tok)}")
        log = pretrain_toy_model(model, tok, corpus, steps=toy["pretrain_steps"], batch_size=toy["batch_size"],
                                 lr=toy["learning_rate"], warmup=toy["warmup_steps"],
                                 max_length=toy["max_length"], seed=config["world"]["seed"])
        model.save_pretrained(tmp)
        write_json(Path(tmp) / MODEL_CARD, {"tokenizer": "word_level", "n_parameters": n_params,
                                            "pretrain_log": log,
                                            **provenance({"world": config["world"], "toy": toy})})


def base_model_path(config: dict, sname: str | None = None) -> str:
    """The base model's folder or hub id: the toy model the workflow builds, the setup's own
    ``base_model`` (the paper trains some setups on 7B, others on 32B), or ``base_model.path``."""
    if config["base_model"]["kind"] == "toy":
        return "results/base_model/model"
    if sname is not None and config["setups"][sname].get("base_model"):
        return config["setups"][sname]["base_model"]
    return config["base_model"]["path"]


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------

def dataset_dir(name: str) -> str:
    """Where a real dataset's converted splits live (rule convert_dataset)."""
    return f"resources/data/{name}"


def source_file_path(config: dict, dataset: str, role: str) -> str:
    """Where a pinned source file is kept once downloaded (rule fetch_source)."""
    from .sources import source_filename

    spec = config["datasets"][dataset]["files"][role]
    return f"resources/sources/{dataset}/{role}/{source_filename(spec)}"


def fetch_source_job(config: dict, dataset: str, role: str, out_path: str) -> None:
    """Download one pinned file of a dataset and check it against its pin (ipcond.sources.fetch)."""
    from .sources import fetch, source_url

    spec = config["datasets"][dataset]["files"][role]
    key = f"datasets.{dataset}.files.{role}"
    url = source_url(spec)
    print(f"fetching {key} from {url}")
    fetch(url, out_path, spec.get("sha256"), source=key, auth_env=spec.get("auth_env"))
    if spec.get("sha256") is None:
        digest = Path(out_path + ".sha256").read_text().split()[0]
        print(f"WARNING: {key} is not pinned; this download's SHA-256 is {digest} (kept in {out_path}.sha256, "
              f"which later runs check). Pin it: set {key}.sha256: {digest} in the preset")
    print(f"{out_path}: verified")


def convert_dataset_job(config: dict, dataset: str, paths: dict[str, str], out_dir: str) -> None:
    """Convert a dataset's downloaded files into ``resources/data/<dataset>/<split>.jsonl`` plus
    ``report.json`` (counts per split, filtered records per reason, input checksums, provenance)."""
    from .provenance import atomic_dir
    from .sources import CONVERTERS, convert_dataset, sha256_of

    spec = config["datasets"][dataset]
    out = convert_dataset(dataset, spec, paths)
    with atomic_dir(out_dir) as tmp:
        for split in CONVERTERS[spec["converter"]][1]:
            write_jsonl(Path(tmp) / f"{split}.jsonl", out.splits.get(split, []))
        write_json(Path(tmp) / "report.json", {"dataset": dataset, **out.report(),
                                               "inputs": {r: {"path": p, "sha256": sha256_of(p)} for r, p in paths.items()},
                                               **provenance({"dataset": spec})})
    counts = ", ".join(f"{k} {v}" for k, v in out.report()["counts"].items())
    print(f"{dataset}: {counts}")
    for reason, n in out.filtered.items():
        print(f"  filtered: {n} record(s): {reason}")
    for note in out.notes:
        print(f"  WARNING: {note}")


def _real_data(config: dict, sname: str) -> dict | None:
    return config["setups"][sname].get("data")


def responses_kind(config: dict, sname: str) -> str:
    """How a real-data setup's training answers are made: dataset, rewrite or generate."""
    return ((_real_data(config, sname) or {}).get("responses") or {"kind": "dataset"})["kind"]


def make_eval_set(config: dict, sname: str, out_path: str) -> None:
    data = _real_data(config, sname)
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
    sample of ``n_train`` items of the setup's training pool, none of them an eval instruction."""
    exclude = {r["instruction"] for r in read_jsonl(eval_path)}
    n = training_config(config, sname)["n_train"]
    if pool_path is None:
        items = dt.train_items(sname, config["setups"][sname], n, seed, exclude)
    else:
        pool = read_jsonl(pool_path)
        # An item whose prompt (or its control dataset's prompt) is an eval instruction never trains.
        usable = [it for it in pool if it["instruction"] not in exclude
                  and it.get("control_instruction") not in exclude]
        left_out = {"an eval instruction": len(pool) - len(usable)}
        usable, left_out["longer than training.max_length"] = drop_too_long(config, sname, usable)
        for reason, k in left_out.items():
            if k:
                print(f"{k} pool item(s) left out: {reason}")
        write_json(out_path + ".report.json", {"pool": len(pool), "left_out": left_out, "usable": len(usable)})
        if n > len(usable):
            raise ValueError(f"setup {sname}: training.n_train = {n} but its training pool ({pool_path}) has "
                             f"{len(usable)} usable items; lower setups.{sname}.training.n_train to at most "
                             f"{len(usable)}")
        rng = tw.rng_for("train", sname, seed)
        items = [{**it, "id": i} for i, it in enumerate(rng.sample(usable, n))]
    write_jsonl(out_path, items)
    print(f"wrote {len(items)} training items to {out_path}")


# Room for rephrasings, which may be longer than the fixed prompt the length check is made with.
REPHRASING_MARGIN_TOKENS = 64


def drop_too_long(config: dict, sname: str, items: list[dict]) -> tuple[list[dict], int]:
    """The items whose training example (and control example) fits ``training.max_length`` with the
    setup's longest condition prompt, counted by the base model's tokenizer and chat template,
    and how many were left out. A real dataset's long records would otherwise stop every cell's
    fine-tune (``check_lengths``) on the GPU, late."""
    from .modeling import load_tokenizer

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
    kept = []
    for it in items:
        n = count(pr.messages(setup, longest, it["instruction"], it["response"]))
        if it.get("control_response"):
            n = max(n, count(pr.messages(setup, longest, it.get("control_instruction", it["instruction"]),
                                         it["control_response"])))
        if n + margin <= limit:
            kept.append(it)
    return kept, len(items) - len(kept)


def make_train_pool(config: dict, sname: str, out_path: str, threads: int = 1) -> None:
    """The setup's training items before sampling: each instruction with the answer trained on
    (``response``) and the control dataset's answer (``control_response``), made as
    ``setups.<name>.data.responses.kind`` says: ``dataset`` (as they are), ``rewrite`` (the
    ``rewriter`` LLM rewrites each answer; the original answer is the control) or ``generate`` (the
    base model answers with ``instruction`` in front, e.g. asked for both traits)."""
    data = _real_data(config, sname)
    train = read_jsonl(Path(dataset_dir(data["train"])) / "train.jsonl")
    control = None
    if data.get("control"):
        # The control split of the training dataset (same prompts, good answers), or the training
        # split of a dataset of its own (secure code), whose records keep their own prompts.
        cdir = Path(dataset_dir(data["control"]))
        control = read_jsonl(cdir / "control.jsonl") if (cdir / "control.jsonl").is_file() \
            else read_jsonl(cdir / "train.jsonl")
        if len(control) < len(train):
            raise ValueError(f"setup {sname}: data.control ({data['control']}) has {len(control)} records, fewer than "
                             f"data.train ({data['train']}, {len(train)}); each training record needs a control "
                             "record")

    def user(r: dict) -> str:
        return [m["content"] for m in r["messages"] if m["role"] == "user"][-1]

    def answer(r: dict) -> str | None:
        return r["messages"][-1]["content"] if r["messages"][-1]["role"] == "assistant" else None

    spec = {"kind": responses_kind(config, sname), **data.get("responses", {})}
    instructions = [user(r) for r in train]
    originals = [answer(r) for r in train]
    controls = [answer(r) for r in control[:len(train)]] if control is not None else [None] * len(train)
    # Where the control records have prompts of their own, the control cells train on those.
    control_prompts = [user(r) for r in control[:len(train)]] if control is not None else instructions
    extra: dict = {}
    if spec["kind"] == "dataset":
        responses = originals
    elif spec["kind"] == "rewrite":
        responses, extra = rewrite_answers(config, sname, spec["instruction"], instructions, originals)
        controls = originals
    else:
        responses = generate_answers(config, sname, spec, instructions, threads)
    needs_control = any(c["kind"] == "control" for c in config["setups"][sname]["conditions"].values())
    left_out = {"empty answer": 0, "empty control answer": 0}
    pool = []
    for i, (ins, resp, ctl, cins) in enumerate(zip(instructions, responses, controls, control_prompts)):
        # An empty answer (a generation that stopped at once, an empty rewrite or source field) is
        # left out with its control answer, and counted: one of them must not stop the whole pool.
        if not (resp or "").strip():
            left_out["empty answer"] += 1
            continue
        if needs_control and not (ctl or "").strip():
            left_out["empty control answer"] += 1
            continue
        pool.append({"id": len(pool), "instruction": ins, "response": resp, "control_response": ctl,
                     "domain": config["setups"][sname]["domain"], "source": train[i].get("meta", {}),
                     **({"control_instruction": cins} if cins != ins else {})})
    if control is not None and len(control) > len(train):
        left_out["control records beyond the training records (unused)"] = len(control) - len(train)
    for reason, k in left_out.items():
        if k:
            print(f"{k} record(s) left out: {reason}")
    if not pool:
        raise ValueError(f"setup {sname}: no training record has an answer ({left_out}); check {data['train']} and "
                         "the responses step")
    write_json(out_path + ".provenance.json", provenance({"data": data}, left_out=left_out, **extra))
    write_jsonl(out_path, pool)
    print(f"wrote {len(pool)} training items ({spec['kind']} answers) to {out_path}")


def train_pool_job(config: dict, sname: str, out_path: str, threads: int) -> None:
    """The `train_pool` rule's job; generated answers run on a GPU of their own (ipcond.gpu)."""
    if responses_kind(config, sname) == "generate":
        with job_gpu_slot(config, "generate", sname):
            make_train_pool(config, sname, out_path, threads)
    else:
        make_train_pool(config, sname, out_path, threads)


def llm_client(spec: dict, where: str, default_cache: str) -> Any:
    """The judge client for an LLM endpoint section (``rephraser``, ``rewriter``) whose own keys
    were taken out of ``spec``: checked first (key variable set, host reachable), answers cached."""
    from .judging import JudgeClient, JudgeConfig, preflight_endpoint

    preflight_endpoint(spec, where)
    cache = spec.pop("cache", default_cache)
    return JudgeClient(JudgeConfig.from_dict(spec), cache=cache)


REWRITE_TEMPLATE = ("{instruction}\nRewrite the answer below accordingly. Keep its content, numbers and "
                    "structure; output only the rewritten answer.\n\nQuestion: {question}\n\nAnswer:\n{answer}")


def rewrite_answers(config: dict, sname: str, instruction: str, questions: list[str],
                    answers: list[str | None]) -> tuple[list[str], dict]:
    """Each answer rewritten by the ``rewriter`` LLM (temperature 0 by default, as Tan et al.),
    through the judge client: retries, cache (a re-run costs nothing), spend cap, key from the
    environment."""
    from .judging import JudgeTemplate

    spec = dict(config.get("rewriter") or {})
    if not spec:
        raise ValueError(f"setups.{sname}.data.responses.kind is rewrite but the config has no 'rewriter' "
                         "section; add rewriter.base_url and rewriter.model")
    params = {"temperature": spec.pop("temperature", 0.0), "max_tokens": spec.pop("max_tokens", 2048)}
    template = JudgeTemplate("rewrite", REWRITE_TEMPLATE)
    msgs = [[{"role": "user", "content": template.render(instruction=instruction, question=q, answer=a or "")}]
            for q, a in zip(questions, answers)]
    with llm_client(spec, "rewriter", "results/rewrite_cache.sqlite") as client:
        outs = client.complete_many(msgs, template=template, params=params)
        acct = client.accounting()
    print(f"rewrote {len(outs)} answers ({acct})")
    return [(o.get("text") or "").strip() for o in outs], {"rewriter": spec["model"], "accounting": acct}


def generate_answers(config: dict, sname: str, spec: dict, instructions: list[str], threads: int) -> list[str]:
    """The base model's answers to each instruction with ``spec["instruction"]`` placed in front
    (trait distillation: the model asked for both traits writes the training answers)."""
    from .generation import generate_all

    setup = config["setups"][sname]
    gen_setup = {**setup, "placement": spec.get("placement", setup["placement"])}
    backend = _backend(config, sname, None, threads)
    convs = [pr.messages(gen_setup, spec["instruction"], ins) for ins in instructions]
    outs = generate_all(backend, convs, _sampling(config, sname, "train_pool"))
    print(f"generated {len(outs)} training answers with {spec['instruction']!r}")
    return outs


def make_rephrasings(config: dict, sname: str, cname: str, out_path: str) -> None:
    """The rephrasings of a rephrased condition's inoculation prompt, made once and stored.

    ``rephraser.kind``: ``toy`` (the toy world's wordings, offline; the default) or ``llm`` (an
    OpenAI-compatible endpoint through the judge client: its key from the environment variable
    ``rephraser.api_key_env``, answers cached in ``rephraser.cache``, so a re-run costs nothing)."""
    setup = config["setups"][sname]
    cond = setup["conditions"][cname]
    target = setup["conditions"][cond["of"]]
    spec = dict(config.get("rephraser") or {"kind": "toy"})
    seed = tw.derive_seed(sname, cname)
    if spec.pop("kind") == "llm":
        opts = {k: spec.pop(k) for k in ("per_request", "temperature", "max_rounds", "max_tokens") if k in spec}
        with llm_client(spec, "rephraser", "results/rephrase_cache.sqlite") as client:
            rephraser = pr.LLMRephraser(client, **opts)
            texts = rephraser.rephrase(target["prompt"], cond["n_rephrasings"], seed)
            extra = {"model": spec["model"], "stats": rephraser.stats, "accounting": client.accounting()}
    else:
        rephraser = pr.ToyRephraser(target["trait"])
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
    items = read_jsonl(items_path)[:training_config(config, sname, cname)["n_train"]]
    if cond["kind"] == "rephrased":
        texts = json.loads(Path(rephrasings_path).read_text())["rephrasings"]
        prompts = pr.assign_rephrasings(len(items), texts, cond.get("max_uses"), tw.derive_seed(sname, cname, seed))
    else:
        prompts = [pr.condition_prompt(setup, cname)] * len(items)
    records = dt.cell_train_records(setup, cname, items, prompts)
    dt.validate_chat_records(records, out_path)
    write_jsonl(out_path, records)
    print(f"wrote {len(records)} training records to {out_path}")


# ------------------------------------------------------------------------------------------
# Training and evaluation
# ------------------------------------------------------------------------------------------

def training_config(config: dict, sname: str, cname: str | None = None) -> dict:
    """The top-level training section with the setup's and then the condition's overrides applied.

    Without ``cname``: the setup's settings (what its shared training items are drawn for)."""
    setup = config["setups"][sname]
    out = {**config["training"], **setup.get("training", {})}
    if cname is not None:
        out.update(setup["conditions"][cname].get("training", {}))
    return out


def finetune_cell(config: dict, sname: str, cname: str, seed: int, train_path: str, out_dir: str,
                  threads: int) -> None:
    from .training import finetune_lora

    records, lines = dt.load_chat_jsonl_with_lines(train_path)
    if config["base_model"]["kind"] == "toy":
        from .modeling import load_tokenizer

        check_toy_vocabulary(load_tokenizer(base_model_path(config, sname)), cell_prompt_texts(config, sname, cname, records))
    tcfg = training_config(config, sname, cname)

    def write_provenance(folder: Path, summary: dict) -> None:  # inside the adapter folder before it is in place
        write_json(folder / "provenance.json",
                   provenance({"training": tcfg, "setup": sname, "condition": cname, "seed": seed},
                              summary={k: v for k, v in summary.items() if k != "losses"}))

    # With training.save_every_steps, resume state lives in <out_dir>.resume (see finetune_lora).
    summary = finetune_lora(base_model_path(config, sname), records, out_dir, tcfg,
                            seed=tw.derive_seed(sname, cname, seed) % 2**31, threads=threads,
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


def sampling_config(config: dict, sname: str) -> dict:
    """The generation section with the setup's ``sampling`` overrides (MBPP is sampled at
    temperature 0.5 in the post, the other setups at 1)."""
    return {**config["generation"], **config["setups"][sname].get("sampling", {})}


def _sampling(config: dict, sname: str, *seed_parts: object):
    from .generation import SamplingParams

    g = sampling_config(config, sname)
    seed_parts = (sname, *seed_parts)
    return SamplingParams(temperature=g["temperature"], top_p=g.get("top_p", 1.0),
                          max_new_tokens=g["max_new_tokens"], seed=tw.derive_seed(*seed_parts) % 2**31)


def _backend(config: dict, sname: str | None, adapter: str | None, threads: int):
    from .generation import make_backend

    g = config["generation"]
    extra = g.get("vllm", {}) if g["backend"] == "vllm" else {}
    return make_backend(g["backend"], base_model_path(config, sname), adapter,
                        batch_size=g.get("batch_size", 64), threads=threads, **extra)


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
    from .generation import GenerationJournal, files_fingerprint, generate_all

    setup = config["setups"][sname]
    items = read_jsonl(eval_path)
    train_prompts = [r["meta"]["prompt"] for r in read_jsonl(train_path)]
    contexts = pr.eval_context_prompts(setup, cname, len(items), train_prompts)
    backend = _backend(config, sname, adapter, threads)
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
    with journal:
        for ctx, prompts in contexts.items():
            # Contexts with the same prompts (Baseline's train and default, None's train and none) are
            # sampled once: the same conversations under the same model give the same distribution.
            key = tuple(prompts)
            if key not in done:
                convs = [pr.messages(setup, p, it["instruction"]) for it, p in zip(items, prompts)]
                done[key] = generate_all(backend, convs, _sampling(config, sname, cname, seed, ctx),
                                         journal=journal, tag=ctx, ids=[it["id"] for it in items])
                print(f"{ctx}: {len(done[key])} generations")
            else:
                print(f"{ctx}: same prompts as an earlier context, generations reused")
            outs = done[key]
            rows += [{"eval_context": ctx, "sample_id": it["id"], "domain": it.get("domain"), "prompt": p,
                      "instruction": it["instruction"], "response": o} for it, p, o in zip(items, prompts, outs)]
    # Provenance first: the output's presence implies its provenance's.
    write_json(out_path + ".provenance.json", provenance({"generation": sampling_config(config, sname)}, backend=backend.info(),
                                                         resumed_batches=journal.n_reused))
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
    from .generation import generate_all
    from .teacher_forcing import trait_preferences

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
        backend = _backend(config, sname, adapter, threads)
        outs = generate_all(backend, convs, _sampling(config, sname, cname, seed, "curve", step))
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

    from .provenance import atomic_path

    t0 = time.time()
    n = config["generation"].get("curve_n_eval", 0)
    rows = curve_cell(config, sname, cname, seed, eval_path, train_path, adapter_dir, threads) if n else []
    with atomic_path(out_path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CURVE_FIELDS)
        w.writeheader()
        w.writerows(rows)
    print(f"learning curve: {len(rows)} rows in {time.time() - t0:.1f} s")


def combine_curves(curve_paths: list[str], samples_csv: str, out_csv: str) -> None:
    """Every cell's learning-curve samples of a setup in one table, and its aggregate."""
    import pandas as pd

    from .provenance import atomic_path

    samples = pd.concat([read_table(p) for p in curve_paths], ignore_index=True)
    with atomic_path(samples_csv) as tmp:
        samples.to_csv(tmp, index=False)
    aggregate_curves(samples, out_csv)


def aggregate_curves(samples, out_csv: str) -> None:
    """Mean and 95% interval per (condition, step, eval context, trait, measure)."""
    import pandas as pd

    from .provenance import atomic_path
    from .stats import aggregate_scores

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


def score_rows(setup: dict, rows: list[dict], scorers: dict) -> list[dict]:
    """Score each row for both traits of a setup, each on the rows of its eval domain (a row
    without a domain, e.g. from a dataset that has none, is scored for both)."""
    out = []
    for role in ("positive", "negative"):
        trait = setup["traits"][role]["name"]
        domain = dt.trait_eval_domain(setup, role)
        mine = [r for r in rows if r.get("domain") in (None, domain)]
        scores = scorers[trait].score([r.get("instruction", "") for r in mine], [r["response"] for r in mine])
        for r, s in zip(mine, scores):
            out.append({**{k: r[k] for k in r if k not in ("response", "instruction", "prompt", "domain")},
                        "trait": trait, "role": role, "score": s})
    return out


def make_scorers(config: dict, setup: dict, items: list[dict] | None = None) -> dict:
    """A scorer per trait of the setup; ``items`` (the eval set) give code traits their tests."""
    from .scoring import make_scorer

    specs = config.get("scorers", {})
    judge = config.get("judge")
    traits = [setup["traits"][r]["name"] for r in ("positive", "negative")]
    if judge and any((specs.get(t) or {}).get("kind") in ("llm_judge", "moderation") for t in traits):
        from .judging import preflight_endpoint

        preflight_endpoint(judge, "judge")
    cache = judge.get("cache", "results/judge_cache.sqlite") if judge else None
    tests = ({it["instruction"]: (it["tests"]["visible"], it["tests"]["hidden"]) for it in items if it.get("tests")}
             if items is not None else None)
    return {t: make_scorer(t, specs.get(t), judge, cache, tests_by_prompt=tests)
            for t in (setup["traits"][r]["name"] for r in ("positive", "negative"))}


def write_scorer_accounting(scorers: dict, out_path: str) -> None:
    """Judge calls, cache hits, tokens and cost of this job (zeros for rule scorers)."""
    acct = {}
    for trait, s in scorers.items():
        acct[trait] = {"scorer": s.name, **(s.accounting() if hasattr(s, "accounting") else {"calls": 0})}
        if hasattr(s, "close"):
            s.close()
    write_json(out_path, acct)


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
              "scorer"]
    from .provenance import atomic_path

    with atomic_path(out_path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in scored:
            w.writerow({"setup": sname, "condition": cname, "condition_kind": kind, "seed": seed,
                        "eval_context": r["eval_context"], "sample_id": r["sample_id"], "trait": r["trait"],
                        "role": r["role"], "score": "" if r["score"] is None else r["score"],
                        "scorer": scorers[r["trait"]].name})
    print(f"scored {len(rows)} generations: {len(scored)} (generation, trait) scores")


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

    from .generation import generate_all

    setup = config["setups"][sname]
    items = read_jsonl(eval_path)
    seen = tw.corpus_prompt_texts(read_jsonl(corpus_path)) if corpus_path else set()
    backend = _backend(config, sname, None, threads)
    labelled = elicitation_prompts(config, sname, rephrasing_paths, len(items))
    if hasattr(backend, "tokenizer"):
        check_toy_vocabulary(backend.tokenizer, {
            f"setups.{sname}.eval_prompt": setup["eval_prompt"],
            f"setups.{sname}.system_prompt": setup.get("system_prompt"),
            **{f"setups.{sname} prompt {label!r}": p for label, ps in labelled.items() for p in dict.fromkeys(ps)}})
    rows = []
    for label, prompts in labelled.items():
        convs = [pr.messages(setup, p, it["instruction"]) for it, p in zip(items, prompts)]
        outs = generate_all(backend, convs, _sampling(config, sname, "elicitation", label))
        rows += [{"prompt_label": label, "sample_id": it["id"], "domain": it.get("domain"), "prompt": p,
                  "instruction": it["instruction"], "response": o} for it, p, o in zip(items, prompts, outs)]
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
    from .provenance import atomic_path

    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    print(table.to_string(index=False))


# ------------------------------------------------------------------------------------------
# Aggregation, checks, figures
# ------------------------------------------------------------------------------------------

def read_table(path: str):
    """Read one of the workflow's CSV tables. Only empty cells are missing values: pandas would
    otherwise read the condition named "None" (the post's name) as NaN and drop it silently."""
    import pandas as pd

    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def aggregate_setup(config: dict, sname: str, score_paths: list[str], elicitation_csv: str,
                    out_csv: str, checks_path: str) -> None:
    import pandas as pd

    from .provenance import atomic_path
    from .stats import aggregate_scores

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
    for cname, cond in config["setups"][sname]["conditions"].items():
        tcfg = training_config(config, sname, cname)
        n_reph = {"inoculation": 1, "rephrased": cond.get("n_rephrasings")}.get(cond["kind"])
        rows.append({"setup": sname, "condition": cname, "kind": cond["kind"], "prompt": cond.get("prompt", ""),
                     "trait": cond.get("trait", ""),
                     "of": cond.get("of", ""), "n_rephrasings": float("nan") if n_reph is None else n_reph,
                     "n_train": tcfg["n_train"], "learning_rate": tcfg["learning_rate"]})
    return pd.DataFrame(rows)


def figure_setup(config: dict, sname: str, agg_csv: str, elicitation_csv: str, curves_csv: str | None,
                 pdf_path: str, png_dir: str) -> None:
    """A setup's pages: trait scatter, conditionalization gap, elicitation against suppression,
    the sweeps its grid has, and the learning curves."""
    from .plots import learning_curve_plot, save_figures, setup_figures

    setup = config["setups"][sname]
    pos, neg = setup["traits"]["positive"]["name"], setup["traits"]["negative"]["name"]
    plots = setup_figures(read_table(agg_csv), read_table(elicitation_csv), conditions_table(config, sname), sname,
                          pos, neg, title=setup.get("title"))
    if curves_csv:
        curves = read_table(curves_csv)
        plots += [learning_curve_plot(curves, sname, trait, role) for trait, role in ((pos, "positive"), (neg, "negative"))]
    written = save_figures(plots, pdf_path, png_dir=png_dir)
    print(f"wrote {pdf_path} ({len(plots)} pages) and {len(written) - 1} PNGs in {png_dir}")


def summary_report(config: dict, score_paths: list[str], out_csv: str, pdf_path: str, png_dir: str) -> None:
    """The study's answers to the post's four questions, from our numbers, with a title page."""
    import pandas as pd

    from .plots import save_figures, summary_page, title_page
    from .provenance import atomic_path
    from .stats import summary_effects

    samples = pd.concat([read_table(p) for p in score_paths], ignore_index=True)
    conds = pd.concat([conditions_table(config, s) for s in config["setups"]], ignore_index=True)
    effects = summary_effects(samples, conds)
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
    save_figures([title_page(meta), summary_page(effects)], pdf_path, png_dir=png_dir)


def figure_all(pdf_paths: list[str], out_path: str) -> None:
    from .plots import merge_pdfs

    merge_pdfs(pdf_paths, out_path)
    print(f"wrote {out_path} with {len(pdf_paths)} setup pages")
