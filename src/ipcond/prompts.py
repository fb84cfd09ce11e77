"""Where condition prompts go, and which prompt each training and evaluation example gets.

Science layer, at its bottom: prompt placement and chat rendering (``PromptParts``,
:func:`messages`) are here, and the toy world and every real prompt of the paper scale go through
them; this module imports only ``ipcond.errors``. Rephrasings are made in ``ipcond.rephrasing``.

A condition's training prompt is a fixed text, nothing (``None``), the empty string, or one of
several rephrasings per example. It is placed in the system prompt or as a user prefix/suffix, as
the setup says. Evaluation uses three contexts: the setup's default eval prompt (``default``), no
prompt (``none``) and the condition's own training prompt (``train``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .errors import ConfigError

PLACEMENTS = ("system", "user_prefix", "user_suffix")


@dataclass
class PromptParts:
    """What goes around an instruction: a system prompt and user prefix/suffix pieces."""

    system: str | None = None
    user_prefix: list[str] = field(default_factory=list)
    user_suffix: list[str] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)  # every text added, in order
    # What joins a user prefix to the instruction: " " (the toy world), "\n\n" (the post's trait
    # distillation example: the prefix, a blank line, the message).
    prefix_separator: str = " "
    # A user message template with {prefix} and {instruction} (Wichers et al.'s MBPP message: the
    # prompt text goes inside it, as ``text.strip() + " "``); None: prefix, instruction, suffix.
    user_template: str | None = None

    def add(self, text: str, placement: str) -> None:
        self.pieces.append(text)
        if placement == "system":
            self.system = text if self.system is None else f"{self.system} {text}".strip()
        elif placement == "user_prefix":
            self.user_prefix.append(text)
        elif placement == "user_suffix":
            self.user_suffix.append(text)
        else:
            raise ValueError(f"unknown placement {placement!r}; expected one of {PLACEMENTS}")

    def messages(self, instruction: str, response: str | None = None) -> list[dict]:
        msgs = []
        if self.system is not None:
            msgs.append({"role": "system", "content": self.system})
        if self.user_template is not None:
            prefix = "".join(p.strip() + " " for p in self.user_prefix if p.strip())
            user = self.user_template.format(prefix=prefix, instruction=instruction)
            if self.user_suffix:
                user = " ".join([user, *self.user_suffix])
        else:
            head = self.prefix_separator.join([*self.user_prefix, instruction])
            user = " ".join([head, *self.user_suffix])
        msgs.append({"role": "user", "content": user})
        if response is not None:
            msgs.append({"role": "assistant", "content": response})
        return msgs



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


def messages(setup: dict, prompt: str | None, instruction: str, response: str | None = None) -> list[dict]:
    """Chat messages for one example: the setup's system prompt plus the condition prompt, placed."""
    parts = PromptParts(system=setup.get("system_prompt"), prefix_separator=setup.get("prefix_separator", " "),
                        user_template=setup.get("user_template"))
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


# ------------------------------------------------------------------------------------------
# The published protocol's prompt texts (resources/prompts/paper_protocol.yaml)
# ------------------------------------------------------------------------------------------

PROTOCOL_PATH = Path(__file__).resolve().parents[2] / "resources" / "prompts" / "paper_protocol.yaml"
_TEXTLESS_KINDS = {"baseline", "none", "empty", "control"}
_PROMPT_KINDS = {"inoculation", "irrelevant", "neutral"}


def load_protocol(path: str | Path = PROTOCOL_PATH) -> dict:
    """The protocol's prompt texts per setup, checked: every condition has a known kind, a text
    where its kind needs one, and a ``source`` (``published`` or ``written``) for every text; a
    published text names where it is published, character for character, in ``source_ref``
    (``owner/repo@commit:path`` plus what in that file, or the post's file and line)."""
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
            if cond.get("source") == "published" and not str(cond.get("source_ref") or "").strip():
                problems.append(f"{where}: a published text needs source_ref (repo@commit:path, or the post's "
                                "file and line) naming where it is published character for character")
        for pname, ptext in {**({"system_prompt": setup["system_prompt"]} if "system_prompt" in setup else {}),
                             **({"eval_prompt": setup["eval_prompt"]} if "eval_prompt" in setup else {}),
                             **{f"eval_prompts.{k}": v for k, v in (setup.get("eval_prompts") or {}).items()}}.items():
            if isinstance(ptext, dict) and ptext.get("source") == "published" and not ptext.get("source_ref"):
                problems.append(f"setups.{sname}.{pname}: a published text needs source_ref")
    if problems:
        raise ValueError(f"{path}:\n  " + "\n  ".join(problems))
    return data


def apply_protocol(config: dict, source: str = "config") -> dict:
    """Fill what setups with a ``protocol`` key leave out from the protocol's prompt texts.

    A setup ``protocol: <name>`` takes ``placement``, ``system_prompt`` and ``eval_prompt`` from
    ``setups.<name>`` of ``protocol_file`` (default ``resources/prompts/paper_protocol.yaml``)
    (and ``prefix_separator``, ``user_template`` where the protocol has them)
    unless it sets them; each of its conditions takes ``kind``, ``trait`` and its prompt text
    (recorded with ``prompt_source``: published or written) from the protocol's condition of the
    same name (or of ``protocol_condition``) unless it sets them. Presets thus name conditions and
    keep every prompt text in one place. Returns a new config; setups without ``protocol`` are left as they are.
    """
    import copy

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
        for key in ("prefix_separator", "user_template"):  # how the protocol's user message is built
            if key in proto:
                setup.setdefault(key, proto[key])
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
