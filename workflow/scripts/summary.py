"""Thin wrapper: see ipcond.jobs."""
from ipcond.jobs import log_to, summary_report

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    summary_report(sm.config, list(sm.input.scores), sm.output.table, sm.output.pdf, sm.output.png)
