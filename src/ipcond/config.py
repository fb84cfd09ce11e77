"""Config loading, validation and the (setup, condition, seed) grid.

Configuration layer: above the science modules (it checks the config against what they know:
converters, judge templates, protocol texts, traits) and below the stage modules, which read the
config through the lookups at the end of this file (``training_config``, ``sampling_config``,
``base_model_path``, ``responses_kind``, ``dataset_dir``, ``source_file_path``).

Validation has two layers: the JSON schema in ``workflow/schemas/config.schema.yaml`` (types,
required and unknown keys), then checks that a schema cannot express (a rephrased condition
names an inoculation condition of its setup, enough rephrasings exist, traits are known). Every
error names the key and says how to fix it.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from .errors import ConfigError  # noqa: F401 (re-exported: callers catch ipcond.config.ConfigError)

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
CONDITION_KINDS = ("baseline", "none", "empty", "neutral", "inoculation", "rephrased", "irrelevant", "control")


def _key_path(path: Iterable[Any]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _schema_error_message(err: Any, source: str) -> str:
    where = _key_path(err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = [k for k in err.instance if k not in allowed] if isinstance(err.instance, dict) else []
        hints = []
        for k in extra:
            close = difflib.get_close_matches(k, allowed, n=1)
            hints.append(f"'{k}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        return (f"{source}: unknown key {', '.join(hints)} under {where}. "
                f"Allowed keys there: {', '.join(allowed)}. Remove or rename it.")
    if err.validator == "required":
        return f"{source}: {where} is missing a required key: {err.message}. Add it."
    if err.validator == "enum":
        return (f"{source}: {where} = {err.instance!r} is not allowed; "
                f"use one of {err.validator_value}.")
    return f"{source}: {where}: {err.message}. Fix the value of {where}."


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def validate_config(config: dict, source: str = "config") -> dict:
    """Validate a config dict; raise ConfigError naming the key and the fix. Returns the config."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        # The deepest error is usually the most specific; report all, deepest first.
        msgs = [_schema_error_message(e, source) for e in sorted(errors, key=lambda e: -len(e.absolute_path))]
        raise ConfigError("\n".join(dict.fromkeys(msgs)))
    _semantic_checks(config, source)
    return config


