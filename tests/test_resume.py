"""Preemption and crashes cost minutes: fine-tuning and generation resume where they stopped, and
give the same adapter and the same generations as an uninterrupted run; nothing half-written
ever sits at an output path.

A tiny word-level Qwen2 model stands in for the base model. Fine-tuning is killed with SIGKILL
from outside (a subprocess) after it has written a resume checkpoint, and also crashed by an
exception; generation is crashed in its second batch.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ARCH = {"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 2, "max_length": 256}
SNAME, CNAME = "trait_distillation_french_playful", "PlayfulInoc"
# 8 examples in batches of 2: 4 steps per epoch, so 7 steps cross into a second (reshuffled)
# epoch; a resume checkpoint every 3 steps resumes mid-epoch (step 3 of 4). Warm-up exercises
# the scheduler state, logging every step the loss log, step 2 a learning-curve adapter, and LoRA
# dropout the restored RNG state (without it the resumed adapter differs by about 1e-2).
LORA = {"n_train": 8, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.2, "learning_rate": 5e-3, "batch_size": 2,
        "epochs": 2, "max_steps": 7, "warmup_steps": 2, "max_length": 256, "dtype": "float32", "logging_steps": 1,
        "checkpoint_steps": [2]}
SAVE_EVERY = 3
SEED = 7
KILL_AT = 5  # the killed run stops in step 5: after the checkpoint at 3, before the one at 6


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.fixture(scope="module")
def tiny(config, tmp_path_factory):
    """A tiny base model saved as the workflow saves one, a cell's training records and eval items."""
    from ipcond import data as dt
    from ipcond import prompts as pr
    from ipcond.modeling import MODEL_CARD, build_toy_model, build_word_tokenizer
    from ipcond.provenance import write_json

    setup = config["setups"][SNAME]
    evals = dt.eval_items(SNAME, setup, 6)
    items = dt.train_items(SNAME, setup, LORA["n_train"], 1, {e["instruction"] for e in evals})
    records = dt.cell_train_records(setup, CNAME, items, [pr.condition_prompt(setup, CNAME)] * len(items))
    texts = [m["content"] for r in records for m in r["messages"]] + [e["instruction"] for e in evals]
    texts += [setup["eval_prompt"], "system user assistant"]
    base = tmp_path_factory.mktemp("base")
    tok = build_word_tokenizer(texts, base)
    build_toy_model(len(tok), ARCH, seed=0).save_pretrained(base)
    write_json(base / MODEL_CARD, {"tokenizer": "word_level"})
    return base, records, evals


@pytest.fixture(scope="module")
def uninterrupted(tiny, tmp_path_factory):
    """The reference: one uninterrupted fine-tune, without resume checkpoints."""
    from ipcond.training import finetune_lora

    base, records, _ = tiny
    out = tmp_path_factory.mktemp("ref") / "adapter"
    summary = finetune_lora(base, records, out, LORA, seed=SEED, threads=1)
    assert summary["steps"] == LORA["max_steps"] and summary["resumed_from_step"] == 0
    return out


def tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def max_abs_diff(a: Path, b: Path) -> float:
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys() and any("lora_B" in k for k in ta)
    return max(float((ta[k] - tb[k]).abs().max()) for k in ta)


def assert_same_adapter(ref: Path, got: Path) -> None:
    """Bit for bit on CPU (measured: max abs difference 0.0), checkpoints and loss log included."""
    assert max_abs_diff(ref, got) == 0.0
    assert max_abs_diff(ref / "checkpoints" / "step00002", got / "checkpoints" / "step00002") == 0.0
    assert sorted(p.name for p in (got / "checkpoints").iterdir()) == ["step00002"]
    s_ref = json.loads((ref / "training_summary.json").read_text())
    s_got = json.loads((got / "training_summary.json").read_text())
    assert s_got["losses"] == s_ref["losses"] and s_got["train_loss"] == s_ref["train_loss"]
    assert s_got["steps"] == s_ref["steps"] == LORA["max_steps"]


def no_leftovers(out: Path) -> None:
    from ipcond.training import resume_dir_for

    assert not resume_dir_for(out).exists()
    assert not list(out.parent.glob(f".{out.name}.*")), "temporary folders left behind"


KILLED_RUN = """
import json, sys, time
from pathlib import Path
from ipcond.training import finetune_lora

base, records, out, cfg, marker = sys.argv[1], json.loads(Path(sys.argv[2]).read_text()), sys.argv[3], \\
    json.loads(sys.argv[4]), Path(sys.argv[5])

def on_log(entry):  # stop (until killed) once step KILL_AT is logged
    if entry["step"] == int(sys.argv[6]):
        marker.write_text("paused")
        time.sleep(600)

finetune_lora(base, records, out, cfg, seed=int(sys.argv[7]), threads=1, on_log=on_log)
"""


