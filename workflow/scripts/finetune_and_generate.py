"""Thin wrapper: a cell's fine-tune, generations and learning curve in one process (see
workflow/rules/cell.smk and ipcond.jobs)."""
from ipcond.jobs import finetune_cell, generate_with_curve, log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup, condition, seed = sm.wildcards.setup, sm.wildcards.condition, int(sm.wildcards.seed)
with log_to(sm.log.finetune):
    finetune_cell(sm.config, setup, condition, seed, sm.input.train, sm.output.adapter, sm.threads)
with log_to(sm.log.generate):
    generate_with_curve(sm.config, setup, condition, seed, sm.input.eval, sm.input.train, sm.output.adapter,
                        sm.output.generations, sm.output.curve, sm.threads)
