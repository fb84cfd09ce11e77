"""Thin wrapper: see ipcond.stages.sources.train_pool_job."""
from ipcond.stages.common import log_to
from ipcond.stages.sources import train_pool_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    train_pool_job(sm.config, sm.wildcards.setup, str(sm.output[0]), sm.threads)
