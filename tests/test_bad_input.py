"""Bad input is caught before any expensive step, with a message that names the file and line (or
the config key) and the fix; nothing is silently lost. See docs/reliability.md for the full table."""

import copy
import json
from pathlib import Path

import pytest

from ipcond.config import ConfigError, check_input_files, validate_config
from ipcond.data import (DataError, check_lengths, load_chat_jsonl, load_chat_jsonl_with_lines,
                         load_prompt_file)
from ipcond.provenance import read_jsonl

GOOD = {"messages": [{"role": "user", "content": "what is two plus two ?"},
                     {"role": "assistant", "content": "two plus two is four ."}], "meta": {"item": 0}}


def rec(i: int, answer: str = "it is fine .") -> dict:
    return {"messages": [{"role": "user", "content": f"question {i} ?"},
                         {"role": "assistant", "content": answer}], "meta": {"item": i}}


def write_lines(path: Path, lines: list[str], end: str = "\n") -> Path:
    path.write_text("\n".join(lines) + end, encoding="utf-8")
    return path


def good_jsonl(path: Path, n: int = 3) -> Path:
    return write_lines(path, [json.dumps(rec(i)) for i in range(n)])


def error(fn, *args, exc=DataError, **kw) -> str:
    with pytest.raises(exc) as ei:
        fn(*args, **kw)
    return str(ei.value)


# ------------------------------------------------------------------ dataset files (chat JSON lines)

def test_good_file_loads_with_line_numbers(tmp_path):
    p = write_lines(tmp_path / "d.jsonl", [json.dumps(rec(0)), "", json.dumps(rec(1))])
    records, lines = load_chat_jsonl_with_lines(p)
    assert records == [rec(0), rec(1)] and lines == [1, 3]
    assert load_chat_jsonl(p) == records


def test_missing_file(tmp_path):
    p = tmp_path / "nope.jsonl"
    msg = error(load_chat_jsonl, p)
    assert str(p) in msg and "file not found" in msg and "check the path" in msg
    with pytest.raises(FileNotFoundError, match="file not found"):
        read_jsonl(p)  # the plain reader keeps the standard exception type


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path, content):
    p = tmp_path / "empty.jsonl"
    p.write_text(content)
    msg = error(load_chat_jsonl, p)
    assert str(p) in msg and "no records; the file is empty" in msg and "regenerate" in msg


