"""Rephrasings of an inoculation prompt, and which rephrasing each training example gets.

Science layer: the toy world's wordings (``ToyRephraser``, offline) or an LLM behind a
chat-completions endpoint (``LLMRephraser``, through the judging client); a rephrased condition's
examples each get one (:func:`assign_rephrasings`).
"""

from __future__ import annotations

import math
import re
from typing import Any, Protocol, Sequence

from .seeding import rng_for
from .toyworld import trait_wordings


class Rephraser(Protocol):
    name: str

    def rephrase(self, prompt: str, n: int, seed: int) -> list[str]:
        """``n`` distinct paraphrases of ``prompt``."""
        ...


class ToyRephraser:
    """Offline rephraser of the toy world: distinct wordings of the same trait instruction.

    It draws from every wording the toy grammar has for the trait, those pretraining saw and
    those it held out, so a rephrased condition mixes both (as an LLM's paraphrases would).
    """

    name = "toy_wordings"

    def __init__(self, trait: str):
        self.trait = trait

    def rephrase(self, prompt: str, n: int, seed: int) -> list[str]:
        pool = [w for w in trait_wordings(self.trait) if w != prompt]
        if n > len(pool) + 1:
            raise ValueError(f"asked for {n} rephrasings of {prompt!r} but the toy world has only "
                             f"{len(pool) + 1} wordings of trait '{self.trait}'")
        rng = rng_for("rephrase", seed, prompt)
        rng.shuffle(pool)
        return ([prompt] + pool)[:n] if n > len(pool) else pool[:n]


def assign_rephrasings(n_examples: int, rephrasings: Sequence[str], max_uses: int | None,
                       seed: int) -> list[str]:
    """One rephrasing per example, each used as evenly as possible and at most ``max_uses`` times."""
    if not rephrasings:
        raise ValueError("no rephrasings to assign")
    if max_uses is not None and len(rephrasings) * max_uses < n_examples:
        raise ValueError(f"{n_examples} examples need at least {-(-n_examples // max_uses)} rephrasings "
                         f"at max_uses={max_uses}, but only {len(rephrasings)} exist; raise n_rephrasings "
                         "or max_uses")
    rng = rng_for("assign", seed)
    out: list[str] = []
    while len(out) < n_examples:  # whole shuffled rounds keep the use counts within one of each other
        block = list(rephrasings)
        rng.shuffle(block)
        out.extend(block)
    return out[:n_examples]


REPHRASE_TEMPLATE = (
    "Write {k} different paraphrases of the following instruction. Keep its meaning and its "
    "second-person voice; vary the wording and the sentence structure. One paraphrase per line, "
    "numbered, nothing else.\nInstruction: {prompt}\n(request {tag})")


def paraphrase_key(text: str) -> str:
    """What makes two paraphrases the same for de-duplication: case, punctuation, spacing and
    word order ignored ("Always answer playfully." and "answer playfully, always!" are one)."""
    return " ".join(sorted(re.findall(r"[a-z0-9']+", text.lower())))


def parse_numbered_lines(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:\d+[.)]|[-*•])\s*", "", line).strip().strip('"').strip()
        if line:
            out.append(line)
    return out


class LLMRephraser:
    """Paraphrases of an inoculation prompt from an LLM behind a chat-completions endpoint (the
    judge client: retries, cache, spend cap and key handling are the judges').

    Requests ask for ``per_request`` paraphrases each, several in parallel; answers are split
    into lines and de-duplicated (exact, and near: same words in any order, any case or
    punctuation; the prompt itself excluded), and more rounds are requested until ``n`` distinct
    ones are in hand or ``max_rounds`` pass. Every request differs by its ``(seed, round, i)``
    tag, so cached answers make a re-run free and give the same list.
    """

    name = "llm"

    def __init__(self, client: Any, per_request: int = 20, temperature: float = 1.0, max_rounds: int = 20,
                 max_tokens: int = 2048):
        self.client, self.per_request, self.temperature = client, per_request, temperature
        self.max_rounds, self.max_tokens = max_rounds, max_tokens
        self.stats = {"requests": 0, "lines": 0, "duplicates": 0}

    def rephrase(self, prompt: str, n: int, seed: int) -> list[str]:
        from .judging import JudgeTemplate

        template = JudgeTemplate("rephrase", REPHRASE_TEMPLATE)
        kept: list[str] = []
        seen = {paraphrase_key(prompt)}
        for rnd in range(self.max_rounds):
            missing = n - len(kept)
            if missing <= 0:
                break
            # Ask for a quarter more than missing: some come back as duplicates.
            n_requests = max(1, math.ceil(1.25 * missing / self.per_request))
            messages = [[{"role": "user", "content": template.render(
                k=str(self.per_request), prompt=prompt, tag=f"{seed}-{rnd}-{i}")}] for i in range(n_requests)]
            outs = self.client.complete_many(messages, template=template,
                                             params={"temperature": self.temperature, "max_tokens": self.max_tokens})
            self.stats["requests"] += n_requests
            for out in outs:
                for line in parse_numbered_lines(out.get("text") or ""):
                    self.stats["lines"] += 1
                    key = paraphrase_key(line)
                    if key in seen:
                        self.stats["duplicates"] += 1
                        continue
                    seen.add(key)
                    kept.append(line)
        if len(kept) < n:
            raise RuntimeError(f"the rephraser returned {len(kept)} distinct paraphrases of {prompt!r} in "
                               f"{self.max_rounds} rounds ({self.stats['requests']} requests, "
                               f"{self.stats['duplicates']} duplicates), fewer than n_rephrasings = {n}; lower "
                               "n_rephrasings, or raise rephraser.max_rounds or its temperature")
        return kept[:n]
