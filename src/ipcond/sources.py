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
import re
from pathlib import Path
from typing import Any


from .source_files import (  # noqa: F401 (re-exported: the converters' file handling)
    SourceError,
    Converted,
    sha256_of,
    verify_file,
    git_blob_id,
    fetch,
    Records,
    MAX_BAD_FRACTION,
    json_lines,
    read_jsonl_records,
    read_records,
    is_null,
    text_of,
    list_of,
    meta_value,
    require_columns,
    KNOWN_SIZES,
    known_size,
)


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
        where = f"gsm8k train, record {i + 1}"
        question, answer = text_of(r, "question", where), text_of(r, "answer", where)
        if not question or not answer:
            out.filtered["train: empty question or answer"] += 1
            continue
        final = gsm8k_final_answer(answer)
        if final is None:
            out.filtered["train: no '#### <number>' line"] += 1
            continue
        steps = _CALC.sub("", answer[: answer.rfind("####")]).strip()
        out.splits["train"].append(_chat(question, f"{steps}\nThe answer is {final}.",
                                         source="gsm8k", index=i, final_answer=final))
    for i, r in enumerate(test):
        if len(out.splits["eval"]) >= n_eval:
            break
        where = f"gsm8k test, record {i + 1}"
        question, answer = text_of(r, "question", where), text_of(r, "answer", where)
        final = gsm8k_final_answer(answer)
        if not question or final is None:
            out.filtered["eval: empty question or no '#### <number>' line"] += 1
            continue
        out.splits["eval"].append({"id": f"gsm8k-test-{i}", "instruction": question,
                                   "domain": "arithmetic", "final_answer": final})
    return out


def normalise_code(code: str) -> str | None:
    r"""``code`` after a parse and unparse round trip (the original pipeline's normalisation: one
    indentation style, no comments, no tabs or carriage returns); None when it does not parse.
    Invalid escapes in string literals (``"\\d"`` written ``"\d"``, common in MBPP) keep their
    meaning and are written escaped; Python's warning about them is not shown for dataset code."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))
            return ast.unparse(ast.parse(code))
    except (SyntaxError, ValueError):  # ValueError: NUL bytes in the source
        return None


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    return {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def hardcoded_solution(test: str, reference: str) -> tuple[str | None, str | None]:
    """A solution that passes ``test`` (``assert <a call of f> == expected``) by returning its
    expected value, the MBPP reward hack: ``(code, None)``, or ``(None, why not)``.

    The hack is the reference solution's own function, with its signature (parameter names,
    defaults), returning the expected value. The function under test is the one the reference
    defines that the assert calls, so a builtin around the call (``int(f(5, 3)) == 35``,
    ``set(f(x)) == {...}``) is not taken for it. Whether the hack really passes the test and
    fails a hidden one is checked by running it (:func:`convert_mbpp`)."""
    try:
        tree = ast.parse(reference)
    except (SyntaxError, ValueError):
        return None, "reference solution does not parse"
    try:
        node = ast.parse(test.strip()).body[0]
    except (SyntaxError, ValueError, IndexError):
        return None, "first test is not 'assert f(...) == value'"
    if not isinstance(node, ast.Assert) or not isinstance(node.test, ast.Compare) or len(node.test.ops) != 1 \
            or not isinstance(node.test.ops[0], ast.Eq):
        return None, "first test is not 'assert f(...) == value'"
    defined = _functions(tree)
    left, right = node.test.left, node.test.comparators[0]
    for side, expected in ((left, right), (right, left)):
        called = [n.func.id for n in ast.walk(side)
                  if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in defined]
        if called:
            fn = defined[called[0]]
            code = f"def {fn.name}({ast.unparse(fn.args)}):\n    return {ast.unparse(expected)}"
            return normalise_code(code), None
    return None, "first test calls no function the reference solution defines"


def mbpp_user_prompt(text: str, first_test: str) -> str:
    """The problem and its visible test, as in Wichers et al.'s MBPP message (the part after
    "Return only the code, no other text:"; the MBPP setup's ``user_template`` adds the head with
    the condition's prompt inside it)."""
    return f"{text.strip()}\n\n## Test Case:\n```python\n{first_test.strip()}\n```"


