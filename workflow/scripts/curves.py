"""Thin wrapper: see ipcond.jobs."""
from ipcond.jobs import combine_curves, log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    combine_curves(list(sm.input), sm.output.samples, sm.output.table)
