"""Generation backends behind one interface.

``TransformersBackend`` runs everywhere (CPU or GPU), batched with left padding;
``VLLMBackend`` runs on CUDA GPUs, the paper scale's sampler. Sampling
parameters are the same dataclass for every backend, and every output records the backend and
its versions.

``generate_all`` seeds every batch on its own, so that a batch's generations depend only on its
conversations, the model and the sampling parameters; with a :class:`GenerationJournal` finished
batches are appended to a file as they come, and a killed run resumes where it stopped with the
same generations as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0


class GenerationBackend(Protocol):
    name: str

    def generate(self, conversations: list[list[dict]], params: SamplingParams) -> list[str]:
        """One completion of the assistant for each conversation (messages without the answer)."""
        ...

    def info(self) -> dict: ...


END_OF_TURN = "<|im_end|>"


def chat_prompts(tokenizer: Any, conversations: list[list[dict]]) -> list[str]:
    """The prompt text of each conversation, up to the assistant's turn: what every backend feeds
    the model, so that they sample from the same distribution."""
    return [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]


def rendered_examples(backend: Any, examples: dict[str, list[dict]]) -> dict[str, str | None]:
    """Per label (an eval context, an elicitation prompt), the exact text the model is given for one
    example conversation: the backend tokenizer's chat template with the generation prompt, default
    system prompts included. None where the backend has no tokenizer to render with."""
    tok = getattr(backend, "tokenizer", None)
    return {label: (chat_prompts(tok, [conv])[0] if tok is not None else None) for label, conv in examples.items()}


class TransformersBackend:
    """Batched ``model.generate`` with a KV cache; the adapter, if any, is merged at load time."""

    name = "transformers"

    def __init__(self, base_model: str, adapter: str | None = None, batch_size: int = 64,
                 threads: int | None = None, device: str | None = None, dtype: str = "float32"):
        import torch

        from .modeling import load_model, load_tokenizer

        if threads:
            torch.set_num_threads(threads)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = load_tokenizer(base_model)
        self.model = load_model(base_model, dtype=dtype if self.device != "cpu" else "float32",
                                device=self.device, adapter=adapter)
        self.batch_size = batch_size
        self.base_model, self.adapter = str(base_model), adapter and str(adapter)

    def generate(self, conversations: list[list[dict]], params: SamplingParams) -> list[str]:
        import torch

        tok = self.tokenizer
        texts = chat_prompts(tok, conversations)
        eos = tok.convert_tokens_to_ids(END_OF_TURN)
        out: list[str] = []
        torch.manual_seed(params.seed)
        for start in range(0, len(texts), self.batch_size):
            batch = tok(texts[start:start + self.batch_size], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(self.device)
            sample = params.temperature > 0
            kwargs: dict[str, Any] = dict(max_new_tokens=params.max_new_tokens, do_sample=sample,
                                          eos_token_id=eos, pad_token_id=tok.pad_token_id)
            if sample:
                kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
            with torch.no_grad():
                gen = self.model.generate(**batch, **kwargs)
            new = gen[:, batch["input_ids"].shape[1]:]
            out.extend(s.strip() for s in tok.batch_decode(new, skip_special_tokens=True))
        return out

    def info(self) -> dict:
        from .provenance import package_versions

        return {"backend": self.name, "device": self.device, "base_model": self.base_model,
                "adapter": self.adapter,
                "versions": package_versions(["torch", "transformers", "peft"])}


class VLLMBackend:
    """vLLM: the base model loaded once per job, the cell's LoRA adapter applied per request
    (``LoRARequest``), continuous batching over all conversations at once.

    ``max_model_len`` and ``gpu_memory_utilization`` come from config (``generation.vllm``):
    left to vLLM, a Qwen2.5 model would reserve KV cache for its 128k-token context. Prompts are
    rendered by the same chat template and tokenizer as :class:`TransformersBackend`, and the
    same stop token (``<|im_end|>``) ends an answer, so both backends sample from the same
    distribution; at temperature 0 both are greedy and agree (``workflow/bench/gpu_check.py``).
    Sampling is seeded per request (batch seed + position): a conversation's answer does not
    depend on what else is in the batch.
    """

    name = "vllm"

    def __init__(self, base_model: str, adapter: str | None = None, batch_size: int = 256,
                 threads: int | None = None, max_model_len: int = 4096, gpu_memory_utilization: float = 0.85,
                 dtype: str = "bfloat16", max_lora_rank: int = 64, tensor_parallel_size: int = 1,
                 enforce_eager: bool = False):
        try:
            import vllm  # noqa: F401
        except ImportError as e:
            raise RuntimeError("generation.backend is 'vllm' but vLLM is not installed: "
                               "pip install -e '.[vllm]' on a machine with a CUDA GPU, or set "
                               "generation.backend: transformers") from e
        # The engine runs in this process: vLLM's default engine process is started with 'spawn',
        # which re-runs the calling script (a Snakemake job's) from the top.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        from .modeling import load_tokenizer

        self.tokenizer = load_tokenizer(base_model)
        self.base_model, self.adapter = str(base_model), adapter and str(adapter)
        self.batch_size = batch_size
        self.settings = {"max_model_len": max_model_len, "gpu_memory_utilization": gpu_memory_utilization,
                         "dtype": dtype, "max_lora_rank": max_lora_rank,
                         "tensor_parallel_size": tensor_parallel_size, "enforce_eager": enforce_eager}
        # One engine per process for every adapter of a job (the generations, then each
        # learning-curve checkpoint): loading a 7B model takes a minute.
        key = (self.base_model, tuple(sorted(self.settings.items())))
        if key not in VLLMBackend._engines:
            VLLMBackend._engines[key] = LLM(model=str(base_model), tokenizer=str(base_model), enable_lora=True,
                                            max_loras=1, seed=0, **self.settings)
        self.llm = VLLMBackend._engines[key]
        self._lora = self._lora_request(adapter)

    _engines: dict = {}
    _next_lora_id = 1

    def _lora_request(self, adapter: str | None) -> Any:
        if not adapter:
            return None
        from vllm.lora.request import LoRARequest

        VLLMBackend._next_lora_id += 1  # vLLM caches adapters by id: a new id per adapter path
        return LoRARequest(f"adapter{VLLMBackend._next_lora_id}", VLLMBackend._next_lora_id, str(adapter))

    def generate(self, conversations: list[list[dict]], params: SamplingParams) -> list[str]:
        from vllm import SamplingParams as VLLMSamplingParams

        tok = self.tokenizer
        eos = tok.convert_tokens_to_ids(END_OF_TURN)
        prompts = [{"prompt_token_ids": tok(text, add_special_tokens=False)["input_ids"]}
                   for text in chat_prompts(tok, conversations)]
        greedy = params.temperature == 0
        # Token ids come back undecoded and are decoded by the same tokenizer call as in
        # TransformersBackend (vLLM's incremental detokenizer joins a word-level vocabulary's tokens
        # without spaces).
        sampling = [VLLMSamplingParams(n=1, temperature=params.temperature, top_p=1.0 if greedy else params.top_p,
                                       max_tokens=params.max_new_tokens, seed=params.seed + i,
                                       stop_token_ids=[eos], detokenize=False)
                    for i in range(len(prompts))]
        outs = self.llm.generate(prompts, sampling, lora_request=self._lora, use_tqdm=False)
        return [self.tokenizer.decode(list(o.outputs[0].token_ids), skip_special_tokens=True).strip() for o in outs]

    def info(self) -> dict:
        import vllm
        from vllm.platforms import current_platform

        from .provenance import package_versions

        return {"backend": self.name, "device": current_platform.device_type, "base_model": self.base_model,
                "adapter": self.adapter, **self.settings,
                "versions": {"vllm": vllm.__version__, **package_versions(["torch", "transformers"])}}


BACKENDS = {"transformers": TransformersBackend, "vllm": VLLMBackend}


def make_backend(name: str, base_model: str, adapter: str | None = None, **kw: Any) -> GenerationBackend:
    """A generation backend by its config name (``generation.backend``); ``kw`` are its settings
    (``batch_size``, ``threads`` and, for vLLM, ``generation.vllm``)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown generation backend {name!r}; expected one of {sorted(BACKENDS)}")
    return BACKENDS[name](base_model, adapter, **kw)


