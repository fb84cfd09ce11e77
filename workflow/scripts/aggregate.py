"""Thin wrapper: see ipcond.jobs."""
from ipcond.jobs import aggregate_setup, log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    aggregate_setup(sm.config, sm.wildcards.setup, list(sm.input.scores), sm.input.elicitation, sm.output.table, sm.output.checks)