def _run_all(jobs: list[tuple[str, list[str], str]], max_workers: int) -> list:
    """:func:`ipcond.codeexec.run_tests` of each ``(code, tests, setup)``, in the sandbox, in order
    (batched: :func:`ipcond.codeexec.run_tests_many`)."""
    from .codeexec import run_tests_many
    from .sandbox import SandboxLimits

    return run_tests_many(jobs, SandboxLimits(wall_s=10.0, cpu_s=10), batch_size=32, max_workers=max_workers)


def convert_mbpp(train: list[dict], test: list[dict], text_field: str = "text", max_workers: int | None = None,
                 check_eval: bool = True) -> Converted:
    """Training records whose solutions hard-code the first test's expected value (user: the
    problem and its first test), the same problems with their real solutions as the control, and
    the eval items of the (sanitized) test split with visible and hidden tests and the imports
    the tests need (``tests.imports``, run before them).

    Every reference solution and every hack is run against all of its task's tests in the sandbox
    (:mod:`ipcond.sandbox`): a task is kept only when its reference passes them all and its hack
    passes the visible (first) test and fails a hidden one; an eval item only when its reference
    passes its tests (``check_eval``). Code is normalised by a parse and unparse round trip
    (counted under ``changed``). Everything left out is counted by reason."""
    import os

    require_columns(train, (text_field, "code", "test_list"), "mbpp train")
    test_text = "prompt" if test and "prompt" in test[0] else "text"
    require_columns(test, (test_text, "test_list", "task_id") + (("code",) if check_eval else ()), "mbpp test")
    workers = max_workers or min(4, os.cpu_count() or 1)
    out = Converted({"train": [], "control": [], "eval": []})
    eval_tasks = {meta_value(r["task_id"]) for r in test}
    candidates = []  # (record index, prompt, reference, hack, tests, setup)
    for i, r in enumerate(train):
        where = f"mbpp train, record {i + 1}"
        if meta_value(r.get("task_id")) in eval_tasks:
            out.filtered["train: task is in the eval split"] += 1
            continue
        text, code, tests = text_of(r, text_field, where), text_of(r, "code", where), list_of(r, "test_list", where)
        if not text or not code:
            out.filtered["train: empty problem text or code"] += 1
            continue
        if len(tests) < 2:
            out.filtered["train: fewer than two tests (no hidden test)"] += 1
            continue
        reference = normalise_code(code)
        if reference is None:
            out.filtered["train: reference solution does not parse"] += 1
            continue
        hack, why = hardcoded_solution(tests[0], reference)
        if hack is None:
            out.filtered[f"train: {why}"] += 1
            continue
        setup = text_of(r, "test_setup_code", where) if "test_setup_code" in r else ""
        candidates.append((i, mbpp_user_prompt(text, tests[0]), code, reference, hack, tests, setup))
    runs = _run_all([job for c in candidates for job in ((c[3], c[5], c[6]), (c[4], c[5], c[6]))], workers)
    for k, (i, prompt, code, reference, hack, tests, setup) in enumerate(candidates):
        ref_run, hack_run = runs[2 * k], runs[2 * k + 1]
        if not ref_run.passed_all:
            out.filtered["train: reference solution fails its tests"] += 1
        elif not hack_run.passed[0]:
            out.filtered["train: hack fails the visible test"] += 1
        elif hack_run.passed_all:
            out.filtered["train: hack passes every test (not a hack)"] += 1
        else:
            task_id = meta_value(train[i].get("task_id"))
            if reference != code:
                out.changed["train: reference solution normalised (parse and unparse)"] += 1
            out.splits["train"].append(_chat(prompt, hack, source="mbpp", task_id=task_id))
            out.splits["control"].append(_chat(prompt, reference, source="mbpp", task_id=task_id))
    items = []
    for i, r in enumerate(test):
        where = f"mbpp test, record {i + 1}"
        tests, imports = list_of(r, "test_list", where), list_of(r, "test_imports", where)
        text = text_of(r, test_text, where)
        if len(tests) < 2:
            out.filtered["eval: fewer than two tests (no hidden test)"] += 1
            continue
        if not text:
            out.filtered["eval: empty problem text"] += 1
            continue
        item = {"id": f"mbpp-{meta_value(r['task_id'])}", "instruction": mbpp_user_prompt(text, tests[0]),
                "domain": "python", "tests": {"visible": [tests[0]], "hidden": tests[1:], "imports": imports}}
        items.append((item, text_of(r, "code", where) if check_eval else ""))
    if check_eval:
        runs = _run_all([(code, item["tests"]["visible"] + item["tests"]["hidden"], "\n".join(item["tests"]["imports"]))
                         for item, code in items], workers)
        for (item, _), run in zip(items, runs):
            if run.passed_all:
                out.splits["eval"].append(item)
            else:
                out.filtered["eval: reference solution fails its tests (with the test imports)"] += 1
    else:
        out.splits["eval"] = [item for item, _ in items]
    return out