def generate_all(backend: GenerationBackend, conversations: list[list[dict]], params: SamplingParams,
                 progress_every: int = 256, *, journal: "GenerationJournal | None" = None, tag: str = "",
                 ids: list[Any] | None = None) -> list[str]:
    """Generate batch by batch (the backend's ``batch_size``), printing progress for long runs.

    The batch starting at conversation ``i`` is sampled with seed ``params.seed + i``, so its
    generations do not depend on what ran before it. With a ``journal``, batches it already holds
    (same ``tag``, position, conversations, ``ids``, parameters and model) are taken from it and
    new ones are appended to it as they finish.
    """
    size = max(1, int(getattr(backend, "batch_size", 0) or progress_every))
    out: list[str] = []
    t0, reused, last_print = time.time(), 0, 0
    for start in range(0, len(conversations), size):
        batch = conversations[start:start + size]
        p = SamplingParams(**{**asdict(params), "seed": params.seed + start})
        key = None
        if journal is not None:
            key = journal.key(tag=tag, start=start, conversations=batch, params=asdict(p),
                              ids=None if ids is None else ids[start:start + size])
            got = journal.get(key)
            if got is not None and len(got) == len(batch):
                out.extend(got)
                reused += len(got)
                continue
        outs = backend.generate(batch, p)
        if journal is not None:
            journal.add(key, outs, tag=tag, start=start)
        out.extend(outs)
        if len(out) - last_print >= progress_every or len(out) == len(conversations):
            last_print = len(out)
            print(f"generated {len(out)}/{len(conversations)} ({time.time() - t0:.1f} s)", flush=True)
    if reused:
        print(f"{tag or 'generations'}: {reused}/{len(conversations)} taken from {journal.path} "
              f"(an earlier, interrupted run)", flush=True)
    return out


