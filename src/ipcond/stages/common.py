"""Helpers the stage modules share, as ``workflow/rules/common.smk`` holds what the rule files share:
the rule's log file (:func:`log_to`), the generation backend and sampling parameters of a setup,
the scorers of its traits, the toy vocabulary check and the workflow's CSV reader.

Stage layer (``ipcond.stages``): imports the configuration and science layers, never the reverse.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from .. import data as dt
from ..config import base_model_path, sampling_config
from ..provenance import write_json
from ..seeding import derive_seed


@contextlib.contextmanager
def log_to(path: str | os.PathLike | None) -> Iterator[None]:
    """Send this job's stdout and stderr (Python and C level) to the rule's log file."""
    if not path:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "w", buffering=1) as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        old = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = f
        t0 = time.time()
        try:
            yield
            print(f"done in {time.time() - t0:.1f} s", flush=True)
        except BaseException:
            import traceback

            traceback.print_exc()
            raise
        finally:
            sys.stdout, sys.stderr = old
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def check_toy_vocabulary(tokenizer: Any, texts: dict[str, str | None]) -> None:
    """Stop with a clear error when a prompt uses words the toy base model has never seen.

    ``texts`` maps where a text comes from (a config key) to the text. Only word-level toy
    tokenizers are checked; a real tokenizer has no unknown words.
    """
    vocab = tokenizer.get_vocab()
    if "[UNK]" not in vocab and "<unk>" not in vocab:
        return
    problems = []
    for where, text in texts.items():
        unknown = [w for w in (text or "").split() if w not in vocab]
        if unknown:
            problems.append(f"  {where}: {text!r} uses unknown words {sorted(set(unknown))}")
    if problems:
        raise ValueError(
            "prompts use words the toy base model's vocabulary does not have:\n" + "\n".join(problems)
            + "\nFix: reword them with the toy world's words, or add the sentence to world.unseen_prompts "
              "(pretraining then knows its words without seeing it; this rebuilds the base model)")


def sampling_params(config: dict, sname: str, *seed_parts: object):
    """The setup's sampling parameters (``sampling_config``) with a seed derived from the setup's
    name and ``seed_parts`` (condition, seed, eval context, ...)."""
    from ..generation import SamplingParams

    g = sampling_config(config, sname)
    seed_parts = (sname, *seed_parts)
    return SamplingParams(temperature=g["temperature"], top_p=g.get("top_p", 1.0),
                          max_new_tokens=g["max_new_tokens"], seed=derive_seed(*seed_parts) % 2**31)


def generation_backend(config: dict, sname: str | None, adapter: str | None, threads: int):
    """The generation backend of ``generation.backend`` on the setup's base model, with ``adapter``
    (a LoRA folder) applied, or the base model alone when ``adapter`` is None."""
    from ..generation import make_backend

    g = config["generation"]
    extra = g.get("vllm", {}) if g["backend"] == "vllm" else {}
    base = base_model_path(config, sname)
    # A cell evaluated from a given full model (conditions.<c>.model_from): that model, no adapter.
    full = given_full_model(adapter)
    if full is not None:
        base, adapter = full, None
    return make_backend(g["backend"], base, adapter,
                        batch_size=g.get("batch_size", 64), threads=threads, **extra)


def given_full_model(adapter_dir: str | None) -> str | None:
    """The full model folder a cell's adapter folder stands for (``model_from.json`` of kind
    full_model, written by ``ipcond.stages.cell.link_cell_model``), else None."""
    import json

    if not adapter_dir:
        return None
    rec = Path(adapter_dir) / "model_from.json"
    if rec.is_file():
        data = json.loads(rec.read_text())
        if data.get("kind") == "full_model":
            return data["folder"]
    return None


def llm_client(spec: dict, where: str, default_cache: str) -> Any:
    """The judge client for an LLM endpoint section (``rephraser``, ``rewriter``) whose own keys
    were taken out of ``spec``: checked first (key variable set, host reachable), answers cached."""
    from ..judging import JudgeClient, JudgeConfig, preflight_endpoint

    preflight_endpoint(spec, where)
    cache = spec.pop("cache", default_cache)
    return JudgeClient(JudgeConfig.from_dict(spec), cache=cache)


def score_rows(setup: dict, rows: list[dict], scorers: dict) -> list[dict]:
    """Score each row for both traits of a setup, each on the rows of its eval domain (a row
    without a domain, e.g. from a dataset that has none, is scored for both), and on the rows of
    its extra domains (``also_eval_domains``) as the trait ``<name>@<domain>``, same role; the
    traits of ``also_report`` are scored on the trait's rows under their own names, same role
    (MBPP: Wichers et al.'s all-tests rate beside the hack rate)."""
    out = []
    for role in ("positive", "negative"):
        trait = setup["traits"][role]["name"]
        main = (None, dt.trait_eval_domain(setup, role))
        groups = [(trait, trait, main)]
        groups += [(trait, dt.domain_trait_name(trait, d), (d,)) for d in dt.trait_extra_domains(setup, role)]
        groups += [(t, t, main) for t in setup["traits"][role].get("also_report", [])]
        for scorer, reported, domains in groups:
            mine = [r for r in rows if r.get("domain") in domains]
            if not mine:
                continue
            scores = scorers[scorer].score([r.get("instruction", "") for r in mine], [r["response"] for r in mine])
            # Why a score is missing: "unscored" (no usable answer) or, for the EM rule,
            # "dropped_incoherent"; empty when scored.
            status = getattr(scorers[scorer], "last_status", None) or ["" if s is not None else "unscored"
                                                                        for s in scores]
            for r, s, st in zip(mine, scores, status):
                out.append({**{k: r[k] for k in r if k not in ("response", "instruction", "prompt", "domain")},
                            "trait": reported, "role": role, "score": s, "status": st})
    return out


def make_scorers(config: dict, setup: dict, items: list[dict] | None = None) -> dict:
    """A scorer per trait of the setup; ``items`` (the eval set) give code traits their tests."""
    from ..codeexec import tests_by_prompt
    from ..scoring import make_scorer

    specs = config.get("scorers", {})
    judge = config.get("judge")
    traits = [t for r in ("positive", "negative")
              for t in (setup["traits"][r]["name"], *setup["traits"][r].get("also_report", []))]
    if judge and any((specs.get(t) or {}).get("kind") in ("llm_judge", "moderation", "em_rule") for t in traits):
        from ..judging import preflight_endpoint

        preflight_endpoint(judge, "judge")
    cache = judge.get("cache", "results/judge_cache.sqlite") if judge else None
    # Code traits get each eval item's tests with the imports they need run first.
    tests = tests_by_prompt(items) if items is not None else None
    return {t: make_scorer(t, specs.get(t), judge, cache, tests_by_prompt=tests) for t in traits}


def write_scorer_accounting(scorers: dict, out_path: str) -> None:
    """Judge calls, cache hits, tokens and cost of this job (zeros for rule scorers)."""
    acct = {}
    for trait, s in scorers.items():
        acct[trait] = {"scorer": s.name, **(s.accounting() if hasattr(s, "accounting") else {"calls": 0})}
        if hasattr(s, "close"):
            s.close()
    write_json(out_path, acct)


def read_table(path: str):
    """Read one of the workflow's CSV tables. Only empty cells are missing values: pandas would
    otherwise read the condition named "None" (the post's name) as NaN and drop it silently."""
    import pandas as pd

    return pd.read_csv(path, keep_default_na=False, na_values=[""])
