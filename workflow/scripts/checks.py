"""Thin wrapper: see ipcond.jobs."""
from ipcond.jobs import collect_checks, log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    collect_checks(list(sm.input), sm.output[0])
