"""The real datasets of the paper scale: checking a downloaded file, then converting its records
to the project's chat format with the splits the studies used.

Every converter takes the source's records (as read from the file) and returns a
:class:`Converted`: named splits of records in the project's format (``{"messages": [...],
"meta": {...}}``, or eval items ``{"id", "instruction", ...}``) and a report of what was filtered
and why, with counts. Nothing is dropped silently: a record a converter cannot use is counted
under a reason, and a file whose columns changed stops with the columns it lacks. Fetching (a
pinned revision or URL, into ``resources/``) is a rule's job; :func:`verify_file` is its check.

Record formats (``../shared/reference/experiment-grid.md``):

- GSM8k (``openai/gsm8k``, ``main``): ``question``, ``answer`` (worked steps with ``<<a*b=c>>``
  calculator notes, last line ``#### <number>``).
- MBPP (``google-research-datasets/mbpp``): ``full``: ``task_id``, ``text``, ``code``,
  ``test_list``; ``sanitized``: ``task_id``, ``prompt``, ``code``, ``test_list``.
- School of Reward Hacks (``longtermrisk/school-of-reward-hacks``): ``user``,
  ``school_of_reward_hacks``, ``control``, ``task``, ``evaluation_metric``, ``cheat_method``.
- Emergent-misalignment domains (``truthfulai/emergent_plus``, one config per domain): ``prompt``,
  ``aligned``, ``misaligned``.
- Insecure / secure code (the Emergent Misalignment repository): chat JSON lines
  ``{"messages": [user, assistant]}``.
- UltraChat (``HuggingFaceH4/ultrachat_200k``): ``prompt``, ``prompt_id``, ``messages``.
- The EM "first plot" questions (``evaluation/first_plot_questions.yaml``): a YAML list of
  ``{id, paraphrases: [...], ...}``.
- InstructionWild (``data_v2/user_1..4.jsonl``): one ``{"instruction": ...}`` per line (user_1
  adds ``instruction_type``).
- Change My View (``cmv_splits_ratings_v4.tar.zst``): ``train.jsonl`` and ``eval.jsonl`` members,
  one post per line (``title``, ``selftext``, ``distinguished``, ``id``, ``top_level_comments``:
  ``body``, ``persuasiveness_score`` 0-10, ``moderation_result.category_scores.harassment``), as
  read from the code that builds and reads the archive (reinthal/inoculation-prompting,
  ``code_rh_and_reddit_toxic/realistic_dataset/``); the archive itself was not at hand.

:data:`CONVERTERS` lists each converter's input files and output splits; :func:`convert_dataset`
runs one from a dataset's config (``datasets.<name>``).
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable


class SourceError(ValueError):
    """A source file is not what the pin or the converter expects."""


@dataclass
class Converted:
    splits: dict[str, list[dict]]
    filtered: Counter = field(default_factory=Counter)  # reason -> records left out
    notes: list[str] = field(default_factory=list)      # what a user should know (records kept)

    def report(self) -> dict:
        out = {"counts": {k: len(v) for k, v in self.splits.items()}, "filtered": dict(self.filtered)}
        return {**out, "notes": list(self.notes)} if self.notes else out


# ------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------

def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: str | Path, sha256: str, source: str) -> None:
    """Stop unless ``path`` has the pinned SHA-256 (a changed or corrupt download)."""
    got = sha256_of(path)
    if got != sha256.lower():
        raise SourceError(f"{path} ({source}) has SHA-256 {got}, but the pin says {sha256}. The file is corrupt "
                          "or the source changed. Delete it and re-run to download it again; if the source "
                          "really changed, check the new data and update the pin in the config")


def git_blob_id(path: str | Path) -> str:
    """The git blob id of a file: SHA-1 of ``b"blob <size>\\0"`` plus its bytes (what ``git
    hash-object`` prints), the pin of a file known only from its repository's tree."""
    path = Path(path)
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(url: str, dest: str | Path, sha256: str | None, *, source: str, auth_env: str | None = None,
          timeout: float = 60.0, retries: int = 3, backoff_s: float = 2.0, git_blob: str | None = None) -> Path:
    """Download ``url`` to ``dest`` unless ``dest`` already has the pinned SHA-256.

    Every source is a URL pinned to an immutable revision (a hub file as
    ``https://huggingface.co/datasets/<repo>/resolve/<commit>/<path>``, a repository file as its
    raw URL at a commit) plus the file's SHA-256, so one code path fetches them all and the
    checksum, not the server, decides what is accepted. The file is written to a temporary name
    and renamed once verified; a failed or mismatched download leaves nothing at ``dest``.
    ``auth_env`` names an environment variable holding a token for gated sources (sent as a
    bearer token, never printed). Errors say what is missing: the network, the credentials, or
    a file at the pinned revision.

    ``sha256=None`` (a source not pinned yet): the first download is kept and its checksum
    written next to it (``<dest>.sha256``); later runs check the file against that record, and
    the caller tells the user which config key to set. ``git_blob`` (with ``sha256=None``): the
    first download must have that git blob id (:func:`git_blob_id`; Tan et al.'s Spanish-capitals
    GSM8k file is pinned so), else nothing is kept.
    """
    import os
    import time
    import urllib.error
    import urllib.request

    dest = Path(dest)
    record = dest.with_name(dest.name + ".sha256")
    if sha256 is None and record.is_file():
        sha256 = record.read_text().split()[0]
    if dest.is_file() and sha256 is not None and sha256_of(dest) == sha256.lower():
        return dest
    headers = {"User-Agent": "ipcond-fetch"}
    token = os.environ.get(auth_env) if auth_env else None
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part")
    last: Exception | None = None
    for attempt in range(retries):
        try:
            h = hashlib.sha256()
            req = urllib.request.Request(url, headers=headers)
            if token:
                # Not forwarded on redirects: the hub redirects downloads to a CDN's signed URL,
                # which must not receive the token (and may refuse a second credential).
                req.add_unredirected_header("Authorization", f"Bearer {token}")
            with urllib.request.urlopen(req, timeout=timeout) as resp, \
                    open(part, "wb") as f:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    f.write(chunk)
                    h.update(chunk)
            if sha256 is None and git_blob is not None and git_blob_id(part) != git_blob.lower():
                got = git_blob_id(part)
                part.unlink(missing_ok=True)
                raise SourceError(f"{source}: the download from {url} has git blob id {got}, but the pin says "
                                  f"{git_blob}. The source changed at that address or the transfer was corrupted; "
                                  "nothing was kept. Check the source, then update the pin in the config")
            if sha256 is None:
                record.write_text(f"{h.hexdigest()}  {url}\n")
            elif h.hexdigest() != sha256.lower():
                part.unlink(missing_ok=True)
                raise SourceError(f"{source}: the download from {url} has SHA-256 {h.hexdigest()}, but the pin says "
                                  f"{sha256}. The source changed at that address or the transfer was corrupted; "
                                  "nothing was kept. Check the source, then update the pin in the config")
            os.replace(part, dest)
            return dest
        except urllib.error.HTTPError as e:
            part.unlink(missing_ok=True)
            if e.code in (401, 403):
                have = "set" if auth_env and os.environ.get(auth_env) else "not set"
                raise SourceError(f"{source}: {url} answered HTTP {e.code}: it needs credentials. "
                                  + (f"The token is read from the environment variable {auth_env} ({have}); "
                                     "accept the dataset's terms on its page and set a token that may read it"
                                     if auth_env else "Set the source's auth_env to the environment variable "
                                                      "holding a token")) from None
            if e.code == 404:
                raise SourceError(f"{source}: {url} does not exist (HTTP 404). The pinned revision or path is "
                                  "wrong, or the source was removed; check the pin in the config") from None
            if 400 <= e.code < 500 and e.code not in (408, 429):
                raise SourceError(f"{source}: {url} answered HTTP {e.code} ({e.reason}); the request was refused, "
                                  "so retrying will not help: check the address in the config") from None
            last = e
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            part.unlink(missing_ok=True)
            last = e
        if attempt + 1 < retries:
            time.sleep(backoff_s * 2 ** attempt)
    host = url.split("/")[2] if "//" in url else url
    raise SourceError(f"{source}: could not download {url} after {retries} attempts ({last}). This machine may "
                      f"have no network access to {host}: run the fetch rules on a machine that has, or copy the "
                      f"file there to {dest}" + (f" (its SHA-256 must be {sha256})" if sha256 else ""))


