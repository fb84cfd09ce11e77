"""Thin wrapper: see ipcond.stages.report."""
from ipcond.stages.report import figure_setup
from ipcond.stages.common import log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    figure_setup(sm.config, sm.wildcards.setup, sm.input.table, sm.input.elicitation,
                 sm.input.curves or None, sm.output.pdf, sm.output.png)
