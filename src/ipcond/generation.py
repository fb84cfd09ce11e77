"""Generation backends behind one interface.

``TransformersBackend`` runs everywhere (CPU or GPU), batched with left padding. Sampling
parameters are the same dataclass for every backend, and every output records the backend and
its versions.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
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
        texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
        eos = tok.convert_tokens_to_ids("<|im_end|>")
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


def make_backend(name: str, base_model: str, adapter: str | None = None, **kw: Any) -> GenerationBackend:
    if name == "transformers":
        return TransformersBackend(base_model, adapter, **kw)
    raise ValueError(f"unknown generation backend {name!r}; expected 'transformers'")


def generate_all(backend: GenerationBackend, conversations: list[list[dict]], params: SamplingParams,
                 progress_every: int = 256) -> list[str]:
    """Generate in chunks, printing progress for long runs."""
    out: list[str] = []
    t0 = time.time()
    for start in range(0, len(conversations), progress_every):
        out.extend(backend.generate(conversations[start:start + progress_every],
                                    SamplingParams(**{**asdict(params), "seed": params.seed + start})))
        print(f"generated {len(out)}/{len(conversations)} ({time.time() - t0:.1f} s)", flush=True)
    return out
