"""Thin wrapper: see ipcond.stages.report."""
from ipcond.stages.report import figure_all
from ipcond.stages.common import log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    figure_all(list(sm.input.pdfs), sm.output[0])
