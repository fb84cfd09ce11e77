"""Thin wrapper: see ipcond.stages.model."""
from ipcond.stages.model import pretrain_base_model
from ipcond.stages.common import log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    pretrain_base_model(sm.config, sm.input.corpus, sm.output.model, sm.threads)
