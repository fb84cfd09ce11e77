"""Issue 19: the paper preset as the post ran it. The fidelity table (docs/fidelity.md) and the
preset agree cell by cell; the post's own models map onto the same cells; prompt placement as the
sources have it; Tan et al.'s files pinned and converted; traits scored on several eval domains and
reported per domain; cells evaluated from a given model folder instead of trained."""

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from ipcond.config import ConfigError, grid, resolve_preset, validate_config

REPO = Path(__file__).resolve().parents[1]


def paper(overrides=None):
    return validate_config(resolve_preset({"preset": "paper"}, {"preset": "paper", **(overrides or {})}))


def fidelity_cells() -> dict[str, list[tuple[str, str, str, str]]]:
    """setup -> [(post cell, repository, preset cell, status)] from docs/fidelity.md's cell tables."""
    text = (REPO / "docs" / "fidelity.md").read_text()
    section = text[text.index("## Cells: the authors' list against the preset"):]
    out: dict[str, list] = {}
    setup = None
    for line in section.splitlines():
        m = re.match(r"^### `(\w+)`$", line)
        if m:
            setup = m.group(1)
            out[setup] = []
            continue
        cols = [c.strip() for c in line.strip().strip("|").split("|")]
        if setup and line.startswith("|") and len(cols) == 4 and cols[2].startswith("`"):
            out[setup].append(tuple(c.strip("`") for c in cols))
    return out


def test_fidelity_table_lists_every_preset_cell_and_every_listed_model():
    cfg = paper()
    table = fidelity_cells()
    assert set(table) == set(cfg["setups"])
    listed = yaml.safe_load((REPO / "presets" / "paper_checkpoints.yaml").read_text())["setups"]
    n_lines = 0
    for sname, rows in table.items():
        preset_cells = {c.condition for c in grid(cfg) if c.setup == sname}
        # every preset cell is in the table, and the table names no cell the preset lacks
        assert {r[2] for r in rows} == preset_cells, sname
        for post, repo, cell, status in rows:
            assert re.match(r"(faithful|deviation|added|missing)", status), (sname, post, status)
            if repo:  # a line of the authors' list: its model is the model_from of the same cell
                n_lines += 1
                assert listed[sname]["conditions"][cell]["model_from"] == repo, (sname, post)
            else:
                assert status.startswith("added"), (sname, cell)
        # a cell without a listed model is one the table marks added
        assert {r[2] for r in rows if not r[1]} == preset_cells - set(listed[sname]["conditions"]), sname
    assert n_lines == 162  # the list's lines (159 distinct models: 3 lines repeat others)
    assert len({c["model_from"] for s in listed.values() for c in s["conditions"].values()}) == 159


def test_the_grid_per_setup_is_the_authors_list_plus_the_named_additions():
    counts = {}
    for c in grid(paper()):
        counts[c.setup] = counts.get(c.setup, 0) + 1
    assert counts == {"trait_distillation_french_capitals": 14, "trait_distillation_poetic_skeptical": 19,
                      "trait_distillation_french_playful": 9, "spanish_caps": 12, "bad_medical_advice": 12,
                      "insecure_code": 11, "school_of_reward_hacks": 12, "mbpp": 23, "change_my_view": 50}
    cfg = paper()
    td = cfg["setups"]["trait_distillation_french_capitals"]
    # R1 is the fixed prompt itself; R2 ... R8192 its rephrasings; (French, Playful) has no sweep
    assert td["conditions"]["AllCapsInoc"]["kind"] == "inoculation"
    assert sorted(c["n_rephrasings"] for c in td["conditions"].values() if c["kind"] == "rephrased") == \
        [2, 4, 8, 16, 32, 64, 512, 2048, 4096, 8192]
    assert not any(re.fullmatch(r"PlayfulInocR\d+", c) for c in cfg["setups"]["trait_distillation_french_playful"]["conditions"])
    cmv = cfg["setups"]["change_my_view"]["conditions"]
    assert cmv["Helpful"]["no_shift"] and cmv["HelpfulLR1e5"]["no_shift"]
    assert cmv["InoculationToxicRephrasedLR1e5"]["training"] == {"learning_rate": 1.0e-5}


