"""Training: pretraining of the toy base model, and LoRA fine-tuning through TRL + PEFT.

The LoRA path is the one the paper scale uses too; only the config differs (model, precision,
batch sizes, devices). Loss is on assistant tokens only in both.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from .data import check_lengths
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


def has_generation_markers(chat_template: Any) -> bool:
    """Whether a chat template marks the assistant's text with TRL's ``{% generation %}`` tags."""
    if isinstance(chat_template, dict):
        chat_template = chat_template.get("default", "")
    return bool(chat_template) and re.search(r"\{%-?\s*generation\s*-?%\}", chat_template) is not None


def assistant_only_masks(tokenizer: Any, conversations: list[list[dict]]) -> list[tuple[list[int], list[int]]]:
    """Token ids and assistant masks (1 = the loss counts the token) for chats whose last message
    is the assistant's, with any chat template, including one without generation markers.

    Each conversation is rendered twice with the tokenizer's own template (left as it is): the
    prefix (the messages before the answer, with the generation prompt) and the whole
    conversation. The prefix's tokens must be a token prefix of the whole one's (else
    ``ValueError``: the template renders the answer's turn differently from its generation
    prompt); the mask is 1 from there up to and including the first end-of-turn token (the
    tokenizer's ``eos_token``, ``<|im_end|>`` in ChatML), so the model learns the answer and to
    stop, and 0 on the prompt, the default system prompt a template adds, and what follows the
    end-of-turn token (ChatML's newline). Raises ``ValueError`` naming the conversation when the
    answer has no end-of-turn token.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token: the end of the assistant's turn cannot be found")
    out = []
    for i, msgs in enumerate(conversations):
        if not msgs or msgs[-1]["role"] != "assistant":
            raise ValueError(f"conversation {i}: the last message is not the assistant's")
        prefix = tokenizer.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(msgs, tokenize=False)
        p_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        if ids[:len(p_ids)] != p_ids:
            raise ValueError(f"conversation {i}: the chat template's generation prompt is not a token prefix of the "
                             "rendered conversation, so the answer's tokens cannot be told apart; use a template "
                             "with {% generation %} markers")
        try:
            end = ids.index(eos, len(p_ids))
        except ValueError:
            raise ValueError(f"conversation {i}: the rendered answer has no end-of-turn token "
                             f"({tokenizer.eos_token!r})") from None
        out.append((ids, [0] * len(p_ids) + [1] * (end + 1 - len(p_ids)) + [0] * (len(ids) - end - 1)))
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


# ------------------------------------------------------------------------------------------
# Resume state of a LoRA fine-tune
#
# <out_dir>.resume/                 next to the adapter, outside the Snakemake output (which
#                                   Snakemake deletes when a job fails)
#     run.json                      fingerprint of what is trained; other contents are discarded
#     checkpoint-<N>/               the last complete Trainer checkpoint: adapter, optimizer,
#                                   scheduler, RNG states, trainer_state.json
#     checkpoints/stepNNNNN/        learning-curve adapters written so far
#     staging/                      where the Trainer writes a checkpoint; it is moved up to
#                                   checkpoint-<N> (one rename) only once complete and synced
# ------------------------------------------------------------------------------------------

RESUME_SUFFIX = ".resume"
_CHECKPOINT_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth")


def resume_dir_for(out_dir: str | os.PathLike) -> Path:
    """Where a fine-tune writing ``out_dir`` keeps its resume state: ``<out_dir>.resume``."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + RESUME_SUFFIX)


def complete_checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step of a Trainer checkpoint folder ``checkpoint-<N>`` if it is complete, else None.

    Complete: its trainer_state.json parses and says step N, and the optimizer, scheduler, RNG
    state and adapter files are there. A folder cut short by a kill fails one of these.
    """
    path = Path(path)
    m = re.fullmatch(r"checkpoint-(\d+)", path.name)
    if not m or not path.is_dir():
        return None
    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None
    step = int(m.group(1))
    if not isinstance(state, dict) or state.get("global_step") != step:
        return None
    if not all((path / f).is_file() for f in _CHECKPOINT_FILES) or not any(path.glob("adapter_model.*")):
        return None
    return step


def latest_resume_checkpoint(resume_dir: str | os.PathLike) -> tuple[int, Path] | None:
    """(step, folder) of the latest complete checkpoint in ``resume_dir``, or None."""
    resume_dir = Path(resume_dir)
    if not resume_dir.is_dir():
        return None
    found = [(step, d) for d in resume_dir.glob("checkpoint-*") if (step := complete_checkpoint_step(d)) is not None]
    return max(found, key=lambda x: x[0]) if found else None


def training_fingerprint(base_model: str | os.PathLike, train_records: list[dict], cfg: dict, seed: int) -> str:
    """SHA-256 of everything that decides the adapter: resume state made for another one is discarded.

    The base model counts by path and, for a local folder, by its files' names, sizes and
    modification times (a rebuilt base model invalidates resume state; hashing weights would cost
    minutes at paper scale). ``threads`` and ``save_every_steps`` do not count.
    """
    from .provenance import package_versions

    base = Path(base_model)
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in base.iterdir() if p.is_file()) \
        if base.is_dir() else []
    blob = json.dumps({"base_model": str(base_model), "base_files": files, "records": train_records,
                       "training": {k: v for k, v in cfg.items() if k not in ("threads", "save_every_steps")}, "seed": seed,
                       "versions": package_versions(["torch", "transformers", "peft", "trl", "accelerate"])},
                      sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _fsync_tree(root: Path) -> None:
    """Flush a folder's files and the folder itself to disk (a preempted machine loses page cache)."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _prepare_resume_dir(resume_dir: Path, fingerprint: str) -> tuple[int, Path] | None:
    """Make ``resume_dir`` hold state for this fingerprint only; return its latest checkpoint."""
    marker = resume_dir / "run.json"
    if resume_dir.exists():
        try:
            same = json.loads(marker.read_text()).get("fingerprint") == fingerprint
        except (OSError, ValueError, AttributeError):
            same = False
        if not same:
            _log(f"discarding resume state in {resume_dir}: it was made for another config, data or base model")
            shutil.rmtree(resume_dir)
    resume_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(resume_dir / "staging", ignore_errors=True)  # a checkpoint cut short by a kill
    for p in (resume_dir / "checkpoints").glob(".*.tmp"):  # a learning-curve adapter cut short
        shutil.rmtree(p, ignore_errors=True)
    if not marker.exists():
        write_json(marker, {"fingerprint": fingerprint})
    return latest_resume_checkpoint(resume_dir)


def _remove_stale_temp_dirs(out_dir: Path) -> None:
    """Temporary folders of ``atomic_dir(out_dir)`` left by a killed run (a kill skips clean-up)."""
    for p in out_dir.parent.glob(f".{out_dir.name}.*.tmp"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def _loss_summary(log_history: list[dict]) -> tuple[list[dict], float]:
    """Logged losses and their step-weighted mean (the mean training loss over all steps)."""
    losses = [{"step": int(e["step"]), "loss": float(e["loss"])} for e in log_history if "loss" in e and "step" in e]
    total, prev = 0.0, 0
    for e in losses:
        total += e["loss"] * (e["step"] - prev)
        prev = e["step"]
    return losses, total / max(prev, 1)


def _plain_loss_trainer(sft_trainer: type) -> type:
    """SFTTrainer with the model's own cross-entropy over full logits instead of TRL's fused,
    chunked LM-head loss (``training.fused_lm_head: false``).

    The fused loss never builds the (batch, length, vocabulary) logits: it saves memory at a
    150k-token vocabulary, which is why paper-scale runs keep it. For the toy model it is the
    slower choice (about 40% of a CPU training step). Data preparation, assistant-only labels,
    batching, optimiser and schedule are TRL's either way; a test checks both give the same loss.
    """
    from transformers import Trainer

    class PlainLossSFTTrainer(sft_trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return PlainLossSFTTrainer


def _qlora_config(use_cuda: bool) -> Any:
    """4-bit NF4 quantization of the base model (QLoRA), with a clear error where it cannot run."""
    if not use_cuda:
        raise RuntimeError("training.load_in_4bit (QLoRA) needs a CUDA GPU, and none is available here; "
                           "set training.load_in_4bit: false to train the full-precision base model")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise RuntimeError("training.load_in_4bit (QLoRA) needs bitsandbytes: pip install bitsandbytes") from e
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def finetune_lora(base_model: str | os.PathLike, train_records: list[dict], out_dir: str | os.PathLike,
                  cfg: dict, seed: int, threads: int | None = None,
                  on_log: Callable[[dict], None] | None = None,
                  finalize: Callable[[Path, dict], None] | None = None,
                  source: str = "training records", lines: list[int] | None = None) -> dict:
    """LoRA fine-tuning with TRL's SFTTrainer, loss on assistant tokens only.

    ``cfg`` is the ``training`` section of the config. Writes the adapter to ``out_dir``
    (atomically) and returns a summary (steps, losses, time). ``finalize(folder, summary)`` may
    add files (provenance) to the adapter's folder before it is moved into place.

    With ``cfg["save_every_steps"] = N > 0``, a full Trainer checkpoint (adapter, optimizer,
    scheduler, RNG states, trainer state) is kept every N optimizer steps in
    ``<out_dir>.resume/`` (see :func:`resume_dir_for`); a re-run after a kill resumes from the
    latest complete one and gives the same adapter as an uninterrupted run. The resume folder is
    deleted once the adapter is in place.

    Every record is first counted against ``cfg["max_length"]`` (TRL would silently truncate a
    longer one): any over it stops the run with their lines in ``source`` (``lines``) and the fix;
    the count is in the summary as ``length_check``.
    """
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from .modeling import load_tokenizer

    if threads:
        torch.set_num_threads(threads)
    out_dir = Path(out_dir)
    save_every = int(cfg.get("save_every_steps") or 0)
    resume_dir = resume_dir_for(out_dir)
    _remove_stale_temp_dirs(out_dir)
    resume_from: tuple[int, Path] | None = None
    if save_every > 0:
        resume_from = _prepare_resume_dir(resume_dir, training_fingerprint(base_model, train_records, cfg, seed))
    elif resume_dir.exists():
        shutil.rmtree(resume_dir)

    use_cuda = torch.cuda.is_available() and cfg.get("device", "auto") != "cpu"
    dtype = getattr(torch, cfg.get("dtype", "float32")) if use_cuda else torch.float32
    tokenizer = load_tokenizer(base_model)
    tokenizer.padding_side = "right"
    length_check = check_lengths(train_records, int(cfg.get("max_length", 1024)), tokenizer, source=source,
                                 lines=lines, max_length_key="training.max_length").to_dict()
    quantization = None
    if cfg.get("load_in_4bit"):
        quantization = _qlora_config(use_cuda)
    model = AutoModelForCausalLM.from_pretrained(str(base_model), dtype=dtype, quantization_config=quantization,
                                                 **({"device_map": {"": 0}} if quantization else {}))
    if quantization is not None:
        # TRL leaves this to the caller: norms in fp32, input gradients on for checkpointing.
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=bool(cfg.get("gradient_checkpointing", False)))
    if has_generation_markers(tokenizer.chat_template):
        # TRL's own assistant masks, from the template's {% generation %} markers (the toy model's).
        ds = Dataset.from_list([{"messages": r["messages"]} for r in train_records])
        assistant_masks = "generation markers"
    else:
        # A template without markers (SmolLM2's, Qwen2.5's as shipped): TRL refuses or swaps the
        # template; we keep the model's own and mask by rendering (assistant_only_masks).
        ds = Dataset.from_list([{"input_ids": ids, "assistant_masks": mask} for ids, mask in
                                assistant_only_masks(tokenizer, [r["messages"] for r in train_records])])
        assistant_masks = "rendered prefix"

    lora = LoraConfig(r=cfg["lora_r"], lora_alpha=cfg["lora_alpha"], lora_dropout=cfg.get("lora_dropout", 0.0),
                      target_modules=cfg.get("target_modules", "all-linear"),
                      use_rslora=cfg.get("use_rslora", False), task_type="CAUSAL_LM")

    class _Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                entry = {"step": state.global_step, "loss": float(logs["loss"])}
                _log(f"finetune step {state.global_step}/{state.max_steps} loss {entry['loss']:.4f}")
                if on_log:
                    on_log(entry)

    checkpoint_steps = set(cfg.get("checkpoint_steps") or [])

    class _Checkpoints(TrainerCallback):
        """Adapters at the configured steps, for learning curves (the final one is the adapter)."""

        def __init__(self, root: Path):
            self.root = root

        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step in checkpoint_steps and state.global_step < state.max_steps:
                with atomic_dir(self.root / checkpoint_name(state.global_step)) as t:
                    model.save_pretrained(str(t))

    class _ResumeState(TrainerCallback):
        """Commits each Trainer checkpoint into the resume folder once complete; keeps the last."""

        def on_step_end(self, args, state, control, **kw):
            if state.global_step >= state.max_steps:
                control.should_save = False  # the adapter itself comes next: no resume state needed
                control.should_log = True
            elif control.should_save:
                # Log where a checkpoint is cut, so that the logged losses of a resumed run are
                # the same as those of an uninterrupted one (a resumed Trainer starts a new average).
                control.should_log = True
            return control

        def on_save(self, args, state, control, **kw):
            src = resume_dir / "staging" / f"checkpoint-{state.global_step}"
            if complete_checkpoint_step(src) is None:
                raise RuntimeError(f"the Trainer's checkpoint {src} is incomplete")
            _fsync_tree(src)
            dst = resume_dir / src.name
            if dst.exists():
                shutil.rmtree(dst)
            os.replace(src, dst)
            _fsync_dir(resume_dir)
            for old in resume_dir.glob("checkpoint-*"):
                if old != dst:
                    shutil.rmtree(old, ignore_errors=True)
            _log(f"resume checkpoint at step {state.global_step}/{state.max_steps} in {dst}")

    with atomic_dir(out_dir) as tmp:
        curve_root = resume_dir / "checkpoints" if save_every > 0 else tmp / "checkpoints"
        callbacks = [_Progress(), _Checkpoints(curve_root)]
        if save_every > 0:
            callbacks.append(_ResumeState())
        args = SFTConfig(
            output_dir=str(resume_dir / "staging" if save_every > 0 else tmp / "trainer"),
            per_device_train_batch_size=cfg["batch_size"],
            gradient_accumulation_steps=cfg.get("grad_accum", 1),
            learning_rate=cfg["learning_rate"],
            num_train_epochs=cfg.get("epochs", 1),
            max_steps=cfg.get("max_steps", -1) or -1,
            lr_scheduler_type=cfg.get("lr_scheduler", "linear"),
            warmup_steps=cfg.get("warmup_steps", 0),
            weight_decay=cfg.get("weight_decay", 0.0),
            logging_steps=cfg.get("logging_steps", 10),
            save_strategy="steps" if save_every > 0 else "no",
            save_steps=save_every if save_every > 0 else 500,
            save_total_limit=None,
            report_to="none",
            seed=seed,
            data_seed=seed,
            bf16=use_cuda and cfg.get("dtype") == "bfloat16",
            fp16=False,
            use_cpu=not use_cuda,
            gradient_checkpointing=bool(cfg.get("gradient_checkpointing", False)) and use_cuda,
            assistant_only_loss=assistant_masks == "generation markers",  # else: our masks
            # Padding-free without packing: TRL cannot truncate, and need not (check_lengths above
            # stopped any record over max_length).
            max_length=None if cfg.get("padding_free") and not cfg.get("packing") else cfg.get("max_length", 1024),
            packing=bool(cfg.get("packing", False)),
            padding_free=bool(cfg.get("padding_free", False)),
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        t0 = time.time()
        trainer_class = SFTTrainer if cfg.get("fused_lm_head", True) else _plain_loss_trainer(SFTTrainer)
        trainer = trainer_class(model=model, args=args, train_dataset=ds, processing_class=tokenizer,
                                peft_config=lora, callbacks=callbacks)
        if resume_from is not None:
            step, ckpt = resume_from
            total = json.loads((ckpt / "trainer_state.json").read_text()).get("max_steps", "?")
            _log(f"resuming from step {step} of {total} ({ckpt})")
            result = trainer.train(resume_from_checkpoint=str(ckpt))
        else:
            if save_every > 0:
                _log(f"no resume checkpoint in {resume_dir}: training from step 0 "
                     f"(a resume checkpoint every {save_every} steps)")
            result = trainer.train()
        trainer.model.save_pretrained(str(tmp))
        shutil.rmtree(tmp / "trainer", ignore_errors=True)
        if save_every > 0 and curve_root.is_dir():
            os.replace(curve_root, tmp / "checkpoints")
        losses, train_loss = _loss_summary(trainer.state.log_history)
        summary = {
            "steps": trainer.state.global_step,
            "length_check": length_check,
            "assistant_masks": assistant_masks,
            "train_loss": train_loss,
            "train_seconds": round(time.time() - t0, 2),
            "loop_seconds": round(float(result.metrics.get("train_runtime", float("nan"))), 2),  # the steps alone
            "n_examples": len(train_records),
            "resumed_from_step": resume_from[0] if resume_from else 0,
            "losses": losses,
        }
        write_json(tmp / "training_summary.json", summary)
        if finalize is not None:
            finalize(tmp, summary)
    if resume_dir.exists():
        shutil.rmtree(resume_dir, ignore_errors=True)
    return summary
