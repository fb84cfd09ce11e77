# The base model (built and pretrained here for the toy world) and LoRA fine-tuning per cell.


rule toy_corpus:
    output:
        "results/base_model/corpus.jsonl",
    params:
        world=config.get("world"),
    log:
        "logs/base_model/toy_corpus.log",
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/toy_corpus.py"


rule pretrain_base_model:
    input:
        corpus="results/base_model/corpus.jsonl",
    output:
        model=directory("results/base_model/model"),
    params:
        toy=config["base_model"].get("toy"),
        world=config.get("world"),
    threads: workflow.cores
    resources:
        mem_mb=lambda wc: rule_resources(config, "pretrain_base_model", None)["mem_mb"],
        runtime=lambda wc: rule_resources(config, "pretrain_base_model", None)["runtime"],
        gpu=lambda wc: rule_resources(config, "pretrain_base_model", None)["gpu"],
    log:
        "logs/base_model/pretrain.log",
    benchmark:
        "benchmarks/base_model/pretrain.tsv"
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/pretrain_base_model.py"


if not FUSE_CELL_JOBS:  # else the cell job of cell.smk makes its outputs

    rule finetune:
        input:
            base=base_model_input,
            train=f"{CELL}/train.jsonl",
        output:
            adapter=directory(f"{CELL}/adapter"),
        params:
            training=lambda wc: training_config(config, wc.setup, wc.condition),
            base_model=lambda wc: base_model_path(config, wc.setup),
        threads: config["training"].get("threads", 1)
        resources:
            mem_mb=lambda wc: rule_resources(config, "finetune", wc.setup)["mem_mb"],
            runtime=lambda wc: rule_resources(config, "finetune", wc.setup)["runtime"],
            gpu=lambda wc: rule_resources(config, "finetune", wc.setup)["gpu"],
        log:
            "logs/{setup}/{condition}/seed{seed}/finetune.log",
        benchmark:
            "benchmarks/{setup}/{condition}/seed{seed}/finetune.tsv"
        conda:
            "../../envs/train.yaml"
        script:
            "../scripts/finetune.py"