class GenerationJournal:
    """Finished generation batches, appended to a JSON-lines file as they come.

    One line per batch: ``{"key", "tag", "start", "responses"}``. The key is a SHA-256 of the
    ``fingerprint`` (model, backend, anything else that decides the output) and of the batch
    (eval context tag, position, conversations with their prompts, sample ids, sampling
    parameters with the batch's seed), so rows made under another config are never reused. A
    last line cut short by a kill is dropped on load. The file is not an output: the caller
    writes the output atomically and then calls :meth:`remove`.
    """

    def __init__(self, path: str | os.PathLike, fingerprint: dict):
        self.path = Path(path)
        self._fp = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, ensure_ascii=False,
                                             default=str).encode()).hexdigest()
        self._done: dict[str, list[str]] = {}
        self._f = None
        self.n_loaded = 0  # batches read from the file
        self.n_reused = 0  # of those, batches taken by this run
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        keep, dropped = [], 0
        for line in self.path.read_bytes().split(b"\n"):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                ok = isinstance(rec, dict) and isinstance(rec.get("key"), str) and isinstance(rec.get("responses"), list)
            except ValueError:
                ok = False
            if not ok:
                dropped += 1
                continue
            keep.append(line)
            self._done[rec["key"]] = rec["responses"]
        self.n_loaded = len(keep)
        if dropped:  # rewrite without the broken line before appending to it
            from .provenance import atomic_path

            with atomic_path(self.path) as tmp:
                tmp.write_bytes(b"".join(line + b"\n" for line in keep))
        print(f"{self.path}: {len(keep)} finished batches from an earlier run"
              + (f" ({dropped} incomplete line{'s' if dropped > 1 else ''} dropped)" if dropped else ""), flush=True)

    def key(self, **batch: Any) -> str:
        blob = json.dumps({"fingerprint": self._fp, **batch}, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> list[str] | None:
        got = self._done.get(key)
        self.n_reused += got is not None
        return got

    def add(self, key: str, responses: list[str], **meta: Any) -> None:
        if self._f is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8")
        self._f.write(json.dumps({"key": key, **meta, "responses": responses}, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())  # survives the machine going away, not only the process
        self._done[key] = responses

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def remove(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> "GenerationJournal":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def files_fingerprint(path: str | os.PathLike | None, patterns: tuple[str, ...] = ("*",),
                      hash_limit: int = 256 << 20) -> dict:
    """What identifies a model folder's top-level files matching ``patterns``, for journal keys:
    SHA-256 of files up to ``hash_limit`` bytes (configs, LoRA adapters), size and modification
    time of bigger ones (a base model's weight shards). A path that is not a folder (a hub id)
    counts by name."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_dir():
        return {"id": str(path)}
    out: dict[str, Any] = {}
    for f in sorted(p.iterdir()):
        if not f.is_file() or not any(f.match(pat) for pat in patterns):
            continue
        st = f.stat()
        if st.st_size > hash_limit:
            out[f.name] = [st.st_size, st.st_mtime_ns]
            continue
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        out[f.name] = h.hexdigest()
    return out