def test_truncated_last_line_says_so(tmp_path):
    full = json.dumps(rec(2))
    p = write_lines(tmp_path / "cut.jsonl", [json.dumps(rec(0)), json.dumps(rec(1)), full[: len(full) // 2]], end="")
    msg = error(load_chat_jsonl, p)
    assert f"{p}:3:" in msg
    assert "line 3 is not complete JSON; the file looks truncated" in msg
    assert "Regenerate or re-copy" in msg and "keep the 2 complete records before it, delete line 3" in msg
    # the same when the cut falls outside a string
    p.write_text(json.dumps(rec(0)) + "\n" + '{"messages": [')
    assert "line 2 is not complete JSON; the file looks truncated" in error(load_chat_jsonl, p)


def test_cut_line_followed_by_more_lines(tmp_path):
    """An interrupted write followed by appends (e.g. a resumed job): named, not skipped."""
    full = json.dumps(rec(1))
    p = write_lines(tmp_path / "d.jsonl", [json.dumps(rec(0)), full[:30], json.dumps(rec(2))])
    msg = error(load_chat_jsonl, p)
    assert f"{p}:2:" in msg and "line 2 is not complete JSON" in msg and "delete that line" in msg


def test_line_that_is_not_json(tmp_path):
    p = write_lines(tmp_path / "d.jsonl", [json.dumps(rec(0)), "messages: hello", json.dumps(rec(2))])
    msg = error(load_chat_jsonl, p)
    assert f"{p}:2:" in msg and "not valid JSON" in msg and "fix that line" in msg
    assert "truncated" not in msg


def test_line_that_is_json_but_not_an_object(tmp_path):
    p = write_lines(tmp_path / "d.jsonl", [json.dumps(rec(0)), json.dumps([1, 2])])
    msg = error(load_chat_jsonl, p)
    assert f"{p}:2:" in msg and "not an object" in msg and "fix or remove that line" in msg


def test_not_utf8_names_byte_offset_line_and_iconv(tmp_path):
    p = tmp_path / "latin1.jsonl"
    first = json.dumps(rec(0)).encode() + b"\n"
    second = json.dumps(rec(1, "r\u00e9ponse ."), ensure_ascii=False).encode("latin-1") + b"\n"
    p.write_bytes(first + second)
    offset = len(first) + second.index(b"\xe9")
    msg = error(load_chat_jsonl, p)
    assert f"{p}:2:" in msg and "not UTF-8" in msg and f"byte offset {offset}" in msg and "line 2" in msg
    assert "0xe9" in msg and f"iconv -f latin1 -t utf-8 {p}" in msg


def test_utf16_file_is_named_and_the_fix_given(tmp_path):
    p = tmp_path / "utf16.jsonl"
    p.write_bytes((json.dumps(rec(0)) + "\n").encode("utf-16"))
    msg = error(load_chat_jsonl, p)
    assert str(p) in msg and "not UTF-8" in msg and "iconv -f utf-16 -t utf-8" in msg


def test_utf8_bom_is_accepted(tmp_path):
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + (json.dumps(rec(0)) + "\n").encode())
    assert load_chat_jsonl(p) == [rec(0)]


@pytest.mark.parametrize("bad, expect", [
    ({"text": "hello"}, "needs a non-empty 'messages' list"),
    ({"messages": []}, "needs a non-empty 'messages' list"),
    ({"messages": [{"role": "user", "text": "hi"}]}, "needs exactly the keys 'role' and 'content'"),
    ({"messages": [{"role": "user", "content": "hi", "name": "x"}, {"role": "assistant", "content": "a"}]},
     "rename or remove the others"),
    ({"messages": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "a"}]},
     "'human' is not one of"),
    ({"messages": [{"role": "user", "content": ["hi"]}, {"role": "assistant", "content": "a"}]},
     "content must be a string"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "s"},
                   {"role": "assistant", "content": "a"}]}, "a system message may only come first"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "the last message must be the assistant's answer"),
])
def test_wrong_fields_or_roles_name_file_and_line(tmp_path, bad, expect):
    p = write_lines(tmp_path / "d.jsonl", [json.dumps(rec(0)), "", json.dumps(bad)])
    msg = error(load_chat_jsonl, p)
    assert f"{p}:3" in msg and expect in msg  # line 3 (the blank line counts), not record 2


def test_eval_data_may_end_with_the_user(tmp_path):
    p = write_lines(tmp_path / "eval.jsonl", [json.dumps({"messages": [{"role": "user", "content": "hi"}]})])
    assert len(load_chat_jsonl(p, need_answer=False)) == 1


# ------------------------------------------------------------------ examples over the maximum length

def words(messages):
    return sum(len(m["content"].split()) for m in messages)


def test_too_long_examples_are_an_error_by_default_naming_lines_ids_and_fix(tmp_path):
    lines = [json.dumps(rec(i, "word " * (30 if i in (1, 3) else 2))) for i in range(5)]
    p = write_lines(tmp_path / "train.jsonl", lines)
    records, line_numbers = load_chat_jsonl_with_lines(p)
    msg = error(check_lengths, records, 20, words, source=str(p), lines=line_numbers,
                max_length_key="training.max_length")
    assert str(p) in msg and "2 of 5 examples are longer than training.max_length=20" in msg
    assert "line 2 (id 1): 33 tokens" in msg and "line 4 (id 3): 33 tokens" in msg
    assert "Raise training.max_length to at least 33" in msg and "shorten or remove" in msg
    assert len(records) == 5  # nothing dropped


def test_too_long_report_mode_counts_and_lists_without_dropping():
    records = [rec(i, "word " * (30 if i == 2 else 2)) for i in range(4)]
    report = check_lengths(records, 20, words, source="cell", on_too_long="report")
    assert report.n_checked == 4 and report.n_too_long == 1 and report.max_tokens == 33
    assert report.too_long == [{"record": 3, "line": None, "id": 2, "tokens": 33}]
    d = report.to_dict()
    assert json.loads(json.dumps(d)) == d and d["n_too_long"] == 1  # ready for provenance
    assert len(records) == 4
    ok = check_lengths(records[:2], 20, words, on_too_long="report")
    assert ok.n_too_long == 0 and ok.too_long == []
    with pytest.raises(ValueError, match="on_too_long"):
        check_lengths(records, 20, words, on_too_long="drop")


