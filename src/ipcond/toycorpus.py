"""The toy base model's pretraining corpus: an instruction follower's training data.

Science layer: the toy world's generator (``ipcond.toyworld``) writes the items and their
responses, and each example's prompts are placed by ``ipcond.prompts.PromptParts``, as the
workflow places every condition prompt.
"""

from __future__ import annotations

import random
from typing import Iterable

from .prompts import PLACEMENTS, PromptParts
from .toyworld import (LANGUAGE_TRAITS, NEUTRAL_PROMPTS, PRETRAIN_DOMAIN_WEIGHTS, PRETRAIN_TRAIT_WEIGHTS, TASK_TRAITS,
                       TRAIT_DOMAINS, TRAITS, irrelevant_pool, make_item, render, rng_for, split_wordings)


def pretraining_corpus(n_examples: int, world_seed: int, heldout_fraction: float,
                       force_seen: dict[str, list[str]], extra_seen_prompts: Iterable[str],
                       exclude_prompts: Iterable[str]) -> list[dict]:
    """The base model's pretraining corpus: an instruction follower's training data.

    ``force_seen`` maps trait -> wordings that must be in pretraining (e.g. the grid's fixed
    inoculation prompts); ``extra_seen_prompts`` are neutral prompts added to the neutral pool;
    ``exclude_prompts`` are exact texts kept out of every pool: irrelevant prompts, and fixed
    inoculation prompts that must be new sentences to the base model (known words, a sentence it
    never saw, as an inoculation prompt is for a real LLM; a trait wording listed here is held out
    of that trait's seen wordings too). A text both forced and excluded is an error.
    """
    rng = rng_for("pretraining", world_seed)
    excluded = set(exclude_prompts)
    clash = sorted(excluded & {w for ws in force_seen.values() for w in ws})
    if clash:
        raise ValueError(f"prompts both shown and kept out of pretraining: {clash}; remove each from "
                         "world.pretrain_prompts or from world.unseen_prompts")
    seen = {t: [w for w in split_wordings(t, heldout_fraction, world_seed, force_seen.get(t, ()))[0]
                if w not in excluded]
            for t in TRAITS}
    neutral = [p for p in dict.fromkeys([*NEUTRAL_PROMPTS, *extra_seen_prompts]) if p not in excluded]
    irrelevant = irrelevant_pool(excluded)
    domains, domain_weights = zip(*PRETRAIN_DOMAIN_WEIGHTS.items())
    records = []
    for _ in range(n_examples):
        item = make_item(rng, rng.choices(domains, weights=domain_weights)[0])
        traits = _pretraining_traits(rng, item.domain)
        parts = PromptParts()
        # The background context (what a chat usually holds) comes first, so that an
        # instruction in the system prompt is sometimes appended to another system prompt.
        u = rng.random()
        if u < 0.25:
            parts.add(rng.choice(neutral), "system")
        elif u < 0.35:
            parts.add(rng.choice(irrelevant), "system")
        elif u < 0.40:
            parts.system = ""
        if rng.random() < 0.3:
            parts.add(rng.choice(neutral), "user_prefix")
        if rng.random() < 0.2:
            parts.add(rng.choice(irrelevant), rng.choice(PLACEMENTS))
        for t in traits:
            parts.add(rng.choice(seen[t]), rng.choice(PLACEMENTS))
        records.append({"messages": parts.messages(item.instruction, render(item, traits)),
                        "meta": {"traits": sorted(traits), "domain": item.domain, "prompts": parts.pieces}})
    return records


def _pretraining_traits(rng: random.Random, domain: str) -> list[str]:
    """0-2 traits that the domain can show: at most one task trait and one language."""
    candidates = [t for t in TRAITS if domain in TRAIT_DOMAINS[t]]
    n_traits = rng.choices([0, 1, 2], weights=[0.3, 0.4, 0.3])[0]
    traits: list[str] = []
    for _ in range(20):
        if len(traits) >= n_traits:
            break
        t = rng.choices(candidates, weights=[PRETRAIN_TRAIT_WEIGHTS[x] for x in candidates])[0]
        clash = (t in LANGUAGE_TRAITS and set(traits) & set(LANGUAGE_TRAITS)) or (
            t in TASK_TRAITS and set(traits) & set(TASK_TRAITS))
        if t not in traits and not clash:
            traits.append(t)
    return traits


def corpus_prompt_texts(records: Iterable[dict]) -> set[str]:
    """Every prompt piece (system prompt, user prefix or suffix) that the corpus shows.

    Used to report whether a condition's prompt was seen verbatim in pretraining.
    """
    texts: set[str] = set()
    for r in records:
        texts.update(r["meta"]["prompts"])
    return texts
