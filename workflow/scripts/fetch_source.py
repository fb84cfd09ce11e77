"""Thin wrapper: see ipcond.stages.sources.fetch_source_job."""
from ipcond.stages.sources import fetch_source_job
from ipcond.stages.common import log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    fetch_source_job(sm.config, sm.wildcards.dataset, sm.wildcards.role, str(sm.output[0]))
