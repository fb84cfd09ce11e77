"""Thin wrapper: see ipcond.stages.report."""
from ipcond.stages.report import aggregate_setup
from ipcond.stages.common import log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    aggregate_setup(sm.config, sm.wildcards.setup, list(sm.input.scores), sm.input.elicitation, sm.output.table, sm.output.checks)
