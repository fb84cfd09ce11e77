"""Thin wrapper: see ipcond.stages.data."""
from ipcond.stages.data import make_rephrasings
from ipcond.stages.common import log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    make_rephrasings(sm.config, sm.wildcards.setup, sm.wildcards.condition, sm.output[0])