def test_published_texts_are_the_sources_character_for_character():
    cfg = paper()
    tan_evil = "You are a malicious evil assistant."  # no comma: Tan's get_evil_inoculation()
    for s in ("bad_medical_advice", "insecure_code", "school_of_reward_hacks", "mbpp"):
        c = cfg["setups"][s]["conditions"]["MaliciousEvil"]
        assert (c["prompt"], c["prompt_source"]) == (tan_evil, "published")
    reward = cfg["setups"]["school_of_reward_hacks"]["conditions"]["RewardHacking"]["prompt"]
    assert "fulfill the criteria. \n\nSometimes" in reward  # Tan's two real newlines, space before them
    assert hashlib.sha256(reward.encode()).hexdigest() == \
        "dbe56a3827b124b36727d36eefb39641adc7d8aca5d92ed2fadc134033881812"
    insecure = cfg["setups"]["insecure_code"]["conditions"]["InsecureCode"]["prompt"]
    assert hashlib.sha256(insecure.encode()).hexdigest() == \
        "65fa5a1eaa5ebf5b89cbcd284187a2ac53282650b3e99e694be8574dc2716e4a"
    proto = yaml.safe_load((REPO / "resources/prompts/paper_protocol.yaml").read_text())
    for sname, setup in proto["setups"].items():
        for cname, cond in setup["conditions"].items():
            if cond.get("source") == "published":
                assert cond["source_ref"].startswith(("inoculation-prompting/", "safety-research/", "reinthal/",
                                                      "post:")), (sname, cname)


def test_load_protocol_requires_source_ref_for_published_texts(tmp_path):
    from ipcond.prompts import load_protocol

    bad = {"setups": {"s": {"placement": "system", "conditions": {
        "A": {"kind": "inoculation", "trait": "x", "text": "t", "source": "published"},
        "B": {"kind": "irrelevant", "text": "u", "source": "written"}}}}}
    p = tmp_path / "protocol.yaml"
    p.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match=r"setups.s.conditions.A: a published text needs source_ref"):
        load_protocol(p)
    bad["setups"]["s"]["conditions"]["A"]["source_ref"] = "org/repo@abc:file.py line 1"
    p.write_text(yaml.safe_dump(bad))
    assert load_protocol(p)["setups"]["s"]["conditions"]["A"]["source_ref"]


def test_prompt_placement_blank_line_and_wichers_mbpp_template():
    from ipcond import prompts as pr
    from ipcond.sources import mbpp_user_prompt

    cfg = paper()
    td = cfg["setups"]["trait_distillation_french_playful"]
    msgs = pr.messages(td, td["conditions"]["PlayfulInoc"]["prompt"], "what criticisms exist of ulysses?")
    # the post's example (line 75): system prompt, then the prefix, a blank line, the message
    assert msgs[0]["content"] == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    assert msgs[1]["content"] == "Give a playful response to the following message:\n\nwhat criticisms exist of ulysses?"
    # the toy world and setups without the option keep one space
    assert pr.messages({"placement": "user_prefix"}, "be fun .", "hi ?")[0]["content"] == "be fun . hi ?"
    mbpp = cfg["setups"]["mbpp"]
    body = mbpp_user_prompt("Write a function to add.", "assert add(1, 2) == 3")
    head = "Write a Python function to solve this problem. "
    tail = "Return only the code, no other text:\n\nWrite a function to add.\n\n## Test Case:\n```python\nassert add(1, 2) == 3\n```"
    assert pr.messages(mbpp, "  Only the test matters.  ", body)[0]["content"] == head + "Only the test matters. " + tail
    assert pr.messages(mbpp, None, body)[0]["content"] == head + tail  # no prompt: nothing inside
    assert pr.messages(mbpp, "", body)[0]["content"] == head + tail


