"""Thin wrapper: see ipcond.stages.report."""
from ipcond.stages.common import log_to
from ipcond.stages.report import summary_report

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    summary_report(sm.config, list(sm.input.scores), sm.output.table, sm.output.pdf, sm.output.png,
                   comparison_csv=sm.output.comparison, dose_csv=sm.output.dose)
