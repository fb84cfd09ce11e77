"""Datasets in the project's chat format, and the per-setup and per-cell data of the toy world.

Chat format (the same as the real datasets after conversion)::

    {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}], "meta": {...}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from . import prompts as pr
from . import toyworld as tw
from .provenance import read_jsonl

ROLES = ("system", "user", "assistant")


def validate_chat_records(records: Iterable[dict], source: str, need_answer: bool = True) -> None:
    """Check the chat format; raise ValueError naming the file and record number and the fix."""
    n = 0
    for i, rec in enumerate(records, 1):
        n += 1
        where = f"{source}: record {i}"
        msgs = rec.get("messages") if isinstance(rec, dict) else None
        if not isinstance(msgs, list) or not msgs:
            raise ValueError(f"{where}: needs a non-empty 'messages' list "
                             '({"messages": [{"role": ..., "content": ...}]})')
        for j, m in enumerate(msgs):
            if not isinstance(m, dict) or set(m) - {"role", "content"} or "role" not in m or "content" not in m:
                raise ValueError(f"{where}, message {j}: needs exactly the keys 'role' and 'content'")
            if m["role"] not in ROLES:
                raise ValueError(f"{where}, message {j}: role {m['role']!r} is not one of {ROLES}")
            if not isinstance(m["content"], str):
                raise ValueError(f"{where}, message {j}: content must be a string")
        roles = [m["role"] for m in msgs]
        if "system" in roles[1:]:
            raise ValueError(f"{where}: a system message may only come first")
        if need_answer and roles[-1] != "assistant":
            raise ValueError(f"{where}: the last message must be the assistant's answer")
    if n == 0:
        raise ValueError(f"{source}: no records; the file is empty")


def load_chat_jsonl(path: str | Path, need_answer: bool = True) -> list[dict]:
    records = read_jsonl(path)
    validate_chat_records(records, str(path), need_answer)
    return records


def setup_traits(setup: dict) -> list[str]:
    return [setup["traits"]["positive"]["name"], setup["traits"]["negative"]["name"]]


def eval_items(sname: str, setup: dict, n: int) -> list[dict]:
    """Held-out evaluation instructions of a setup (the same for every condition and seed)."""
    rng = tw.rng_for("eval", sname)
    seen: set[str] = set()
    out = []
    for _ in range(50 * n):
        item = tw.make_item(rng, setup["eval_domain"])
        if item.instruction not in seen:
            seen.add(item.instruction)
            # Reference answers for the teacher-forced measures: trait-free, and with each trait.
            refs = {"clean": item.response, **{t: tw.apply_traits(item.response, [t]) for t in setup_traits(setup)}}
            out.append({"id": len(out), "instruction": item.instruction, "domain": item.domain, "references": refs})
        if len(out) == n:
            return out
    raise ValueError(f"setup {sname}: could not draw {n} distinct eval instructions from the "
                     f"'{setup['eval_domain']}' domain; lower generation.n_eval")


def train_items(sname: str, setup: dict, n: int, seed: int, exclude: set[str]) -> list[dict]:
    """Training instructions with trait and control responses, seeded by (setup, seed).

    The same items serve every condition of the setup, so conditions differ only in their prompt.
    Instructions that are in the eval set are never used for training.
    """
    rng = tw.rng_for("train", sname, seed)
    traits = setup_traits(setup)
    control = setup.get("control_traits", [])
    out = []
    while len(out) < n:
        item = tw.make_item(rng, setup["domain"])
        if item.instruction in exclude:
            continue
        out.append({"id": len(out), "instruction": item.instruction,
                    "response": tw.apply_traits(item.response, traits),
                    "control_response": tw.apply_traits(item.response, control),
                    "domain": item.domain})
    return out


def cell_train_records(setup: dict, cname: str, items: list[dict],
                       prompts: list[str | None]) -> list[dict]:
    """The training records of one cell: each item with its prompt, placed."""
    control = setup["conditions"][cname]["kind"] == "control"
    return [{"messages": pr.messages(setup, p, it["instruction"],
                                     it["control_response"] if control else it["response"]),
             "meta": {"item": it["id"], "prompt": p}}
            for it, p in zip(items, prompts, strict=True)]
