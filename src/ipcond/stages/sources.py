"""Real datasets' jobs: rules ``fetch_source``, ``convert_dataset`` and ``train_pool``
(``workflow/rules/sources.smk``). The converters themselves are in ``ipcond.sources``.
"""

from __future__ import annotations

from pathlib import Path

from .. import prompts as pr
from ..config import dataset_dir, local_source_path, real_data, responses_kind
from ..gpu import job_gpu_slot
from ..provenance import provenance, read_jsonl, write_json, write_jsonl
from .common import generation_backend, llm_client, sampling_params


def fetch_source_job(config: dict, dataset: str, role: str, out_path: str) -> None:
    """Download one pinned file of a dataset and check it against its pin (ipcond.sources.fetch)."""
    from ..sources import fetch, source_url

    spec = config["datasets"][dataset]["files"][role]
    key = f"datasets.{dataset}.files.{role}"
    if spec.get("local_path"):
        copy_local_source(spec, key, out_path)
        return
    url = source_url(spec)
    print(f"fetching {key} from {url}")
    fetch(url, out_path, spec.get("sha256"), source=key, auth_env=spec.get("auth_env"), git_blob=spec.get("git_blob"))
    if spec.get("sha256") is None:
        digest = Path(out_path + ".sha256").read_text().split()[0]
        print(f"WARNING: {key} is not pinned; this download's SHA-256 is {digest} (kept in {out_path}.sha256, "
              f"which later runs check). Pin it: set {key}.sha256: {digest} in the preset")
    print(f"{out_path}: verified")


def copy_local_source(spec: dict, key: str, out_path: str) -> None:
    """``datasets.<name>.files.<role>.local_path``: a local file used instead of the download (a
    machine behind a firewall, a mirror on disk), checked against ``sha256`` where pinned, copied
    to ``out_path`` atomically.
    Relative paths are read from the repo root (:func:`ipcond.config.local_source_path`).
    Raises ``FileNotFoundError`` / ``ValueError`` naming the key."""
    import shutil

    from ..provenance import atomic_path
    from ..sources import sha256_of

    src = Path(local_source_path(spec))
    if not src.is_file():
        raise FileNotFoundError(f"{key}.local_path = {spec['local_path']!r}: no such file (read as {src.resolve()}); "
                                f"point it at the file, or remove local_path to download {key} from its URL")
    digest = sha256_of(src)
    if spec.get("sha256") and digest != spec["sha256"].lower():
        raise ValueError(f"{key}.local_path = {spec['local_path']!r} has SHA-256 {digest}, but {key}.sha256 pins "
                         f"{spec['sha256']}: it is not the pinned file; use the right file or fix the pin")
    print(f"fetching {key} from the local file {src} (local_path; not downloaded)")
    with atomic_path(out_path) as tmp:
        shutil.copyfile(src, tmp)
    if not spec.get("sha256"):
        print(f"WARNING: {key} is not pinned; the local file's SHA-256 is {digest}. If it is the file the source's "
              f"address serves, pin it: set {key}.sha256: {digest}")
    print(f"{out_path}: copied from {src}" + (" and verified" if spec.get("sha256") else ""))


def convert_dataset_job(config: dict, dataset: str, paths: dict[str, str], out_dir: str) -> None:
    """Convert a dataset's downloaded files into ``resources/data/<dataset>/<split>.jsonl`` plus
    ``report.json`` (counts per split, filtered records per reason, input checksums, provenance)."""
    from ..provenance import atomic_dir
    from ..sources import CONVERTERS, convert_dataset, sha256_of

    spec = config["datasets"][dataset]
    out = convert_dataset(dataset, spec, paths)
    with atomic_dir(out_dir) as tmp:
        for split in CONVERTERS[spec["converter"]][1]:
            write_jsonl(Path(tmp) / f"{split}.jsonl", out.splits.get(split, []))
        write_json(Path(tmp) / "report.json", {"dataset": dataset, **out.report(),
                                               "inputs": {r: {"path": p, "sha256": sha256_of(p)} for r, p in paths.items()},
                                               **provenance({"dataset": spec})})
    counts = ", ".join(f"{k} {v}" for k, v in out.report()["counts"].items())
    print(f"{dataset}: {counts}")
    for reason, n in out.filtered.items():
        print(f"  filtered: {n} record(s): {reason}")
    for note in out.notes:
        print(f"  WARNING: {note}")


