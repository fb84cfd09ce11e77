"""Thin wrapper: a cell's fine-tune, generations and learning curve in one process (see
workflow/rules/cell.smk and ipcond.jobs)."""
from pathlib import Path

from ipcond.jobs import finetune_cell, generate_cell, generation_partial_path, log_to, write_curve

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup, condition, seed = sm.wildcards.setup, sm.wildcards.condition, int(sm.wildcards.seed)
with log_to(sm.log.finetune):
    finetune_cell(sm.config, setup, condition, seed, sm.input.train, sm.output.adapter, sm.threads)
with log_to(sm.log.generate):
    # The partial generations are kept until the curve is written too: Snakemake deletes every
    # output of a failed job (the adapter too), and a re-run then resumes from the partial file.
    generate_cell(sm.config, setup, condition, seed, sm.input.eval, sm.input.train, sm.output.adapter,
                  sm.output.generations, sm.threads, keep_partial=True)
    write_curve(sm.config, setup, condition, seed, sm.input.eval, sm.input.train, sm.output.adapter,
                sm.output.curve, sm.threads)
    Path(generation_partial_path(sm.output.generations)).unlink(missing_ok=True)
