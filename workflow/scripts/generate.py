"""Thin wrapper: see ipcond.jobs."""
from ipcond.jobs import generate_with_curve, log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    generate_with_curve(sm.config, sm.wildcards.setup, sm.wildcards.condition, int(sm.wildcards.seed), sm.input.eval,
                        sm.input.train, sm.input.adapter, sm.output.generations, sm.output.curve, sm.threads)