def _semantic_checks(config: dict, source: str) -> None:
    from . import toyworld as tw

    toy = config["base_model"]["kind"] == "toy"
    if config["base_model"].get("gguf") and (config["base_model"].get("path") or toy):
        raise ConfigError(f"{source}: base_model.gguf is set together with base_model.path (or kind toy); a GGUF "
                          "base model is converted into its own folder: set base_model.path: null and kind: pretrained")
    if config["base_model"]["kind"] == "pretrained" and not (config["base_model"].get("path")
                                                             or config["base_model"].get("gguf")):
        raise ConfigError(f"{source}: base_model.path is empty but base_model.kind is 'pretrained'; "
                          "set base_model.path to a local model folder or hub id")
    _check_datasets(config, source)
    for sname, setup in config["setups"].items():
        _check_setup_data(config, sname, setup, source)
        traits = {setup["traits"]["positive"]["name"], setup["traits"]["negative"]["name"]}
        data_traits = set(setup.get("train_traits", traits))
        if toy:
            scorable = [*tw.TRAITS, *tw.EXEC_TRAITS]
            scorable.remove("hardcode")  # shown by training data, scored through reward_hack / all_test
            for role in ("positive", "negative"):
                t = setup["traits"][role]["name"]
                if t not in scorable:
                    raise ConfigError(f"{source}: setups.{sname}.traits.{role}.name = {t!r} has no toy scorer; "
                                      f"use one of {scorable}")
            for i, t in enumerate(setup.get("train_traits", [])):
                if t not in tw.TRAITS:
                    raise ConfigError(f"{source}: setups.{sname}.train_traits[{i}] = {t!r} is not a toy trait; "
                                      f"use one of {list(tw.TRAITS)}")
            if set(tw.LANGUAGE_TRAITS) <= traits:
                raise ConfigError(f"{source}: setups.{sname}: french and spanish cannot be one setup's pair")
        conds = setup["conditions"]
        for cname, cond in conds.items():
            key = f"setups.{sname}.conditions.{cname}"
            # An inoculation prompt asks for a trait of the setup or of its data, or for the broad
            # malicious one (MBPP's MaliciousEvil: its data may carry it without scoring it).
            allowed = traits | data_traits | {"malicious"}
            if cond["kind"] == "inoculation" and cond["trait"] not in allowed:
                raise ConfigError(f"{source}: {key}.trait = {cond['trait']!r} is not a trait of this setup; "
                                  f"use one of {sorted(allowed)}")
            if cond["kind"] == "rephrased":
                target = conds.get(cond["of"])
                if target is None or target["kind"] != "inoculation":
                    inocs = [c for c, v in conds.items() if v["kind"] == "inoculation"]
                    raise ConfigError(f"{source}: {key}.of = {cond['of']!r} is not an inoculation condition "
                                      f"of setup {sname}; use one of {inocs}")
                if toy:
                    available = len(tw.trait_wordings(target["trait"]))
                    if cond["n_rephrasings"] > available:
                        raise ConfigError(
                            f"{source}: {key}.n_rephrasings = {cond['n_rephrasings']} but the toy rephraser has "
                            f"only {available} wordings of '{target['trait']}'; set it to at most {available}")
            setup_n_train = {**config["training"], **setup.get("training", {})}.get("n_train")
            cond_n_train = cond.get("training", {}).get("n_train")
            if cond["kind"] == "rephrased" and cond.get("max_uses"):
                need = cond_n_train or setup_n_train
                if need and cond["n_rephrasings"] * cond["max_uses"] < need:
                    raise ConfigError(f"{source}: {key}: {need} training examples need at least "
                                      f"{-(-need // cond['max_uses'])} rephrasings at max_uses = {cond['max_uses']}, "
                                      f"but n_rephrasings = {cond['n_rephrasings']}; raise n_rephrasings or max_uses")
            if cond_n_train is not None and setup_n_train is not None and cond_n_train > setup_n_train:
                raise ConfigError(f"{source}: {key}.training.n_train = {cond_n_train} is more than the setup's "
                                  f"{setup_n_train} (a sweep's cells take a prefix of the setup's training items); "
                                  f"raise setups.{sname}.training.n_train to at least {cond_n_train}")
            if config["generation"]["backend"] == "vllm":
                rank = {**config["training"], **setup.get("training", {}), **cond.get("training", {})}["lora_r"]
                max_rank = config["generation"].get("vllm", {}).get("max_lora_rank", 64)
                if rank > max_rank:
                    raise ConfigError(f"{source}: {key} trains LoRA rank {rank} but generation.vllm.max_lora_rank "
                                      f"is {max_rank}; vLLM could not load the adapter. Raise "
                                      f"generation.vllm.max_lora_rank to at least {rank}")
            if cond["kind"] in ("baseline", "none", "empty", "control", "rephrased") and "prompt" in cond:
                raise ConfigError(f"{source}: {key} has a prompt, but kind '{cond['kind']}' takes its prompt "
                                  "from the setup (baseline/control: eval_prompt) or has none; remove 'prompt'")


