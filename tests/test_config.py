import copy

import pytest

from ipcond.config import ConfigError, grid, validate_config


def test_default_config_is_valid(default_config):
    assert validate_config(default_config) is default_config


def test_grid_expands_setups_conditions_and_seeds(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["seeds"] = [1, 2]
    cells = grid(cfg)
    n_conditions = sum(len(s["conditions"]) for s in cfg["setups"].values())
    assert len(cells) == 2 * n_conditions
    assert len(set(cells)) == len(cells)
    first = cells[0]
    setup0 = next(iter(cfg["setups"]))
    assert (first.setup, first.seed) == (setup0, 1)
    assert first.path == f"results/{setup0}/{first.condition}/seed1"


def test_misspelt_key_names_key_and_suggests_fix(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["training"]["learning_rat"] = cfg["training"].pop("learning_rate")
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    msg = str(e.value)
    assert "learning_rat" in msg and "did you mean 'learning_rate'" in msg and "training" in msg


def test_wrong_type_names_key(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["training"]["batch_size"] = "sixteen"
    with pytest.raises(ConfigError, match=r"training\.batch_size"):
        validate_config(cfg)


def test_unknown_condition_kind_lists_allowed(default_config):
    cfg = copy.deepcopy(default_config)
    setup = next(iter(cfg["setups"].values()))
    setup["conditions"]["Weird"] = {"kind": "inoculate", "prompt": "x ."}
    with pytest.raises(ConfigError, match="inoculation"):
        validate_config(cfg)


def test_rephrased_must_point_at_inoculation(default_config):
    cfg = copy.deepcopy(default_config)
    setup = next(iter(cfg["setups"].values()))
    setup["conditions"]["Bad"] = {"kind": "rephrased", "of": "None", "n_rephrasings": 4}
    with pytest.raises(ConfigError, match="not an inoculation condition"):
        validate_config(cfg)


def test_too_many_rephrasings_says_how_many_exist(default_config):
    cfg = copy.deepcopy(default_config)
    setup = next(iter(cfg["setups"].values()))
    rephrased = next(c for c in setup["conditions"].values() if c["kind"] == "rephrased")
    rephrased["n_rephrasings"] = 10_000
    with pytest.raises(ConfigError, match="at most"):
        validate_config(cfg)


def test_inoculation_trait_must_belong_to_setup(default_config):
    cfg = copy.deepcopy(default_config)
    setup = next(iter(cfg["setups"].values()))
    inoc = next(c for c in setup["conditions"].values() if c["kind"] == "inoculation")
    inoc["trait"] = "capitals"
    with pytest.raises(ConfigError, match="not a trait of this setup"):
        validate_config(cfg)