def test_training_killed_with_sigkill_resumes_to_the_same_adapter(tiny, uninterrupted, tmp_path, capsys):
    from ipcond.training import complete_checkpoint_step, finetune_lora, resume_dir_for

    base, records, _ = tiny
    out = tmp_path / "cell" / "adapter"
    resume = resume_dir_for(out)
    cfg = {**LORA, "save_every_steps": SAVE_EVERY}
    (tmp_path / "records.json").write_text(json.dumps(records))
    marker = tmp_path / "paused"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(base), str(tmp_path / "records.json"), str(out),
                             json.dumps(cfg), str(marker), str(KILL_AT), str(SEED)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 180
        while not marker.exists():
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.time() < deadline, "the training subprocess never reached the kill point"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    log = proc.stdout.read().decode()
    assert proc.returncode == -signal.SIGKILL
    assert f"resume checkpoint at step {SAVE_EVERY}/{LORA['max_steps']}" in log, log[-3000:]

    # What the kill left: no output (only the hidden temporary folder), the resume state outside it.
    assert not out.exists()
    assert list(out.parent.glob(".adapter.*.tmp"))
    assert complete_checkpoint_step(resume / f"checkpoint-{SAVE_EVERY}") == SAVE_EVERY
    assert (resume / "checkpoints" / "step00002" / "adapter_model.safetensors").is_file()
    # A checkpoint cut short (as by a kill during the Trainer's save) is never resumed from.
    for cut in (resume / "checkpoint-6", resume / "staging" / "checkpoint-6"):
        cut.mkdir(parents=True)
        (cut / "adapter_model.safetensors").write_bytes(b"\0" * 10)
        (cut / "trainer_state.json").write_text('{"global_step": 6, "log_hist')
    assert complete_checkpoint_step(resume / "checkpoint-6") is None

    capsys.readouterr()
    summary = finetune_lora(base, records, out, cfg, seed=SEED, threads=1)
    printed = capsys.readouterr().out
    assert f"resuming from step {SAVE_EVERY} of {LORA['max_steps']}" in printed
    assert summary["resumed_from_step"] == SAVE_EVERY
    assert_same_adapter(uninterrupted, out)
    no_leftovers(out)


def test_training_crashed_by_an_exception_leaves_no_output_and_resumes(tiny, uninterrupted, tmp_path):
    from ipcond.training import finetune_lora, resume_dir_for

    base, records, _ = tiny
    out = tmp_path / "adapter"
    cfg = {**LORA, "save_every_steps": SAVE_EVERY}

    def crash(entry):
        if entry["step"] == KILL_AT:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune_lora(base, records, out, cfg, seed=SEED, threads=1, on_log=crash)
    assert not out.exists() and not list(tmp_path.glob(".adapter.*"))
    assert (resume_dir_for(out) / f"checkpoint-{SAVE_EVERY}").is_dir()
    summary = finetune_lora(base, records, out, cfg, seed=SEED, threads=1)
    assert summary["resumed_from_step"] == SAVE_EVERY
    assert_same_adapter(uninterrupted, out)
    no_leftovers(out)


def test_resume_state_made_for_another_config_is_discarded(tiny, tmp_path):
    """Only the matching fingerprint's checkpoints are resumed from (and resume off removes them)."""
    from ipcond.training import _prepare_resume_dir, training_fingerprint

    base, records, _ = tiny
    resume = tmp_path / "adapter.resume"
    fp = training_fingerprint(base, records, LORA, SEED)
    assert fp == training_fingerprint(base, records, {**LORA, "threads": 4, "save_every_steps": 5}, SEED)
    assert fp != training_fingerprint(base, records, {**LORA, "learning_rate": 1e-3}, SEED)
    assert fp != training_fingerprint(base, records, LORA, SEED + 1)
    assert fp != training_fingerprint(base, records[:-1], LORA, SEED)
    assert _prepare_resume_dir(resume, fp) is None
    ckpt = resume / "checkpoint-3"
    ckpt.mkdir()
    for f in ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth", "adapter_model.safetensors"):
        (ckpt / f).write_text('{"global_step": 3}' if f == "trainer_state.json" else "x")
    assert _prepare_resume_dir(resume, fp) == (3, ckpt)
    assert _prepare_resume_dir(resume, training_fingerprint(base, records, LORA, SEED + 1)) is None
    assert not ckpt.exists()


