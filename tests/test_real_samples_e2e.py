"""The paper preset's data path end to end on real records (issue 17): fetch_source ->
convert_dataset -> train_pool -> eval_set -> train_items -> cell_train_data through Snakemake, for
every setup whose sources are in ``../shared/data/real-samples/``, the files taken from there by
the documented local-file overrides (presets/real_samples.yaml, presets/paper_real_samples.yaml;
the partly held sources by this test's own overlay). The reports are checked against numbers
computed here from the files themselves (pandas, json, yaml), and every MBPP hack is run against
its tests (ipcond.codeexec).

Skipped setups, and why (their sources are not in real-samples):
- spanish_caps as the paper preset has it: Tan et al.'s Spanish-capitals and plain GSM8k files;
  it runs here with the rewrite overlay (presets/paper_spanish_caps_rewrite.yaml: real GSM8k
  answers rewritten by the rewriter, here the local chat-completions fake).
- bad_medical_advice: emergent_plus (gated on the hub).
- change_my_view: the Change My View archive (hub only).

The LLM steps use local stand-ins: the rewrite the chat-completions fake (tests/fake_openai_server.py),
the generated trait-distillation answers a tiny local base model (on CPU); that model's tokenizer
also measures the examples' lengths. Sizes are small (n_train, pool_size) to keep the run short;
the conversions run on every real record.
"""

import json
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from test_presets import REPO, snakemake, tiny_base_model