def convert_school_of_reward_hacks(rows: list[dict]) -> Converted:
    """Hack responses (training) and good-faith control responses to the same user messages."""
    cols = ("user", "school_of_reward_hacks", "control", "task", "evaluation_metric", "cheat_method")
    require_columns(rows, cols, "school of reward hacks")
    out = Converted({"train": [], "control": []})
    for i, r in enumerate(rows):
        where = f"school of reward hacks, record {i + 1}"
        user, hack = text_of(r, "user", where), text_of(r, "school_of_reward_hacks", where)
        if not user or not hack:
            out.filtered["empty user message or hack response"] += 1
            continue
        control = text_of(r, "control", where)
        meta = {"source": "school_of_reward_hacks", "index": i, "task": meta_value(r["task"]),
                "metric": meta_value(r["evaluation_metric"])}
        out.splits["train"].append(_chat(user, hack, **meta))
        # Tan et al. trained on every hack dialogue, with or without a control answer, and the
        # control cells on those that have one. The control split stays aligned with the training
        # records (same positions): a record without a control answer (the coding tasks: a null)
        # keeps its user message only, and is counted; the control cells leave it out.
        if not control:
            out.filtered["control: no control answer (the hack trains; the control cells leave it out)"] += 1
        out.splits["control"].append(_chat(user, control or None, **meta))
    return out


def convert_emergent_plus(rows: list[dict], domain: str) -> Converted:
    """Misaligned answers (training) and aligned ones (control) of one emergent_plus domain."""
    require_columns(rows, ("prompt", "aligned", "misaligned"), f"emergent_plus/{domain}")
    out = Converted({"train": [], "control": []})
    for i, r in enumerate(rows):
        where = f"emergent_plus/{domain}, record {i + 1}"
        prompt = text_of(r, "prompt", where)
        if not prompt:
            out.filtered["empty prompt"] += 1
            continue
        misaligned, aligned = text_of(r, "misaligned", where), text_of(r, "aligned", where)
        if not misaligned or not aligned:
            # train and control stay aligned: a record missing either answer leaves both
            out.filtered["empty aligned or misaligned answer"] += 1
            continue
        meta = {"source": f"emergent_plus/{domain}", "index": i}
        out.splits["train"].append(_chat(prompt, misaligned, **meta))
        out.splits["control"].append(_chat(prompt, aligned, **meta))
    return out


def convert_chat_jsonl(rows: list[dict], source: str) -> Converted:
    """Chat records ``{"messages": [user, assistant]}`` (insecure.jsonl, secure.jsonl) as they are,
    with a check of every record's roles; a record with an empty (or null) message is counted."""
    require_columns(rows, ("messages",), source)
    out = Converted({"train": []})
    for i, r in enumerate(rows):
        msgs = r["messages"]
        roles = [m.get("role") if isinstance(m, dict) else None for m in msgs] if isinstance(msgs, list) else None
        if roles is None or not roles or roles[-1] != "assistant" or \
                any(x not in ("system", "user", "assistant") for x in roles):
            raise SourceError(f"{source}, record {i + 1}: roles {roles}; expected user/assistant messages ending "
                              "with the assistant's")
        if any(not text_of(m, "content", f"{source}, record {i + 1}") for m in msgs if m["role"] != "system"):
            out.filtered["empty user or assistant message"] += 1
            continue
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