# ------------------------------------------------------------------------------------------
# Generation


def gen_config(config: dict, base: Path) -> dict:
    cfg = copy.deepcopy(config)
    cfg["base_model"] = {"kind": "pretrained", "path": str(base)}
    cfg["generation"].update(n_eval=6, batch_size=2, max_new_tokens=6, temperature=1.0)
    return cfg


class Counting:
    """Counts the backend's generate calls; raises in call ``fail_at`` (1-based)."""

    def __init__(self, monkeypatch, fail_at: int | None = None):
        from ipcond.generation import TransformersBackend

        monkeypatch.undo()  # one wrapper at a time, around the real method
        self.calls, self.fail_at = 0, fail_at
        original = TransformersBackend.generate

        def generate(backend, conversations, params):
            self.calls += 1
            if self.calls == self.fail_at:
                raise RuntimeError("simulated crash in generation")
            return original(backend, conversations, params)

        monkeypatch.setattr(TransformersBackend, "generate", generate)


def test_generation_resumes_with_the_same_generations(config, tiny, uninterrupted, tmp_path, monkeypatch):
    from ipcond.stages.cell import generate_cell, generation_partial_path
    from ipcond.provenance import read_jsonl, write_jsonl

    base, records, evals = tiny
    cfg = gen_config(config, base)
    write_jsonl(tmp_path / "eval.jsonl", evals)
    write_jsonl(tmp_path / "train.jsonl", records)
    n_batches = 3 * 3  # default, none and train contexts (all different prompts) x 6 items / 2

    def run(out: Path, counter: Counting) -> list[dict]:
        generate_cell(cfg, SNAME, CNAME, 1, str(tmp_path / "eval.jsonl"), str(tmp_path / "train.jsonl"),
                      str(uninterrupted), str(out), threads=1)
        return read_jsonl(out)

    ref_counter = Counting(monkeypatch)
    ref = run(tmp_path / "ref" / "generations.jsonl", ref_counter)
    assert ref_counter.calls == n_batches and len(ref) == 3 * 6
    assert not Path(generation_partial_path(str(tmp_path / "ref" / "generations.jsonl"))).exists()
    assert len({r["response"] for r in ref}) > 1

    out = tmp_path / "cell" / "generations.jsonl"
    partial = Path(generation_partial_path(str(out)))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(out, Counting(monkeypatch, fail_at=2))
    # The crash left no output (nor its provenance), only the first batch in the partial file.
    assert not out.exists() and not Path(str(out) + ".provenance.json").exists()
    assert len(partial.read_text().splitlines()) == 1
    saved = partial.read_bytes()
    with open(partial, "ab") as f:  # and a line cut short, as by a kill during the append
        f.write(b'{"key": "0123", "tag": "default", "responses": ["half')

    counter = Counting(monkeypatch)
    assert run(out, counter) == ref
    assert counter.calls == n_batches - 1
    assert json.loads(Path(str(out) + ".provenance.json").read_text())["resumed_batches"] == 1
    assert not partial.exists() and not list(out.parent.glob(".generations.jsonl.*"))

    # Rows made under other sampling parameters are not reused.
    out.unlink()
    partial.write_bytes(saved)
    cfg["generation"]["max_new_tokens"] = 5
    counter = Counting(monkeypatch)
    run(out, counter)
    assert counter.calls == n_batches


def test_an_exception_mid_write_leaves_no_output_file(tmp_path):
    from ipcond.provenance import write_jsonl

    def rows():
        yield {"a": 1}
        raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError):
        write_jsonl(tmp_path / "out.jsonl", rows())
    assert list(tmp_path.iterdir()) == []


def test_fine_tuning_stops_on_an_over_long_example_and_records_the_length_check(tiny, uninterrupted, tmp_path):
    """TRL truncates examples longer than max_length without a word: finetune_lora counts them first."""
    from ipcond.data import DataError
    from ipcond.training import finetune_lora

    base, records, _ = tiny
    summary = json.loads((uninterrupted / "training_summary.json").read_text())
    check = summary["length_check"]
    assert check["n_checked"] == len(records) and check["too_long"] == [] and 0 < check["max_tokens"] <= 256
    short = dict(LORA, max_length=check["max_tokens"] - 1)
    with pytest.raises(DataError) as err:
        finetune_lora(base, records, tmp_path / "adapter", short, seed=SEED, threads=1,
                      source="cell/train.jsonl", lines=list(range(1, len(records) + 1)))
    msg = str(err.value)
    assert "cell/train.jsonl" in msg and "training.max_length" in msg
    assert not (tmp_path / "adapter").exists()
