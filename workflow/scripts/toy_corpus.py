"""Thin wrapper: see ipcond.jobs."""
from ipcond.jobs import make_toy_corpus, log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    make_toy_corpus(sm.config, sm.output[0])