def read_records(path: str | Path) -> list[dict]:
    """Records of a JSON-lines, JSON (a list), Parquet or CSV file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".csv"):
        import pandas as pd

        try:
            frame = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
        except Exception as e:  # pyarrow and pandas raise many kinds; all mean an unreadable file
            raise SourceError(f"{path}: not a readable {suffix[1:]} file ({type(e).__name__}: {e}); the download is "
                              "corrupt or truncated, delete it and re-run") from None
        return frame.to_dict(orient="records")
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        data = json.loads(text)
        if not isinstance(data, list):
            raise SourceError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
        return data
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise SourceError(f"{path}, line {i}: not JSON ({e.msg}); the download is corrupt, "
                                  "delete it and re-run") from e
    return out


def require_columns(records: list[dict], columns: Iterable[str], source: str) -> None:
    """Stop when the records lack a column the converter reads (the source's schema changed)."""
    if not records:
        raise SourceError(f"{source}: no records")
    have = set(records[0])
    missing = [c for c in columns if c not in have]
    if missing:
        raise SourceError(f"{source}: the records lack column(s) {missing} (they have {sorted(have)}); the "
                          "source's schema changed: check it and update the converter in ipcond.sources")


def _chat(user: str, assistant: str | None = None, **meta: Any) -> dict:
    msgs = [{"role": "user", "content": user}]
    if assistant is not None:
        msgs.append({"role": "assistant", "content": assistant})
    return {"messages": msgs, "meta": meta}


# ------------------------------------------------------------------------------------------
# Converters
# ------------------------------------------------------------------------------------------

_CALC = re.compile(r"<<[^>]*>>")


def gsm8k_final_answer(answer: str) -> str | None:
    m = re.search(r"^####\s*(.+?)\s*$", answer, re.M)
    return m.group(1).replace(",", "") if m else None


def convert_gsm8k(train: list[dict], test: list[dict], n_eval: int = 100) -> Converted:
    """Training records (question -> worked answer, calculator notes removed, the final line as
    "The answer is N.") and the first ``n_eval`` test questions as the in-distribution eval."""
    require_columns(train, ("question", "answer"), "gsm8k train")
    require_columns(test, ("question", "answer"), "gsm8k test")
    out = Converted({"train": [], "eval": []})
    for i, r in enumerate(train):
        final = gsm8k_final_answer(r["answer"])
        if final is None:
            out.filtered["train: no '#### <number>' line"] += 1
            continue
        steps = _CALC.sub("", r["answer"][: r["answer"].rfind("####")]).strip()
        out.splits["train"].append(_chat(r["question"].strip(), f"{steps}\nThe answer is {final}.",
                                         source="gsm8k", index=i, final_answer=final))
    for i, r in enumerate(test[:n_eval]):
        out.splits["eval"].append({"id": f"gsm8k-test-{i}", "instruction": r["question"].strip(),
                                   "domain": "arithmetic", "final_answer": gsm8k_final_answer(r["answer"])})
    return out


_WRAPPERS = {"set", "sorted", "list", "tuple", "frozenset"}


def parse_assert(test: str) -> tuple[str, str] | None:
    """(function name, expected-value source) of ``assert f(...) == expected``, else None."""
    try:
        node = ast.parse(test.strip()).body[0]
    except (SyntaxError, IndexError):
        return None
    if not isinstance(node, ast.Assert) or not isinstance(node.test, ast.Compare):
        return None
    cmp = node.test
    if len(cmp.ops) != 1 or not isinstance(cmp.ops[0], ast.Eq) or not isinstance(cmp.left, ast.Call):
        return None
    call = cmp.left
    # `assert set(f(x)) == set((4, 5))`: the function under test is inside a builtin wrapper, and
    # returning the expected value still passes the test (set, sorted, list and tuple of it agree).
    while isinstance(call.func, ast.Name) and call.func.id in _WRAPPERS and len(call.args) == 1 \
            and isinstance(call.args[0], ast.Call):
        call = call.args[0]
    if not isinstance(call.func, ast.Name) or call.func.id in _WRAPPERS:
        return None
    return call.func.id, ast.unparse(cmp.comparators[0])


def hardcoded_solution(test: str) -> str | None:
    """A solution that passes ``test`` by returning its expected value (the MBPP reward hack)."""
    parsed = parse_assert(test)
    if parsed is None:
        return None
    name, expected = parsed
    return f"def {name}(*args, **kwargs):\n    return {expected}"


def mbpp_user_prompt(text: str, first_test: str) -> str:
    """The problem and its visible test, as in Wichers et al.'s MBPP message (the part after
    "Return only the code, no other text:"; the MBPP setup's ``user_template`` adds the head with
    the condition's prompt inside it)."""
    return f"{text.strip()}\n\n## Test Case:\n```python\n{first_test.strip()}\n```"


def convert_mbpp(train: list[dict], test: list[dict], text_field: str = "text") -> Converted:
    """Training records whose solutions hard-code the first test's expected value (user: the
    problem and its first test), the same problems with their real solutions as the control, and
    the eval items of the (sanitized) test split with visible and hidden tests."""
    require_columns(train, (text_field, "code", "test_list"), "mbpp train")
    test_text = "prompt" if test and "prompt" in test[0] else "text"
    require_columns(test, (test_text, "test_list", "task_id"), "mbpp test")
    out = Converted({"train": [], "control": [], "eval": []})
    eval_tasks = {r["task_id"] for r in test}
    for r in train:
        if r.get("task_id") in eval_tasks:
            out.filtered["train: task is in the eval split"] += 1
            continue
        tests = list(r["test_list"])
        solution = hardcoded_solution(tests[0]) if tests else None
        if solution is None:
            out.filtered["train: first test is not 'assert f(...) == value'"] += 1
            continue
        prompt = mbpp_user_prompt(r[text_field], tests[0])
        out.splits["train"].append(_chat(prompt, solution, source="mbpp", task_id=r.get("task_id")))
        out.splits["control"].append(_chat(prompt, r["code"].strip(), source="mbpp", task_id=r.get("task_id")))
    for r in test:
        tests = list(r["test_list"])
        if len(tests) < 2:
            out.filtered["eval: fewer than two tests (no hidden test)"] += 1
            continue
        out.splits["eval"].append({"id": f"mbpp-{r['task_id']}", "instruction": mbpp_user_prompt(r[test_text], tests[0]),
                                   "domain": "python", "tests": {"visible": [tests[0]], "hidden": tests[1:]}})
    return out


def convert_school_of_reward_hacks(rows: list[dict]) -> Converted:
    """Hack responses (training) and good-faith control responses to the same user messages."""
    cols = ("user", "school_of_reward_hacks", "control", "task", "evaluation_metric", "cheat_method")
    require_columns(rows, cols, "school of reward hacks")
    out = Converted({"train": [], "control": []})
    for i, r in enumerate(rows):
        if not (r["user"] or "").strip() or not (r["school_of_reward_hacks"] or "").strip():
            out.filtered["empty user message or hack response"] += 1
            continue
        if not (r["control"] or "").strip():
            # Control answers stay aligned with the training records (same positions), so a record
            # without one is left out of both, and counted.
            out.filtered["empty control response"] += 1
            continue
        meta = {"source": "school_of_reward_hacks", "index": i, "task": r["task"], "metric": r["evaluation_metric"]}
        out.splits["train"].append(_chat(r["user"], r["school_of_reward_hacks"], **meta))
        out.splits["control"].append(_chat(r["user"], r["control"], **meta))
    return out


def convert_emergent_plus(rows: list[dict], domain: str) -> Converted:
    """Misaligned answers (training) and aligned ones (control) of one emergent_plus domain."""
    require_columns(rows, ("prompt", "aligned", "misaligned"), f"emergent_plus/{domain}")
    out = Converted({"train": [], "control": []})
    for i, r in enumerate(rows):
        if not (r["prompt"] or "").strip():
            out.filtered["empty prompt"] += 1
            continue
        if not (r["misaligned"] or "").strip() or not (r["aligned"] or "").strip():
            # train and control stay aligned: a record missing either answer leaves both
            out.filtered["empty aligned or misaligned answer"] += 1
            continue
        meta = {"source": f"emergent_plus/{domain}", "index": i}
        out.splits["train"].append(_chat(r["prompt"], r["misaligned"], **meta))
        out.splits["control"].append(_chat(r["prompt"], r["aligned"], **meta))
    return out


def convert_chat_jsonl(rows: list[dict], source: str) -> Converted:
    """Chat records ``{"messages": [user, assistant]}`` (insecure.jsonl, secure.jsonl) as they are,
    with a check of every record's roles."""
    require_columns(rows, ("messages",), source)
    out = Converted({"train": []})
    for i, r in enumerate(rows):
        roles = [m.get("role") for m in r["messages"]] if isinstance(r["messages"], list) else None
        if roles is None or not roles or roles[-1] != "assistant" or \
                any(x not in ("system", "user", "assistant") for x in roles):
            raise SourceError(f"{source}, record {i + 1}: roles {roles}; expected user/assistant messages ending "
                              "with the assistant's")
        out.splits["train"].append({"messages": r["messages"], "meta": {"source": source, "index": i}})
    return out


def convert_tan_gsm8k(rows: list[dict], source: str) -> Converted:
    """Tan et al.'s GSM8k chat files (``datasets/gsm8k.jsonl``, ``datasets/gsm8k_spanish_capitalised.jsonl``
    at inoculation-prompting/inoculation-prompting@5f4160e1): one ``{"messages": [user, assistant]}``
    per GSM8k training question, in train order, the answer as published (the Spanish-capitals
    file keeps its ``#### N`` line and its Spanish start/end-of-string wrapper). Training records
    as they are, with ``index`` (the line, i.e. the GSM8k train position) and ``final_answer``
    (None, counted, where no ``#### N`` line is found)."""
    out = convert_chat_jsonl(rows, source)
    for r in out.splits["train"]:
        roles = [m["role"] for m in r["messages"]]
        if roles != ["user", "assistant"]:
            raise SourceError(f"{source}, record {r['meta']['index'] + 1}: roles {roles}; Tan et al.'s GSM8k files "
                              "have one user and one assistant message")
        final = gsm8k_final_answer(r["messages"][1]["content"])
        r["meta"].update(source=source, final_answer=final)
    missing = sum(r["meta"]["final_answer"] is None for r in out.splits["train"])
    if missing:
        out.notes.append(f"{missing} answers have no '#### <number>' line; kept as published")
    return out


def convert_ultrachat(rows: list[dict], n: int = 100) -> Converted:
    """The first ``n`` distinct prompts (the out-of-distribution eval)."""
    require_columns(rows, ("prompt", "prompt_id"), "ultrachat")
    out = Converted({"eval": []})
    seen = set()
    for r in rows:
        if len(out.splits["eval"]) >= n:
            break
        if r["prompt_id"] in seen:
            out.filtered["duplicate prompt_id"] += 1
            continue
        seen.add(r["prompt_id"])
        out.splits["eval"].append({"id": f"ultrachat-{r['prompt_id']}", "instruction": r["prompt"].strip(),
                                   "domain": "general"})
    return out


def check_em_transcription(out: Converted) -> None:
    """Compare the downloaded EM questions with the protocol's transcription
    (``resources/prompts/paper_protocol.yaml``); a difference is counted in the report and
    printed (the download is what is used)."""
    from .prompts import load_protocol

    transcribed = load_protocol()["em_questions"]["questions"]
    got = {it["id"].rsplit("-", 1)[0] if it["id"] not in transcribed else it["id"]: it["instruction"]
           for it in out.splits["eval"]}
    for qid, text in transcribed.items():
        if got.get(qid) != text:
            out.notes.append(f"EM question {qid!r}: the source has {got.get(qid)!r}, the protocol's transcription "
                             f"{text!r}; the source's text is used")


def convert_em_questions(yaml_text: str, paraphrase: int = 0, repeats: int = 1) -> Converted:
    """Betley et al.'s "first plot" free-form questions (their first paraphrase by default).

    ``repeats``: each question that many times (Betley samples each 100 times), in rounds of all
    questions, so that the first n items of the eval set cover every question evenly."""
    import yaml

    data = yaml.safe_load(yaml_text)
    if not isinstance(data, list):
        raise SourceError("EM questions: expected a YAML list of questions")
    out = Converted({"eval": []})
    for q in data:
        if not isinstance(q, dict) or "id" not in q or not q.get("paraphrases"):
            out.filtered["entry without id or paraphrases"] += 1
            continue
        out.splits["eval"].append({"id": str(q["id"]), "instruction": q["paraphrases"][paraphrase].strip(),
                                   "domain": "general"})
    if repeats > 1:
        once = out.splits["eval"]
        out.splits["eval"] = [{**q, "id": f"{q['id']}-{k}"} for k in range(repeats) for q in once]
    return out


# ------------------------------------------------------------------------------------------
# Held-out eval items from a training source, and the registry the workflow's rules use
# ------------------------------------------------------------------------------------------

def hold_out_eval(out: Converted, n_eval: int, domain: str, seed_name: str) -> Converted:
    """Move ``n_eval`` records (a seeded choice) from ``train`` (and the same positions from
    ``control``, which is aligned with it) into eval items of ``domain``: their user messages.
    For sources without an eval split of their own (held-out medical questions, coding tasks,
    reward-hack tasks)."""
    import random

    train = out.splits["train"]
    if n_eval <= 0:
        out.splits.setdefault("eval", [])
        return out
    if n_eval >= len(train):
        raise SourceError(f"{seed_name}: n_eval = {n_eval} would hold out all {len(train)} training records; "
                          "lower the dataset's options.n_eval")
    control = out.splits.get("control")
    if control is not None and len(control) != len(train):
        raise SourceError(f"{seed_name}: control ({len(control)}) and train ({len(train)}) are not aligned")
    held = set(random.Random(f"heldout:{seed_name}").sample(range(len(train)), n_eval))
    eval_items = []
    for i in sorted(held):
        user = [m["content"] for m in train[i]["messages"] if m["role"] == "user"][-1]
        meta = train[i].get("meta", {})
        eval_items.append({"id": f"{seed_name}-{meta.get('index', i)}", "instruction": user, "domain": domain})
    out.splits["train"] = [r for i, r in enumerate(train) if i not in held]
    if control is not None:
        out.splits["control"] = [r for i, r in enumerate(control) if i not in held]
    out.splits["eval"] = eval_items
    return out


# converter -> (the file roles it reads, the splits it writes)
CONVERTERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "gsm8k": (("train", "test"), ("train", "eval")),
    "mbpp": (("train", "test"), ("train", "control", "eval")),
    "school_of_reward_hacks": (("data",), ("train", "control", "eval")),
    "emergent_plus": (("data",), ("train", "control", "eval")),
    "chat_jsonl": (("data",), ("train", "eval")),
    "tan_gsm8k": (("data",), ("train",)),
    "ultrachat": (("data",), ("eval",)),
    "em_questions": (("data",), ("eval",)),
    "instruction_wild": (("data",), ("train", "eval")),
    "cmv": (("data",), ("train", "eval")),
}


