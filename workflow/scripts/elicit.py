"""Thin wrapper: see ipcond.jobs."""
from ipcond.jobs import elicit_setup, log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    elicit_setup(sm.config, sm.wildcards.setup, sm.input.eval, {k[len("rephrasings_"):]: v for k, v in sm.input.items() if k.startswith("rephrasings_")}, sm.input.corpus[0] if sm.input.corpus else None, sm.output.generations, sm.output.table, sm.threads)
