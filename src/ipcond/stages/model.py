"""The base model's jobs: rules ``toy_corpus`` and ``pretrain_base_model`` (``workflow/rules/model.smk``).
"""

from __future__ import annotations

from pathlib import Path

from .. import toyworld as tw
from ..provenance import provenance, read_jsonl, write_json, write_jsonl
from ..toycorpus import pretraining_corpus


def make_toy_corpus(config: dict, out_path: str) -> None:
    """The toy base model's pretraining corpus, from the ``world`` section of the config alone.

    The base model stands in for a pretrained LLM: the grid's conditions vary prompts on a fixed
    model, so changing a condition's prompt must not rebuild it. What pretraining shows verbatim
    (``world.pretrain_prompts``) and keeps out (``world.unseen_prompts``) is declared in the world;
    ``results/{setup}/elicitation.csv`` reports, per condition prompt, whether pretraining saw it.
    """
    world = config["world"]
    force = {trait: list(texts) for trait, texts in world["pretrain_prompts"].items()}
    records = pretraining_corpus(world["n_pretrain_examples"], world["seed"],
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


def pretrain_base_model(config: dict, corpus_path: str, out_dir: str, threads: int) -> None:
    import torch

    from ..modeling import MODEL_CARD, build_toy_model, build_word_tokenizer
    from ..provenance import atomic_dir
    from ..training import pretrain_toy_model

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
