"""Datasets in the project's chat format, and the per-setup and per-cell data of the toy world.

Chat format (the same as the real datasets after conversion)::

    {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}], "meta": {...}}

Every dataset is read by one checked loader, ``load_chat_jsonl``; ``check_lengths`` counts the
examples over a maximum length (never dropping any); ``load_prompt_file`` reads prompts kept as
data. Their errors (``DataError``) name the file, the line and the fix (docs/reliability.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from . import prompts as pr
from . import toyworld as tw
from .provenance import read_jsonl

ROLES = ("system", "user", "assistant")
ON_TOO_LONG = ("error", "report")


class DataError(ValueError):
    """A dataset or prompt file problem; the message names the file, the line and the fix."""


def validate_chat_records(records: Iterable[dict], source: str, need_answer: bool = True,
                          lines: Sequence[int] | None = None) -> None:
    """Check the chat format; raise ``DataError`` naming the file, line (or record number) and the fix.

    ``lines`` gives each record's line number in ``source`` (as ``read_jsonl`` reports them); without
    it, records are named by their 1-based position.
    """
    n = 0
    fmt = '{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}'
    for i, rec in enumerate(records, 1):
        n += 1
        where = f"{source}:{lines[i - 1]}" if lines is not None else f"{source}: record {i}"
        msgs = rec.get("messages") if isinstance(rec, dict) else None
        if not isinstance(msgs, list) or not msgs:
            keys = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
            raise DataError(f"{where}: needs a non-empty 'messages' list (found keys {keys}); "
                            f"write each record as {fmt}")
        for j, m in enumerate(msgs):
            if not isinstance(m, dict) or set(m) - {"role", "content"} or "role" not in m or "content" not in m:
                found = sorted(m) if isinstance(m, dict) else type(m).__name__
                raise DataError(f"{where}, message {j}: needs exactly the keys 'role' and 'content' "
                                f"(found {found}); rename or remove the others")
            if m["role"] not in ROLES:
                raise DataError(f"{where}, message {j}: role {m['role']!r} is not one of {ROLES}; "
                                "map it to one of them (e.g. 'human' -> 'user', 'gpt'/'bot' -> 'assistant')")
            if not isinstance(m["content"], str):
                raise DataError(f"{where}, message {j}: content must be a string, not "
                                f"{type(m['content']).__name__}; join multi-part content into one string")
        roles = [m["role"] for m in msgs]
        if "system" in roles[1:]:
            raise DataError(f"{where}: a system message may only come first (roles: {roles}); "
                            "move it to the start or merge it into the first one")
        if need_answer and roles[-1] != "assistant":
            raise DataError(f"{where}: the last message must be the assistant's answer (roles: {roles}); "
                            "training data needs the answer to learn last")
    if n == 0:
        raise DataError(f"{source}: no records; the file is empty. Point at the right file or regenerate it")


def load_chat_jsonl(path: str | os.PathLike, need_answer: bool = True) -> list[dict]:
    """The one checked loader of chat JSON lines (every dataset of the project).

    Raises ``DataError`` (a ``ValueError``) naming the file, the line and the fix for: a missing
    file, an empty one, a truncated one (last line cut mid-JSON), a line that is not JSON or not an
    object, bytes that are not UTF-8 (byte offset, line and an ``iconv`` command), and records with
    wrong fields or roles. Example lengths need a tokenizer: see ``check_lengths``.
    """
    return load_chat_jsonl_with_lines(path, need_answer)[0]


def load_chat_jsonl_with_lines(path: str | os.PathLike, need_answer: bool = True) -> tuple[list[dict], list[int]]:
    """``load_chat_jsonl`` plus each record's line number in the file (for ``check_lengths``)."""
    try:
        numbered = read_jsonl(path, with_line_numbers=True)
    except (FileNotFoundError, ValueError) as e:
        raise DataError(str(e)) from None
    if not numbered:
        raise DataError(f"{path}: no records; the file is empty (or only blank lines). Point at the right "
                        "file or regenerate it")
    records = [r for _, r in numbered]
    lines = [n for n, _ in numbered]
    validate_chat_records(records, str(path), need_answer, lines=lines)
    return records, lines


# ---------------------------------------------------------------------------------------------
# Example lengths: counted and reported, never silently truncated or dropped
# ---------------------------------------------------------------------------------------------

def chat_token_counter(tokenizer: Any) -> Callable[[list[dict]], int]:
    """Tokens of a conversation as fine-tuning sees it: the chat template applied, tokenized
    (what TRL's SFTTrainer truncates at ``max_length``, dropping what is left without an answer)."""

    def count(messages: list[dict]) -> int:
        out = tokenizer.apply_chat_template(messages, tokenize=True)
        if isinstance(out, dict) or hasattr(out, "keys"):
            out = out["input_ids"]
        if len(out) and isinstance(out[0], list):  # a batch of one
            out = out[0]
        return len(out)

    return count


