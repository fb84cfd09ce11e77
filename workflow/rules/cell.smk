# A cell's model jobs (ipcond.stages.cell): its LoRA fine-tune, its generations in every eval context
# and its learning curve.
#
# One job per cell (execution.fuse_cell_jobs, on in the toy default): fine-tuning, generations and
# the learning curve in one process. Starting Python and importing torch, transformers, PEFT and
# TRL takes ~10 s per process on a laptop core, more than a toy cell's training or sampling, so two
# processes per cell would spend half the default run on start-up. The outputs and logs are those
# of the separate `finetune` and `generate` rules (used at paper scale, where training and
# sampling want different resources), made by the same functions in the same order.


if FUSE_CELL_JOBS:

    rule finetune_and_generate:
        input:
            base=base_model_input,
            train=cell_train_input,
            eval="results/{setup}/data/eval.jsonl",
        output:
            adapter=directory(f"{CELL}/adapter"),
            generations=f"{CELL}/generations.jsonl",
            curve=f"{CELL}/curve.csv",
        params:
            training=lambda wc: training_config(config, wc.setup, wc.condition),
            base_model=lambda wc: base_model_path(config, wc.setup),
            generation=config["generation"],
            sampling=lambda wc: setup_conf(wc).get("sampling", {}),
            eval_prompt=lambda wc: setup_conf(wc)["eval_prompt"],
            traits=lambda wc: setup_conf(wc)["traits"],
            scorers=config.get("scorers", {}),
            judge=config.get("judge", {}),
        threads: max(config["training"].get("threads", 1), config["generation"].get("threads", 1))
        resources:
            mem_mb=lambda wc: rule_resources(config, "finetune_and_generate", wc.setup)["mem_mb"],
            runtime=lambda wc: rule_resources(config, "finetune_and_generate", wc.setup)["runtime"],
            gpu=lambda wc: rule_resources(config, "finetune_and_generate", wc.setup)["gpu"],
        log:
            finetune="logs/{setup}/{condition}/seed{seed}/finetune.log",
            generate="logs/{setup}/{condition}/seed{seed}/generate.log",
        benchmark:
            "benchmarks/{setup}/{condition}/seed{seed}/finetune_and_generate.tsv"
        conda:
            "../../envs/train.yaml"
        script:
            "../scripts/finetune_and_generate.py"


else:  # two jobs per cell: training and sampling get their own resources


    rule finetune:
        input:
            base=base_model_input,
            train=cell_train_input,
        output:
            adapter=directory(f"{CELL}/adapter"),
        params:
            training=lambda wc: training_config(config, wc.setup, wc.condition),
            base_model=lambda wc: base_model_path(config, wc.setup),
        threads: config["training"].get("threads", 1)
        resources:
            mem_mb=lambda wc: rule_resources(config, "finetune", wc.setup)["mem_mb"],
            runtime=lambda wc: rule_resources(config, "finetune", wc.setup)["runtime"],
            # A cell evaluated from a given model (model_from) only links it: no GPU to ask for.
            gpu=lambda wc: 0 if condition_conf(wc).get("model_from") else rule_resources(config, "finetune", wc.setup)["gpu"],
        log:
            "logs/{setup}/{condition}/seed{seed}/finetune.log",
        benchmark:
            "benchmarks/{setup}/{condition}/seed{seed}/finetune.tsv"
        conda:
            "../../envs/train.yaml"
        script:
            "../scripts/finetune.py"


    rule generate:
        input:
            base=base_model_input,
            adapter=f"{CELL}/adapter",
            eval="results/{setup}/data/eval.jsonl",
            train=cell_train_input,
        output:
            generations=f"{CELL}/generations.jsonl",
            # The learning curve is measured in the same process: loading torch and transformers
            # costs more than measuring a toy cell's checkpoints.
            curve=f"{CELL}/curve.csv",
        params:
            generation=config["generation"],
            sampling=lambda wc: setup_conf(wc).get("sampling", {}),
            base_model=lambda wc: base_model_path(config, wc.setup),
            eval_prompt=lambda wc: setup_conf(wc)["eval_prompt"],
            traits=lambda wc: setup_conf(wc)["traits"],
            scorers=config.get("scorers", {}),
            judge=config.get("judge", {}),
        threads: config["generation"].get("threads", 1)
        resources:
            mem_mb=lambda wc: rule_resources(config, "generate", wc.setup)["mem_mb"],
            runtime=lambda wc: rule_resources(config, "generate", wc.setup)["runtime"],
            gpu=lambda wc: rule_resources(config, "generate", wc.setup)["gpu"],
        log:
            "logs/{setup}/{condition}/seed{seed}/generate.log",
        benchmark:
            "benchmarks/{setup}/{condition}/seed{seed}/generate.tsv"
        conda:
            "../../envs/train.yaml"
        script:
            "../scripts/generate.py"
