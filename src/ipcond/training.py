"""Training: pretraining of the toy base model, and LoRA fine-tuning through TRL + PEFT.

The LoRA path is the one the paper scale uses too; only the config differs (model, precision,
batch sizes, devices). Loss is on assistant tokens only in both.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

from .provenance import atomic_dir, write_json


def _log(msg: str) -> None:
    print(msg, flush=True)


def encode_chat(tokenizer: Any, records: list[dict], max_length: int) -> list[tuple[list[int], list[int]]]:
    """Token ids and labels (-100 outside the assistant's answer) for chat records.

    The prompt is rendered with the chat template's generation prompt; the answer ends with the
    end-of-turn token so that the model learns to stop. Records longer than ``max_length`` raise:
    nothing is silently truncated.
    """
    out = []
    for i, rec in enumerate(records):
        msgs = rec["messages"]
        prompt = tokenizer.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tokenizer(msgs[-1]["content"] + " " + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        ids = p_ids + a_ids
        if len(ids) > max_length:
            raise ValueError(f"record {i} has {len(ids)} tokens, more than max_length={max_length}; "
                             "raise base_model.toy.max_length or shorten the toy texts")
        out.append((ids, [-100] * len(p_ids) + a_ids))
    return out


def pretrain_toy_model(model: Any, tokenizer: Any, records: list[dict], *, steps: int, batch_size: int,
                       lr: float, warmup: int, max_length: int, seed: int,
                       log_every: int = 50) -> list[dict]:
    """Plain PyTorch pretraining loop (full fine-tuning from random init). Returns the loss log."""
    import torch

    torch.manual_seed(seed)
    data = encode_chat(tokenizer, records, max_length)
    pad = tokenizer.pad_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:  # linear warm-up, cosine decay to 10%
        if step < warmup:
            return (step + 1) / warmup
        frac = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    log, t0, running = [], time.time(), 0.0
    for step in range(steps):
        idx = torch.randint(len(data), (batch_size,), generator=gen).tolist()
        width = max(len(data[i][0]) for i in idx)
        ids = torch.full((batch_size, width), pad, dtype=torch.long)
        labels = torch.full((batch_size, width), -100, dtype=torch.long)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for row, i in enumerate(idx):  # right padding for training
            x, y = data[i]
            ids[row, : len(x)] = torch.tensor(x)
            labels[row, : len(y)] = torch.tensor(y)
            mask[row, : len(x)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        running += loss.item()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            n = (step % log_every) + 1
            entry = {"step": step + 1, "loss": running / n, "elapsed_s": round(time.time() - t0, 1)}
            log.append(entry)
            _log(f"pretrain step {step + 1}/{steps} loss {entry['loss']:.4f} ({entry['elapsed_s']} s)")
            running = 0.0
    model.eval()
    return log


def checkpoint_name(step: int) -> str:
    return f"step{step:05d}"


def finetune_lora(base_model: str | os.PathLike, train_records: list[dict], out_dir: str | os.PathLike,
                  cfg: dict, seed: int, threads: int | None = None,
                  on_log: Callable[[dict], None] | None = None) -> dict:
    """LoRA fine-tuning with TRL's SFTTrainer, loss on assistant tokens only.

    ``cfg`` is the ``training`` section of the config. Writes the adapter to ``out_dir``
    (atomically) and returns a summary (steps, losses, time).
    """
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from .modeling import load_tokenizer

    if threads:
        torch.set_num_threads(threads)
    use_cuda = torch.cuda.is_available() and cfg.get("device", "auto") != "cpu"
    dtype = getattr(torch, cfg.get("dtype", "float32")) if use_cuda else torch.float32
    tokenizer = load_tokenizer(base_model)
    tokenizer.padding_side = "right"
    model = AutoModelForCausalLM.from_pretrained(str(base_model), dtype=dtype)
    ds = Dataset.from_list([{"messages": r["messages"]} for r in train_records])

    lora = LoraConfig(r=cfg["lora_r"], lora_alpha=cfg["lora_alpha"], lora_dropout=cfg.get("lora_dropout", 0.0),
                      target_modules=cfg.get("target_modules", "all-linear"),
                      use_rslora=cfg.get("use_rslora", False), task_type="CAUSAL_LM")
    losses: list[dict] = []

    class _Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                entry = {"step": state.global_step, "loss": float(logs["loss"])}
                losses.append(entry)
                _log(f"finetune step {state.global_step}/{state.max_steps} loss {entry['loss']:.4f}")
                if on_log:
                    on_log(entry)

    out_dir = Path(out_dir)
    checkpoint_steps = set(cfg.get("checkpoint_steps") or [])

    class _Checkpoints(TrainerCallback):
        """Adapters at the configured steps, for learning curves (the final one is the adapter)."""

        def __init__(self, root: Path):
            self.root = root

        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step in checkpoint_steps and state.global_step < state.max_steps:
                model.save_pretrained(str(self.root / checkpoint_name(state.global_step)))

    with atomic_dir(out_dir) as tmp:
        args = SFTConfig(
            output_dir=str(tmp / "trainer"),
            per_device_train_batch_size=cfg["batch_size"],
            gradient_accumulation_steps=cfg.get("grad_accum", 1),
            learning_rate=cfg["learning_rate"],
            num_train_epochs=cfg.get("epochs", 1),
            max_steps=cfg.get("max_steps", -1) or -1,
            lr_scheduler_type=cfg.get("lr_scheduler", "linear"),
            warmup_steps=cfg.get("warmup_steps", 0),
            weight_decay=cfg.get("weight_decay", 0.0),
            logging_steps=cfg.get("logging_steps", 10),
            save_strategy="no",
            report_to="none",
            seed=seed,
            data_seed=seed,
            bf16=use_cuda and cfg.get("dtype") == "bfloat16",
            fp16=False,
            use_cpu=not use_cuda,
            gradient_checkpointing=bool(cfg.get("gradient_checkpointing", False)) and use_cuda,
            assistant_only_loss=True,
            max_length=cfg.get("max_length", 1024),
            packing=False,
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        t0 = time.time()
        trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer,
                             peft_config=lora, callbacks=[_Progress(), _Checkpoints(tmp / "checkpoints")])
        result = trainer.train()
        trainer.model.save_pretrained(str(tmp))
        import shutil

        shutil.rmtree(tmp / "trainer", ignore_errors=True)
        summary = {
            "steps": trainer.state.global_step,
            "train_loss": float(result.training_loss),
            "train_seconds": round(time.time() - t0, 2),
            "n_examples": len(train_records),
            "losses": losses,
        }
        write_json(tmp / "training_summary.json", summary)
    return summary
