from ipcond.jobs import read_table


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
    from ipcond.jobs import make_toy_corpus
    from ipcond.toyworld import corpus_prompt_texts
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


def test_unknown_words_stop_with_the_config_key_and_the_fix(tmp_path):
    import pytest

    from ipcond.jobs import check_toy_vocabulary, toy_vocabulary_texts
    from ipcond.modeling import build_word_tokenizer

    cfg = _default_config()
    tok = build_word_tokenizer(toy_vocabulary_texts(cfg["world"]), tmp_path)
    # Words of prompts kept out of pretraining are known, and nothing is raised for them.
    check_toy_vocabulary(tok, {"a": "honey never spoils .", "b": None})
    with pytest.raises(ValueError) as err:
        check_toy_vocabulary(tok, {"setups.x.conditions.Y prompt": "you are a zyzzyva ."})
    msg = str(err.value)
    assert "setups.x.conditions.Y" in msg and "zyzzyva" in msg and "world.unseen_prompts" in msg
