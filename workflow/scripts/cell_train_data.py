"""Thin wrapper: see ipcond.stages.data."""
from ipcond.stages.data import make_cell_train_data
from ipcond.stages.common import log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    make_cell_train_data(sm.config, sm.wildcards.setup, sm.wildcards.condition, int(sm.wildcards.seed), sm.input.train_items, sm.input.rephrasings or None, sm.output[0])
