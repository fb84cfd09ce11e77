# Aggregation with intervals, toy-organism checks and figures (ipcond.stages.report).


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
        table="results/{setup}/scores.csv",
        elicitation="results/{setup}/elicitation.csv",
        curves=lambda wc: f"results/{wc.setup}/curves.csv" if CURVES else [],
    output:
        pdf="results/figures/{setup}.pdf",
        png=report(
            directory("results/figures/png/{setup}"),
            patterns=["{name}.png"],
            caption="../report/setup.rst",
            category="Setups",
            subcategory="{setup}",
        ),
    params:
        setup=setup_conf,
        training=lambda wc: [training_config(config, wc.setup, c) for c in setup_conf(wc)["conditions"]],
    log:
        "logs/figures/{setup}.log",
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/figure.py"


rule summary:
    input:
        scores=all_cells("scores.csv"),
        # the post's table, read from the repository (ipcond.observations.OBSERVATIONS_PATH)
        observations=os.path.join(workflow.basedir, "resources", "post_observations.yaml"),
    output:
        table="results/summary.csv",
        # Our answers next to the post's "Summary of observations" (resources/post_observations.yaml)
        comparison="results/post_comparison.csv",
        # The four questions' effects against n_train, for setups with a dataset-size sweep
        dose="results/dose_response.csv",
        pdf="results/figures/summary.pdf",
        png=report(
            directory("results/figures/png/summary"),
            patterns=["{name}.png"],
            caption="../report/summary.rst",
            category="Summary",
        ),
    log:
        "logs/figures/summary.log",
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/summary.py"


rule figure_all:
    input:
        pdfs=["results/figures/summary.pdf", *expand("results/figures/{setup}.pdf", setup=SETUPS)],
        # Built with the figures so that every run of the README's command prints the checks.
        checks="results/checks.tsv",
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
        checks=expand("results/{setup}/checks.json", setup=SETUPS),
        comparison="results/post_comparison.csv",
    output:
        "results/checks.tsv",
    log:
        "logs/checks.log",
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/checks.py"
