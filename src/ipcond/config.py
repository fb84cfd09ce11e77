"""Config loading, validation and the (setup, condition, seed) grid.

Validation has two layers: the JSON schema in ``workflow/schemas/config.schema.yaml`` (types,
required and unknown keys), then checks that a schema cannot express (a rephrased condition
names an inoculation condition of its setup, enough rephrasings exist, traits are known). Every
error names the key and says how to fix it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
CONDITION_KINDS = ("baseline", "none", "empty", "neutral", "inoculation", "rephrased", "irrelevant", "control")
EVAL_CONTEXTS = ("default", "none", "train")


class ConfigError(ValueError):
    """A config problem, with the key that has it and the fix."""


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
    if config["base_model"]["kind"] == "pretrained" and not config["base_model"].get("path"):
        raise ConfigError(f"{source}: base_model.path is empty but base_model.kind is 'pretrained'; "
                          "set base_model.path to a local model folder or hub id")
    for sname, setup in config["setups"].items():
        traits = {setup["traits"]["positive"]["name"], setup["traits"]["negative"]["name"]}
        if toy:
            for role in ("positive", "negative"):
                t = setup["traits"][role]["name"]
                if t not in tw.STYLE_TRAITS:
                    raise ConfigError(f"{source}: setups.{sname}.traits.{role}.name = {t!r} has no toy scorer; "
                                      f"use one of {list(tw.STYLE_TRAITS)}")
            if set(tw.LANGUAGE_TRAITS) <= traits:
                raise ConfigError(f"{source}: setups.{sname}: french and spanish cannot be one setup's pair")
        conds = setup["conditions"]
        for cname, cond in conds.items():
            key = f"setups.{sname}.conditions.{cname}"
            if cond["kind"] == "inoculation" and cond["trait"] not in traits:
                raise ConfigError(f"{source}: {key}.trait = {cond['trait']!r} is not a trait of this setup; "
                                  f"use one of {sorted(traits)}")
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
            if cond_n_train is not None and setup_n_train is not None and cond_n_train > setup_n_train:
                raise ConfigError(f"{source}: {key}.training.n_train = {cond_n_train} is more than the setup's "
                                  f"{setup_n_train} (a sweep's cells take a prefix of the setup's training items); "
                                  f"raise setups.{sname}.training.n_train to at least {cond_n_train}")
            if cond["kind"] in ("baseline", "none", "empty", "control", "rephrased") and "prompt" in cond:
                raise ConfigError(f"{source}: {key} has a prompt, but kind '{cond['kind']}' takes its prompt "
                                  "from the setup (baseline/control: eval_prompt) or has none; remove 'prompt'")


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if overrides:
        config = deep_merge(config, overrides)
    return validate_config(config, str(path))


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
            for c in setup["conditions"] for seed in config["seeds"]]