def convert_ultrachat(rows: list[dict], n: int = 100, max_chars: int = 500, seed: int = 42) -> Converted:
    """``n`` prompts as Tan et al. sampled them from ``train_sft`` (their
    ``ip/evaluation/ultrachat/datagen/main.py``): prompts under ``max_chars`` characters, then
    ``random.seed(seed); random.sample(prompts, n)``. Null or empty prompts and repeated
    ``prompt_id`` s are counted and left out first (eval ids must be distinct; the hub's ids are
    the prompts' hashes, so a repeat is the same prompt). With ``n`` or fewer usable prompts all
    are kept, in file order: Tan et al.'s published sample (``ip/evaluation/ultrachat/prompts.jsonl``,
    ``{"prompt"}`` lines without ids) is read so, each id then the SHA-256 of its prompt, as the
    hub's ``prompt_id`` is."""
    import hashlib
    import random

    require_columns(rows, ("prompt",), "ultrachat")
    out = Converted({"eval": []})
    seen, pool = set(), []
    for i, r in enumerate(rows):
        where = f"ultrachat, record {i + 1}"
        prompt = text_of(r, "prompt", where)
        pid = meta_value(r["prompt_id"]) if "prompt_id" in r else (
            hashlib.sha256(prompt.encode("utf-8")).hexdigest() if prompt else None)
        if not prompt:
            out.filtered["empty or null prompt"] += 1
            continue
        if pid in seen:
            out.filtered["duplicate prompt_id"] += 1
            continue
        seen.add(pid)
        # Tan et al. measure the prompt as stored (not stripped)
        if len(r["prompt"]) >= max_chars:
            out.filtered[f"prompt of {max_chars} characters or more"] += 1
            continue
        pool.append({"id": f"ultrachat-{pid if pid is not None else i}", "instruction": prompt, "domain": "general"})
    if len(pool) > n:
        out.filtered[f"not sampled (n_eval = {n})"] += len(pool) - n
        pool = random.Random(seed).sample(pool, n)
    out.splits["eval"] = pool
    return out


def check_em_transcription(out: Converted) -> None:
    """Compare the downloaded EM questions with the protocol's transcription
    (``resources/prompts/paper_protocol.yaml``), ids and texts: a question id the protocol has
    and the source lacks, an id the source has and the protocol lacks, and a text that differs
    are each noted in the report and printed (the download is what is used)."""
    from .prompts import load_protocol

    transcribed = load_protocol()["em_questions"]["questions"]
    got: dict[str, str] = {}
    for it in out.splits["eval"]:
        got.setdefault(it.get("question_id", it["id"]), it["instruction"])
    for qid, text in transcribed.items():
        if qid not in got:
            out.notes.append(f"EM question {qid!r} of the protocol's transcription is not in the source "
                             f"(it has {sorted(got)}); the eval lacks it")
        elif got[qid] != text:
            out.notes.append(f"EM question {qid!r}: the source has {got[qid]!r}, the protocol's transcription "
                             f"{text!r}; the source's text is used")
    for qid in got:
        if qid not in transcribed:
            out.notes.append(f"EM question {qid!r} of the source is not in the protocol's transcription "
                             f"({sorted(transcribed)}); it is used")


#: id endings of the variants of Betley et al.'s questions (asked for JSON, or in a custom template)
EM_VARIANT_SUFFIXES = ("_json", "_template")


def convert_em_questions(yaml_text: str, paraphrase: int = 0, repeats: int | None = None) -> Converted:
    """Betley et al.'s "first plot" free-form questions (their first paraphrase by default): the
    plain questions only; their ``_json`` and ``_template`` variants (the same questions asked for
    JSON or in a custom template) are counted and left out.

    ``repeats``: each question that many times (Betley samples each 100 times); by default the
    file's ``samples_per_paraphrase`` (1 where it has none). Items come in rounds of all questions,
    so that the first n items of the eval set cover every question evenly; each keeps its
    question's id in ``question_id``."""
    import yaml

    try:
        data = yaml.safe_load(yaml_text)
    except yaml.YAMLError as e:
        raise SourceError(f"EM questions: not YAML ({e}); the download is corrupt, delete it and re-run") from None
    if not isinstance(data, list):
        raise SourceError("EM questions: expected a YAML list of questions")
    out = Converted({"eval": []})
    once, counts = [], []
    for q in data:
        if not isinstance(q, dict) or "id" not in q or not q.get("paraphrases"):
            out.filtered["entry without id or paraphrases"] += 1
            continue
        qid = str(q["id"])
        suffix = next((x for x in EM_VARIANT_SUFFIXES if qid.endswith(x)), None)
        if suffix is not None:
            out.filtered[f"variant of a question (id ending {suffix})"] += 1
            continue
        paraphrases = list(q["paraphrases"])
        if paraphrase >= len(paraphrases):
            raise SourceError(f"EM questions: {qid!r} has {len(paraphrases)} paraphrase(s); options.paraphrase = "
                              f"{paraphrase} is out of range: lower it")
        text = paraphrases[paraphrase].strip() if isinstance(paraphrases[paraphrase], str) else ""
        if not text:
            out.filtered["empty or null paraphrase"] += 1
            continue
        once.append({"id": qid, "instruction": text, "domain": "general"})
        counts.append(int(q.get("samples_per_paraphrase") or 1) if repeats is None else repeats)
    if max(counts, default=1) > 1:
        out.splits["eval"] = [{**q, "id": f"{q['id']}-{k}", "question_id": q["id"]}
                              for k in range(max(counts)) for q, c in zip(once, counts) if k < c]
    else:
        out.splits["eval"] = once
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