@dataclass
class LengthReport:
    """Examples longer than ``max_length``: how many, and which (record, line, id, tokens)."""

    source: str
    max_length: int
    n_checked: int
    too_long: list[dict] = field(default_factory=list)
    max_tokens: int = 0

    @property
    def n_too_long(self) -> int:
        return len(self.too_long)

    def to_dict(self) -> dict:
        """For provenance and output files: the counts and every example over the limit."""
        return {"source": self.source, "max_length": self.max_length, "n_checked": self.n_checked,
                "n_too_long": self.n_too_long, "max_tokens": self.max_tokens, "too_long": self.too_long}

    def message(self, max_length_key: str = "max_length", show: int = 10) -> str:
        where = ", ".join((f"line {e['line']}" if e["line"] is not None else f"record {e['record']}")
                          + (f" (id {e['id']})" if e["id"] is not None else "")
                          + f": {e['tokens']} tokens" for e in self.too_long[:show])
        more = f", and {self.n_too_long - show} more" if self.n_too_long > show else ""
        return (f"{self.source}: {self.n_too_long} of {self.n_checked} examples are longer than "
                f"{max_length_key}={self.max_length} tokens ({where}{more}); they would be truncated or "
                f"dropped in training. Raise {max_length_key} to at least {self.max_tokens}, or shorten or "
                "remove those examples")


def _record_id(rec: dict) -> Any:
    if "id" in rec:
        return rec["id"]
    meta = rec.get("meta")
    if isinstance(meta, dict):
        for k in ("id", "item"):
            if k in meta:
                return meta[k]
    return None


def check_lengths(records: Sequence[dict], max_length: int,
                  tokens: Any, *, source: str = "records", lines: Sequence[int] | None = None,
                  on_too_long: str = "error", max_length_key: str = "max_length") -> LengthReport:
    """Count the chat records longer than ``max_length`` tokens; never drops any.

    ``tokens`` is a tokenizer (counted as ``chat_token_counter`` does) or a callable that maps a
    record's ``messages`` to its token count. ``lines`` gives each record's line in ``source``.
    ``on_too_long="error"`` (default) raises ``DataError`` listing them and the fix (naming
    ``max_length_key``, e.g. ``training.max_length``) when any is too long; ``"report"`` returns the
    ``LengthReport`` either way so that the caller can decide and record it (``to_dict()``).
    """
    if on_too_long not in ON_TOO_LONG:
        raise ValueError(f"on_too_long={on_too_long!r}; use one of {ON_TOO_LONG}")
    count = chat_token_counter(tokens) if hasattr(tokens, "apply_chat_template") else tokens
    if not callable(count):
        raise TypeError("tokens must be a tokenizer (with apply_chat_template) or a callable messages -> int")
    report = LengthReport(source=source, max_length=max_length, n_checked=len(records))
    for i, rec in enumerate(records):
        n = int(count(rec["messages"]))
        report.max_tokens = max(report.max_tokens, n)
        if n > max_length:
            report.too_long.append({"record": i + 1, "line": lines[i] if lines is not None else None,
                                    "id": _record_id(rec), "tokens": n})
    if report.too_long and on_too_long == "error":
        raise DataError(report.message(max_length_key))
    return report


# ---------------------------------------------------------------------------------------------
# Prompts kept as data
# ---------------------------------------------------------------------------------------------

def read_text_file(path: str | os.PathLike, what: str = "text file") -> str:
    """A UTF-8 text file's contents; ``DataError`` naming the file, the byte offset and line, and the
    fix, when it is missing, a folder, or not UTF-8 (a UTF-8 byte-order mark is accepted)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found; check the path (relative paths are read from "
                        f"{Path.cwd()})") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder; point at the {what} itself") from None
    bom = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    nul = raw.find(b"\x00")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        raise DataError(f"{path}:{line}: has a NUL byte at byte offset {nul}: not UTF-8 text (UTF-16, or a "
                        f"binary file?). Re-encode it, e.g. `iconv -f utf-16 -t utf-8 {path} > "
                        f"{p.stem}.utf8{p.suffix}`, or point at the right file")
    try:
        return raw[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        off = e.start + bom
        line = raw.count(b"\n", 0, off) + 1
        col = off - (raw.rfind(b"\n", 0, off) + 1) + 1
        raise DataError(f"{path}:{line}: not UTF-8: byte 0x{raw[off]:02x} at byte offset {off} (line {line}, "
                        f"column {col}); the {what} must be UTF-8. Re-encode it, e.g. `iconv -f latin1 -t utf-8 "
                        f"{path} > {p.stem}.utf8{p.suffix}` (with the file's real encoding in place of "
                        "latin1)") from None


def load_prompt_file(path: str | os.PathLike) -> list[str]:
    """Prompts kept as data: a UTF-8 text file with **one prompt per line**.

    Leading and trailing whitespace (and ``\\r`` of Windows line ends) is stripped; blank lines are
    skipped. A prompt that spans lines does not fit this format: keep such prompts in JSON lines.
    ``DataError`` names the file, the line and the fix for: a missing file, one that is not UTF-8, one
    with no prompt, and a prompt that repeats an earlier line (a duplicate would silently weight
    that prompt twice).
    """
    text = read_text_file(path, "prompt file")
    prompts: list[str] = []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(text.split("\n"), 1):
        prompt = line.strip()
        if not prompt:
            continue
        if prompt in first_line:
            raise DataError(f"{path}:{lineno}: repeats the prompt of line {first_line[prompt]} ({prompt!r}); "
                            f"delete line {lineno} (one prompt per line, each once)")
        first_line[prompt] = lineno
        prompts.append(prompt)
    if not prompts:
        raise DataError(f"{path}: no prompts; the file is empty (or only blank lines). Write one prompt per "
                        "line")
    return prompts


def setup_traits(setup: dict) -> list[str]:
    return [setup["traits"]["positive"]["name"], setup["traits"]["negative"]["name"]]


def trait_eval_domain(setup: dict, role: str) -> str:
    """Where a trait is scored: its own ``eval_domain`` (e.g. emergent misalignment on free-form
    questions outside the training domain) or the setup's."""
    return setup["traits"][role].get("eval_domain", setup["eval_domain"])


