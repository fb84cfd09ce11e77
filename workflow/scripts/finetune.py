"""Thin wrapper: see ipcond.jobs."""
from ipcond.jobs import finetune_cell, log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    finetune_cell(sm.config, sm.wildcards.setup, sm.wildcards.condition, int(sm.wildcards.seed), sm.input.train, sm.output.adapter, sm.threads)
