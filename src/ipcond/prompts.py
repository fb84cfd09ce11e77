"""Where condition prompts go, and which prompt each training and evaluation example gets.

A condition's training prompt is a fixed text, nothing (``None``), the empty string, or one of
several rephrasings per example. It is placed in the system prompt or as a user prefix/suffix, as
the setup says. Evaluation uses three contexts: the setup's default eval prompt (``default``), no
prompt (``none``) and the condition's own training prompt (``train``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Protocol, Sequence

from . import toyworld as tw


def condition_prompt(setup: dict, cname: str) -> str | None:
    """The fixed training prompt of a condition (rephrased: the prompt it rephrases)."""
    cond = setup["conditions"][cname]
    kind = cond["kind"]
    if kind == "control" and cond.get("without_prompt"):
        return None  # the post's ControlNone: the control data trained without any prompt
    if kind in ("baseline", "control"):
        return setup["eval_prompt"]
    if kind == "none":
        return None
    if kind == "empty":
        return ""
    if kind == "rephrased":
        return setup["conditions"][cond["of"]]["prompt"]
    return cond["prompt"]


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
        pool = [w for w in tw.trait_wordings(self.trait) if w != prompt]
        if n > len(pool) + 1:
            raise ValueError(f"asked for {n} rephrasings of {prompt!r} but the toy world has only "
                             f"{len(pool) + 1} wordings of trait '{self.trait}'")
        rng = tw.rng_for("rephrase", seed, prompt)
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
    rng = tw.rng_for("assign", seed)
    out: list[str] = []
    while len(out) < n_examples:  # whole shuffled rounds keep the use counts within one of each other
        block = list(rephrasings)
        rng.shuffle(block)
        out.extend(block)
    return out[:n_examples]


def messages(setup: dict, prompt: str | None, instruction: str, response: str | None = None) -> list[dict]:
    """Chat messages for one example: the setup's system prompt plus the condition prompt, placed."""
    parts = tw.PromptParts(system=setup.get("system_prompt"))
    placement = setup["placement"]
    if prompt is not None:
        if placement == "system":
            # A condition prompt in the system slot replaces the setup's default system prompt
            # (as in Tan et al., where the inoculation *is* the system prompt).
            parts.system = prompt
        elif prompt != "":
            parts.add(prompt, placement)
    return parts.messages(instruction, response)


def eval_context_prompts(setup: dict, cname: str, n: int, train_prompts: Sequence[str | None]) -> dict[str, list[str | None]]:
    """Per eval example, the prompt of each eval context.

    ``train_prompts`` are the prompts the cell's training examples had; the ``train`` context
    cycles through them so that a rephrased condition is evaluated on its own rephrasings.
    """
    train = [train_prompts[i % len(train_prompts)] for i in range(n)] if train_prompts else [None] * n
    return {"default": [setup["eval_prompt"]] * n, "none": [None] * n, "train": train}


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


# ------------------------------------------------------------------------------------------
# The published protocol's prompt texts (resources/prompts/paper_protocol.yaml)
# ------------------------------------------------------------------------------------------

PROTOCOL_PATH = Path(__file__).resolve().parents[2] / "resources" / "prompts" / "paper_protocol.yaml"
_TEXTLESS_KINDS = {"baseline", "none", "empty", "control"}
_PROMPT_KINDS = {"inoculation", "irrelevant", "neutral"}


