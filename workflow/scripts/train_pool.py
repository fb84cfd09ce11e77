"""Thin wrapper: see ipcond.jobs.train_pool_job."""
from ipcond.jobs import log_to, train_pool_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    train_pool_job(sm.config, sm.wildcards.setup, str(sm.output[0]), sm.threads)
