# Scoring of every cell's generations, the base model's elicitation strength, and the learning
# curves (ipcond.stages.evaluate). A cell's generations are made in cell.smk.


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
