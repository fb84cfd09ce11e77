#!/usr/bin/env python3
"""Toy-scale throughput of the workflow's training and generation code, each against a baseline
(run by hand; needs a built toy base model, e.g. after the default run).

Usage: python workflow/bench/throughput.py [--base results/base_model/model]
           [--train results/spanish_caps/Baseline/seed1/train.jsonl] [--steps 48] [--threads 1]

- training: ``ipcond.training.finetune_lora`` (TRL's SFTTrainer + PEFT, as every cell trains)
  against a plain PyTorch loop over the same PEFT model, records, batch size, steps, optimiser and
  learning rate; both count the tokens of the batches they train on. Two ratios: the training
  loop alone (the Trainer's ``train_runtime`` against the plain loop's steps; target: within
  1.3x), and with set-up (data preparation, model loading, trainer set-up, saving the adapter).
- generation: ``ipcond.generation.TransformersBackend`` on N eval prompts in batches (the
  workflow's ``generation.batch_size``) against one prompt at a time. Target: batched at least 5x
  faster.

Prints one table (and ``--json`` writes it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))


def plain_loop(base: str, records: list[dict], cfg: dict, seed: int, threads: int) -> dict:
    """The same LoRA fine-tune as finetune_lora, as a bare loop: right-padded batches, loss on
    assistant tokens only (the model's own cross-entropy), AdamW with a linear decay."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ipcond.modeling import load_tokenizer
    from ipcond.training import encode_chat

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    tok = load_tokenizer(base)
    data = encode_chat(tok, records, cfg["max_length"])
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=cfg["lora_r"], lora_alpha=cfg["lora_alpha"], lora_dropout=0.0,
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg["learning_rate"],
                            weight_decay=0.0)
    steps, bs = cfg["max_steps"], cfg["batch_size"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=gen).tolist()
    model.train()
    tokens, loss_sum = 0, 0.0
    t_loop = time.perf_counter()
    for step in range(steps):
        idx = [order[(step * bs + i) % len(order)] for i in range(bs)]
        width = max(len(data[i][0]) for i in idx)
        ids = torch.full((bs, width), tok.pad_token_id)
        labels = torch.full((bs, width), -100)
        mask = torch.zeros((bs, width), dtype=torch.long)
        for row, i in enumerate(idx):
            x, y = data[i]
            ids[row, :len(x)], labels[row, :len(y)], mask[row, :len(x)] = torch.tensor(x), torch.tensor(y), 1
        tokens += int(mask.sum())
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        loss_sum += float(loss.detach())
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    end = time.perf_counter()
    return {"seconds": end - t0, "loop_seconds": end - t_loop, "tokens": tokens, "mean_loss": loss_sum / steps}


def workflow_training(base: str, records: list[dict], cfg: dict, seed: int, threads: int, out: Path) -> dict:
    from ipcond.modeling import load_tokenizer
    from ipcond.training import encode_chat, finetune_lora

    t0 = time.perf_counter()
    summary = finetune_lora(base, records, out, {**cfg, "checkpoint_steps": []}, seed=seed, threads=threads)
    seconds = time.perf_counter() - t0
    # Tokens the Trainer saw: its batches are padded to their longest record, like the plain loop's.
    lengths = [len(ids) for ids, _ in encode_chat(load_tokenizer(base), records, cfg["max_length"])]
    mean_len = sum(lengths) / len(lengths)
    return {"seconds": seconds, "loop_seconds": summary["loop_seconds"],
            "tokens": int(mean_len * cfg["batch_size"] * summary["steps"]),
            "mean_loss": summary["train_loss"]}


def generation(base: str, prompts: list[list[dict]], batch_size: int, threads: int, max_new_tokens: int) -> dict:
    from ipcond.generation import SamplingParams, TransformersBackend

    backend = TransformersBackend(base, None, batch_size=batch_size, threads=threads)
    params = SamplingParams(temperature=1.0, max_new_tokens=max_new_tokens, seed=0)
    backend.generate(prompts[:2], params)  # warm-up
    t0 = time.perf_counter()
    outs = backend.generate(prompts, params)
    seconds = time.perf_counter() - t0
    n_tokens = sum(len(backend.tokenizer(o, add_special_tokens=False)["input_ids"]) for o in outs)
    return {"seconds": seconds, "prompts": len(prompts), "new_tokens": n_tokens}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default=str(REPO / "results/base_model/model"))
    ap.add_argument("--train", default=str(REPO / "results/spanish_caps/Baseline/seed1/train.jsonl"))
    ap.add_argument("--eval", default=str(REPO / "results/spanish_caps/data/eval.jsonl"))
    ap.add_argument("--config", default=str(REPO / "config.yaml"))
    ap.add_argument("--steps", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-prompts", type=int, default=80)
    ap.add_argument("--json", help="also write the table here")
    a = ap.parse_args()

    import tempfile

    import yaml

    from ipcond.config import training_config
    from ipcond.provenance import read_jsonl

    config = yaml.safe_load(Path(a.config).read_text())
    cfg = {**training_config(config, "spanish_caps"), "max_steps": a.steps, "logging_steps": a.steps,
           "save_every_steps": 0}
    # Both sides start with every library imported (a job's imports are start-up, not training;
    # the default-run benchmark counts them).
    import datasets  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    from trl import SFTConfig, SFTTrainer  # noqa: F401
    records = read_jsonl(a.train)
    rows: dict[str, float | str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        wf = workflow_training(a.base, records, cfg, 1, a.threads, Path(tmp) / "adapter")
    plain = plain_loop(a.base, records, cfg, 1, a.threads)
    rows["training: workflow (TRL SFTTrainer + PEFT) tokens/s"] = wf["tokens"] / wf["seconds"]
    rows["training: plain PyTorch loop tokens/s"] = plain["tokens"] / plain["seconds"]
    rows["training loop: workflow time / plain time per token (target <= 1.3)"] = \
        (wf["loop_seconds"] / wf["tokens"]) / (plain["loop_seconds"] / plain["tokens"])
    rows["training with set-up (data, model, trainer, save): workflow / plain"] = \
        (wf["seconds"] / wf["tokens"]) / (plain["seconds"] / plain["tokens"])
    rows["training: mean loss over the steps, workflow / plain"] = f"{wf['mean_loss']:.3f} / {plain['mean_loss']:.3f}"

    from ipcond import prompts as pr

    setup = config["setups"]["spanish_caps"]
    items = read_jsonl(a.eval)[: a.n_prompts]
    convs = [pr.messages(setup, setup["eval_prompt"], it["instruction"]) for it in items]
    g = config["generation"]
    batched = generation(a.base, convs, g.get("batch_size", 64), a.threads, g["max_new_tokens"])
    single = generation(a.base, convs, 1, a.threads, g["max_new_tokens"])
    rows[f"generation: batched ({g.get('batch_size', 64)}) tokens/s"] = batched["new_tokens"] / batched["seconds"]
    rows["generation: one prompt at a time tokens/s"] = single["new_tokens"] / single["seconds"]
    rows["generation: batched speed-up (target >= 5)"] = single["seconds"] / batched["seconds"] * \
        batched["new_tokens"] / max(1, single["new_tokens"]) if single["new_tokens"] else float("nan")

    print(f"{'measure':60s} {'value':>12s}")
    for k, v in rows.items():
        print(f"{k:60s} {v:12.2f}" if isinstance(v, float) else f"{k:60s} {v:>12s}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
