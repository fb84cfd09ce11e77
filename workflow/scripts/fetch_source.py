"""Thin wrapper: see ipcond.jobs.fetch_source_job."""
from ipcond.jobs import fetch_source_job, log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    fetch_source_job(sm.config, sm.wildcards.dataset, sm.wildcards.role, str(sm.output[0]))