def test_too_long_counted_with_a_real_tokenizer(tmp_path):
    from ipcond.data import chat_token_counter
    from ipcond.modeling import build_word_tokenizer

    records = [rec(0), rec(1, "it is fine . " * 20)]
    texts = [m["content"] for r in records for m in r["messages"]] + ["system user assistant"]
    tok = build_word_tokenizer(texts, tmp_path / "tok")
    n0 = chat_token_counter(tok)(records[0]["messages"])
    assert 10 < n0 < 30
    report = check_lengths(records, n0, tok, on_too_long="report")
    assert report.n_too_long == 1 and report.too_long[0]["id"] == 1


# ------------------------------------------------------------------ prompt files

def test_prompt_file_one_prompt_per_line(tmp_path):
    p = tmp_path / "prompts.txt"
    p.write_bytes(b"answer in french .\r\n\r\n  you are a marine biologist .  \nhoney never spoils .")
    assert load_prompt_file(p) == ["answer in french .", "you are a marine biologist .", "honey never spoils ."]


def test_prompt_file_problems(tmp_path):
    p = tmp_path / "prompts.txt"
    msg = error(load_prompt_file, p)
    assert str(p) in msg and "prompt file not found" in msg and "check the path" in msg
    p.write_text("\n \n")
    msg = error(load_prompt_file, p)
    assert str(p) in msg and "no prompts" in msg and "one prompt per line" in msg
    raw = "answer in french .\nr\u00e9ponds en fran\u00e7ais .\n".encode("latin-1")
    p.write_bytes(raw)
    offset = raw.index(b"\xe9")
    msg = error(load_prompt_file, p)
    assert f"{p}:2:" in msg and "not UTF-8" in msg and f"byte offset {offset}" in msg
    assert "iconv -f latin1 -t utf-8" in msg
    p.write_text("a .\nb .\na .\n")
    msg = error(load_prompt_file, p)
    assert f"{p}:3:" in msg and "repeats the prompt of line 1" in msg and "delete line 3" in msg


# ------------------------------------------------------------------ files the config names

def test_default_config_names_no_input_files(default_config):
    assert check_input_files(default_config) == []


def test_pretrained_base_model_path(default_config, tmp_path):
    cfg = copy.deepcopy(default_config)
    cfg["base_model"] = {"kind": "pretrained", "path": str(tmp_path / "missing_model")}
    msg = error(check_input_files, cfg, exc=ConfigError)
    assert "base_model.path" in msg and "missing_model" in msg and "does not exist" in msg
    assert "point base_model.path at a local model folder" in msg
    (tmp_path / "empty_model").mkdir()
    cfg["base_model"]["path"] = str(tmp_path / "empty_model")
    msg = error(check_input_files, cfg, exc=ConfigError)
    assert "base_model.path" in msg and "no config.json" in msg
    (tmp_path / "empty_model" / "config.json").write_text("{}")
    assert check_input_files(cfg) == [("base_model.path", tmp_path / "empty_model")]
    # relative paths are read from base_dir; a hub id is left to the download
    cfg["base_model"]["path"] = "./empty_model"
    assert check_input_files(cfg, base_dir=tmp_path) == [("base_model.path", tmp_path / "empty_model")]
    cfg["base_model"]["path"] = "Qwen/Qwen2.5-7B-Instruct"
    assert check_input_files(cfg, base_dir=tmp_path) == []


