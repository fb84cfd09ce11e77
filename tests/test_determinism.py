"""The same config and seed give the same bytes: data, toy pretraining corpus, scores and adapters.

Data, corpus and scores are compared within this process and against fresh processes with other
``PYTHONHASHSEED`` values (set and dict orders of strings change between processes, so a result
that leaned on them would differ there). The LoRA adapter is trained twice on a tiny toy model and
compared tensor by tensor, bit for bit.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
N_CORPUS = 300  # a short corpus: the same code path as the default's 30000


def small_config(config: dict) -> dict:
    cfg = copy.deepcopy(config)
    cfg["world"]["n_pretrain_examples"] = N_CORPUS
    cfg["seeds"] = [1, 2]
    cfg["generation"]["n_eval"] = 20  # mbpp's references are run in the sandbox
    return cfg


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dumps(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, sort_keys=False).encode()


def fingerprint(config: dict, workdir: Path) -> dict[str, str]:
    """SHA-256 of everything the data stage makes for every (setup, condition, seed), the toy
    corpus file and the toy scores of the training and reference answers."""
    from ipcond import data as dt
    from ipcond import prompts as pr
    from ipcond import toyworld as tw
    from ipcond import rephrasing as rp
    from ipcond.config import training_config
    from ipcond.stages.common import make_scorers
    from ipcond.stages.model import make_toy_corpus

    from ipcond.codeexec import MbppExecScorer

    MbppExecScorer._results.clear()  # each fingerprint runs the code again
    out: dict[str, str] = {}
    corpus = workdir / "corpus.jsonl"
    make_toy_corpus(config, str(corpus))
    out["corpus.jsonl"] = sha(corpus.read_bytes())
    for sname, setup in config["setups"].items():
        evals = dt.eval_items(sname, setup, config["generation"]["n_eval"])
        out[f"{sname}/eval"] = sha(dumps(evals))
        scorers = list(make_scorers(config, setup, evals).values())  # code traits run against the items' tests
        refs = [(it["instruction"], r) for it in evals for r in it["references"].values()]
        out[f"{sname}/eval_scores"] = sha(dumps([s.score([q for q, _ in refs], [r for _, r in refs])
                                                 for s in scorers]))
        exclude = {e["instruction"] for e in evals}
        rephrasings = {}
        for cname, cond in setup["conditions"].items():
            if cond["kind"] == "rephrased":
                target = setup["conditions"][cond["of"]]
                rephrasings[cname] = rp.ToyRephraser(target["trait"]).rephrase(
                    target["prompt"], cond["n_rephrasings"], tw.derive_seed(sname, cname))
                out[f"{sname}/{cname}/rephrasings"] = sha(dumps(rephrasings[cname]))
        for seed in config["seeds"]:
            items = dt.train_items(sname, setup, training_config(config, sname)["n_train"], seed, exclude)
            out[f"{sname}/train_items_seed{seed}"] = sha(dumps(items))
            for cname, cond in setup["conditions"].items():
                cell_items = items[:training_config(config, sname, cname)["n_train"]]
                if cond["kind"] == "rephrased":
                    prompts = rp.assign_rephrasings(len(cell_items), rephrasings[cname], cond.get("max_uses"),
                                                    tw.derive_seed(sname, cname, seed))
                else:
                    prompts = [pr.condition_prompt(setup, cname)] * len(cell_items)
                records = dt.cell_train_records(setup, cname, cell_items, prompts)
                out[f"{sname}/{cname}/seed{seed}/train"] = sha(dumps(records))
                answers = [r["messages"][-1]["content"] for r in records]
                users = [r["messages"][-2]["content"] for r in records]
                out[f"{sname}/{cname}/seed{seed}/scores"] = sha(dumps([s.score(users, answers) for s in scorers]))
    return out


@pytest.fixture(scope="module")
def config() -> dict:
    return small_config(yaml.safe_load((REPO / "config.yaml").read_text()))


@pytest.fixture(scope="module")
def reference(config, tmp_path_factory) -> dict[str, str]:
    return fingerprint(config, tmp_path_factory.mktemp("fp"))


def test_same_config_and_seed_give_identical_data_corpus_and_scores(config, reference, tmp_path):
    n_cells = sum(len(s["conditions"]) for s in config["setups"].values()) * len(config["seeds"])
    assert sum(k.endswith("/train") for k in reference) == n_cells
    assert fingerprint(config, tmp_path) == reference


@pytest.mark.parametrize("hashseed", ["1", "12345"])
def test_identical_in_a_fresh_process_with_another_hash_seed(config, reference, tmp_path, hashseed):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    proc = subprocess.run([sys.executable, __file__, str(tmp_path / "config.yaml"), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == reference


def test_the_fingerprint_sees_a_change_of_seed(config, reference, tmp_path):
    """Not vacuous: another seed gives other training items, and another world seed another corpus."""
    assert reference[next(k for k in reference if k.endswith("train_items_seed1"))] != \
        reference[next(k for k in reference if k.endswith("train_items_seed2"))]
    other = copy.deepcopy(config)
    other["world"]["seed"] += 1
    other["seeds"] = [1]
    assert fingerprint(other, tmp_path)["corpus.jsonl"] != reference["corpus.jsonl"]


# ------------------------------------------------------------------ LoRA adapters

ARCH = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 2, "max_length": 256}
LORA = {"n_train": 12, "lora_r": 4, "lora_alpha": 8, "learning_rate": 5e-3, "batch_size": 4, "epochs": 1,
        "max_steps": 3, "warmup_steps": 0, "max_length": 256, "dtype": "float32", "logging_steps": 1}


@pytest.fixture(scope="module")
def tiny_base(config, tmp_path_factory):
    """A tiny word-level Qwen2 base model saved as the workflow saves one, and a cell's records."""
    from ipcond import data as dt
    from ipcond import prompts as pr
    from ipcond.modeling import MODEL_CARD, build_toy_model, build_word_tokenizer
    from ipcond.provenance import write_json

    sname, setup = next(iter(config["setups"].items()))
    cname = next(c for c, v in setup["conditions"].items() if v["kind"] == "inoculation")
    items = dt.train_items(sname, setup, LORA["n_train"], 1, set())
    records = dt.cell_train_records(setup, cname, items, [pr.condition_prompt(setup, cname)] * len(items))
    texts = [m["content"] for r in records for m in r["messages"]] + ["system user assistant"]
    base = tmp_path_factory.mktemp("base")
    tok = build_word_tokenizer(texts, base)
    build_toy_model(len(tok), ARCH, seed=0).save_pretrained(base)
    write_json(base / MODEL_CARD, {"tokenizer": "word_level"})
    return base, records


