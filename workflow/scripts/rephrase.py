"""Thin wrapper: see ipcond.jobs."""
from ipcond.jobs import make_rephrasings, log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    make_rephrasings(sm.config, sm.wildcards.setup, sm.wildcards.condition, sm.output[0])