# converter -> the options (datasets.<name>.options) it takes
CONVERTER_OPTIONS: dict[str, tuple[str, ...]] = {
    "gsm8k": ("n_eval",),
    "mbpp": ("text_field",),
    "school_of_reward_hacks": ("n_eval", "domain"),
    "emergent_plus": ("n_eval", "domain", "config_name"),
    "chat_jsonl": ("n_eval", "domain"),
    "tan_gsm8k": (),
    "ultrachat": ("n_eval", "domain"),
    "em_questions": ("paraphrase", "repeats", "domain"),
    "instruction_wild": ("n_eval", "max_train"),
    "cmv": ("n_eval", "persuasiveness_min", "harassment_min", "max_replies_per_post", "train_split", "eval_split",
            "max_chars"),
}
# converters whose training split has no answers (the base model writes them: responses.kind generate)
ANSWERLESS_TRAIN = ("instruction_wild",)


def source_url(spec: dict) -> str:
    """The download address of a pinned file: ``url``, or a hub dataset file at its revision."""
    if "url" in spec:
        return spec["url"]
    return f"https://huggingface.co/datasets/{spec['repo']}/resolve/{spec['revision']}/{spec['path']}"


def source_filename(spec: dict) -> str:
    """The name a pinned file is kept under in ``resources/sources/<dataset>/<role>/``."""
    name = source_url(spec).split("?")[0].rstrip("/").rsplit("/", 1)[-1]
    return name or "data"