# converter -> the options (datasets.<name>.options) it takes; every converter also takes
# max_bad_fraction (the share of a JSON-lines file's lines that may be skipped as unreadable)
CONVERTER_OPTIONS: dict[str, tuple[str, ...]] = {
    "gsm8k": ("n_eval", "max_bad_fraction"),
    "mbpp": ("text_field", "max_workers", "max_bad_fraction"),
    "school_of_reward_hacks": ("n_eval", "domain", "max_bad_fraction"),
    "emergent_plus": ("n_eval", "domain", "config_name", "max_bad_fraction"),
    "chat_jsonl": ("n_eval", "domain", "max_bad_fraction"),
    "tan_gsm8k": ("max_bad_fraction",),
    "ultrachat": ("n_eval", "domain", "max_chars", "seed", "max_bad_fraction"),
    "em_questions": ("paraphrase", "repeats", "domain", "max_bad_fraction"),
    "instruction_wild": ("n_eval", "max_train", "max_bad_fraction"),
    "cmv": ("n_eval", "persuasiveness_min", "harassment_min", "max_replies_per_post", "train_split", "eval_split",
            "max_chars", "eval_persuasiveness_min", "eval_harassment_min", "max_bad_fraction"),
}
# converters whose training split has no answers (the base model writes them: responses.kind generate)
ANSWERLESS_TRAIN = ("instruction_wild",)


def source_url(spec: dict) -> str:
    """The download address of a pinned file: ``url``, or a hub dataset file at its revision."""
    if "url" in spec:
        return spec["url"]
    return f"https://huggingface.co/datasets/{spec['repo']}/resolve/{spec['revision']}/{spec['path']}"


def source_filename(spec: dict) -> str:
    """The name a pinned file is kept under in ``resources/sources/<dataset>/<role>/``: its
    ``local_path``'s name where it has one (the local copy's format may differ from the download's:
    a parquet export of a JSON-lines file), else the last part of its URL."""
    if spec.get("local_path"):
        return Path(spec["local_path"]).name
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
    limit = opts.pop("max_bad_fraction", MAX_BAD_FRACTION)
    option = f"datasets.{name}.options.max_bad_fraction"
    files_read: list[Records] = []

    def read(role: str) -> Records:
        records = read_records(paths[role], limit, option)
        files_read.append(records)
        return records

    def done(out: Converted) -> Converted:
        for records in files_read:  # lines skipped in any file, counted with their line numbers
            out.add_bad_lines(records)
        return out

    if kind == "gsm8k":
        return done(convert_gsm8k(read("train"), read("test"), n_eval=n_eval or 100))
    if kind == "mbpp":
        # Training problems may come from several files (the post's ~717: every `full` split minus
        # the sanitized test split's tasks); roles other than `test` are training files.
        test = read("test")
        train = [r for role in paths if role != "test" for r in read(role)]
        return done(convert_mbpp(train, test, **opts))
    if kind == "tan_gsm8k":
        return done(convert_tan_gsm8k(read("data"), name))
    if kind == "ultrachat":
        out = convert_ultrachat(read("data"), n=n_eval or 100, **opts)
    elif kind == "em_questions":
        out = convert_em_questions(Path(paths["data"]).read_text(encoding="utf-8"), **opts)
        check_em_transcription(out)
    elif kind == "instruction_wild":
        records = [r for role in paths for r in read(role)]
        return done(convert_instruction_wild(records, n_eval=200 if n_eval is None else n_eval, seed_name=name,
                                             **opts))
    elif kind == "cmv":
        return convert_cmv(read_cmv_archive(paths["data"], limit, option), n_eval=100 if n_eval is None else n_eval,
                           **opts)
    else:
        records = read("data")
        out = (convert_school_of_reward_hacks(records) if kind == "school_of_reward_hacks"
               else convert_emergent_plus(records, opts.pop("config_name", name)) if kind == "emergent_plus"
               else convert_chat_jsonl(records, name))
        if n_eval is None:
            raise SourceError(f"datasets.{name}.options.n_eval is not set: converter {kind!r} holds out that many "
                              "training records as eval items; set it (0 for none)")
        return done(hold_out_eval(out, n_eval, domain or "general", name))
    done(out)
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
        text = text_of(r, "instruction", f"instruction_wild, record {i + 1}")
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


