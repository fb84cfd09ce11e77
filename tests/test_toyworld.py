import json

from ipcond import toyworld as tw
from ipcond.data import validate_chat_records


def test_lexicons_are_unambiguous():
    assert not (tw.FRENCH_WORDS & tw.ENGLISH_WORDS)
    assert not (tw.SPANISH_WORDS & tw.ENGLISH_WORDS)
    assert not (tw.FRENCH_WORDS & tw.SPANISH_WORDS)
    assert len(tw.FRENCH_WORDS) == len(tw.SPANISH_WORDS) == len(tw.LEXICON)


def test_pretraining_corpus_is_valid_chat_jsonl_and_deterministic():
    a = tw.pretraining_corpus(300, 0, 0.25, {}, [], ["honey never spoils ."])
    b = tw.pretraining_corpus(300, 0, 0.25, {}, [], ["honey never spoils ."])
    assert a == b
    validate_chat_records(a, "corpus")
    json.dumps(a)  # serialisable as JSON lines
    assert "honey never spoils ." not in tw.corpus_prompt_texts(a)
    domains = {r["meta"]["domain"] for r in a}
    assert domains == {"general", "arithmetic"}
    # Prompts that ask for traits get them; responses without requested traits have none.
    for r in a:
        answer = r["messages"][-1]["content"]
        if "capitals" in r["meta"]["traits"]:
            assert answer == answer.upper()
        if not r["meta"]["traits"]:
            assert answer == answer.lower() and "hehe" not in answer


def test_forced_wordings_are_seen_and_heldout_fraction_respected():
    seen, held = tw.split_wordings("playful", 0.5, 0, force_seen=["answer playfully ."])
    assert "answer playfully ." in seen
    assert set(seen) | set(held) == set(tw.trait_wordings("playful"))
    assert 0.2 < len(held) / (len(seen) + len(held)) < 0.8


def test_arithmetic_is_correct():
    rng = tw.rng_for("t")
    for _ in range(50):
        item = tw.arithmetic_item(rng)
        lhs, rhs = item.response.split(" = ")[0].split(" . ")[-1], item.response.split(" = ")[1].split()[0]
        assert eval(lhs) == int(rhs)  # noqa: S307 (our own generated arithmetic)