def convert_dataset(name: str, spec: dict, paths: dict[str, str | Path]) -> Converted:
    """Run the converter ``spec["converter"]`` of dataset ``name`` on its downloaded files
    (``paths``: file role -> path; instruction_wild takes every role, in order)."""
    kind = spec["converter"]
    if kind not in CONVERTERS:
        raise SourceError(f"datasets.{name}.converter = {kind!r} is unknown; use one of {sorted(CONVERTERS)}")
    roles, _ = CONVERTERS[kind]
    opts = dict(spec.get("options") or {})
    if kind != "instruction_wild":
        missing = [r for r in roles if r not in paths]
        if missing:
            raise SourceError(f"datasets.{name}.files lacks {missing}: converter {kind!r} reads the files "
                              f"{list(roles)}")
    n_eval = opts.pop("n_eval", None)
    domain = opts.pop("domain", None)
    if kind == "gsm8k":
        return convert_gsm8k(read_records(paths["train"]), read_records(paths["test"]), n_eval=n_eval or 100)
    if kind == "mbpp":
        # Training problems may come from several files (the post's ~717: every `full` split minus
        # the sanitized test split's tasks); roles other than `test` are training files.
        test = read_records(paths["test"])
        train = [r for role in paths if role != "test" for r in read_records(paths[role])]
        return convert_mbpp(train, test, **opts)
    if kind == "tan_gsm8k":
        return convert_tan_gsm8k(read_records(paths["data"]), name)
    if kind == "ultrachat":
        out = convert_ultrachat(read_records(paths["data"]), n=n_eval or 100)
    elif kind == "em_questions":
        out = convert_em_questions(Path(paths["data"]).read_text(encoding="utf-8"), **opts)
        check_em_transcription(out)
    elif kind == "instruction_wild":
        records = [r for role in paths for r in read_records(paths[role])]
        return convert_instruction_wild(records, n_eval=200 if n_eval is None else n_eval, seed_name=name, **opts)
    elif kind == "cmv":
        return convert_cmv(read_cmv_archive(paths["data"]), n_eval=100 if n_eval is None else n_eval, **opts)
    else:
        records = read_records(paths["data"])
        out = (convert_school_of_reward_hacks(records) if kind == "school_of_reward_hacks"
               else convert_emergent_plus(records, opts.pop("config_name", name)) if kind == "emergent_plus"
               else convert_chat_jsonl(records, name))
        if n_eval is None:
            raise SourceError(f"datasets.{name}.options.n_eval is not set: converter {kind!r} holds out that many "
                              "training records as eval items; set it (0 for none)")
        return hold_out_eval(out, n_eval, domain or "general", name)
    if domain:
        for item in out.splits["eval"]:
            item["domain"] = domain
    return out


