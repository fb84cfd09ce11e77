# Config validation, wildcard constraints and input functions shared by all rules.

import os
import sys

from ipcond.config import ConfigError, check_input_files, resolve_preset, rule_resources, validate_config
from ipcond.config import GGUF_MODEL_DIR, base_model_path, dataset_dir, local_source_path, sampling_config, setup_seeds, source_file_path, training_config
from ipcond.config import responses_kind as setup_responses_kind
from ipcond.sources import source_url


# `--config preset=paper` (or small) replaces config.yaml by presets/<name>.yaml, with the other
# --config/--configfile overrides on top; setups that follow the published protocol get its prompt
# texts. Bad config keys and bad files the config names stop the run here, before anything runs.
try:
    _source = f"config (preset {config.get('preset')!r} plus --config/--configfile overrides)"
    _resolved = resolve_preset(config, workflow.config_settings.overwrite_config)
    if _resolved is not config:  # the same object for a toy config without protocol setups
        config.clear()
        config.update(_resolved)
    validate_config(config, source=_source)
    INPUT_FILES = check_input_files(config, source=_source)
except ConfigError as err:
    sys.exit(f"Config error:\n{err}")

SETUPS = list(config["setups"])
CONDITIONS = sorted({c for s in config["setups"].values() for c in s["conditions"]})
SEEDS = [str(s) for s in config["seeds"]]
TOY = config["base_model"]["kind"] == "toy"
CURVES = config["generation"].get("curve_n_eval", 0) > 0
CELL = "results/{setup}/{condition}/seed{seed}"
# A cell's fine-tune and generations in one job (workflow/rules/cell.smk) or two (finetune, generate).
FUSE_CELL_JOBS = config.get("execution", {}).get("fuse_cell_jobs", False)


DATASETS = list(config.get("datasets", {}))


wildcard_constraints:
    setup="|".join(SETUPS),
    condition="|".join(CONDITIONS),
    seed=r"\d+",
    dataset="|".join(DATASETS) or "(?!)",
    role=r"[a-z][a-z0-9_]*",
    filename=r"[^/]+",


def setup_conf(wildcards):
    return config["setups"][wildcards.setup]


def setup_data_conf(wildcards):
    """What a setup's eval and training items depend on: not its conditions, so that changing a
    condition's prompt re-runs only that condition's cells."""
    return {k: v for k, v in setup_conf(wildcards).items() if k not in ("conditions", "title")}


def condition_conf(wildcards):
    return config["setups"][wildcards.setup]["conditions"][wildcards.condition]


def base_model_input(wildcards):
    """The toy base model is built by the workflow, a GGUF one converted by it (rule
    convert_gguf_model); a pretrained one is read from its path."""
    path = base_model_path(config, getattr(wildcards, "setup", None))
    return [path] if TOY or path == GGUF_MODEL_DIR else []


def rephrasings_input(wildcards):
    if condition_conf(wildcards)["kind"] == "rephrased":
        return f"results/{wildcards.setup}/{wildcards.condition}/rephrasings.json"
    return []


def cell_train_input(wildcards):
    """What a cell's model jobs read of its training: its training file, or, for a cell evaluated
    from a given model (model_from: nothing is trained), only where its training prompts come from
    (its rephrasings, or nothing for a fixed prompt), so no training data is built for it."""
    if condition_conf(wildcards).get("model_from"):
        return rephrasings_input(wildcards)
    return f"results/{wildcards.setup}/{wildcards.condition}/seed{wildcards.seed}/train.jsonl"


def setup_rephrasings(wildcards):
    setup = setup_conf(wildcards)
    return {
        c: f"results/{wildcards.setup}/{c}/rephrasings.json"
        for c, v in setup["conditions"].items()
        if v["kind"] == "rephrased"
    }


def setup_cells(wildcards, leaf):
    setup = setup_conf(wildcards)
    return [
        f"results/{wildcards.setup}/{c}/seed{s}/{leaf}"
        for c in setup["conditions"]
        for s in setup_seeds(config, wildcards.setup)
    ]


def all_cells(leaf):
    """Every cell's file ``leaf``, across setups, conditions and seeds."""
    return [
        f"results/{s}/{c}/seed{seed}/{leaf}"
        for s, spec in config["setups"].items()
        for c in spec["conditions"]
        for seed in setup_seeds(config, s)
    ]


def print_checks(path):
    from pathlib import Path

    if Path(path).exists():
        print(f"\nToy-organism checks (also in {path}):")
        print(Path(path).read_text())


# ------------------------------------------------------------------------------------------
# Real datasets (paper scale): pinned files -> converted splits -> a setup's training pool
# ------------------------------------------------------------------------------------------


def dataset_source_files(wildcards):
    """A dataset's downloaded files by role (rule fetch_source makes them)."""
    files = config["datasets"][wildcards.dataset]["files"]
    return {role: source_file_path(config, wildcards.dataset, role) for role in files}


def real_data(wildcards):
    return setup_conf(wildcards).get("data")


def responses_kind(wildcards):
    return setup_responses_kind(config, wildcards.setup)


def train_pool_datasets(wildcards):
    data = real_data(wildcards)
    return [dataset_dir(d) for d in dict.fromkeys(filter(None, (data["train"], data.get("control"))))]


def eval_set_datasets(wildcards):
    data = real_data(wildcards)
    return [dataset_dir(d) for d in dict.fromkeys(data["eval"].values()) if d] if data else []


def train_pool_input(wildcards):
    return f"results/{wildcards.setup}/data/train_pool.jsonl" if real_data(wildcards) else []