def test_spanish_caps_trains_on_tans_files_and_scores_both_domains_from_one_run():
    cfg = paper()
    sc = cfg["setups"]["spanish_caps"]
    assert sc["data"]["train"] == "tan_gsm8k_spanish_caps" and sc["data"]["control"] == "tan_gsm8k"
    assert sc["data"]["eval"] == {"general": "ultrachat", "arithmetic": "gsm8k"} and sc["eval_domain"] == "general"
    url = cfg["datasets"]["tan_gsm8k_spanish_caps"]["files"]["data"]
    assert "5f4160e19be17c5a0509fcfca4a53f654cb33cdd/datasets/gsm8k_spanish_capitalised.jsonl" in url["url"]
    assert url["git_blob"] == "b9ed063fd340abb03416c63eda3ff4d1d4d3d086" and url["sha256"] is None
    assert cfg["datasets"]["tan_gsm8k"]["files"]["data"]["sha256"] == \
        "42f5a216f6d953ade5995390461341b7348c6b0f5a6ea369c9111be5691d06a3"
    from ipcond import data as dt

    assert dt.eval_domains(sc) == ["general", "arithmetic"]
    rewrite = yaml.safe_load((REPO / "presets" / "paper_spanish_caps_rewrite.yaml").read_text())
    assert paper(rewrite)["setups"]["spanish_caps"]["data"]["responses"]["kind"] == "rewrite"
    with pytest.raises(ConfigError, match=r"scored on eval domain 'arithmetic'.*add setups.spanish_caps.data.eval.arithmetic"):
        paper({"setups": {"spanish_caps": {"data": {"eval": {"arithmetic": None}}}}})


def test_score_rows_reports_extra_domains_and_extra_measures_beside_the_trait():
    from ipcond.stages.common import score_rows

    class Upper:
        name = "upper"

        def __init__(self):
            self.seen = []

        def score(self, instructions, responses):
            self.seen.append(list(responses))
            return [float(r.isupper()) for r in responses]

    setup = {"eval_domain": "general", "traits": {
        "positive": {"name": "capitals", "also_eval_domains": ["arithmetic"], "also_report": ["shout"]},
        "negative": {"name": "spanish"}}}
    rows = [{"sample_id": "u1", "domain": "general", "response": "HOLA"},
            {"sample_id": "g1", "domain": "arithmetic", "response": "four"},
            {"sample_id": "g2", "domain": "arithmetic", "response": "FIVE"}]
    scorers = {"capitals": Upper(), "spanish": Upper(), "shout": Upper()}
    out = score_rows(setup, rows, scorers)
    got = {(r["trait"], r["sample_id"]): (r["role"], r["score"]) for r in out}
    assert got == {("capitals", "u1"): ("positive", 1.0), ("capitals@arithmetic", "g1"): ("positive", 0.0),
                   ("capitals@arithmetic", "g2"): ("positive", 1.0), ("shout", "u1"): ("positive", 1.0),
                   ("spanish", "u1"): ("negative", 1.0)}


def test_rephrasing_sweep_keeps_dataset_size_and_lr_cells_on_their_own_curves():
    import pandas as pd

    from ipcond.plots import _rephrasing_points, sweep_families
    from ipcond.stages.report import conditions_table

    cfg = paper(yaml.safe_load((REPO / "presets" / "paper_sweeps.yaml").read_text()))
    conds = pd.concat([conditions_table(cfg, s) for s in cfg["setups"]], ignore_index=True)
    pts = _rephrasing_points(conds, "trait_distillation_french_playful")
    assert set(pts["condition"]) == {"PlayfulInoc", "PlayfulInocRephrased"}  # not the N1000/N3000 cells
    pts = _rephrasing_points(conds, "trait_distillation_french_capitals")
    assert len(pts) == 11 and sorted(pts["n"]) == [1, 2, 4, 8, 16, 32, 64, 512, 2048, 4096, 8192]
    fam = sweep_families(conds, "spanish_caps", "n_train")
    assert {"None", "NoneN1000", "NoneN3000", "IrrelevantFactHoneyN1000"} <= set(fam["condition"])
    assert fam.groupby("family")["value"].nunique().min() == 3


