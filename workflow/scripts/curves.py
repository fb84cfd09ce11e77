"""Thin wrapper: see ipcond.stages.evaluate."""
from ipcond.stages.evaluate import combine_curves
from ipcond.stages.common import log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    combine_curves(list(sm.input), sm.output.samples, sm.output.table)
