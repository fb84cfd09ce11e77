"""The paper-scale code paths on a CUDA GPU: bf16 LoRA with gradient checkpointing and packing,
QLoRA (4-bit base), and the vLLM backend against the transformers backend. Marked ``gpu``: skipped
without CUDA (conftest.py); run with ``python -m pytest -m gpu`` on a GPU machine. The same checks
as a script, with throughput numbers: ``python workflow/bench/gpu_check.py check``."""

import importlib.util

import pytest

from test_determinism import LORA, config, tiny_base  # noqa: F401 (fixtures)

pytestmark = pytest.mark.gpu


def test_bf16_lora_with_checkpointing_and_packing_learns(tiny_base, tmp_path):  # noqa: F811
    from ipcond.training import finetune_lora

    base, records = tiny_base
    cfg = {**LORA, "dtype": "bfloat16", "gradient_checkpointing": True, "packing": True, "max_steps": 20,
           "learning_rate": 1e-2, "logging_steps": 5}
    summary = finetune_lora(base, records * 10, tmp_path / "a", cfg, seed=1)
    losses = [e["loss"] for e in summary["losses"]]
    assert summary["steps"] == 20 and losses[-1] < losses[0]


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")
def test_qlora_trains_on_a_4bit_base(tiny_base, tmp_path):  # noqa: F811
    from ipcond.training import finetune_lora

    base, records = tiny_base
    summary = finetune_lora(base, records, tmp_path / "q", {**LORA, "dtype": "bfloat16", "load_in_4bit": True},
                            seed=1)
    assert summary["steps"] == LORA["max_steps"] and (tmp_path / "q" / "adapter_model.safetensors").exists()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vLLM")
def test_vllm_with_adapter_matches_transformers_greedy(tiny_base, tmp_path):  # noqa: F811
    from ipcond.generation import SamplingParams, TransformersBackend, VLLMBackend
    from ipcond.training import finetune_lora

    base, records = tiny_base
    finetune_lora(base, records, tmp_path / "a", LORA, seed=1)
    convs = [r["messages"][:-1] for r in records]
    params = SamplingParams(temperature=0.0, max_new_tokens=16)
    v = VLLMBackend(str(base), str(tmp_path / "a"), max_model_len=256, dtype="float32", max_lora_rank=16,
                    gpu_memory_utilization=0.3).generate(convs, params)
    t = TransformersBackend(str(base), str(tmp_path / "a")).generate(convs, params)
    assert sum(a == b for a, b in zip(v, t)) >= 0.9 * len(convs)