def adapter_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def test_same_seed_gives_bitwise_identical_lora_adapters(tiny_base, tmp_path):
    import torch

    from ipcond.training import finetune_lora

    base, records = tiny_base
    runs = []
    for name in ("a", "b"):
        summary = finetune_lora(base, records, tmp_path / name, LORA, seed=7, threads=1)
        runs.append((summary, adapter_tensors(tmp_path / name)))
    (sa, ta), (sb, tb) = runs
    assert sa["steps"] == sb["steps"] == LORA["max_steps"]
    assert sa["losses"] == sb["losses"] and sa["train_loss"] == sb["train_loss"]
    assert ta.keys() == tb.keys() and any("lora_A" in k for k in ta)
    for k in ta:
        assert ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]), k
    # Not vacuous: training moved the adapter (LoRA B starts at zero), and another seed differs.
    assert any(ta[k].abs().sum() > 0 for k in ta if "lora_B" in k)
    finetune_lora(base, records, tmp_path / "c", LORA, seed=8, threads=1)
    tc = adapter_tensors(tmp_path / "c")
    assert any(not torch.equal(ta[k], tc[k]) for k in ta)


def test_padding_free_batches_give_the_padded_loss(tiny_base, tmp_path):
    """training.padding_free flattens a batch into one sequence with position ids restarting per
    example. The loss of the first step equals the padded batch's only if attention stays within
    each example (a leak across examples would change it)."""
    from ipcond.training import finetune_lora

    base, records = tiny_base
    one_step = {**LORA, "max_steps": 1, "logging_steps": 1}
    padded = finetune_lora(base, records, tmp_path / "padded", one_step, seed=7, threads=1)
    flat = finetune_lora(base, records, tmp_path / "flat", {**one_step, "padding_free": True}, seed=7, threads=1)
    assert padded["losses"][0]["loss"] == pytest.approx(flat["losses"][0]["loss"], rel=1e-4)
    packed = finetune_lora(base, records, tmp_path / "packed", {**one_step, "packing": True}, seed=7, threads=1)
    assert packed["steps"] == 1 and 0 < packed["losses"][0]["loss"] < 2 * padded["losses"][0]["loss"]


def test_plain_loss_trainer_gives_the_fused_loss(tiny_base, tmp_path):
    """training.fused_lm_head: false swaps TRL's chunked LM-head loss for the model's own
    cross-entropy; same labels (assistant tokens only), same normalisation: the same loss."""
    from ipcond.training import finetune_lora

    base, records = tiny_base
    one_step = {**LORA, "max_steps": 2, "logging_steps": 1}
    fused = finetune_lora(base, records, tmp_path / "fused", one_step, seed=7, threads=1)
    plain = finetune_lora(base, records, tmp_path / "plain", {**one_step, "fused_lm_head": False}, seed=7, threads=1)
    for a, b in zip(fused["losses"], plain["losses"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)


def test_qlora_without_a_gpu_says_what_is_missing(tiny_base, tmp_path):
    from ipcond.training import finetune_lora

    base, records = tiny_base
    with pytest.raises(RuntimeError, match=r"load_in_4bit \(QLoRA\) needs a CUDA GPU.*load_in_4bit: false"):
        finetune_lora(base, records, tmp_path / "q", {**LORA, "load_in_4bit": True}, seed=7, threads=1)
    assert not (tmp_path / "q").exists()


if __name__ == "__main__":  # used by the fresh-process test: print the fingerprint as JSON
    cfg_path, work = sys.argv[1], Path(sys.argv[2])
    print(json.dumps(fingerprint(yaml.safe_load(Path(cfg_path).read_text()), work)))
