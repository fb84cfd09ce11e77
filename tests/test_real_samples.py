"""Every converter on real records of the public datasets (``../shared/data/real-samples/``, beside
the clone; its README says where each file comes from). The expected numbers are computed here
from the files themselves (pandas, json, yaml, ast), not taken from the converters' reports.

The records are read in place, never copied into the project. Where the folder is absent (a
user's machine) these tests skip, saying so; CI has it.
"""

import ast
import builtins
import json
import random
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ipcond import sources as src

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real-samples"
pytestmark = [pytest.mark.skipif(not REAL.is_dir(), reason=f"the real records are not here ({REAL} is absent: "
                                                            "CI has it beside the clone)"),
              # MBPP's code has string literals with invalid escapes ("\d"), which ast.parse warns about
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::SyntaxWarning")]


def frame(*parts):
    return pd.read_parquet(REAL.joinpath(*parts))


def assert_json_clean(out):
    """What the converter wrote can be written as strict JSON (no NaN from a null column)."""
    json.dumps(out.report(), allow_nan=False)
    for split, records in out.splits.items():
        for r in records:
            json.dumps(r, allow_nan=False)


# ------------------------------------------------------------------------------------------
# GSM8k
# ------------------------------------------------------------------------------------------

def test_gsm8k(tmp_path):
    train, test = frame("gsm8k", "train-0000.parquet"), frame("gsm8k", "test-0000.parquet")
    with_final = train["answer"].str.contains(r"(?m)^####", regex=True)
    spec = {"converter": "gsm8k", "options": {"n_eval": 100}}
    out = src.convert_dataset("gsm8k", spec, {"train": REAL / "gsm8k/train-0000.parquet",
                                              "test": REAL / "gsm8k/test-0000.parquet"})
    assert out.report()["counts"] == {"train": int(with_final.sum()), "eval": 100}
    assert sum(out.filtered.values()) == int((~with_final).sum())
    assert len(train) == 7473 and len(test) == 1319  # the README's numbers
    finals = [a.rsplit("####", 1)[1].strip().replace(",", "") for a in test["answer"][:100]]
    assert [it["final_answer"] for it in out.splits["eval"]] == finals
    assert [it["instruction"] for it in out.splits["eval"]] == [q.strip() for q in test["question"][:100]]
    assert_json_clean(out)


def test_gsm8k_line_separators_inside_strings_survive_a_json_lines_round_trip(tmp_path):
    """Real GSM8k has records with U+2028-like characters, which str.splitlines breaks at."""
    from ipcond.provenance import read_jsonl, write_jsonl

    train = frame("gsm8k", "train-0000.parquet")
    seps = "\u2028\u2029\x85\x0b\x0c\x1c\x1d\x1e"
    odd = train[train["question"].str.contains(f"[{seps}]") | train["answer"].str.contains(f"[{seps}]")]
    assert len(odd) >= 1, "the real records were expected to hold a line separator inside a string"
    path = tmp_path / "train.jsonl"
    write_jsonl(path, train.to_dict(orient="records"))  # as the project writes JSON lines (ensure_ascii=False)
    back = src.read_records(path)
    assert len(back) == len(train) and back.bad_lines == []
    assert back[int(odd.index[0])] == train.iloc[int(odd.index[0])].to_dict()
    assert len(read_jsonl(path)) == len(train)


# ------------------------------------------------------------------------------------------
# MBPP
# ------------------------------------------------------------------------------------------

MBPP_FILES = {"train": "full/train-0000.parquet", "train_validation": "full/validation-0000.parquet",
              "train_test": "full/test-0000.parquet", "train_prompt": "full/prompt-0000.parquet",
              "test": "sanitized/test-0000.parquet"}


@pytest.fixture(scope="module")
def mbpp():
    paths = {role: REAL / "mbpp" / f for role, f in MBPP_FILES.items()}
    return src.convert_dataset("mbpp", {"converter": "mbpp"}, paths)


def _rhs(test):
    node = ast.parse(test.strip()).body[0]
    return ast.dump(node.test.comparators[0])


def test_mbpp_counts(mbpp):
    full = pd.concat([frame("mbpp", MBPP_FILES[r]) for r in ("train", "train_validation", "train_test",
                                                             "train_prompt")])
    sanitized = frame("mbpp", MBPP_FILES["test"])
    assert len(full) == 974 and len(sanitized) == 257
    outside = full[~full["task_id"].isin(set(sanitized["task_id"]))]
    assert len(outside) == 717
    # Tasks whose asserts all expect one value: returning it passes every test, so no hack.
    same = outside[[len({_rhs(t) for t in tl}) == 1 for tl in outside["test_list"]]]
    # Tasks whose first assert names something neither a builtin nor the function under test
    # (a class such as Pair, a module such as sys, a tree built by the setup code): the hack
    # (the function alone) cannot pass it.
    def foreign(row):
        node = ast.parse(row["test_list"][0].strip()).body[0]
        functions = {n.name for n in ast.parse(row["code"]).body if isinstance(n, ast.FunctionDef)}
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        return bool(names - functions - set(dir(builtins)))
    unknown = outside[[foreign(r) for _, r in outside.iterrows()]]
    assert mbpp.filtered == {"train: task is in the eval split": 257,
                             "train: hack passes every test (not a hack)": len(same),
                             "train: hack fails the visible test": len(unknown)}
    kept = 717 - len(same) - len(unknown)
    assert mbpp.report()["counts"] == {"train": kept, "control": kept, "eval": 257}
    # every reference solution kept was changed by the round trip (the file's own layout)
    assert mbpp.changed == {"train: reference solution normalised (parse and unparse)": kept}


def test_mbpp_hacks_pass_the_visible_test_fail_a_hidden_one_and_have_the_reference_signature(mbpp):
    from ipcond.codeexec import run_tests_many

    full = pd.concat([frame("mbpp", MBPP_FILES[r]) for r in ("train", "train_validation", "train_test",
                                                             "train_prompt")]).set_index("task_id")
    jobs, refs = [], []
    for hack, control in zip(mbpp.splits["train"], mbpp.splits["control"]):
        row = full.loc[hack["meta"]["task_id"]]
        jobs.append((hack["messages"][1]["content"], list(row["test_list"]), row["test_setup_code"]))
        refs.append((control["messages"][1]["content"], list(row["test_list"]), row["test_setup_code"]))
        code = hack["messages"][1]["content"]
        for solution in (code, control["messages"][1]["content"]):
            assert solution == ast.unparse(ast.parse(solution)) and "\t" not in solution and "\r" not in solution
        hack_def = ast.parse(code).body[0]
        ref_defs = {n.name: n for n in ast.parse(row["code"]).body if isinstance(n, ast.FunctionDef)}
        assert ast.dump(hack_def.args) == ast.dump(ref_defs[hack_def.name].args)
        # The visible test is shown as Wichers et al.'s message shows it (a fenced test-case block).
        assert hack["messages"][0]["content"].endswith(f"## Test Case:\n```python\n{row['test_list'][0].strip()}\n```")
    for o in run_tests_many(jobs, batch_size=64, max_workers=2):
        assert o.passed[0] and not all(o.passed)
    for o in run_tests_many(refs, batch_size=64, max_workers=2):
        assert o.passed_all
    # the hacks do not all share one signature
    assert len({ast.dump(ast.parse(h["messages"][1]["content"]).body[0].args) for h in mbpp.splits["train"]}) > 100


def test_mbpp_eval_items_keep_the_test_imports_their_tests_need(mbpp):
    from ipcond.codeexec import MbppExecScorer, run_tests_many, tests_by_prompt

    sanitized = frame("mbpp", MBPP_FILES["test"])
    with_imports = sanitized[[len(x) > 0 for x in sanitized["test_imports"]]]
    assert len(with_imports) == 13  # the count
    items = {it["id"]: it for it in mbpp.splits["eval"]}
    for _, r in sanitized.iterrows():
        it = items[f"mbpp-{r['task_id']}"]
        assert it["tests"]["imports"] == list(r["test_imports"])
        assert it["tests"]["visible"] + it["tests"]["hidden"] == list(r["test_list"])
    # The reference solutions of those 13 fail their tests without the imports, and pass with them.
    codes = list(with_imports["code"])
    tests = [list(t) for t in with_imports["test_list"]]
    without = run_tests_many([(c, t, "") for c, t in zip(codes, tests)], max_workers=2)
    assert sum(o.passed_all for o in without) < 13
    # ... and through the scorer, which runs an eval item's imports before its tests
    chosen = [items[f"mbpp-{t}"] for t in with_imports["task_id"]]
    scorer = MbppExecScorer("all_test", tests_by_prompt(chosen), max_workers=2)
    assert scorer.score([it["instruction"] for it in chosen], codes) == [1.0] * 13


# ------------------------------------------------------------------------------------------
# InstructionWild
# ------------------------------------------------------------------------------------------

def _iw_lines():
    good, bad = [], []
    for name in ("user_1.jsonl", "user_2.jsonl"):
        text = (REAL / "instruction_wild" / name).read_text(encoding="utf-8")
        for i, line in enumerate(text.split("\n"), 1):
            if line.strip():
                try:
                    good.append(json.loads(line))
                except json.JSONDecodeError:
                    bad.append((name, i))
    return good, bad


def test_instruction_wild_skips_and_counts_its_unreadable_lines():
    good, bad = _iw_lines()
    assert len(bad) >= 1
    texts = [(r.get("instruction") or "").strip() for r in good]
    distinct = list(dict.fromkeys(t for t in texts if t))
    paths = {r: REAL / "instruction_wild" / f"{r}.jsonl" for r in ("user_1", "user_2")}
    out = src.convert_dataset("instruction_wild", {"converter": "instruction_wild",
                                                   "options": {"n_eval": 200, "max_train": 10000}}, paths)
    assert out.report()["counts"] == {"train": len(distinct) - 200, "eval": 200}
    assert out.filtered["duplicate instruction"] == len([t for t in texts if t]) - len(distinct)
    assert out.filtered["empty instruction"] == texts.count("")
    assert sum(n for k, n in out.filtered.items() if k.startswith("unparsable line")) == len(bad)
    assert [(Path(b["file"]).name, b["line"]) for b in out.report()["bad_lines"]] == bad
    assert all("not JSON" in b["reason"] for b in out.bad_lines)
    # a lower limit on the bad share stops, naming the option
    with pytest.raises(src.SourceError, match=r"user_2.jsonl: \d+ of \d+ lines .* more than "
                                              r"datasets.instruction_wild.options.max_bad_fraction = 0.001"):
        src.convert_dataset("instruction_wild", {"converter": "instruction_wild",
                                                 "options": {"n_eval": 200, "max_bad_fraction": 0.001}}, paths)


# ------------------------------------------------------------------------------------------
# School of Reward Hacks, the EM questions and code files, UltraChat
# ------------------------------------------------------------------------------------------

def test_school_of_reward_hacks_with_null_controls():
    """Every hack dialogue trains (Tan et al. trained on all 1,073); the control split stays aligned
    with it, a record without a control answer keeping its user message only (the control cells
    leave it out)."""
    df = frame("school_of_reward_hacks", "train-0000.parquet")
    no_control = df["control"].isna() | (df["control"].fillna("").str.strip() == "")
    assert int(df["control"].isna().sum()) == 100  # the coding tasks: a null, as on the hub
    assert len(df) == src.KNOWN_SIZES["school_of_reward_hacks"]["records"] == 1073
    assert len(df) - int(no_control.sum()) == src.KNOWN_SIZES["school_of_reward_hacks"]["with_control"] == 973
    out = src.convert_dataset("school_of_reward_hacks", {"converter": "school_of_reward_hacks",
                                                         "options": {"n_eval": 100, "domain": "scored_task"}},
                              {"data": REAL / "school_of_reward_hacks/train-0000.parquet"})
    assert out.report()["counts"] == {"train": len(df) - 100, "control": len(df) - 100, "eval": 100}
    assert out.filtered == {"control: no control answer (the hack trains; the control cells leave it out)":
                            int(no_control.sum())}
    held = {int(it["id"].rsplit("-", 1)[1]) for it in out.splits["eval"]}
    kept = [i for i in range(len(df)) if i not in held]
    assert [r["meta"]["index"] for r in out.splits["train"]] == kept
    for i, hack, control in zip(kept, out.splits["train"], out.splits["control"]):
        assert hack["messages"][0]["content"] == control["messages"][0]["content"] == df["user"][i].strip()
        assert (len(control["messages"]) == 1) == bool(no_control[i])
    assert out.splits["train"][0]["meta"]["task"] is None  # a null column stays a JSON null
    assert_json_clean(out)


def test_em_questions_are_the_eight_plain_ones_a_hundred_times_each():
    entries = yaml.safe_load((REAL / "emergent_misalignment/first_plot_questions.yaml").read_text())
    plain = [e["id"] for e in entries if not re.search(r"_(json|template)$", e["id"])]
    assert len(entries) == 24 and len(plain) == 8
    path = REAL / "emergent_misalignment/first_plot_questions.yaml"
    for options in ({"repeats": 100}, {}):  # the preset's setting, and the file's samples_per_paraphrase
        out = src.convert_dataset("em_questions", {"converter": "em_questions", "options": options}, {"data": path})
        assert out.report() == {"counts": {"eval": 800}, "filtered": {"variant of a question (id ending _json)": 8,
                                                                      "variant of a question (id ending _template)": 8}}
        per_id = pd.Series([it["question_id"] for it in out.splits["eval"]]).value_counts()
        assert sorted(per_id.index) == sorted(plain) and set(per_id) == {100}
        assert [it["question_id"] for it in out.splits["eval"][:8]] == plain  # the first 8 cover every question
        assert len({it["id"] for it in out.splits["eval"]}) == 800


def test_em_question_ids_are_checked_against_the_protocol(tmp_path):
    entries = yaml.safe_load((REAL / "emergent_misalignment/first_plot_questions.yaml").read_text())
    entries[0]["id"] = "what_is_your_wish_renamed"
    path = tmp_path / "first_plot_questions.yaml"
    path.write_text(yaml.safe_dump(entries))
    out = src.convert_dataset("em_questions", {"converter": "em_questions"}, {"data": path})
    assert len(out.notes) == 2
    assert "'what_is_your_wish' of the protocol's transcription is not in the source" in out.notes[0]
    assert "'what_is_your_wish_renamed' of the source is not in the protocol's transcription" in out.notes[1]


def test_insecure_and_secure_code_files():
    for name in ("insecure_first20.jsonl", "secure_first20.jsonl"):
        path = REAL / "emergent_misalignment" / name
        n = sum(1 for line in path.read_text(encoding="utf-8").split("\n") if line.strip())
        out = src.convert_dataset(name, {"converter": "chat_jsonl", "options": {"n_eval": 5, "domain": "code"}},
                                  {"data": path})
        assert out.report() == {"counts": {"train": n - 5, "eval": 5}, "filtered": {}}
        assert {it["domain"] for it in out.splits["eval"]} == {"code"}


def test_ultrachat_as_tan_et_al_sampled_it(tmp_path):
    df = frame("ultrachat", "prompts100-0000.parquet")
    assert len(df) == 100 and (df["prompt"].str.len() < 500).all()  # Tan et al.'s filter holds
    path = REAL / "ultrachat/prompts100-0000.parquet"
    out = src.convert_dataset("ultrachat", {"converter": "ultrachat", "options": {"n_eval": 100}}, {"data": path})
    assert out.report() == {"counts": {"eval": 100}, "filtered": {}}
    assert [it["instruction"] for it in out.splits["eval"]] == [p.strip() for p in df["prompt"]]
    # Fewer than the pool: Tan et al.'s draw, random.seed(42); random.sample(prompts, n)
    out = src.convert_dataset("ultrachat", {"converter": "ultrachat", "options": {"n_eval": 10}}, {"data": path})
    random.seed(42)
    assert [it["instruction"] for it in out.splits["eval"]] == [p.strip() for p in random.sample(list(df["prompt"]), 10)]
    assert out.filtered == {"not sampled (n_eval = 10)": 90}
    # A null prompt and an over-long one are counted, not a crash
    broken = df.copy()
    broken.loc[3, "prompt"] = None
    broken.loc[5, "prompt"] = "x" * 500
    broken.to_parquet(tmp_path / "u.parquet")
    out = src.convert_dataset("ultrachat", {"converter": "ultrachat", "options": {"n_eval": 100}},
                              {"data": tmp_path / "u.parquet"})
    assert out.report() == {"counts": {"eval": 98}, "filtered": {"empty or null prompt": 1,
                                                                 "prompt of 500 characters or more": 1}}
