"""Thin wrapper: see ipcond.stages.data."""
from ipcond.stages.data import make_eval_set
from ipcond.stages.common import log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    make_eval_set(sm.config, sm.wildcards.setup, sm.output[0])
