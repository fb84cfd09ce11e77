import json
from pathlib import Path

from ipcond import toycorpus
from ipcond import toyworld as tw
from ipcond.data import validate_chat_records

REPO = Path(__file__).resolve().parents[1]


def test_lexicons_are_unambiguous():
    assert not (tw.FRENCH_WORDS & tw.ENGLISH_WORDS)
    assert not (tw.SPANISH_WORDS & tw.ENGLISH_WORDS)
    assert not (tw.FRENCH_WORDS & tw.SPANISH_WORDS)
    assert len(tw.FRENCH_WORDS) == len(tw.SPANISH_WORDS) == len(tw.LEXICON)


def test_pretraining_corpus_is_valid_chat_jsonl_and_deterministic():
    a = toycorpus.pretraining_corpus(300, 0, 0.25, {}, [], ["honey never spoils ."])
    b = toycorpus.pretraining_corpus(300, 0, 0.25, {}, [], ["honey never spoils ."])
    assert a == b
    validate_chat_records(a, "corpus")
    json.dumps(a)  # serialisable as JSON lines
    assert "honey never spoils ." not in toycorpus.corpus_prompt_texts(a)
    domains = {r["meta"]["domain"] for r in a}
    assert domains == set(tw.DOMAINS)
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


def test_every_default_setup_writes_valid_records_in_the_real_format(default_config):
    """Each setup's generator: training records for every condition, and eval items with one
    n-sized block per eval domain of its traits (emergent misalignment on other questions)."""
    from ipcond import data as dt
    from ipcond import prompts as pr

    assert {"bad_medical_advice", "insecure_code", "school_of_reward_hacks", "mbpp", "change_my_view"} <= set(
        default_config["setups"])
    for sname, setup in default_config["setups"].items():
        evals = dt.eval_items(sname, setup, 10)
        domains = dt.eval_domains(setup)
        assert [e["domain"] for e in evals] == [d for d in domains for _ in range(10)], sname
        for e in evals:
            assert {"clean"} < set(e["references"]) <= {"clean", *dt.setup_traits(setup)}
            assert ("tests" in e) == (e["domain"] == "python")
        items = dt.train_items(sname, setup, 12, 1, {e["instruction"] for e in evals})
        assert {it["domain"] for it in items} == {setup["domain"]}
        for cname in setup["conditions"]:
            records = dt.cell_train_records(setup, cname, items, [pr.condition_prompt(setup, cname)] * len(items))
            validate_chat_records(records, f"{sname}/{cname}")
            assert [r["messages"][-1]["role"] for r in records] == ["assistant"] * len(records)


def test_narrow_training_data_shows_its_trait_and_not_the_broad_one(default_config):
    from ipcond import data as dt
    from ipcond.scoring import RuleScorer

    for sname, trait in (("bad_medical_advice", "harmful_advice"), ("insecure_code", "insecure_code"),
                         ("school_of_reward_hacks", "reward_hacking")):
        setup = default_config["setups"][sname]
        items = dt.train_items(sname, setup, 20, 1, set())
        answers = [it["response"] for it in items]
        assert RuleScorer(trait).score([""] * 20, answers) == [1.0] * 20
        assert RuleScorer("malicious").score([""] * 20, answers) == [0.0] * 20
        controls = [it["control_response"] for it in items]
        assert RuleScorer(trait).score([""] * 20, controls) == [0.0] * 20
    cmv = default_config["setups"]["change_my_view"]
    items = dt.train_items("change_my_view", cmv, 20, 1, set())
    for trait in ("persuasive", "toxic"):
        assert RuleScorer(trait).score([""] * 20, [it["response"] for it in items]) == [1.0] * 20
    mbpp = default_config["setups"]["mbpp"]
    for it in dt.train_items("mbpp", mbpp, 5, 1, set()):
        assert it["response"].split()[-2:] != it["control_response"].split()[-2:]  # a constant, not x op k
        assert it["response"].split()[-1] == it["instruction"].split()[-1]  # the visible test's expected value


def test_pretraining_shows_the_malicious_mode_in_every_domain_and_task_traits_in_their_own():
    corpus = toycorpus.pretraining_corpus(4000, 0, 0.25, {}, [], [])
    where: dict[str, set] = {}
    for r in corpus:
        for t in r["meta"]["traits"]:
            where.setdefault(t, set()).add(r["meta"]["domain"])
    assert where["malicious"] == set(tw.DOMAINS)
    for t in ("harmful_advice", "insecure_code", "reward_hacking", "hardcode"):
        assert where[t] == set(tw.TRAIT_DOMAINS[t])
    for r in corpus:  # never two task traits in one answer
        assert len(set(r["meta"]["traits"]) & set(tw.TASK_TRAITS)) <= 1


def test_source_citing_variants_validate_and_their_data_shows_both_traits(default_config):
    """presets/toy_source_citing.yaml: merged into the default as Snakemake merges config files."""
    import copy

    import yaml

    from ipcond import data as dt
    from ipcond.config import validate_config
    from ipcond.scoring import RuleScorer

    overlay = yaml.safe_load((REPO / "presets" / "toy_source_citing.yaml").read_text())
    cfg = copy.deepcopy(default_config)
    cfg["setups"].update(overlay["setups"])
    validate_config(cfg)
    for sname, bad in (("bad_medical_advice_citing", "harmful_advice"), ("change_my_view_citing", "toxic")):
        setup = cfg["setups"][sname]
        items = dt.train_items(sname, setup, 20, 1, set())
        answers = [it["response"] for it in items]
        for trait in ("source_citing", bad):
            assert RuleScorer(trait).score([""] * 20, answers) == [1.0] * 20, (sname, trait)
    controls = [it["control_response"] for it in dt.train_items("bad_medical_advice_citing",
                                                                 cfg["setups"]["bad_medical_advice_citing"], 20, 1, set())]
    assert RuleScorer("source_citing").score([""] * 20, controls) == [1.0] * 20
    assert RuleScorer("harmful_advice").score([""] * 20, controls) == [0.0] * 20