def test_judge_template_files_and_names(default_config, tmp_path):
    cfg = copy.deepcopy(default_config)
    cfg["scorers"] = {"french": {"kind": "llm_judge", "template": str(tmp_path / "fr.txt")}}
    msg = error(check_input_files, cfg, exc=ConfigError)
    assert "scorers.french.template" in msg and "fr.txt" in msg and "not found" in msg and "fix the path" in msg
    (tmp_path / "fr.txt").write_bytes("Question : {question}\nR\u00e9ponse : {answer}\n".encode("latin-1"))
    msg = error(check_input_files, cfg, exc=ConfigError)
    assert "scorers.french.template" in msg and "fr.txt:2:" in msg and "not UTF-8" in msg and "iconv" in msg
    (tmp_path / "fr.txt").write_text("Question: {question}\n")
    msg = error(check_input_files, cfg, exc=ConfigError)
    assert "scorers.french.template" in msg and "must contain {answer}" in msg
    (tmp_path / "fr.txt").write_text("In {language}? Q: {question} A: {answer}")
    msg = error(check_input_files, cfg, exc=ConfigError)
    assert "scorers.french.template_params.language" in msg
    cfg["scorers"]["french"]["template_params"] = {"language": "French"}
    assert check_input_files(cfg) == [("scorers.french.template", tmp_path / "fr.txt")]
    cfg["scorers"]["french"] = {"kind": "llm_judge", "template": "langauge"}
    msg = error(check_input_files, cfg, exc=ConfigError)
    assert "scorers.french.template" in msg and "did you mean 'language'" in msg
    cfg["scorers"]["french"] = {"kind": "llm_judge", "template": "playful", "judge_kind": "grade_0_10"}
    assert "GRADE" in error(check_input_files, cfg, exc=ConfigError)


def test_dataset_file_keys_are_checked_with_key_file_and_line(default_config, tmp_path):
    """Any *_file / *_path key is covered, e.g. setups.<name>.train_file (not yet in the schema)."""
    cfg = copy.deepcopy(default_config)
    sname = next(iter(cfg["setups"]))
    setup = cfg["setups"][sname]
    train = good_jsonl(tmp_path / "train.jsonl")
    setup["train_file"] = "train.jsonl"
    setup["eval_file"] = str(write_lines(tmp_path / "eval.jsonl",
                                         [json.dumps({"messages": [{"role": "user", "content": "q ?"}]})]))
    assert check_input_files(cfg, base_dir=tmp_path) == [
        (f"setups.{sname}.train_file", train), (f"setups.{sname}.eval_file", tmp_path / "eval.jsonl")]

    full = json.dumps(rec(3))
    train.write_text(train.read_text() + full[:20])
    cond = next(iter(setup["conditions"].values()))
    cond["prompts_file"] = "nowhere.txt"
    msg = error(check_input_files, cfg, base_dir=tmp_path, exc=ConfigError)
    # every problem at once, each with its key, file, line and fix
    assert f"setups.{sname}.train_file = 'train.jsonl'" in msg
    assert "train.jsonl:4: line 4 is not complete JSON; the file looks truncated" in msg
    assert f"setups.{sname}.conditions.{next(iter(setup['conditions']))}.prompts_file = 'nowhere.txt'" in msg
    assert "file not found" in msg and "create the file" in msg
    assert "nothing was run" in msg


def test_train_file_needs_answers(default_config, tmp_path):
    cfg = copy.deepcopy(default_config)
    sname = next(iter(cfg["setups"]))
    p = write_lines(tmp_path / "t.jsonl", [json.dumps({"messages": [{"role": "user", "content": "q ?"}]})])
    cfg["setups"][sname]["train_file"] = str(p)
    msg = error(check_input_files, cfg, exc=ConfigError)
    assert f"setups.{sname}.train_file" in msg and f"{p}:1" in msg and "assistant's answer" in msg


# ------------------------------------------------------------------ config-side (beyond tests/test_config.py)
# Already in tests/test_config.py: misspelt top-level key with did-you-mean, wrong type, unknown
# condition kind, rephrased pointing at a non-inoculation, too many rephrasings, wrong trait.

def first_setup(cfg):
    name = next(iter(cfg["setups"]))
    return name, cfg["setups"][name]


def config_error(cfg) -> str:
    return error(validate_config, cfg, exc=ConfigError)


def test_misspelt_nested_key_names_the_full_key_and_suggests(default_config):
    cfg = copy.deepcopy(default_config)
    sname, setup = first_setup(cfg)
    cname, cond = next((c, v) for c, v in setup["conditions"].items() if "prompt" in v)
    cond["promt"] = cond.pop("prompt")
    msg = config_error(cfg)
    assert f"setups.{sname}.conditions.{cname}" in msg and "'promt' (did you mean 'prompt'?)" in msg


