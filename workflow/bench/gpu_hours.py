#!/usr/bin/env python3
"""Estimate the GPU-hours of a config's grid (the paper preset's, or any other) from its cells and
stated throughputs, before spending them.

Usage: python workflow/bench/gpu_hours.py [--config presets/paper.yaml] [--gpu-json gpu_check.json]
           [--tokens-per-example 350] [--mfu 0.35] [--peak-tflops 989] [--decode-tokens-per-s 6000]

Per cell: training tokens = examples seen (``n_train`` x ``epochs``, or ``max_steps`` x batch) x
tokens per example (measured from the cell's ``train.jsonl`` when it exists, else
``--tokens-per-example``); training time = tokens / training throughput; generation tokens =
eval items x eval contexts (3) x ``max_new_tokens`` (an upper bound: answers stop early), plus the
learning-curve points; each model job also pays a model load. Throughputs come from a
``gpu_check.py bench`` JSON of the same model shape where given, else from the stated MFU and peak
(training: 6 x parameters FLOPs per token with gradient checkpointing) and decode rate.
Prints the assumptions, then one row per setup and the total.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))

# Parameters of the models the presets name (billions); a toy model counts its own.
MODEL_PARAMS_B = {"qwen2.5-0.5b": 0.49, "qwen2.5-1.5b": 1.54, "qwen2.5-3b": 3.09, "qwen2.5-7b": 7.62,
                  "qwen2.5-14b": 14.7, "qwen2.5-32b": 32.8, "qwen2.5-coder-32b": 32.8}
DECODE_SCALE_7B = 7.62  # --decode-tokens-per-s is for a 7B model; larger ones decode proportionally slower


def model_params(config: dict, setup: dict) -> float:
    """Parameters of the cell's base model, in billions."""
    path = str(setup.get("base_model", config["base_model"].get("path")) or "")
    if config["base_model"]["kind"] == "toy":
        toy = config["base_model"]["toy"]
        h, i, n = toy["hidden_size"], toy["intermediate_size"], toy["num_layers"]
        return n * (4 * h * h + 3 * h * i) / 1e9
    name = path.rstrip("/").split("/")[-1].lower().removesuffix("-instruct")
    for key, b in MODEL_PARAMS_B.items():
        if name.startswith(key):
            return b
    m = re.search(r"(\d+(?:\.\d+)?)b", name)
    if m:
        return float(m.group(1))
    raise SystemExit(f"cannot tell the size of base model {path!r}; add it to MODEL_PARAMS_B")


def tokens_per_example(cell_train: Path, default: float) -> tuple[float, str]:
    if cell_train.is_file():
        lines = [json.loads(x) for x in cell_train.read_text().splitlines() if x.strip()]
        words = [sum(len(m["content"].split()) for m in r["messages"]) for r in lines]
        # ~1.3 tokens per English word for a BPE vocabulary, plus the chat template's ~10
        return (1.3 * sum(words) / max(1, len(words)) + 10), f"measured from {cell_train}"
    return default, "assumed (--tokens-per-example)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_cfg = REPO / "presets" / "paper.yaml"
    ap.add_argument("--config", default=str(default_cfg if default_cfg.exists() else REPO / "config.yaml"))
    ap.add_argument("--workdir", default=".", help="where the run's results/ are (for measured example lengths)")
    ap.add_argument("--gpu-json", help="a `gpu_check.py bench` report for the model shape")
    ap.add_argument("--tokens-per-example", type=float, default=350.0)
    ap.add_argument("--mfu", type=float, default=0.35, help="training model-FLOPs utilisation (LoRA, bf16)")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="GPU dense bf16 peak (H100/H200: 989)")
    ap.add_argument("--decode-tokens-per-s", type=float, default=6000.0,
                    help="vLLM batched decode rate of a 7B model on one GPU")
    ap.add_argument("--load-minutes", type=float, default=2.0, help="model load per GPU job (7B; scales with size)")
    a = ap.parse_args()

    from ipcond.config import grid, load_config
    from ipcond.config import training_config

    config = load_config(a.config)
    measured = json.loads(Path(a.gpu_json).read_text()) if a.gpu_json else None
    g = config["generation"]
    n_curve = (len(config["training"].get("checkpoint_steps") or []) + 2) if g.get("curve_n_eval", 0) else 0
    print(f"config: {a.config}")
    if measured:
        print(f"throughputs: measured ({a.gpu_json}: {measured.get('device')}, shape {measured['model']['shape']})")
    else:
        print(f"throughputs: assumed: training MFU {a.mfu:.0%} of {a.peak_tflops:.0f} TFLOP/s, 6 x params FLOPs per "
              f"token; decode {a.decode_tokens_per_s:.0f} tokens/s for 7B (inversely with size); "
              f"{a.load_minutes:.1f} min model load per job for 7B")
    rows, total = [], 0.0
    for sname, setup in config["setups"].items():
        cells = [c for c in grid(config) if c.setup == sname]
        params_b = model_params(config, setup)
        hours = 0.0
        how = ""
        for cell in cells:
            t = training_config(config, sname, cell.condition)
            tpe, how = tokens_per_example(Path(a.workdir) / cell.path / "train.jsonl", a.tokens_per_example)
            examples = (t["max_steps"] * t["batch_size"] * t.get("grad_accum", 1)) if t.get("max_steps") \
                else t["n_train"] * t.get("epochs", 1)
            train_tokens = examples * tpe
            if measured:
                train_tps = measured["training"]["tokens_per_s"]
                decode_tps = measured.get("vllm", {}).get("tokens_per_s") or measured["transformers"]["tokens_per_s"]
            else:
                train_tps = a.mfu * a.peak_tflops * 1e12 / (6 * params_b * 1e9)
                decode_tps = a.decode_tokens_per_s * DECODE_SCALE_7B / params_b
            domains = {setup["eval_domain"], *(setup["traits"][r].get("eval_domain", setup["eval_domain"])
                                               for r in ("positive", "negative"))}
            n_domains = len(domains)
            per_domain = (setup.get("data") or {}).get("n_eval", {})  # e.g. 800 EM samples
            n_items = sum(per_domain.get(d, g["n_eval"]) for d in domains)
            max_new = {**g, **setup.get("sampling", {})}["max_new_tokens"]
            gen_tokens = (n_items * 3 + n_curve * g.get("curve_n_eval", 0) * n_domains * 3) * max_new
            load = a.load_minutes * 60 * (params_b / 7.62) * (1 if config.get("execution", {}).get(
                "fuse_cell_jobs") else 2)
            hours += (train_tokens / train_tps + gen_tokens / decode_tps + load) / 3600
        rows.append((sname, len(cells), params_b, hours, how))
        total += hours
    print(f"\n{'setup':40s} {'cells':>5s} {'params (B)':>10s} {'GPU-hours':>10s}  example length")
    for sname, n, p, h, how in rows:
        print(f"{sname:40s} {n:5d} {p:10.2f} {h:10.2f}  {how}")
    print(f"{'total':40s} {sum(r[1] for r in rows):5d} {'':10s} {total:10.2f}")


if __name__ == "__main__":
    main()