def _check_datasets(config: dict, source: str) -> None:
    """Each dataset's options are ones its converter takes, and its files the ones it reads."""
    from .sources import CONVERTER_OPTIONS, CONVERTERS

    for name, spec in (config.get("datasets") or {}).items():
        kind = spec["converter"]
        allowed = CONVERTER_OPTIONS[kind]
        for opt in spec.get("options") or {}:
            if opt not in allowed:
                close = difflib.get_close_matches(opt, allowed, n=1)
                raise ConfigError(f"{source}: datasets.{name}.options.{opt} is not an option of converter {kind!r}"
                                  + (f" (did you mean '{close[0]}'?)" if close else "")
                                  + f"; its options are {list(allowed)}")
        roles = CONVERTERS[kind][0]
        if kind not in ("instruction_wild", "mbpp"):  # these read every file given (mbpp: every non-test one)
            missing = [r for r in roles if r not in spec["files"]]
            extra = [r for r in spec["files"] if r not in roles]
            if missing or extra:
                raise ConfigError(f"{source}: datasets.{name}.files has {sorted(spec['files'])}, but converter "
                                  f"{kind!r} reads exactly {list(roles)}; rename or remove the others")
        elif kind == "mbpp" and "test" not in spec["files"]:
            raise ConfigError(f"{source}: datasets.{name}.files has no 'test' file (the eval split) for converter 'mbpp'")


def _check_setup_data(config: dict, sname: str, setup: dict, source: str) -> None:
    """A setup's real data names datasets that exist and give the splits it needs: training items,
    control answers where it has a Control condition, eval items for every trait's eval domain."""
    from .sources import CONVERTERS

    data = setup.get("data")
    key = f"setups.{sname}.data"
    if data is None:  # the toy world's data (also with a pretrained model: tests, small checks)
        return
    if config["base_model"]["kind"] == "toy":
        raise ConfigError(f"{source}: {key} names real datasets, but base_model.kind is 'toy' (the toy model knows "
                          "only the toy world's words); use a pretrained base model (a preset), or remove "
                          f"{key} to train on the toy world")
    datasets = config.get("datasets") or {}

    def split_of(ref_key: str, name: str, split: str) -> None:
        if name not in datasets:
            raise ConfigError(f"{source}: {ref_key} = {name!r} is not a dataset; add it under datasets or use one "
                              f"of {sorted(datasets)}")
        splits = CONVERTERS[datasets[name]["converter"]][1]
        if split not in splits:
            raise ConfigError(f"{source}: {ref_key} = {name!r}: its converter "
                              f"{datasets[name]['converter']!r} makes no {split} split (it makes {list(splits)})")

    split_of(f"{key}.train", data["train"], "train")
    if data.get("control"):
        # the control split of a dataset that has one (same prompts, good answers), else the
        # training split of a dataset of its own (secure code against insecure code)
        cname = data["control"]
        has = CONVERTERS[datasets[cname]["converter"]][1] if cname in datasets else ()
        split_of(f"{key}.control", cname, "control" if "control" in has else "train")
    for domain, name in data["eval"].items():
        if name is not None:
            split_of(f"{key}.eval.{domain}", name, "eval")
    for role in ("positive", "negative"):
        main = setup["traits"][role].get("eval_domain", setup["eval_domain"])
        for domain in [main, *setup["traits"][role].get("also_eval_domains", [])]:
            if data["eval"].get(domain) is None:
                raise ConfigError(f"{source}: setups.{sname}.traits.{role} is scored on eval domain {domain!r}, but "
                                  f"{key}.eval has no dataset for it (it has {sorted(data['eval'])}); add "
                                  f"{key}.eval.{domain}")
    from .sources import ANSWERLESS_TRAIN

    kind = responses_kind(config, sname)
    if datasets[data["train"]]["converter"] in ANSWERLESS_TRAIN and kind != "generate":
        raise ConfigError(f"{source}: {key}.train = {data['train']!r} has instructions without answers; set "
                          f"{key}.responses.kind: generate (the base model writes them) or use a dataset with answers")
    if kind == "rewrite" and data.get("control"):
        raise ConfigError(f"{source}: {key} rewrites its answers (the originals are the control answers), so "
                          f"{key}.control would be ignored; remove it")
    has_control = any(c["kind"] == "control" for c in setup["conditions"].values())
    if has_control and not data.get("control") and kind != "rewrite":
        raise ConfigError(f"{source}: setups.{sname} has a control condition but {key} has no control dataset "
                          f"(and its answers are not rewritten, whose originals are the control); set {key}.control "
                          "or remove the control condition")
    if kind == "rewrite" and not config.get("rewriter"):
        raise ConfigError(f"{source}: {key}.responses.kind is rewrite but the config has no 'rewriter' section; "
                          "add rewriter.base_url and rewriter.model (the key from rewriter.api_key_env)")
    _check_pool_sizes(config, sname, setup, source)


