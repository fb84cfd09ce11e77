# Reproducibility workflow for "Conditionalization confounds inoculation prompting results".
# The rules live in workflow/rules/, the science in the ipcond package (src/ipcond).
# `snakemake --cores 2 results/figures/all.pdf` builds everything the config asks for.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/sources.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/cell.smk"


rule all:
    default_target: True
    input:
        "results/figures/all.pdf",
        "results/checks.tsv",


onsuccess:
    print_checks("results/checks.tsv")