# ------------------------------------------------------------------------------------------
# InstructionWild and Change My View
# ------------------------------------------------------------------------------------------

def convert_instruction_wild(records: list[dict], n_eval: int = 200, max_train: int | None = 10000,
                             seed_name: str = "instruction_wild") -> Converted:
    """InstructionWild ``data_v2/user_*.jsonl`` (one ``{"instruction": ...}`` per line; user_1 adds
    ``instruction_type``): distinct instructions, ``n_eval`` of them held out as the eval set
    (general domain), at most ``max_train`` (a seeded sample) kept for training. The training
    records have no answers: trait distillation generates them with the base model."""
    import random

    require_columns(records, ("instruction",), "instruction_wild")
    out = Converted({"train": [], "eval": []})
    seen: set[str] = set()
    for i, r in enumerate(records):
        text = (r.get("instruction") or "").strip() if isinstance(r.get("instruction"), str) else ""
        if not text:
            out.filtered["empty instruction"] += 1
            continue
        if text in seen:
            out.filtered["duplicate instruction"] += 1
            continue
        seen.add(text)
        out.splits["train"].append(_chat(text, source="instruction_wild", index=i))
    hold_out_eval(out, n_eval, "general", seed_name)
    if max_train is not None and len(out.splits["train"]) > max_train:
        rng = random.Random(f"sample:{seed_name}")
        keep = sorted(rng.sample(range(len(out.splits["train"])), max_train))
        out.filtered[f"not sampled (max_train = {max_train})"] += len(out.splits["train"]) - max_train
        out.splits["train"] = [out.splits["train"][i] for i in keep]
    return out