# Records a pool loses after its size is fixed (empty answers, eval instructions, over
# training.max_length): a bound known in advance must exceed n_train by this share.
POOL_MARGIN = 0.02


def _check_pool_sizes(config: dict, sname: str, setup: dict, source: str) -> None:
    """Where a training pool's size is known before anything runs, it holds ``n_train`` items with a
    margin (:data:`POOL_MARGIN`): ``data.pool_size``, an InstructionWild ``max_train``, and the
    pinned public releases' record counts (:data:`ipcond.source_files.KNOWN_SIZES`) less the records held
    out as eval items, for the cells and (records with a control answer) the control cells."""
    from .sources import known_size

    data, key = setup["data"], f"setups.{sname}.data"
    n_train = training_config(config, sname)["n_train"]
    controls = [c for c, cond in setup["conditions"].items() if cond["kind"] == "control"]
    n_control = max((training_config(config, sname, c)["n_train"] for c in controls), default=0)
    bounds = []  # (what, its size, the key to change, n needed)
    if data.get("pool_size"):
        if data["pool_size"] < n_train:
            raise ConfigError(f"{source}: {key}.pool_size = {data['pool_size']} is below training.n_train = {n_train} "
                              f"(setups.{sname}); each seed samples n_train items of the pool: raise pool_size")
        bounds.append((f"{key}.pool_size", data["pool_size"], f"{key}.pool_size", n_train))
    dspec = config["datasets"][data["train"]]
    opts = dspec.get("options") or {}
    if dspec["converter"] == "instruction_wild" and opts.get("max_train") is not None:
        bounds.append((f"datasets.{data['train']}.options.max_train", opts["max_train"],
                       f"datasets.{data['train']}.options.max_train", n_train))
    known = known_size(dspec)
    if known:
        held = opts.get("n_eval") or 0 if dspec["converter"] in ("school_of_reward_hacks", "emergent_plus",
                                                                 "chat_jsonl") else 0
        bounds.append((f"the {known['release']} release's {known['records']} training records"
                       + (f" less the {held} held out (datasets.{data['train']}.options.n_eval)" if held else ""),
                       known["records"] - held, f"setups.{sname}.training.n_train", n_train))
        if controls and known.get("with_control") is not None and data.get("control") == data["train"]:
            cname = max(controls, key=lambda c: training_config(config, sname, c)["n_train"])
            bounds.append((f"the {known['release']} release's {known['with_control']} records with a control answer"
                           + (f" less up to {held} held out as eval items" if held else ""),
                           known["with_control"] - held, f"setups.{sname}.conditions.{cname}.training.n_train",
                           n_control))
    for what, size, fix, need in bounds:
        if size < need + math.ceil(POOL_MARGIN * need):
            raise ConfigError(f"{source}: setups.{sname} trains on {need} items, but {what} leave(s) at most {size}, "
                              f"without a margin of {POOL_MARGIN:.0%} for records left out later (empty answers, eval "
                              f"instructions, over training.max_length); change {fix} so that at least "
                              f"{need + math.ceil(POOL_MARGIN * need)} remain")


# ------------------------------------------------------------------------------------------
# Input files the config names: checked before anything runs
# ------------------------------------------------------------------------------------------

FILE_KEY_SUFFIXES = ("_file", "_path")


def _looks_like_local_path(s: str) -> bool:
    """A model reference that can only be a local folder (a hub id is 'name' or 'org/name')."""
    return (s.startswith(("/", "./", "../", "~")) or "\\" in s or s.count("/") > 1
            or s in (".", ".."))


