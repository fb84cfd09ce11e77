"""Thin wrapper: see ipcond.jobs."""
from ipcond.jobs import generate_cell, log_to, write_curve

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup, condition, seed = sm.wildcards.setup, sm.wildcards.condition, int(sm.wildcards.seed)
with log_to(sm.log[0]):
    generate_cell(sm.config, setup, condition, seed, sm.input.eval, sm.input.train, sm.input.adapter,
                  sm.output.generations, sm.threads)
    write_curve(sm.config, setup, condition, seed, sm.input.eval, sm.input.train, sm.input.adapter,
                sm.output.curve, sm.threads)