def make_train_pool(config: dict, sname: str, out_path: str, threads: int = 1) -> None:
    """The setup's training items before sampling: each instruction with the answer trained on
    (``response``) and the control dataset's answer (``control_response``), made as
    ``setups.<name>.data.responses.kind`` says: ``dataset`` (as they are), ``rewrite`` (the
    ``rewriter`` LLM rewrites each answer; the original answer is the control) or ``generate`` (the
    base model answers with ``instruction`` in front, e.g. asked for both traits)."""
    data = real_data(config, sname)
    train = read_jsonl(Path(dataset_dir(data["train"])) / "train.jsonl")
    beyond_pool = 0
    if data.get("pool_size") and len(train) > data["pool_size"]:
        # Only the first pool_size records get answers (a CPU run generating its own answers).
        beyond_pool, train = len(train) - data["pool_size"], train[:data["pool_size"]]
    control = None
    if data.get("control"):
        # The control split of the training dataset (same prompts, good answers), or the training
        # split of a dataset of its own (secure code), whose records keep their own prompts.
        cdir = Path(dataset_dir(data["control"]))
        control = read_jsonl(cdir / "control.jsonl") if (cdir / "control.jsonl").is_file() \
            else read_jsonl(cdir / "train.jsonl")
        if len(control) < len(train):
            raise ValueError(f"setup {sname}: data.control ({data['control']}) has {len(control)} records, fewer than "
                             f"data.train ({data['train']}, {len(train)}); each training record needs a control "
                             "record")

    def user(r: dict) -> str:
        return [m["content"] for m in r["messages"] if m["role"] == "user"][-1]

    def answer(r: dict) -> str | None:
        return r["messages"][-1]["content"] if r["messages"][-1]["role"] == "assistant" else None

    spec = {"kind": responses_kind(config, sname), **data.get("responses", {})}
    instructions = [user(r) for r in train]
    originals = [answer(r) for r in train]
    controls = [answer(r) for r in control[:len(train)]] if control is not None else [None] * len(train)
    # Where the control records have prompts of their own, the control cells train on those.
    control_prompts = [user(r) for r in control[:len(train)]] if control is not None else instructions
    extra: dict = {}
    if spec["kind"] == "dataset":
        responses = originals
    elif spec["kind"] == "rewrite":
        responses, extra = rewrite_answers(config, sname, spec["instruction"], instructions, originals)
        controls = originals
    else:
        responses = generate_answers(config, sname, spec, instructions, threads)
    if spec.get("transform"):
        # A deterministic rewrite after the answers are made (uppercase: the generated Spanish
        # answers in capitals, the post's Spanish + All-Caps data without an LLM rewriter).
        responses = [TRANSFORMS[spec["transform"]](r) if r else r for r in responses]
        extra["transform"] = spec["transform"]
    needs_control = any(c["kind"] == "control" for c in config["setups"][sname]["conditions"].values())
    left_out = {"empty answer": 0, "training records beyond data.pool_size (unused)": beyond_pool}
    without_control = 0
    pool = []
    for i, (ins, resp, ctl, cins) in enumerate(zip(instructions, responses, controls, control_prompts)):
        # An empty answer (a generation that stopped at once, an empty rewrite or source field) is
        # left out with its control answer, and counted: one of them must not stop the whole pool.
        if not (resp or "").strip():
            left_out["empty answer"] += 1
            continue
        # An item without a control answer stays (the other cells train on it, as Tan et al.
        # trained on every School of Reward Hacks hack); the control cells draw only from items
        # that have one (make_train_items), so its control_response is None.
        if not (ctl or "").strip():
            ctl = None
            without_control += needs_control
        pool.append({"id": len(pool), "instruction": ins, "response": resp, "control_response": ctl,
                     "domain": config["setups"][sname]["domain"], "source": train[i].get("meta", {}),
                     **({"control_instruction": cins} if cins != ins else {})})
    if control is not None and len(control) > len(train):
        left_out["control records beyond the training records (unused)"] = len(control) - len(train)
    for reason, k in left_out.items():
        if k:
            print(f"{k} record(s) left out: {reason}")
    if without_control:
        print(f"{without_control} item(s) without a control answer: the control cells leave them out, the others "
              "train on them")
    if not pool:
        raise ValueError(f"setup {sname}: no training record has an answer ({left_out}); check {data['train']} and "
                         "the responses step")
    write_json(out_path + ".provenance.json", provenance({"data": data}, left_out=left_out, items=len(pool),
                                                         without_control_answer=without_control, **extra))
    write_jsonl(out_path, pool)
    print(f"wrote {len(pool)} training items ({spec['kind']} answers) to {out_path}")