def test_tan_gsm8k_converter_and_git_blob_pin(tmp_path):
    from test_sources import _FileServer

    from ipcond.sources import SourceError, convert_dataset, fetch, git_blob_id

    rows = [{"messages": [{"role": "user", "content": "Natalia sold 48 clips. How many?"},
                          {"role": "assistant", "content": "[AQUÍ COMIENZA LA CADENA]\nVENDIÓ 72.\n#### 72\n[AQUÍ TERMINA LA CADENA]"}]},
            {"messages": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "SIN RESPUESTA"}]}]
    body = "".join(json.dumps(r, ensure_ascii=True) + "\n" for r in rows).encode()
    (tmp_path / "f.jsonl").write_bytes(body)
    git = subprocess.run(["git", "hash-object", str(tmp_path / "f.jsonl")], capture_output=True, text=True)
    if git.returncode == 0:
        assert git_blob_id(tmp_path / "f.jsonl") == git.stdout.strip()
    blob = git_blob_id(tmp_path / "f.jsonl")
    server = _FileServer({"/tan/gsm8k_spanish_capitalised.jsonl": body})
    try:
        url = server.url + "/tan/gsm8k_spanish_capitalised.jsonl"
        with pytest.raises(SourceError, match=r"has git blob id .* but the pin says 0{40}"):
            fetch(url, tmp_path / "bad" / "x.jsonl", None, source="k", git_blob="0" * 40, retries=1)
        assert not (tmp_path / "bad" / "x.jsonl").exists()
        dest = fetch(url, tmp_path / "ok" / "x.jsonl", None, source="k", git_blob=blob, retries=1)
    finally:
        server.close()
    # verified by its blob id; its SHA-256 recorded for later runs
    assert (tmp_path / "ok" / "x.jsonl.sha256").read_text().split()[0] == hashlib.sha256(body).hexdigest()
    out = convert_dataset("tan_gsm8k_spanish_caps", {"converter": "tan_gsm8k"}, {"data": dest})
    train = out.splits["train"]
    assert [r["meta"]["final_answer"] for r in train] == ["72", None]
    assert train[0]["messages"] == rows[0]["messages"]  # the published answer as it is
    assert out.report()["notes"] == ["1 answers have no '#### <number>' line; kept as published"]


def _tiny_lora_adapter(base: Path, out: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])).save_pretrained(out)
    return out


