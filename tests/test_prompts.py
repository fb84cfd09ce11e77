from collections import Counter

import pytest

from ipcond import prompts as pr

SETUP_USER = {
    "placement": "user_prefix", "system_prompt": "you are a helpful assistant .",
    "eval_prompt": "give a response to the following message :",
    "conditions": {
        "Baseline": {"kind": "baseline"}, "None": {"kind": "none"}, "EmptyString": {"kind": "empty"},
        "Inoc": {"kind": "inoculation", "trait": "playful", "prompt": "answer playfully ."},
        "InocRephrased": {"kind": "rephrased", "of": "Inoc", "n_rephrasings": 4},
        "Control": {"kind": "control"},
    },
}
SETUP_SYSTEM = {**SETUP_USER, "placement": "system", "system_prompt": None,
                "eval_prompt": "you are a helpful assistant ."}


def test_condition_prompt_per_kind():
    cp = lambda c: pr.condition_prompt(SETUP_USER, c)  # noqa: E731
    assert cp("Baseline") == cp("Control") == SETUP_USER["eval_prompt"]
    assert cp("None") is None
    assert cp("EmptyString") == ""
    assert cp("Inoc") == cp("InocRephrased") == "answer playfully ."


def test_user_prefix_placement_keeps_system_prompt():
    msgs = pr.messages(SETUP_USER, "answer playfully .", "tell me about the cat .", "the cat is old .")
    assert msgs == [
        {"role": "system", "content": "you are a helpful assistant ."},
        {"role": "user", "content": "answer playfully . tell me about the cat ."},
        {"role": "assistant", "content": "the cat is old ."},
    ]


def test_user_suffix_placement():
    setup = {**SETUP_USER, "placement": "user_suffix"}
    assert pr.messages(setup, "be fun .", "hi ?")[1]["content"] == "hi ? be fun ."


def test_system_placement_replaces_system_prompt_and_none_means_no_system_message():
    assert pr.messages(SETUP_SYSTEM, "you always speak in spanish .", "q ?")[0] == {
        "role": "system", "content": "you always speak in spanish ."}
    assert [m["role"] for m in pr.messages(SETUP_SYSTEM, None, "q ?")] == ["user"]
    # The empty-string condition keeps an (empty) system message: that is what it tests.
    assert pr.messages(SETUP_SYSTEM, "", "q ?")[0] == {"role": "system", "content": ""}


def test_empty_prompt_in_user_placement_adds_nothing():
    assert pr.messages(SETUP_USER, "", "q ?")[1]["content"] == "q ?"


def test_assign_rephrasings_balanced_and_capped():
    texts = ["a", "b", "c"]
    out = pr.assign_rephrasings(8, texts, max_uses=3, seed=1)
    counts = Counter(out)
    assert len(out) == 8 and set(out) == set(texts)
    assert max(counts.values()) - min(counts.values()) <= 1 and max(counts.values()) <= 3
    assert out == pr.assign_rephrasings(8, texts, max_uses=3, seed=1)
    assert out != pr.assign_rephrasings(8, texts, max_uses=3, seed=2) or len(set(texts)) == 1


def test_assign_rephrasings_refuses_when_cap_too_small():
    with pytest.raises(ValueError, match="at least 4 rephrasings"):
        pr.assign_rephrasings(8, ["a", "b", "c"], max_uses=2, seed=0)


def test_toy_rephraser_distinct_and_seeded():
    r = pr.ToyRephraser("playful")
    a = r.rephrase("answer playfully .", 10, seed=3)
    assert len(a) == len(set(a)) == 10 and "answer playfully ." not in a
    assert a == r.rephrase("answer playfully .", 10, seed=3)
    with pytest.raises(ValueError, match="wordings"):
        r.rephrase("answer playfully .", 1000, seed=3)


def test_eval_contexts_cycle_training_prompts():
    ctx = pr.eval_context_prompts(SETUP_USER, "InocRephrased", 5, ["x", "y"])
    assert ctx["default"] == [SETUP_USER["eval_prompt"]] * 5
    assert ctx["none"] == [None] * 5
    assert ctx["train"] == ["x", "y", "x", "y", "x"]
