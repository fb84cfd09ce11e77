# Generation in every eval context, scoring, and the base model's elicitation strength.


rule generate:
    input:
        base=base_model_input,
        adapter=f"{CELL}/adapter",
        eval="results/{setup}/data/eval.jsonl",
        train=f"{CELL}/train.jsonl",
    output:
        f"{CELL}/generations.jsonl",
    params:
        generation=config["generation"],
        eval_prompt=lambda wc: setup_conf(wc)["eval_prompt"],
    threads: config["generation"].get("threads", 1)
    resources:
        mem_mb=4000,
        runtime=60,
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
        f"{CELL}/generations.jsonl",
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
        setup=setup_conf,
        generation=config["generation"],
    threads: config["generation"].get("threads", 1)
    resources:
        mem_mb=4000,
        runtime=60,
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
        base=base_model_input,
        adapters=lambda wc: setup_cells(wc, "adapter"),
        train=lambda wc: setup_cells(wc, "train.jsonl"),
        eval="results/{setup}/data/eval.jsonl",
    output:
        samples="results/{setup}/curves/samples.csv",
        table="results/{setup}/curves.csv",
    params:
        generation=config["generation"],
        setup=setup_conf,
        scorers=config.get("scorers", {}),
        judge=config.get("judge", {}),
    threads: config["generation"].get("threads", 1)
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        "logs/{setup}/curves.log",
    benchmark:
        "benchmarks/{setup}/curves.tsv"
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/curves.py"