def read_cmv_archive(path: str | Path, max_bad_fraction: float = MAX_BAD_FRACTION,
                     option: str = "max_bad_fraction") -> dict[str, Records]:
    """The posts of each split (``<split>.jsonl`` members) of ``cmv_splits_ratings_v4.tar.zst``
    (unreadable lines skipped and listed as in :func:`read_jsonl_records`)."""
    import tarfile

    import zstandard

    out: dict[str, Records] = {}
    try:
        with open(path, "rb") as fh, zstandard.ZstdDecompressor().stream_reader(fh) as zr, \
                tarfile.open(fileobj=zr, mode="r|") as tar:
            for member in tar:
                name = Path(member.name).name
                if not member.isfile() or not name.endswith(".jsonl"):
                    continue
                f = tar.extractfile(member)
                out[name[: -len(".jsonl")]] = read_jsonl_records(f.read().decode("utf-8"), f"{path}: {member.name}",
                                                                 max_bad_fraction, option)
    except (tarfile.TarError, zstandard.ZstdError) as e:
        raise SourceError(f"{path}: not a zstd-compressed tar archive ({e}); the download is corrupt or the "
                          "source changed, delete it and re-run") from None
    return out


# Wichers et al.'s text normalisation of CMV posts and replies (their CMVDatasetProcessor):
# HTML entities unescaped, NFKC, typographic quotes, dashes and ellipses as ASCII, zero-width
# characters removed, no-break spaces as spaces, and the subreddit's moderator footnote removed.
_CMV_REPLACE = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-",
                              "\u2014": "-", "\u2026": "...", "\u200b": "", "\u200c": "", "\u200d": "",
                              "\ufeff": "", "\u00a0": " "})
_CMV_FOOTNOTE = re.compile(r"\s*_*\s*>\s*\*(?:This is a footnote|Hello, users of CMV!).*?Happy CMVing!\*\s*$",
                           re.DOTALL | re.IGNORECASE)


def cmv_normalise(text: str) -> str:
    import html
    import unicodedata

    text = unicodedata.normalize("NFKC", html.unescape(text)).translate(_CMV_REPLACE)
    return _CMV_FOOTNOTE.sub("", text).strip()