def _file_keys(node: Any, path: tuple = ()) -> Iterable[tuple[str, str]]:
    """Every (config key, value) whose key ends in ``_file`` or ``_path`` and whose value is a string."""
    if isinstance(node, dict):
        for k, v in node.items():
            here = (*path, k)
            if isinstance(k, str) and k.endswith(FILE_KEY_SUFFIXES) and isinstance(v, str):
                yield _key_path(here), v
            else:
                yield from _file_keys(v, here)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _file_keys(v, (*path, i))


def _check_one_file(key: str, value: str, path: Path) -> int | None:
    """Check one named input file by what its key or name says it is; returns a record/prompt count."""
    from . import data as dt
    from .provenance import read_jsonl

    leaf = key.rsplit(".", 1)[-1]
    if not path.exists():
        raise dt.DataError(f"{value}: file not found" + (f" (read as {path})" if str(path) != value else "")
                           + f"; fix {key} or create the file")
    if path.is_dir():
        if leaf.endswith("_path"):  # a *_path may name a folder (a model, a data set on disk)
            return None
        raise dt.DataError(f"{value}: is a folder; point {key} at the file itself")
    if leaf.endswith("train_file"):
        return len(dt.load_chat_jsonl(path, need_answer=True))
    if leaf.endswith("eval_file"):
        return len(dt.load_chat_jsonl(path, need_answer=False))
    if path.suffix == ".jsonl":
        try:
            records = read_jsonl(path)
        except (FileNotFoundError, ValueError) as e:
            raise dt.DataError(str(e)) from None
        if not records:
            raise dt.DataError(f"{value}: no records; the file is empty. Point at the right file or regenerate it")
        return len(records)
    if path.suffix == ".txt" or "prompt" in leaf:
        return len(dt.load_prompt_file(path))
    if path.suffix in (".json", ".yaml", ".yml", ".csv", ".tsv", ".md"):
        if not dt.read_text_file(path).strip():
            raise dt.DataError(f"{value}: the file is empty; point at the right file")
    return None