def trait_extra_domains(setup: dict, role: str) -> list[str]:
    """Eval domains where a trait is scored besides its own (``also_eval_domains``: Spanish vs
    All-Caps scores both traits on UltraChat and on GSM8k test questions from one run); its scores
    there are reported as the trait ``<name>@<domain>``."""
    main = trait_eval_domain(setup, role)
    return [d for d in setup["traits"][role].get("also_eval_domains", []) if d != main]


def domain_trait_name(trait: str, domain: str) -> str:
    """The reported name of a trait scored on one of its extra eval domains."""
    return f"{trait}@{domain}"


def eval_domains(setup: dict) -> list[str]:
    """Every eval domain the setup's traits are scored on, main domains first."""
    roles = ("positive", "negative")
    return list(dict.fromkeys([*(trait_eval_domain(setup, r) for r in roles),
                               *(d for r in roles for d in trait_extra_domains(setup, r))]))


def train_traits(setup: dict) -> list[str]:
    """What the training responses show: ``train_traits`` where the data's traits are not the ones
    scored (a narrow bad behaviour against a broad one it may or may not carry), else both traits."""
    return list(setup.get("train_traits", setup_traits(setup)))


def reference_answers(item: tw.Item, traits: Sequence[str]) -> dict[str, str]:
    """Reference answers for the teacher-forced measures: trait-free, and with each trait."""
    refs = {"clean": item.response}
    for t in traits:
        answer = tw.render(item, tw.EXEC_TRAIT_RENDERING.get(t, [t]))
        if answer != item.response:  # a trait whose answer is the trait-free one (correct code) has no contrast
            refs[t] = answer
    return refs


def eval_items(sname: str, setup: dict, n: int) -> list[dict]:
    """Held-out evaluation instructions of a setup (the same for every condition and seed): ``n``
    per eval domain of its traits, each with its domain, reference answers and (code) tests."""
    out: list[dict] = []
    for domain in eval_domains(setup):
        # The setup's own eval domain keeps the seed it always had, so adding a trait elsewhere
        # leaves those instructions as they were.
        rng = tw.rng_for("eval", sname) if domain == setup["eval_domain"] else tw.rng_for("eval", sname, domain)
        seen: set[str] = set()
        start = len(out)
        for _ in range(50 * n):
            item = tw.make_item(rng, domain)
            if item.instruction not in seen:
                seen.add(item.instruction)
                rec = {"id": len(out), "instruction": item.instruction, "domain": item.domain,
                       "references": reference_answers(item, setup_traits(setup))}
                if item.tests:
                    rec["tests"] = item.tests
                out.append(rec)
            if len(out) - start == n:
                break
        else:
            raise ValueError(f"setup {sname}: could not draw {n} distinct eval instructions from the "
                             f"'{domain}' domain; lower generation.n_eval")
    return out


def train_items(sname: str, setup: dict, n: int, seed: int, exclude: set[str]) -> list[dict]:
    """Training instructions with trait and control responses, seeded by (setup, seed).

    The same items serve every condition of the setup, so conditions differ only in their prompt.
    Instructions that are in the eval set are never used for training.
    """
    rng = tw.rng_for("train", sname, seed)
    traits = train_traits(setup)
    control = setup.get("control_traits", [])
    out = []
    while len(out) < n:
        item = tw.make_item(rng, setup["domain"])
        if item.instruction in exclude:
            continue
        out.append({"id": len(out), "instruction": item.instruction,
                    "response": tw.render(item, traits),
                    "control_response": tw.render(item, control),
                    "domain": item.domain})
    return out


def cell_train_records(setup: dict, cname: str, items: list[dict],
                       prompts: list[str | None]) -> list[dict]:
    """The training records of one cell: each item with its prompt, placed."""
    control = setup["conditions"][cname]["kind"] == "control"
    # A control dataset of its own (secure code) brings its own prompts (control_instruction).
    return [{"messages": pr.messages(setup, p, it.get("control_instruction", it["instruction"]) if control
                                     else it["instruction"],
                                     it["control_response"] if control else it["response"]),
             "meta": {"item": it["id"], "prompt": p}}
            for it, p in zip(items, prompts, strict=True)]
