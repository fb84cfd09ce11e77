"""Thin wrapper: see ipcond.stages.data."""
from ipcond.stages.data import make_train_items
from ipcond.stages.common import log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    make_train_items(sm.config, sm.wildcards.setup, int(sm.wildcards.seed), sm.input.eval, sm.output[0],
                     str(sm.input.pool) if sm.input.pool else None)
