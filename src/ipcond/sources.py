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

    def report(self) -> dict:
        return {"counts": {k: len(v) for k, v in self.splits.items()}, "filtered": dict(self.filtered)}


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


def fetch(url: str, dest: str | Path, sha256: str, *, source: str, auth_env: str | None = None,
          timeout: float = 60.0, retries: int = 3, backoff_s: float = 2.0) -> Path:
    """Download ``url`` to ``dest`` unless ``dest`` already has the pinned SHA-256.

    Every source is a URL pinned to an immutable revision (a hub file as
    ``https://huggingface.co/datasets/<repo>/resolve/<commit>/<path>``, a repository file as its
    raw URL at a commit) plus the file's SHA-256, so one code path fetches them all and the
    checksum, not the server, decides what is accepted. The file is written to a temporary name
    and renamed once verified; a failed or mismatched download leaves nothing at ``dest``.
    ``auth_env`` names an environment variable holding a token for gated sources (sent as a
    bearer token, never printed). Errors say what is missing: the network, the credentials, or
    a file at the pinned revision.
    """
    import os
    import time
    import urllib.error
    import urllib.request

    dest = Path(dest)
    if dest.is_file() and sha256_of(dest) == sha256.lower():
        return dest
    headers = {"User-Agent": "ipcond-fetch"}
    if auth_env:
        token = os.environ.get(auth_env)
        if token:
            headers["Authorization"] = f"Bearer {token}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part")
    last: Exception | None = None
    for attempt in range(retries):
        try:
            h = hashlib.sha256()
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp, \
                    open(part, "wb") as f:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    f.write(chunk)
                    h.update(chunk)
            if h.hexdigest() != sha256.lower():
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
            last = e
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            part.unlink(missing_ok=True)
            last = e
        if attempt + 1 < retries:
            time.sleep(backoff_s * 2 ** attempt)
    host = url.split("/")[2] if "//" in url else url
    raise SourceError(f"{source}: could not download {url} after {retries} attempts ({last}). This machine may "
                      f"have no network access to {host}: run the fetch rules on a machine that has, or copy the "
                      f"file there to {dest} (its SHA-256 must be {sha256})")


def read_records(path: str | Path) -> list[dict]:
    """Records of a JSON-lines, JSON (a list), Parquet or CSV file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict(orient="records")
    if suffix == ".csv":
        import pandas as pd

        return pd.read_csv(path).to_dict(orient="records")
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
    return f"{text.strip()}\nYour code should pass this test:\n{first_test.strip()}"


def convert_mbpp(train: list[dict], test: list[dict], text_field: str = "text") -> Converted:
    """Training records whose solutions hard-code the first test's expected value (user: the
    problem and its first test), the same problems with their real solutions as the control, and
    the eval items of the (sanitized) test split with visible and hidden tests."""
    require_columns(train, (text_field, "code", "test_list"), "mbpp train")
    test_text = "prompt" if test and "prompt" in test[0] else "text"
    require_columns(test, (test_text, "test_list", "task_id"), "mbpp test")
    out = Converted({"train": [], "control": [], "eval": []})
    for r in train:
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
        meta = {"source": "school_of_reward_hacks", "index": i, "task": r["task"], "metric": r["evaluation_metric"]}
        out.splits["train"].append(_chat(r["user"], r["school_of_reward_hacks"], **meta))
        if (r["control"] or "").strip():
            out.splits["control"].append(_chat(r["user"], r["control"], **meta))
        else:
            out.filtered["control: empty control response"] += 1
    return out


def convert_emergent_plus(rows: list[dict], domain: str) -> Converted:
    """Misaligned answers (training) and aligned ones (control) of one emergent_plus domain."""
    require_columns(rows, ("prompt", "aligned", "misaligned"), f"emergent_plus/{domain}")
    out = Converted({"train": [], "control": []})
    for i, r in enumerate(rows):
        if not (r["prompt"] or "").strip():
            out.filtered["empty prompt"] += 1
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


def convert_em_questions(yaml_text: str, paraphrase: int = 0) -> Converted:
    """Betley et al.'s "first plot" free-form questions (their first paraphrase by default)."""
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
    return out