def load_protocol(path: str | Path = PROTOCOL_PATH) -> dict:
    """The protocol's prompt texts per setup, checked: every condition has a known kind, a text
    where its kind needs one, and a ``source`` (``published`` or ``written``) for every text."""
    import yaml

    path = Path(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    problems = []
    for sname, setup in data.get("setups", {}).items():
        for cname, cond in setup.get("conditions", {}).items():
            where = f"setups.{sname}.conditions.{cname}"
            kind = cond.get("kind")
            if kind not in _TEXTLESS_KINDS | _PROMPT_KINDS:
                problems.append(f"{where}: kind {kind!r} is not one of {sorted(_TEXTLESS_KINDS | _PROMPT_KINDS)}")
            elif kind in _PROMPT_KINDS and not cond.get("text"):
                problems.append(f"{where}: kind {kind!r} needs a text")
            if "text" in cond and cond.get("source") not in ("published", "written"):
                problems.append(f"{where}: source must be 'published' or 'written', not {cond.get('source')!r}")
    if problems:
        raise ValueError(f"{path}:\n  " + "\n  ".join(problems))
    return data


def apply_protocol(config: dict, source: str = "config") -> dict:
    """Fill what setups with a ``protocol`` key leave out from the protocol's prompt texts.

    A setup ``protocol: <name>`` takes ``placement``, ``system_prompt`` and ``eval_prompt`` from
    ``setups.<name>`` of ``protocol_file`` (default ``resources/prompts/paper_protocol.yaml``)
    unless it sets them; each of its conditions takes ``kind``, ``trait`` and its prompt text
    (recorded with ``prompt_source``: published or written) from the protocol's condition of the
    same name (or of ``protocol_condition``) unless it sets them. Presets thus name conditions and
    keep every prompt text in one place. Returns a new config; setups without ``protocol`` are left as they are.
    """
    import copy

    from .config import ConfigError

    if not any("protocol" in s for s in config.get("setups", {}).values()):
        return config
    path = config.get("protocol_file") or PROTOCOL_PATH
    try:
        protocol = load_protocol(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{source}: protocol_file {str(path)!r}: {e}") from None
    out = copy.deepcopy(config)
    for sname, setup in out["setups"].items():
        pname = setup.get("protocol")
        if pname is None:
            continue
        proto = protocol["setups"].get(pname)
        if proto is None:
            raise ConfigError(f"{source}: setups.{sname}.protocol = {pname!r} is not a setup of {path}; use one of "
                              f"{sorted(protocol['setups'])}")
        setup.setdefault("placement", proto["placement"])
        if "system_prompt" not in setup:
            setup["system_prompt"] = (proto.get("system_prompt") or {}).get("text")
        if "eval_prompt" not in setup:
            if "eval_prompt" not in proto:
                raise ConfigError(f"{source}: setups.{sname}.eval_prompt is not set and protocol setup {pname!r} has "
                                  f"several ({sorted(proto.get('eval_prompts', {}))}); set it to one of their texts")
            setup["eval_prompt"] = proto["eval_prompt"]["text"]
        conds = setup.get("conditions") or {}
        for cname in list(conds):
            cond = dict(conds[cname] or {})
            # `protocol_condition: <name>`: the texts of another protocol condition (the same prompt
            # at another learning rate, say)
            pname_c = cond.pop("protocol_condition", cname)
            pc = proto.get("conditions", {}).get(pname_c)
            if pc is None:
                if "kind" not in cond or (cond["kind"] in _PROMPT_KINDS and "prompt" not in cond):
                    raise ConfigError(
                        f"{source}: setups.{sname}.conditions.{cname} is not a condition of protocol setup "
                        f"{pname!r}, so it needs its own kind and prompt; the protocol's conditions are "
                        f"{sorted(proto.get('conditions', {}))}")
            else:
                if cond.setdefault("kind", pc["kind"]) != pc["kind"]:
                    raise ConfigError(f"{source}: setups.{sname}.conditions.{cname}.kind = {cond['kind']!r}, but "
                                      f"the protocol's {cname} is {pc['kind']!r}; rename the condition or fix its kind")
                if "trait" in pc:
                    cond.setdefault("trait", pc["trait"])
                if pc["kind"] in _PROMPT_KINDS and "prompt" not in cond:
                    cond["prompt"], cond["prompt_source"] = pc["text"], pc["source"]
            conds[cname] = cond
        setup["conditions"] = conds
    return out