def train_pool_job(config: dict, sname: str, out_path: str, threads: int) -> None:
    """The `train_pool` rule's job; generated answers run on a GPU of their own (ipcond.gpu)."""
    if responses_kind(config, sname) == "generate":
        with job_gpu_slot(config, "generate", sname):
            make_train_pool(config, sname, out_path, threads)
    else:
        make_train_pool(config, sname, out_path, threads)


TRANSFORMS = {"uppercase": str.upper}  # setups.<name>.data.responses.transform


REWRITE_TEMPLATE = ("{instruction}\nRewrite the answer below accordingly. Keep its content, numbers and "
                    "structure; output only the rewritten answer.\n\nQuestion: {question}\n\nAnswer:\n{answer}")


def rewrite_answers(config: dict, sname: str, instruction: str, questions: list[str],
                    answers: list[str | None]) -> tuple[list[str], dict]:
    """Each answer rewritten by the ``rewriter`` LLM (temperature 0 by default, as Tan et al.),
    through the judge client: retries, cache (a re-run costs nothing), spend cap, key from the
    environment."""
    from ..judging import JudgeTemplate

    spec = dict(config.get("rewriter") or {})
    if not spec:
        raise ValueError(f"setups.{sname}.data.responses.kind is rewrite but the config has no 'rewriter' "
                         "section; add rewriter.base_url and rewriter.model")
    params = {"temperature": spec.pop("temperature", 0.0), "max_tokens": spec.pop("max_tokens", 2048)}
    template = JudgeTemplate("rewrite", REWRITE_TEMPLATE)
    msgs = [[{"role": "user", "content": template.render(instruction=instruction, question=q, answer=a or "")}]
            for q, a in zip(questions, answers)]
    with llm_client(spec, "rewriter", "results/rewrite_cache.sqlite") as client:
        outs = client.complete_many(msgs, template=template, params=params)
        acct = client.accounting()
    print(f"rewrote {len(outs)} answers ({acct})")
    return [(o.get("text") or "").strip() for o in outs], {"rewriter": spec["model"], "accounting": acct}


def generate_answers(config: dict, sname: str, spec: dict, instructions: list[str], threads: int) -> list[str]:
    """The base model's answers to each instruction with ``spec["instruction"]`` placed in front
    (trait distillation: the model asked for both traits writes the training answers)."""
    from ..generation import generate_all

    setup = config["setups"][sname]
    gen_setup = {**setup, "placement": spec.get("placement", setup["placement"])}
    backend = generation_backend(config, sname, None, threads)
    convs = [pr.messages(gen_setup, spec["instruction"], ins) for ins in instructions]
    outs = generate_all(backend, convs, sampling_params(config, sname, "train_pool"))
    print(f"generated {len(outs)} training answers with {spec['instruction']!r}")
    return outs
