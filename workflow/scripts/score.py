"""Thin wrapper: see ipcond.stages.evaluate."""
from ipcond.stages.common import log_to
from ipcond.stages.evaluate import score_cell

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    score_cell(sm.config, sm.wildcards.setup, sm.wildcards.condition, int(sm.wildcards.seed), sm.input.generations,
               sm.output.scores, sm.output.accounting, eval_path=sm.input.eval)
