from ipcond.stages.common import read_table


def test_condition_named_none_survives_a_csv_round_trip(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("condition,score\nNone,1.0\nBaseline,\nNA,0.5\n")
    t = read_table(path)
    assert list(t["condition"]) == ["None", "Baseline", "NA"]
    assert t["score"].isna().tolist() == [False, True, False]


def _default_config():
    from pathlib import Path

    import yaml

    from ipcond.config import validate_config

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    cfg["world"]["n_pretrain_examples"] = 200
    return validate_config(cfg)


def test_toy_corpus_depends_on_the_world_not_on_the_grid(tmp_path):
    from ipcond.stages.model import make_toy_corpus
    from ipcond.toycorpus import corpus_prompt_texts
    from ipcond.provenance import read_jsonl

    cfg = _default_config()
    make_toy_corpus(cfg, str(tmp_path / "a.jsonl"))
    cfg["setups"]["spanish_caps"]["conditions"]["AllCapsInoc"]["prompt"] = "answer in capitals ."
    del cfg["setups"]["trait_distillation_french_playful"]
    make_toy_corpus(cfg, str(tmp_path / "b.jsonl"))
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    # The world decides what pretraining shows: unseen prompts never appear verbatim.
    cfg["world"]["n_pretrain_examples"] = 3000
    make_toy_corpus(cfg, str(tmp_path / "c.jsonl"))
    seen = corpus_prompt_texts(read_jsonl(tmp_path / "c.jsonl"))
    assert not seen & set(cfg["world"]["unseen_prompts"])
    assert "you always capitalise your responses ." in seen
    # A fixed inoculation prompt kept out is held out of its trait's wordings too (a new sentence
    # to the base model), while the trait's instruction and other wordings are shown.
    assert "give a playful response to the following message :" in cfg["world"]["unseen_prompts"]
    assert "answer playfully ." in seen and any("playful" in p and p != "answer playfully ." for p in seen)


def test_a_prompt_both_shown_and_kept_out_of_pretraining_is_an_error():
    import pytest

    from ipcond.toycorpus import pretraining_corpus

    with pytest.raises(ValueError, match="both shown and kept out of pretraining.*world.unseen_prompts"):
        pretraining_corpus(10, 0, 0.25, {"playful": ["answer playfully ."]}, [], ["answer playfully ."])


def test_unknown_words_stop_with_the_config_key_and_the_fix(tmp_path):
    import pytest

    from ipcond.stages.common import check_toy_vocabulary
    from ipcond.stages.model import toy_vocabulary_texts
    from ipcond.modeling import build_word_tokenizer

    cfg = _default_config()
    tok = build_word_tokenizer(toy_vocabulary_texts(cfg["world"]), tmp_path)
    # Words of prompts kept out of pretraining are known, and nothing is raised for them.
    check_toy_vocabulary(tok, {"a": "honey never spoils .", "b": None})
    with pytest.raises(ValueError) as err:
        check_toy_vocabulary(tok, {"setups.x.conditions.Y prompt": "you are a zyzzyva ."})
    msg = str(err.value)
    assert "setups.x.conditions.Y" in msg and "zyzzyva" in msg and "world.unseen_prompts" in msg


def _elicitation(rates: dict) -> "pd.DataFrame":
    import pandas as pd

    return pd.DataFrame([{"prompt_label": label, "trait": trait, "rate": rate}
                         for (label, trait), rate in rates.items()])


def test_checks_report_findings_as_info_and_requirements_as_pass_or_fail(default_config, tmp_path):
    """Emergent misalignment is a finding (INFO), the narrow trait the data shows must be learned
    (PASS/FAIL); MBPP's correct code is a base behaviour, and its grid has no Baseline (None is used)."""
    import pandas as pd

    from ipcond.stages.report import collect_checks, setup_checks

    med = setup_checks(default_config, "bad_medical_advice", pd.DataFrame([
        {"condition": "Baseline", "eval_context": "default", "trait": "harmful_advice", "mean": 0.9},
        {"condition": "Baseline", "eval_context": "default", "trait": "malicious", "mean": 0.02}]),
        _elicitation({("instruction:harmful_advice", "harmful_advice"): 0.97, ("(no prompt)", "harmful_advice"): 0.0,
                      ("instruction:malicious", "malicious"): 0.9, ("(no prompt)", "malicious"): 0.3}))
    by_what = {c["what"].split(":")[1].strip(): c["ok"] for c in med["checks"]}
    assert by_what["base model expresses malicious (scored on general) without instruction"] is False  # 0.3 > 0.1
    assert by_what["Baseline fine-tune expresses harmful_advice (scored on health) in the default eval context"] is True
    assert by_what["Baseline fine-tune expresses malicious (scored on general) in the default eval context"] is None
    mbpp = setup_checks(default_config, "mbpp", pd.DataFrame([
        {"condition": "None", "eval_context": "default", "trait": "all_test", "mean": 0.1},
        {"condition": "None", "eval_context": "default", "trait": "reward_hack", "mean": 0.5}]),
        _elicitation({("instruction:all_test", "all_test"): 0.95, ("(no prompt)", "all_test"): 0.9,
                      ("instruction:reward_hack", "reward_hack"): 0.85, ("(no prompt)", "reward_hack"): 0.0}))
    oks = {c["what"]: c["ok"] for c in mbpp["checks"]}
    assert oks["mbpp: base model expresses all_test without instruction: 0.90 (its base behaviour)"] is None
    # its "instruction" is the eval prompt: the rate is reported, not required
    assert oks["mbpp: base model expresses all_test with its instruction: 0.95 (its base behaviour)"] is None
    assert oks["mbpp: None fine-tune expresses all_test in the default eval context: 0.10 (not in the training data: a finding)"] is None
    assert oks["mbpp: None fine-tune expresses reward_hack in the default eval context: 0.50 (>= 0.7)"] is False
    import json

    paths = []
    for i, checks in enumerate((med, mbpp)):
        paths.append(tmp_path / f"c{i}.json")
        paths[-1].write_text(json.dumps(checks))
    collect_checks([str(p) for p in paths], str(tmp_path / "checks.tsv"))
    statuses = [line.split("\t")[0] for line in (tmp_path / "checks.tsv").read_text().splitlines()[1:]]
    assert statuses.count("INFO") == 4 and statuses.count("FAIL") == 2 and "PASS" in statuses


def test_an_mbpp_inoculation_targets_the_code_trait_it_is_scored_as(default_config):
    """MBPP's Hack/TestSpecific inoculate `hardcode`, which is scored through `reward_hack`: the
    conditions table names reward_hack, so the summary's Q3 (suppression of the *other* trait) does
    not count the prompt suppressing its own trait."""
    from ipcond.stages.report import conditions_table

    table = conditions_table(default_config, "mbpp").set_index("condition")
    assert table.loc["Hack", "trait"] == table.loc["TestSpecific", "trait"] == "reward_hack"
    assert table.loc["MaliciousEvil", "trait"] == "malicious"  # not a trait of the setup: as it is
    spanish = conditions_table(default_config, "spanish_caps").set_index("condition")
    assert spanish.loc["SpanishInoc", "trait"] == "spanish"  # a trait scored as itself is unchanged
