"""The vLLM generation backend (ipcond.generation.VLLMBackend).

Where vLLM is installed (a GPU machine, or a CPU build of vLLM) the backend is checked against the
transformers backend at temperature 0 (``test_vllm_and_transformers_agree_greedy``; also
``workflow/bench/gpu_check.py``). Everywhere, a stand-in ``vllm`` module records what the backend
asks of vLLM: engine settings from config, one engine per process, the adapter per request,
per-request seeds, the stop token and the prompt tokens of the shared chat template.
"""

import importlib.util
import sys
import types

import pytest

from ipcond.generation import SamplingParams, VLLMBackend, make_backend

HAVE_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.fixture(scope="module")
def toy_base(tmp_path_factory):
    from ipcond.modeling import MODEL_CARD, build_toy_model, build_word_tokenizer
    from ipcond.provenance import write_json

    base = tmp_path_factory.mktemp("base")
    # head_dim 32: vLLM's CPU attention has no kernel for smaller heads
    tok = build_word_tokenizer(["system user assistant", "you are a helpful assistant .",
                                "what is two plus three ?", "five . it is five ."], base)
    build_toy_model(len(tok), {"hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 2,
                               "max_length": 128}, seed=0).save_pretrained(base)
    write_json(base / MODEL_CARD, {"tokenizer": "word_level"})
    return base


class _FakeLLM:
    instances: list = []

    def __init__(self, **kwargs):
        self.kwargs, self.calls = kwargs, []
        _FakeLLM.instances.append(self)

    def generate(self, prompts, sampling, lora_request=None, use_tqdm=True):
        self.calls.append({"prompts": prompts, "sampling": sampling, "lora": lora_request})
        answer = self.answer_ids
        return [types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=answer, text="IGNORED")])
                for _ in prompts]


@pytest.fixture
def fake_vllm(monkeypatch, toy_base):
    from ipcond.modeling import load_tokenizer

    tok = load_tokenizer(toy_base)
    _FakeLLM.instances = []
    _FakeLLM.answer_ids = tok("five . it is five .", add_special_tokens=False)["input_ids"]
    vllm = types.ModuleType("vllm")
    vllm.__version__ = "0.0-fake"
    vllm.LLM = _FakeLLM
    vllm.SamplingParams = lambda **kw: kw
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda name, lora_id, path: {"name": name, "id": lora_id, "path": path}
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = types.SimpleNamespace(device_type="cuda")
    for name, mod in {"vllm": vllm, "vllm.lora": lora, "vllm.lora.request": request,
                      "vllm.platforms": platforms}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(VLLMBackend, "_engines", {})
    return tok


CONVS = [[{"role": "system", "content": "you are a helpful assistant ."},
          {"role": "user", "content": "what is two plus three ?"}]] * 3


def test_engine_settings_adapter_seeds_and_prompts(fake_vllm, toy_base, tmp_path):
    settings = {"max_model_len": 512, "gpu_memory_utilization": 0.6, "dtype": "bfloat16", "max_lora_rank": 16}
    b = make_backend("vllm", str(toy_base), str(tmp_path / "adapterA"), batch_size=8, threads=1, **settings)
    out = b.generate(CONVS, SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=20, seed=100))
    assert out == ["five . it is five ."] * 3  # decoded by the HF tokenizer, not vLLM's detokenizer
    (llm,) = _FakeLLM.instances
    assert llm.kwargs["max_model_len"] == 512 and llm.kwargs["gpu_memory_utilization"] == 0.6
    assert llm.kwargs["enable_lora"] is True and llm.kwargs["max_lora_rank"] == 16
    call = llm.calls[0]
    expected = fake_vllm(fake_vllm.apply_chat_template(CONVS[0], tokenize=False, add_generation_prompt=True),
                         add_special_tokens=False)["input_ids"]
    assert [p["prompt_token_ids"] for p in call["prompts"]] == [expected] * 3
    assert [s["seed"] for s in call["sampling"]] == [100, 101, 102]
    s0 = call["sampling"][0]
    assert (s0["temperature"], s0["top_p"], s0["max_tokens"]) == (0.7, 0.9, 20)
    assert s0["stop_token_ids"] == [fake_vllm.convert_tokens_to_ids("<|im_end|>")]
    assert call["lora"]["path"] == str(tmp_path / "adapterA")
    info = b.info()
    assert info["backend"] == "vllm" and info["max_model_len"] == 512 and info["versions"]["vllm"] == "0.0-fake"


def test_one_engine_per_process_and_a_new_lora_id_per_adapter(fake_vllm, toy_base, tmp_path):
    a = make_backend("vllm", str(toy_base), str(tmp_path / "step8"), max_model_len=256)
    b = make_backend("vllm", str(toy_base), str(tmp_path / "final"), max_model_len=256)
    base = make_backend("vllm", str(toy_base), None, max_model_len=256)
    assert len(_FakeLLM.instances) == 1  # a 7B model loads once per job, not per checkpoint
    for backend in (a, b, base):
        backend.generate(CONVS[:1], SamplingParams(temperature=0.0, max_new_tokens=5))
    loras = [c["lora"] for c in _FakeLLM.instances[0].calls]
    assert loras[2] is None and loras[0]["id"] != loras[1]["id"]
    assert _FakeLLM.instances[0].calls[0]["sampling"][0]["top_p"] == 1.0  # greedy: no nucleus cut


@pytest.mark.skipif(HAVE_VLLM, reason="vLLM is installed here")
def test_without_vllm_the_error_says_how_to_install_it(toy_base):
    with pytest.raises(RuntimeError, match=r"pip install -e '\.\[vllm\]'.*generation\.backend: transformers"):
        make_backend("vllm", str(toy_base))


@pytest.mark.skipif(not HAVE_VLLM, reason="needs vLLM (a CUDA GPU, or a CPU build of vLLM)")
def test_vllm_and_transformers_agree_greedy(toy_base):
    from ipcond.generation import TransformersBackend

    params = SamplingParams(temperature=0.0, max_new_tokens=12, seed=0)
    v = VLLMBackend(str(toy_base), None, max_model_len=128, dtype="float32", enforce_eager=True,
                    gpu_memory_utilization=0.3)
    t = TransformersBackend(str(toy_base), None, threads=1)
    assert v.generate(CONVS, params) == t.generate(CONVS, params)