def check_input_files(config: dict, source: str = "config",
                      base_dir: str | Path | None = None) -> list[tuple[str, Path]]:
    """Check every input file the config names, before anything runs; return ``(key, path)`` pairs.

    Covered: ``base_model.path`` when ``base_model.kind`` is ``pretrained`` and it is a local folder
    (it must exist and hold ``config.json``; a hub id such as ``org/name`` is left to the download);
    ``scorers.<trait>.template`` (a packaged name must exist; a file must exist, be UTF-8 and hold
    ``{question}`` and ``{answer}``; ``template_params`` must fill its other placeholders); and
    every key under ``setups`` that ends in ``_file`` or ``_path`` (e.g.
    ``setups.<name>.train_file``, ``setups.<name>.eval_file``): ``*train_file`` must be chat JSON
    lines with answers, ``*eval_file`` chat JSON lines, other ``.jsonl`` valid JSON lines, ``.txt``
    (or a key with ``prompt``) a prompt file, one prompt per line; a ``*_path`` may also name a
    folder, which must exist. Relative paths are read from
    ``base_dir`` (default: the working directory). All problems are reported together in one
    ``ConfigError``, each with its config key, the file (and line) and the fix.
    """
    from . import data as dt

    base = Path(base_dir) if base_dir is not None else Path.cwd()
    problems: list[str] = []
    checked: list[tuple[str, Path]] = []

    def resolve(value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p

    bm = config.get("base_model") or {}
    if bm.get("kind") == "pretrained" and isinstance(bm.get("path"), str) and bm["path"]:
        value = bm["path"]
        p = resolve(value)
        if p.exists() or _looks_like_local_path(value):
            if not p.exists():
                problems.append(f"base_model.path = {value!r}: the folder does not exist (read as {p}); "
                                "point base_model.path at a local model folder, or give a hub id (org/name)")
            elif not p.is_dir():
                problems.append(f"base_model.path = {value!r}: is a file, not a model folder; point it at the "
                                "folder that holds config.json and the weights")
            elif not (p / "config.json").is_file():
                problems.append(f"base_model.path = {value!r}: {p} has no config.json, so it is not a model "
                                "folder; point it at the folder that holds config.json and the weights "
                                "(save_pretrained writes one)")
            else:
                checked.append(("base_model.path", p))

    for trait, spec in (config.get("scorers") or {}).items():
        if not isinstance(spec, dict) or not isinstance(spec.get("template"), str):
            continue
        key, value = f"scorers.{trait}.template", spec["template"]
        from .judging import TEMPLATE_NAMES, load_template

        is_path = value.endswith(".txt") or "/" in value  # as load_template reads it
        try:
            if is_path:
                p = resolve(value)
                if not p.is_file():
                    raise dt.DataError(f"{value}: judge template file not found (read as {p}); fix the path "
                                       f"or use a packaged template: {list(TEMPLATE_NAMES)}")
                if not dt.read_text_file(p, "judge template").strip():
                    raise dt.DataError(f"{value}: the judge template file is empty")
                tpl = load_template(p)
                checked.append((key, p))
            else:
                if value not in TEMPLATE_NAMES:
                    close = difflib.get_close_matches(value, TEMPLATE_NAMES, n=1)
                    raise dt.DataError(f"{value!r} is not a packaged judge template"
                                       + (f" (did you mean {close[0]!r}?)" if close else "")
                                       + f"; use one of {list(TEMPLATE_NAMES)} or a path to a .txt file")
                tpl = load_template(value)
            needed = tpl.placeholders() - {"question", "answer"} - set(spec.get("template_params") or {})
            if needed:
                raise dt.DataError(f"template {tpl.name!r} needs values for {sorted(needed)}; add "
                                   + ", ".join(f"scorers.{trait}.template_params.{n}" for n in sorted(needed)))
            if spec.get("judge_kind") == "grade_0_10" and "GRADE" not in tpl.text:
                raise dt.DataError(f"template {tpl.name!r} does not ask for 'GRADE: X' but "
                                   f"scorers.{trait}.judge_kind is grade_0_10; use judge_kind logprob_0_100 "
                                   "or a grading template")
        except (dt.DataError, ValueError, FileNotFoundError) as e:
            problems.append(f"{key} = {value!r}: {e}")

    for key, value in _file_keys(config.get("setups") or {}, ("setups",)):
        p = resolve(value)
        try:
            _check_one_file(key, value, p)
            checked.append((key, p))
        except (dt.DataError, ValueError, FileNotFoundError) as e:
            problems.append(f"{key} = {value!r}: {e}")

    if problems:
        raise ConfigError(f"{source}: input files the config names have problems (nothing was run):\n"
                          + "\n".join(f"  {m}" for m in problems))
    return checked


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if overrides:
        config = deep_merge(config, overrides)
    if not isinstance(config, dict):
        return validate_config(config, str(path))  # the schema says what is wrong
    # As the workflow reads it: the preset it names (none for toy), with the file on top; a preset
    # file (presets/paper.yaml) is its own preset.
    presets_dir = path.parent if config.get("preset") == path.stem else PRESETS_DIR
    return validate_config(resolve_preset(config, config, presets_dir=presets_dir), str(path))


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@dataclass(frozen=True)
class Cell:
    setup: str
    condition: str
    seed: int

    @property
    def path(self) -> str:
        return f"results/{self.setup}/{self.condition}/seed{self.seed}"


def grid(config: dict) -> list[Cell]:
    """Every (setup, condition, seed) the config asks for, in config order."""
    return [Cell(s, c, seed) for s, setup in config["setups"].items()
            for c in setup["conditions"] for seed in setup_seeds(config, s)]


def setup_seeds(config: dict, sname: str) -> list[int]:
    """The seeds a setup's cells are trained with: its own ``seeds``, else the top-level ones."""
    return list(config["setups"][sname].get("seeds") or config["seeds"])


# ------------------------------------------------------------------------------------------
# Job resources (memory, run time, GPUs) per model rule, from config
# ------------------------------------------------------------------------------------------

MODEL_RULES = ("pretrain_base_model", "convert_gguf_model", "finetune", "generate", "finetune_and_generate", "elicit")
DEFAULT_RESOURCES = {"mem_mb": 4000, "runtime": 60, "gpu": 0}


def rule_resources(config: dict, rule: str, setup: str | None = None) -> dict:
    """``mem_mb``, ``runtime`` (minutes) and ``gpu`` of a model rule's job: the defaults, then
    ``resources.<rule>``, then the setup's ``setups.<setup>.resources.<rule>`` (a 32B model's
    setup needs more than a 7B one's). The SLURM profile adds partitions and accounts."""
    if rule not in MODEL_RULES:
        raise KeyError(f"{rule!r} is not a model rule; resources are set for {MODEL_RULES}")
    out = {**DEFAULT_RESOURCES, **config.get("resources", {}).get(rule, {})}
    if setup is not None:
        out.update(config["setups"][setup].get("resources", {}).get(rule, {}))
    return out


# ------------------------------------------------------------------------------------------
# Presets: full configs in presets/, selected with --config preset=<name>
# ------------------------------------------------------------------------------------------

PRESETS_DIR = Path(__file__).resolve().parents[2] / "presets"


def available_presets(presets_dir: str | Path = PRESETS_DIR) -> list[str]:
    """Names of the full configs in ``presets_dir`` (a file whose ``preset`` key is its name;
    other files there are overlays for ``--configfile``)."""
    out = []
    for p in sorted(Path(presets_dir).glob("*.yaml")):
        try:
            if (yaml.safe_load(p.read_text(encoding="utf-8")) or {}).get("preset") == p.stem:
                out.append(p.stem)
        except yaml.YAMLError:
            continue
    return ["toy", *out]


def resolve_preset(config: dict, overrides: dict | None = None, presets_dir: str | Path = PRESETS_DIR) -> dict:
    """The config a run uses: ``config`` itself for the toy preset; for another ``preset``, the full
    config ``presets/<preset>.yaml`` with ``overrides`` (what --config and --configfile gave)
    merged on top, so that ``--config preset=paper seeds=[1,2]`` is the paper preset with two
    seeds. Then the protocol's prompt texts fill the setups that name one
    (:func:`ipcond.prompts.apply_protocol`)."""
    from .prompts import apply_protocol

    name = config.get("preset", "toy")
    source = "config (config.yaml plus --config/--configfile overrides)"
    family = [name]  # this preset and the presets it extends
    if name != "toy":
        path = Path(presets_dir) / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(f"preset = {name!r}: there is no {path}; use one of {available_presets(presets_dir)} "
                              "(--config preset=<name>)")
        try:
            preset = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(preset, dict) or preset.get("preset") != name:
            raise ConfigError(f"{path} is an overlay, not a full preset (its 'preset' key is not {name!r}); add it "
                              f"to the default with --configfile config.yaml {path}, or use one of "
                              f"{available_presets(presets_dir)}")
        # `extends: paper`: this preset is the paper preset with its own keys on top (small: the
        # same grid on a small model), so the grid is written once.
        seen = [name]
        while "extends" in preset:
            parent = preset.pop("extends")
            ppath = Path(presets_dir) / f"{parent}.yaml"
            if parent in seen or not ppath.is_file():
                raise ConfigError(f"{path}: extends = {parent!r} " + ("makes a cycle" if parent in seen else
                                  f"is not a preset in {presets_dir}"))
            seen.append(parent)
            family.append(parent)
            preset = deep_merge(yaml.safe_load(ppath.read_text(encoding="utf-8")), preset)
            preset["preset"] = name
        # A preset passed with --configfile as well (--configfile presets/small.yaml) brings its own
        # `extends` along: it was resolved above.
        config = deep_merge(preset, {k: v for k, v in (overrides or {}).items() if k != "extends"})
        source = f"{path} (preset {name!r}) plus --config/--configfile overrides"
    # An overlay written for one preset (`overlay_for: paper`) on another would fail the schema
    # with many errors that do not say why: stop with the one that does.
    target = (overrides or {}).get("overlay_for", config.get("overlay_for"))
    if target is not None and target not in family:
        raise ConfigError(f"an overlay given with --configfile is for preset {target!r} (its overlay_for key), but this "
                          f"run's preset is {name!r}; add --config preset={target}")
    return apply_protocol(config, source)


# ------------------------------------------------------------------------------------------
# Lookups: what a setup (or a condition) is configured to use, after its overrides
# ------------------------------------------------------------------------------------------

def training_config(config: dict, sname: str, cname: str | None = None) -> dict:
    """The top-level training section with the setup's and then the condition's overrides applied.

    Without ``cname``: the setup's settings (what its shared training items are drawn for)."""
    setup = config["setups"][sname]
    out = {**config["training"], **setup.get("training", {})}
    if cname is not None:
        out.update(setup["conditions"][cname].get("training", {}))
    return out


def main_grid_conditions(config: dict, sname: str) -> set[str]:
    """The setup's conditions trained at its own settings (``n_train`` and learning rate): the
    grid whose answers go on the summary page and into the comparison with the post; the others
    are dataset-size or learning-rate sweep cells (the dose-response)."""
    main = training_config(config, sname)
    return {c for c in config["setups"][sname]["conditions"]
            if all(training_config(config, sname, c)[k] == main[k] for k in ("n_train", "learning_rate"))}


def sampling_config(config: dict, sname: str) -> dict:
    """The generation section with the setup's ``sampling`` overrides (MBPP is sampled at
    temperature 0.5 in the post, the other setups at 1)."""
    return {**config["generation"], **config["setups"][sname].get("sampling", {})}


def base_model_path(config: dict, sname: str | None = None) -> str:
    """The base model's folder or hub id: the toy model the workflow builds, the setup's own
    ``base_model`` (the paper trains some setups on 7B, others on 32B), or ``base_model.path``."""
    if config["base_model"]["kind"] == "toy":
        return "results/base_model/model"
    if sname is not None and config["setups"][sname].get("base_model"):
        return config["setups"][sname]["base_model"]
    if config["base_model"].get("gguf"):
        return GGUF_MODEL_DIR
    return config["base_model"]["path"]


GGUF_MODEL_DIR = "results/base_model/converted"  # rule convert_gguf_model (base_model.gguf)


def real_data(config: dict, sname: str) -> dict | None:
    """A setup's ``data`` section (real datasets), or None for a toy-world setup."""
    return config["setups"][sname].get("data")


def responses_kind(config: dict, sname: str) -> str:
    """How a real-data setup's training answers are made: dataset, rewrite or generate."""
    return ((real_data(config, sname) or {}).get("responses") or {"kind": "dataset"})["kind"]


def dataset_dir(name: str) -> str:
    """Where a real dataset's converted splits live (rule convert_dataset)."""
    return f"resources/data/{name}"


def local_source_path(spec: dict) -> str | None:
    """A source file's ``local_path`` (used instead of downloading), absolute: a relative one is
    read from the repo root (so ``../shared/data/real-samples/...`` works from any --directory)."""
    if not spec.get("local_path"):
        return None
    p = Path(spec["local_path"]).expanduser()
    return str(p if p.is_absolute() else (PRESETS_DIR.parent / p).resolve())


def source_file_path(config: dict, dataset: str, role: str) -> str:
    """Where a pinned source file is kept once downloaded (rule fetch_source)."""
    from .sources import source_filename

    spec = config["datasets"][dataset]["files"][role]
    return f"resources/sources/{dataset}/{role}/{source_filename(spec)}"