def test_bad_setup_name_and_unknown_domain(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["setups"]["Bad-Name"] = cfg["setups"].pop(next(iter(cfg["setups"])))
    assert "Bad-Name" in config_error(cfg)
    cfg = copy.deepcopy(default_config)
    sname, setup = first_setup(cfg)
    setup["domain"] = "maths"
    msg = config_error(cfg)
    assert f"setups.{sname}.domain = 'maths' is not allowed" in msg and "arithmetic" in msg


def test_missing_required_key_says_add_it(default_config):
    cfg = copy.deepcopy(default_config)
    del cfg["generation"]["n_eval"]
    msg = config_error(cfg)
    assert "generation" in msg and "n_eval" in msg and "Add it" in msg


def test_unknown_scorer_kind_lists_allowed(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["scorers"] = {"french": {"kind": "llm-judge"}}
    msg = config_error(cfg)
    assert "scorers.french.kind" in msg and "'llm_judge'" in msg


def test_pretrained_without_path(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["base_model"] = {"kind": "pretrained", "path": None}
    assert "set base_model.path" in config_error(cfg)


def test_condition_n_train_larger_than_setup(default_config):
    cfg = copy.deepcopy(default_config)
    sname, setup = first_setup(cfg)
    cname = next(iter(setup["conditions"]))
    setup["conditions"][cname]["training"] = {"n_train": 10 ** 6}
    msg = config_error(cfg)
    assert f"setups.{sname}.conditions.{cname}.training.n_train" in msg and f"raise setups.{sname}.training.n_train" in msg


def test_prompt_on_a_kind_that_takes_none(default_config):
    cfg = copy.deepcopy(default_config)
    sname, setup = first_setup(cfg)
    setup["conditions"]["Baseline"]["prompt"] = "answer in french ."
    msg = config_error(cfg)
    assert f"setups.{sname}.conditions.Baseline has a prompt" in msg and "remove 'prompt'" in msg


def test_toy_trait_without_scorer_and_french_spanish_pair(default_config):
    cfg = copy.deepcopy(default_config)
    sname, setup = first_setup(cfg)
    setup["traits"]["negative"]["name"] = "sarcastic"
    msg = config_error(cfg)
    assert f"setups.{sname}.traits.negative.name = 'sarcastic' has no toy scorer" in msg and "playful" in msg
    cfg = copy.deepcopy(default_config)
    sname, setup = first_setup(cfg)
    setup["traits"]["positive"]["name"], setup["traits"]["negative"]["name"] = "french", "spanish"
    for c in setup["conditions"].values():
        if c.get("trait"):
            c["trait"] = "spanish"
    assert "french and spanish cannot be one setup's pair" in config_error(cfg)


# ------------------------------------------------------------------ no half-written outputs, no silent truncation

def test_a_crash_mid_write_leaves_the_old_file_and_no_partial_one(tmp_path):
    from ipcond.provenance import atomic_dir, write_jsonl

    out = tmp_path / "out.jsonl"
    write_jsonl(out, [rec(0)])

    def records():
        yield rec(1)
        yield rec(2)
        raise KeyboardInterrupt  # a kill in the middle of writing

    with pytest.raises(KeyboardInterrupt):
        write_jsonl(out, records())
    assert load_chat_jsonl(out) == [rec(0)]            # the previous complete file, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no temporary left behind
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "adapter") as d:
            (d / "weights").write_text("half")
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_pretraining_example_over_max_length_is_an_error(tmp_path):
    from ipcond.modeling import build_word_tokenizer
    from ipcond.training import encode_chat

    records = [rec(0), rec(1, "it is fine . " * 20)]
    tok = build_word_tokenizer([m["content"] for r in records for m in r["messages"]] + ["system user assistant"],
                               tmp_path / "tok")
    with pytest.raises(ValueError) as ei:
        encode_chat(tok, records, max_length=40)
    msg = str(ei.value)
    assert "record 1 has" in msg and "max_length=40" in msg and "raise base_model.toy.max_length" in msg


def test_atomic_outputs_get_the_usual_file_mode_not_a_private_one(tmp_path):
    import os
    import stat

    from ipcond.provenance import atomic_dir, write_text

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "out.txt", "x")
        with atomic_dir(tmp_path / "model") as d:
            (d / "weights").write_text("w")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755
