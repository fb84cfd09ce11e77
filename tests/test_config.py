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


def test_a_setup_can_have_its_own_seeds_and_a_main_grid(default_config):
    from ipcond.config import main_grid_conditions, setup_seeds

    cfg = copy.deepcopy(default_config)
    td = "trait_distillation_french_playful"
    cfg["setups"][td]["seeds"] = [1, 2, 3]
    validate_config(cfg)
    assert setup_seeds(cfg, td) == [1, 2, 3] and setup_seeds(cfg, "spanish_caps") == cfg["seeds"]
    cells = grid(cfg)
    n_td = len(cfg["setups"][td]["conditions"])
    n_other = sum(len(s["conditions"]) for n, s in cfg["setups"].items() if n != td)
    assert len(cells) == 3 * n_td + len(cfg["seeds"]) * n_other
    # the default's dataset-size sweep cells are not in the main grid
    main = main_grid_conditions(cfg, td)
    assert "Baseline" in main and "BaselineN240" not in main and "IrrelevantBismuthFactN480" not in main
    cfg["setups"][td]["seeds"] = []
    with pytest.raises(ConfigError):
        validate_config(cfg)


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


def test_model_rule_resources_come_from_config_with_setup_overrides(default_config):
    from ipcond.config import rule_resources

    cfg = copy.deepcopy(default_config)
    cfg["resources"] = {"finetune": {"mem_mb": 64000, "gpu": 1, "runtime": 240}}
    big = next(iter(cfg["setups"]))
    cfg["setups"][big]["resources"] = {"finetune": {"mem_mb": 160000}}
    validate_config(cfg)
    other = list(cfg["setups"])[1]
    assert rule_resources(cfg, "finetune", other) == {"mem_mb": 64000, "runtime": 240, "gpu": 1}
    assert rule_resources(cfg, "finetune", big) == {"mem_mb": 160000, "runtime": 240, "gpu": 1}
    assert rule_resources(cfg, "elicit", big) == {"mem_mb": 4000, "runtime": 60, "gpu": 0}
    cfg["resources"]["finetun"] = {"gpu": 1}
    with pytest.raises(ConfigError, match="finetun"):
        validate_config(cfg)


def test_vllm_backend_needs_a_max_lora_rank_the_adapters_fit(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["generation"]["backend"] = "vllm"
    cfg["generation"]["vllm"] = {"max_model_len": 256, "max_lora_rank": 8}
    with pytest.raises(ConfigError, match=r"rank 16 but generation\.vllm\.max_lora_rank is 8.*at least 16"):
        validate_config(cfg)
    cfg["generation"]["vllm"]["max_lora_rank"] = 16
    validate_config(cfg)


def test_pool_sizes_known_in_advance_need_n_train_and_a_margin():
    """Issue 17, kind 3: a pool no larger than n_train stops every cell late; where its size is
    known before anything runs, the config check names the key to change."""
    from ipcond.config import resolve_preset

    def paper(over):
        return validate_config(resolve_preset({"preset": "paper"}, {"preset": "paper", **over}))

    paper({})  # the preset itself: 10,200 instructions for 10,000; 850 control answers of at most 873
    # School of Reward Hacks: 973 records with a control answer, less up to the 100 held out
    over = {"setups": {"school_of_reward_hacks": {"conditions": {"Control": {"training": {"n_train": 900}}}}}}
    with pytest.raises(ConfigError, match=r"973 records with a control answer less up to 100 held out.*"
                                          r"change setups.school_of_reward_hacks.conditions.Control.training.n_train"):
        paper(over)
    # the trait-distillation pool capped at exactly its n_train (the preset's old setting)
    with pytest.raises(ConfigError, match=r"trains on 10000 items, but datasets.instruction_wild.options.max_train "
                                          r"leave\(s\) at most 10000.*at least 10200 remain"):
        paper({"datasets": {"instruction_wild": {"options": {"max_train": 10000}}}})
    with pytest.raises(ConfigError, match=r"the google-research-datasets/mbpp release's 717 training records.*"
                                          r"change setups.mbpp.training.n_train"):
        paper({"setups": {"mbpp": {"training": {"n_train": 710}}}})