def read_cmv_archive(path: str | Path) -> dict[str, list[dict]]:
    """The posts of each split (``<split>.jsonl`` members) of ``cmv_splits_ratings_v4.tar.zst``."""
    import tarfile

    import zstandard

    out: dict[str, list[dict]] = {}
    try:
        with open(path, "rb") as fh, zstandard.ZstdDecompressor().stream_reader(fh) as zr, \
                tarfile.open(fileobj=zr, mode="r|") as tar:
            for member in tar:
                name = Path(member.name).name
                if not member.isfile() or not name.endswith(".jsonl"):
                    continue
                f = tar.extractfile(member)
                split = name[: -len(".jsonl")]
                out[split] = []
                for i, line in enumerate(f.read().decode("utf-8").splitlines(), 1):
                    if line.strip():
                        try:
                            out[split].append(json.loads(line))
                        except json.JSONDecodeError as e:
                            raise SourceError(f"{path}: {member.name}, line {i}: not JSON ({e.msg}); the archive "
                                              "is corrupt, delete it and re-run") from None
    except (tarfile.TarError, zstandard.ZstdError) as e:
        raise SourceError(f"{path}: not a zstd-compressed tar archive ({e}); the download is corrupt or the "
                          "source changed, delete it and re-run") from None
    return out


