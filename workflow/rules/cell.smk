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
            train=f"{CELL}/train.jsonl",
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