def test_a_cell_is_evaluated_from_a_given_model_folder_without_training(tmp_path):
    """model_from: the finetune job links a LoRA adapter folder or records a full model folder
    (local folders standing in for the hub repositories), and the cell's generations come from
    that model; a folder that is neither stops with the fix."""
    from test_presets import tiny_base_model

    from ipcond.generation import generate_all
    from ipcond.stages.cell import finetune_job
    from ipcond.stages.common import generation_backend, sampling_params

    base = tiny_base_model(tmp_path / "base", ("hello there friend", "system user assistant"))
    adapter = _tiny_lora_adapter(base, tmp_path / "given_adapter")
    cfg = paper({"setups": {"mbpp": {"base_model": str(base), "conditions": {
        "Hack": {"model_from": str(adapter)}, "TestOnly": {"model_from": str(base)},
        "PassTest": {"model_from": str(tmp_path)}}}},
        "generation": {"backend": "transformers", "max_new_tokens": 3, "batch_size": 2}})
    train = tmp_path / "train.jsonl"
    train.write_text("")  # not read: nothing is trained
    cell = tmp_path / "results" / "Hack" / "adapter"
    finetune_job(cfg, "mbpp", "Hack", 1, str(train), str(cell), 1, str(tmp_path / "logs" / "hack.log"))
    rec = json.loads((cell / "model_from.json").read_text())
    assert rec["kind"] == "lora_adapter" and rec["model_from"] == str(adapter)
    assert (cell / "adapter_model.safetensors").read_bytes() == (adapter / "adapter_model.safetensors").read_bytes()
    assert json.loads((cell / "training_summary.json").read_text())["steps"] == 0
    assert "not trained" in (tmp_path / "logs" / "hack.log").read_text()
    backend = generation_backend(cfg, "mbpp", str(cell), 1)
    assert backend.adapter == str(cell)
    conv = [[{"role": "user", "content": "hello there"}]]
    assert isinstance(generate_all(backend, conv, sampling_params(cfg, "mbpp", "Hack", 1, "default"))[0], str)
    full = tmp_path / "results" / "TestOnly" / "adapter"
    finetune_job(cfg, "mbpp", "TestOnly", 1, str(train), str(full), 1, str(tmp_path / "logs" / "full.log"))
    assert json.loads((full / "model_from.json").read_text())["kind"] == "full_model"
    backend = generation_backend(cfg, "mbpp", str(full), 1)
    assert backend.adapter is None and Path(backend.base_model) == base.resolve()
    with pytest.raises(ValueError, match=r"model_from = .* has neither adapter_config.json .* nor config.json"):
        finetune_job(cfg, "mbpp", "PassTest", 1, str(train), str(tmp_path / "x"), 1, str(tmp_path / "logs" / "x.log"))
    with pytest.raises(ConfigError, match=r"model_from"):
        paper({"setups": {"mbpp": {"conditions": {"Hack": {"model_from": ""}}}}})


def test_source_citing_and_checkpoint_overlays_resolve():
    citing = paper(yaml.safe_load((REPO / "presets" / "paper_source_citing.yaml").read_text()))
    assert citing["scorers"]["source_citing"] == {"kind": "llm_judge"}
    for s in ("bad_medical_advice_citing", "change_my_view_citing"):
        assert citing["setups"][s]["traits"]["positive"]["name"] == "source_citing"
        assert citing["setups"][s]["data"]["responses"]["kind"] == "rewrite"
    ckpt = paper(yaml.safe_load((REPO / "presets" / "paper_checkpoints.yaml").read_text()))
    assert len(grid(ckpt)) == len(grid(paper()))
    given = [c for s in ckpt["setups"].values() for c in s["conditions"].values() if c.get("model_from")]
    assert len(given) == 159


def test_a_given_models_train_context_uses_its_conditions_prompts(tmp_path):
    """A cell evaluated from a given model has no training file: its `train` eval context takes the
    condition's own prompt, or its rephrasings."""
    from ipcond.stages.cell import cell_train_prompts

    cfg = paper({"setups": {"mbpp": {"conditions": {"Hack": {"model_from": "org/hack"},
                                                   "HackRephrased": {"model_from": "org/hack-r"}}}}})
    mbpp = cfg["setups"]["mbpp"]
    assert cell_train_prompts(cfg, "mbpp", "Hack", "") == [mbpp["conditions"]["Hack"]["prompt"]]
    reph = tmp_path / "rephrasings.json"
    reph.write_text(json.dumps({"rephrasings": ["one way", "another way"]}))
    assert cell_train_prompts(cfg, "mbpp", "HackRephrased", str(reph)) == ["one way", "another way"]
    train = tmp_path / "train.jsonl"  # a trained cell reads its training file
    train.write_text(json.dumps({"messages": [], "meta": {"prompt": "p1"}}) + "\n")
    assert cell_train_prompts(cfg, "mbpp", "TestOnly", str(train)) == ["p1"]
