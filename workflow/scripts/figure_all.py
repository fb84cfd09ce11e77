"""Thin wrapper: see ipcond.jobs."""
from ipcond.jobs import figure_all, log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    figure_all(list(sm.input.pdfs), sm.output[0])
