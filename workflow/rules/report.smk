# Aggregation with intervals, toy-organism checks and figures.


rule aggregate:
    input:
        scores=lambda wc: setup_cells(wc, "scores.csv"),
        elicitation="results/{setup}/elicitation.csv",
    output:
        table="results/{setup}/scores.csv",
        checks="results/{setup}/checks.json",
    params:
        checks=config["checks"],
    log:
        "logs/{setup}/aggregate.log",
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/aggregate.py"


rule figure:
    input:
        "results/{setup}/scores.csv",
    output:
        pdf="results/figures/{setup}.pdf",
        png="results/figures/png/{setup}-01.png",
    params:
        title=lambda wc: setup_conf(wc).get("title"),
    log:
        "logs/figures/{setup}.log",
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/figure.py"


rule figure_all:
    input:
        expand("results/figures/{setup}.pdf", setup=SETUPS),
    output:
        "results/figures/all.pdf",
    log:
        "logs/figures/all.log",
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/figure_all.py"


rule checks:
    input:
        expand("results/{setup}/checks.json", setup=SETUPS),
    output:
        "results/checks.tsv",
    log:
        "logs/checks.log",
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/checks.py"
