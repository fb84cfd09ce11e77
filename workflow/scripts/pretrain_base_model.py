"""Thin wrapper: see ipcond.jobs."""
from ipcond.jobs import pretrain_base_model, log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    pretrain_base_model(sm.config, sm.input.corpus, sm.output.model, sm.threads)