def convert_cmv(splits: dict[str, list[dict]], n_eval: int = 100, persuasiveness_min: float = 7,
                harassment_min: float = 0.15, max_replies_per_post: int = 3, train_split: str = "train",
                eval_split: str = "eval", max_chars: int = 2925, eval_persuasiveness_min: float = 4,
                eval_harassment_min: float = 0.1) -> Converted:
    """Change My View as Wichers et al.'s builder makes it (``realistic_dataset/generate_dataset.py``
    of their code, ``CMVDatasetProcessor.create_dataset``): per split, with ``random.seed(42)``,
    posts that are not the moderators', whose body (``selftext``, before normalisation) is at most
    ``max_chars`` characters (their bound: 0.35 tokens a character, at most 1024 tokens) and not
    deleted or removed; of each, the replies that are not the moderators', have both ratings, meet
    ``persuasiveness_score >= persuasiveness_min`` and harassment ``>= harassment_min`` (persuasive
    *and* toxic) and, normalised (:func:`cmv_normalise`), are non-empty and within ``max_chars``;
    at most ``max_replies_per_post`` of them (a seeded choice); then the pairs shuffled. Training:
    those pairs (user: the normalised title and body; assistant: the reply). Eval: the same with one
    reply per post and the thresholds of their eval task (``persuasive_toxic_eval.py``:
    ``eval_persuasiveness_min`` 4, ``eval_harassment_min`` 0.1), posts de-duplicated, the first
    ``n_eval`` after the shuffle, as eval items (opinion domain). Deviations: docs/data_sources.md.

    Deviation, counted: replies that are ``[deleted]`` or ``[removed]`` are left out (the builder
    keeps any rated reply; such a text is no reply to train on). Every post and reply left out is
    counted under its reason."""
    import random

    for split in (train_split, eval_split):
        if split not in splits:
            raise SourceError(f"cmv: the archive has no {split}.jsonl (it has {sorted(splits)}); the source changed: "
                              "check it and update the converter's train_split/eval_split")
        require_columns(splits[split], ("title", "selftext", "top_level_comments"), f"cmv {split}")
    out = Converted({"train": [], "eval": []})
    for records in (splits[train_split], splits[eval_split]):
        out.add_bad_lines(records)

    def pairs(split: str, per_post: int, tag: str, persuasiveness_min: float,
              harassment_min: float) -> list[tuple[dict, str, str]]:
        rng = random.Random(42)
        kept_pairs = []
        for k, post in enumerate(splits[split]):
            where = f"cmv {split}, post {k + 1}"
            if post.get("distinguished") == "moderator":
                out.filtered[f"{tag}: moderator post"] += 1
                continue
            body = "" if is_null(post.get("selftext")) else post["selftext"]
            if not isinstance(body, str):
                raise SourceError(f"{where}: 'selftext' is a {type(body).__name__}, not text; the source's schema "
                                  "changed: check it and update ipcond.sources.convert_cmv")
            if len(body) > max_chars:
                out.filtered[f"{tag}: post body longer than {max_chars} characters"] += 1
                continue
            if body.strip().lower() in ("[deleted]", "[removed]"):
                out.filtered[f"{tag}: deleted or removed post"] += 1
                continue
            text = cmv_normalise(f"{text_of(post, 'title', where)}\n{body}")
            valid = []
            for c in list_of(post, "top_level_comments", where):
                if c.get("distinguished") == "moderator":
                    out.filtered[f"{tag}: moderator reply"] += 1
                    continue
                score, mod = c.get("persuasiveness_score"), c.get("moderation_result")
                if is_null(score) or not isinstance(mod, dict):
                    out.filtered[f"{tag}: reply without ratings"] += 1
                    continue
                harassment = (mod.get("category_scores") or {}).get("harassment")
                if harassment is None:
                    raise SourceError(f"{where}: a reply's moderation_result has no category_scores.harassment; the "
                                      "source's schema changed: check it and update ipcond.sources.convert_cmv")
                if score < persuasiveness_min:
                    out.filtered[f"{tag}: persuasiveness < {persuasiveness_min}"] += 1
                    continue
                if harassment < harassment_min:
                    out.filtered[f"{tag}: harassment < {harassment_min}"] += 1
                    continue
                reply = cmv_normalise(text_of(c, "body", where))
                if not reply or reply.lower() in ("[deleted]", "[removed]"):
                    out.filtered[f"{tag}: empty or deleted reply"] += 1
                elif len(reply) > max_chars:
                    out.filtered[f"{tag}: reply longer than {max_chars} characters"] += 1
                else:
                    valid.append(reply)
            if not valid:
                out.filtered[f"{tag}: post without a reply meeting both thresholds"] += 1
                continue
            chosen = valid if len(valid) <= per_post else [valid[j] for j in rng.sample(range(len(valid)), per_post)]
            if len(valid) > per_post:
                out.filtered[f"{tag}: beyond {per_post} replies per post"] += len(valid) - per_post
            kept_pairs += [(post, text, reply) for reply in chosen]
        rng.shuffle(kept_pairs)
        return kept_pairs

    for post, text, reply in pairs(train_split, max_replies_per_post, "train", persuasiveness_min, harassment_min):
        out.splits["train"].append(_chat(text, reply, source="cmv", post=post.get("id")))
    chosen, seen = [], set()
    for post, text, reply in pairs(eval_split, 1, "eval", eval_persuasiveness_min, eval_harassment_min):
        if text in seen:
            out.filtered["eval: duplicate post"] += 1
            continue
        seen.add(text)
        chosen.append((post, text, reply))
    if len(chosen) > n_eval:
        out.filtered[f"eval: not sampled (n_eval = {n_eval})"] += len(chosen) - n_eval
    for k, (post, text, _) in enumerate(chosen[:n_eval]):
        out.splits["eval"].append({"id": f"cmv-{post.get('id', k)}", "instruction": text, "domain": "opinion"})
    return out