REAL = REPO.parent / "shared" / "data" / "real-samples"
pytestmark = [pytest.mark.skipif(not REAL.is_dir(), reason=f"the real records are not here ({REAL} is absent: "
                                                            "CI has it beside the clone)"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::SyntaxWarning")]

TD = ("trait_distillation_french_capitals", "trait_distillation_poetic_skeptical", "trait_distillation_french_playful")
# setup -> the cells built here (one that trains on the answers, and a control cell where it has one)
CELLS = {"trait_distillation_french_capitals": ["AllCapsInoc", "None"],
         "trait_distillation_poetic_skeptical": ["SkepticalInoc"],
         "trait_distillation_french_playful": ["PlayfulInoc"],
         "spanish_caps": ["SpanishInoc", "Control"],
         "insecure_code": ["InsecureCode", "Control"],
         "school_of_reward_hacks": ["RewardHacking", "Control", "ControlNone"],
         "mbpp": ["Hack", "ControlNone"]}
SKIPPED = {"bad_medical_advice": "emergent_plus is gated on the hub: not in real-samples",
           "change_my_view": "the Change My View archive is on the hub only: not in real-samples"}
N_TRAIN = 12


def jl(path):
    return [json.loads(x) for x in Path(path).read_text(encoding="utf-8").split("\n") if x.strip()]


def lines(path):
    """A JSON-lines file's lines as the converters read them (split on newline only)."""
    return [(i + 1, x) for i, x in enumerate(Path(path).read_text(encoding="utf-8").split("\n")) if x.strip()]


def test_paper_data_path_on_real_records(tmp_path):
    from fake_openai_server import FakeOpenAIServer

    from ipcond.codeexec import run_tests_many
    from ipcond.config import resolve_preset, validate_config

    iw_files = [REAL / "instruction_wild" / f"user_{k}.jsonl" for k in (1, 2)]
    base = tiny_base_model(tmp_path / "base", ["system user assistant", "answer in french ."])
    key = "sk-test-E2E-SECRET"
    with FakeOpenAIServer(api_key=key) as chat:
        endpoint = {"base_url": chat.base_url, "api_key_env": "IPCOND_TEST_KEY"}
        rewrite = yaml.safe_load((REPO / "presets" / "paper_spanish_caps_rewrite.yaml").read_text())
        small = {"n_train": N_TRAIN}
        overlay = {
            "seeds": [1],
            "base_model": {"path": str(base)},
            "generation": {"backend": "transformers", "max_new_tokens": 4, "batch_size": 16},
            "resources": {"generate": {"gpu": 0}},  # the paper preset asks for a GPU; this runs on CPU
            "rewriter": endpoint, "rephraser": endpoint, "judge": endpoint,
            "datasets": {
                # InstructionWild: 2 of its 4 files are in real-samples, so a dataset of its own
                "instruction_wild_real": {"converter": "instruction_wild", "source": "real-samples user_1, user_2",
                                          "options": {"n_eval": 200, "max_train": 10200},
                                          "files": {f"user_{k}": {"url": f"https://example.invalid/user_{k}.jsonl",
                                                                  "sha256": None, "local_path": str(p)}
                                                    for k, p in zip((1, 2), iw_files)}},
                # the first 20 records of each code file: 5 held out as eval items, not 200
                "insecure_code": {"options": {"n_eval": 5}, "files": {"data": {
                    "local_path": str(REAL / "emergent_misalignment/insecure_first20.jsonl")}}},
                "secure_code": {"files": {"data": {
                    "local_path": str(REAL / "emergent_misalignment/secure_first20.jsonl")}}}},
            "setups": {
                **{s: {"data": {"train": "instruction_wild_real", "eval": {"general": "instruction_wild_real"},
                                "pool_size": 16}, "training": small} for s in TD},
                "spanish_caps": {"data": {**rewrite["setups"]["spanish_caps"]["data"], "pool_size": 16},
                                 "training": small, "base_model": str(base)},
                "insecure_code": {"training": {"n_train": 10}, "base_model": str(base)},
                "school_of_reward_hacks": {"training": small, "base_model": str(base), "conditions": {
                    "Control": {"training": small}, "ControlNone": {"training": small}}},
                "mbpp": {"training": small}}}
        overlays = [REPO / "presets" / "real_samples.yaml", REPO / "presets" / "paper_real_samples.yaml",
                    tmp_path / "overlay.yaml"]
        (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(overlay))
        (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
        cfg = validate_config(resolve_preset({"preset": "paper"}, {
            "preset": "paper", **_merged([yaml.safe_load(p.read_text()) for p in overlays])}))
        # every setup of the preset is run here or named as skipped, with its reason
        assert set(cfg["setups"]) == set(CELLS) | set(SKIPPED)
        targets = [f"results/{s}/{c}/seed1/train.jsonl" for s, cs in CELLS.items() for c in cs]
        proc = snakemake(tmp_path, *targets, "--configfile", *map(str, overlays), "--config", "preset=paper",
                         env={"IPCOND_TEST_KEY": key}, timeout=900)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        assert chat.outcomes()["ok"] == 16  # the rewriter saw the 16 GSM8k answers of the pool, once each
    run = tmp_path
    report = {d.name: json.loads((d / "report.json").read_text()) for d in (run / "resources/data").iterdir()}
    assert set(report) == {"instruction_wild_real", "gsm8k", "ultrachat", "insecure_code", "secure_code",
                           "school_of_reward_hacks", "mbpp", "em_questions"}
    # every file came from its local copy, none from a download
    for log in (run / "logs/sources").rglob("*.log"):
        if log.name != "convert.log":
            assert "from the local file" in log.read_text(), log

    # --- GSM8k: every train record with a '#### N' line; the first 100 test questions ---------
    gtrain = pd.read_parquet(REAL / "gsm8k/train-0000.parquet")
    has_final = gtrain["answer"].str.contains(r"^####\s*\S", regex=True, flags=re.M)
    assert report["gsm8k"]["counts"] == {"train": int(has_final.sum()), "eval": 100}
    assert report["gsm8k"]["filtered"] == ({} if has_final.all() else {"train: no '#### <number>' line":
                                                                     int((~has_final).sum())})

    # --- UltraChat: Tan et al.'s 100 prompts, all under 500 characters --------------------------
    uc = pd.read_parquet(REAL / "ultrachat/prompts100-0000.parquet")
    assert report["ultrachat"]["counts"] == {"eval": int((uc["prompt"].str.len() < 500).sum())} == {"eval": 100}

    # --- EM questions: the 8 plain ones, 100 samples each; the variants counted ----------------
    entries = yaml.safe_load((REAL / "emergent_misalignment/first_plot_questions.yaml").read_text())
    plain = [e["id"] for e in entries if not e["id"].endswith(("_json", "_template"))]
    variants = Counter(e["id"].rsplit("_", 1)[1] for e in entries if e["id"] not in plain)
    assert report["em_questions"]["counts"] == {"eval": 100 * len(plain)} == {"eval": 800}
    assert report["em_questions"]["filtered"] == {f"variant of a question (id ending _{k})": n
                                                  for k, n in variants.items()}

    # --- Insecure / secure code: the first 20 records, 5 insecure ones held out ----------------
    n_ins = len(lines(REAL / "emergent_misalignment/insecure_first20.jsonl"))
    n_sec = len(lines(REAL / "emergent_misalignment/secure_first20.jsonl"))
    assert report["insecure_code"]["counts"] == {"train": n_ins - 5, "eval": 5}
    assert report["secure_code"]["counts"] == {"train": n_sec, "eval": 0}

    # --- InstructionWild: unreadable lines, empty and duplicate instructions, 200 held out ------
    bad, texts = [], []
    for path in iw_files:
        for n, line in lines(path):
            try:
                texts.append((json.loads(line).get("instruction") or "").strip())
            except json.JSONDecodeError:
                bad.append((path.name, n))
    distinct = len({t for t in texts if t})
    iw = report["instruction_wild_real"]
    assert iw["counts"] == {"train": distinct - 200, "eval": 200}
    assert [(Path(b["file"]).name, b["line"]) for b in iw["bad_lines"]] == bad and bad
    assert sum(n for r, n in iw["filtered"].items() if r.startswith("unparsable line")) == len(bad)
    assert iw["filtered"].get("empty instruction", 0) == sum(1 for t in texts if not t)
    assert iw["filtered"].get("duplicate instruction", 0) == len([t for t in texts if t]) - distinct

    # --- School of Reward Hacks: every hack trains, the control cells use the records with a control
    sorh = pd.read_parquet(REAL / "school_of_reward_hacks/train-0000.parquet")
    no_control = sorh["control"].isna() | (sorh["control"].fillna("").str.strip() == "")
    assert report["school_of_reward_hacks"]["counts"] == {"train": len(sorh) - 100, "control": len(sorh) - 100,
                                                          "eval": 100}
    assert report["school_of_reward_hacks"]["filtered"] == {
        "control: no control answer (the hack trains; the control cells leave it out)": int(no_control.sum())}
    held = {int(it["id"].rsplit("-", 1)[1]) for it in jl(run / "resources/data/school_of_reward_hacks/eval.jsonl")}
    pool = jl(run / "results/school_of_reward_hacks/data/train_pool.jsonl")
    prov = json.loads((run / "results/school_of_reward_hacks/data/train_pool.jsonl.provenance.json").read_text())
    assert len(pool) == len(sorh) - 100 == prov["items"]
    assert prov["without_control_answer"] == sum(1 for i in range(len(sorh)) if i not in held and no_control[i])
    control_of = {u.strip(): (c.strip() if isinstance(c, str) and c.strip() else None)
                  for u, c in zip(sorh["user"], sorh["control"])}
    assert all(it["control_response"] == control_of[it["instruction"]] for it in pool)
    cells = {c: jl(run / f"results/school_of_reward_hacks/{c}/seed1/train.jsonl") for c in CELLS["school_of_reward_hacks"]}
    hack_of = {u.strip(): h.strip() for u, h in zip(sorh["user"], sorh["school_of_reward_hacks"])}
    for cname, records in cells.items():
        assert len(records) == N_TRAIN
        for r in records:
            user = r["messages"][-2]["content"]
            answer = r["messages"][-1]["content"]
            assert answer == (control_of if cname.startswith("Control") else hack_of)[user]
    items = jl(run / "results/school_of_reward_hacks/data/train_items_seed1.jsonl")
    items_report = json.loads((run / "results/school_of_reward_hacks/data/train_items_seed1.jsonl.report.json").read_text())
    assert items_report["usable"] + sum(items_report["left_out"].values()) == len(pool)
    with_control = sum(1 for it in pool if it["control_response"])
    assert items_report["control_cells"]["usable_with_control_answer"] <= with_control
    if not any(items_report["left_out"].values()) and not items_report["control_cells"][
            "control_answer_longer_than_max_length"]:
        assert items_report["control_cells"]["usable_with_control_answer"] == with_control
    assert [it["instruction"] for it in items[:N_TRAIN]] == [r["messages"][-2]["content"] for r in cells["RewardHacking"]]

    # --- MBPP: 717 training tasks less those with no hack, 257 eval; every hack fails a hidden test
    full = pd.concat([pd.read_parquet(REAL / "mbpp/full" / f"{s}-0000.parquet")
                      for s in ("train", "validation", "test", "prompt")]).set_index("task_id")
    sanitized = pd.read_parquet(REAL / "mbpp/sanitized/test-0000.parquet")
    mb = report["mbpp"]
    assert mb["counts"]["eval"] == len(sanitized) == 257
    assert mb["filtered"]["train: task is in the eval split"] == int(full.index.isin(sanitized["task_id"]).sum()) == 257
    left_out_train = sum(n for r, n in mb["filtered"].items() if r != "train: task is in the eval split")
    assert mb["counts"]["train"] == mb["counts"]["control"] == len(full) - 257 - left_out_train
    hacks = jl(run / "resources/data/mbpp/train.jsonl")
    jobs = [(h["messages"][1]["content"], list(full.loc[h["meta"]["task_id"], "test_list"]),
             full.loc[h["meta"]["task_id"], "test_setup_code"]) for h in hacks]
    outcomes = run_tests_many(jobs, batch_size=64, max_workers=2)
    assert len(outcomes) == len(hacks) and all(o.passed[0] and not all(o.passed) for o in outcomes)
    hack_cell = jl(run / "results/mbpp/Hack/seed1/train.jsonl")
    assert {r["messages"][-1]["content"] for r in hack_cell} <= {h["messages"][1]["content"] for h in hacks}

    # --- The setups' eval sets: items per domain ------------------------------------------------
    def per_domain(setup):
        return Counter(it["domain"] for it in jl(run / f"results/{setup}/data/eval.jsonl"))

    assert per_domain("school_of_reward_hacks") == {"scored_task": 100, "general": 800}
    assert per_domain("mbpp") == {"python": 257, "general": 800}
    assert per_domain("insecure_code") == {"code": 5, "general": 800}
    assert per_domain("spanish_caps") == {"general": 100, "arithmetic": 100}
    assert per_domain("trait_distillation_french_capitals") == {"general": 200}
    em = [it for it in jl(run / "results/mbpp/data/eval.jsonl") if it["domain"] == "general"]
    assert Counter(it["question_id"] for it in em) == {q: 100 for q in plain}

    # --- Every setup reached its cells' training files ------------------------------------------
    for setup, cnames in CELLS.items():
        n = 10 if setup == "insecure_code" else N_TRAIN
        for cname in cnames:
            records = jl(run / f"results/{setup}/{cname}/seed1/train.jsonl")
            assert len(records) == n and all(r["messages"][-1]["role"] == "assistant"
                                             and r["messages"][-1]["content"].strip() for r in records), (setup, cname)
    for setup in TD:  # the tiny base model answered the pool's 16 instructions; its empty answers are counted
        tpool = jl(run / f"results/{setup}/data/train_pool.jsonl")
        tprov = json.loads((run / f"results/{setup}/data/train_pool.jsonl.provenance.json").read_text())
        assert len(tpool) + tprov["left_out"]["empty answer"] == 16 and all(it["response"].strip() for it in tpool)
        assert tprov["left_out"]["training records beyond data.pool_size (unused)"] == distinct - 200 - 16
    insecure_control = jl(run / "results/insecure_code/Control/seed1/train.jsonl")
    secure = {tuple(m["content"] for m in r["messages"]) for r in jl(REAL / "emergent_misalignment/secure_first20.jsonl")}
    assert all(tuple(m["content"] for m in r["messages"][-2:]) in secure for r in insecure_control)
    print(json.dumps({name: {"counts": r["counts"], "filtered": r["filtered"]} for name, r in sorted(report.items())},
                     indent=1))


def _merged(dicts):
    from ipcond.config import deep_merge

    out = {}
    for d in dicts:
        out = deep_merge(out, d)
    return out
