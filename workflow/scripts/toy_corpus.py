"""Thin wrapper: see ipcond.stages.model."""
from ipcond.stages.model import make_toy_corpus
from ipcond.stages.common import log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    make_toy_corpus(sm.config, sm.output[0])
