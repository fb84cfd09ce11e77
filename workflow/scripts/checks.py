"""Thin wrapper: see ipcond.stages.report."""
from ipcond.stages.report import collect_checks
from ipcond.stages.common import log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    collect_checks(list(sm.input.checks), sm.output[0], sm.input.comparison)