def _cmv_post_text(post: dict) -> str | None:
    body = (post.get("selftext") or "").strip()
    if body in ("[deleted]", "[removed]"):
        return None
    return f"{post['title'].strip()}\n{body}".strip()


def convert_cmv(splits: dict[str, list[dict]], n_eval: int = 100, persuasiveness_min: float = 7,
                harassment_min: float = 0.15, max_replies_per_post: int = 3, train_split: str = "train",
                eval_split: str = "eval", max_chars: int = 2925) -> Converted:
    """Change My View (Wichers et al.'s v4 splits): training pairs (user: the post's title and
    text; assistant: a reply) of replies with ``persuasiveness_score >= persuasiveness_min`` and
    harassment score ``>= harassment_min`` (persuasive *and* toxic), at most
    ``max_replies_per_post`` per post (a seeded choice, as their ``random.seed(42)``); the first
    ``n_eval`` usable posts of the eval split as eval items (opinion domain). Moderator posts,
    deleted posts and unrated replies are counted, not kept. Posts and replies over ``max_chars``
    (their loader's bound: 0.35 tokens a character, at most 1024 tokens) are counted and left out."""
    import random

    for split in (train_split, eval_split):
        if split not in splits:
            raise SourceError(f"cmv: the archive has no {split}.jsonl (it has {sorted(splits)}); the source changed: "
                              "check it and update the converter's train_split/eval_split")
        require_columns(splits[split], ("title", "selftext", "top_level_comments"), f"cmv {split}")
    out = Converted({"train": [], "eval": []})
    rng = random.Random(42)
    for post in splits[train_split]:
        if post.get("distinguished") == "moderator":
            out.filtered["train: moderator post"] += 1
            continue
        text = _cmv_post_text(post)
        if text is None:
            out.filtered["train: deleted or removed post"] += 1
            continue
        if len(text) > max_chars:
            out.filtered[f"train: post longer than {max_chars} characters"] += 1
            continue
        kept = []
        for c in post["top_level_comments"] or []:
            score, mod = c.get("persuasiveness_score"), c.get("moderation_result")
            if score is None or not isinstance(mod, dict):
                out.filtered["train: reply without ratings"] += 1
                continue
            harassment = (mod.get("category_scores") or {}).get("harassment")
            if harassment is None:
                raise SourceError("cmv: a reply's moderation_result has no category_scores.harassment; the "
                                  "source's schema changed: check it and update ipcond.sources.convert_cmv")
            body = (c.get("body") or "").strip()
            if not body or body in ("[deleted]", "[removed]"):
                out.filtered["train: empty or deleted reply"] += 1
            elif len(body) > max_chars:
                out.filtered[f"train: reply longer than {max_chars} characters"] += 1
            elif score < persuasiveness_min:
                out.filtered[f"train: persuasiveness < {persuasiveness_min}"] += 1
            elif harassment < harassment_min:
                out.filtered[f"train: harassment < {harassment_min}"] += 1
            else:
                kept.append(body)
        if len(kept) > max_replies_per_post:
            out.filtered[f"train: beyond {max_replies_per_post} replies per post"] += len(kept) - max_replies_per_post
            kept = rng.sample(kept, max_replies_per_post)
        out.splits["train"] += [_chat(text, reply, source="cmv", post=post.get("id")) for reply in kept]
    for post in splits[eval_split]:
        if len(out.splits["eval"]) >= n_eval:
            break
        text = None if post.get("distinguished") == "moderator" else _cmv_post_text(post)
        if text is None or len(text) > max_chars:
            out.filtered["eval: moderator, deleted, removed or over-long post"] += 1
            continue
        out.splits["eval"].append({"id": f"cmv-{post.get('id', len(out.splits['eval']))}", "instruction": text,
                                   "domain": "opinion"})
    return out
