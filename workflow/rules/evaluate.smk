# Generation in every eval context, scoring, and the base model's elicitation strength.


if not FUSE_CELL_JOBS:  # else the cell job of cell.smk makes its outputs

    rule generate:
        input:
            base=base_model_input,
            adapter=f"{CELL}/adapter",
            eval="results/{setup}/data/eval.jsonl",
            train=f"{CELL}/train.jsonl",
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


rule score:
    input:
        generations=f"{CELL}/generations.jsonl",
        eval="results/{setup}/data/eval.jsonl",  # code traits run each answer against its item's tests
    output:
        scores=f"{CELL}/scores.csv",
        accounting=f"{CELL}/scores.accounting.json",
    params:
        traits=lambda wc: setup_conf(wc)["traits"],
        scorers=config.get("scorers", {}),
        judge=config.get("judge", {}),
    log:
        "logs/{setup}/{condition}/seed{seed}/score.log",
    conda:
        "../../envs/data.yaml"
    script:
        "../scripts/score.py"


rule elicit:
    input:
        unpack(lambda wc: {f"rephrasings_{c}": p for c, p in setup_rephrasings(wc).items()}),
        base=base_model_input,
        eval="results/{setup}/data/eval.jsonl",
        corpus=lambda wc: ["results/base_model/corpus.jsonl"] if TOY else [],
    output:
        generations="results/{setup}/elicitation/generations.jsonl",
        table="results/{setup}/elicitation.csv",
    params:
        setup=setup_conf,  # with its sampling overrides and base model
        generation=config["generation"],
        base_model=lambda wc: base_model_path(config, wc.setup),
    threads: config["generation"].get("threads", 1)
    resources:
        mem_mb=lambda wc: rule_resources(config, "elicit", wc.setup)["mem_mb"],
        runtime=lambda wc: rule_resources(config, "elicit", wc.setup)["runtime"],
        gpu=lambda wc: rule_resources(config, "elicit", wc.setup)["gpu"],
    log:
        "logs/{setup}/elicit.log",
    benchmark:
        "benchmarks/{setup}/elicit.tsv"
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/elicit.py"




rule curves:
    input:
        lambda wc: setup_cells(wc, "curve.csv"),
    output:
        samples="results/{setup}/curves/samples.csv",
        table="results/{setup}/curves.csv",
    log:
        "logs/{setup}/curves.log",
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/curves.py"
