# Evaluation sets, training items, rephrasings and each cell's training data (ipcond.stages.data).


rule eval_set:
    input:
        eval_set_datasets,
    output:
        "results/{setup}/data/eval.jsonl",
    params:
        setup=setup_data_conf,
        n_eval=config["generation"]["n_eval"],
    log:
        "logs/{setup}/eval_set.log",
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/eval_set.py"


rule train_items:
    input:
        eval="results/{setup}/data/eval.jsonl",
        pool=train_pool_input,
        # the length check reads the base model's tokenizer (a GGUF one is converted by the workflow)
        base=lambda wc: base_model_input(wc) if real_data(wc) else [],
    output:
        "results/{setup}/data/train_items_seed{seed}.jsonl",
    params:
        domain=lambda wc: setup_conf(wc)["domain"],
        traits=lambda wc: setup_conf(wc)["traits"],
        control_traits=lambda wc: setup_conf(wc).get("control_traits", []),
        n_train=lambda wc: training_config(config, wc.setup)["n_train"],
        # real data: examples over max_length (by the base model's tokenizer) are left out
        length_check=lambda wc: {"max_length": training_config(config, wc.setup)["max_length"],
                                 "base_model": base_model_path(config, wc.setup)} if real_data(wc) else None,
    log:
        "logs/{setup}/train_items_seed{seed}.log",
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/train_items.py"


rule rephrase:
    output:
        "results/{setup}/{condition}/rephrasings.json",
    params:
        condition=condition_conf,
        target=lambda wc: setup_conf(wc)["conditions"][condition_conf(wc)["of"]],
        rephraser=config.get("rephraser", {"kind": "toy"}),
    log:
        "logs/{setup}/{condition}/rephrase.log",
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/rephrase.py"


rule cell_train_data:
    input:
        train_items="results/{setup}/data/train_items_seed{seed}.jsonl",
        rephrasings=rephrasings_input,
    output:
        f"{CELL}/train.jsonl",
    params:
        condition=condition_conf,
        n_train=lambda wc: training_config(config, wc.setup, wc.condition)["n_train"],
        placement=lambda wc: setup_conf(wc)["placement"],
        system_prompt=lambda wc: setup_conf(wc).get("system_prompt"),
        eval_prompt=lambda wc: setup_conf(wc)["eval_prompt"],
    log:
        "logs/{setup}/{condition}/seed{seed}/train_data.log",
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/cell_train_data.py"
