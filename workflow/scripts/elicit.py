"""Thin wrapper: see ipcond.stages.evaluate.elicit_job; run in a child of the warm worker where
execution.warm_worker allows (ipcond.worker)."""
from ipcond.worker import call

sm = snakemake  # noqa: F821 (injected by Snakemake)
rephrasings = {k[len("rephrasings_"):]: str(v) for k, v in sm.input.items() if k.startswith("rephrasings_")}
call("ipcond.stages.evaluate:elicit_job", sm.config, sm.wildcards.setup, str(sm.input.eval), rephrasings,
     str(sm.input.corpus[0]) if sm.input.corpus else None, str(sm.output.generations), str(sm.output.table),
     sm.threads, str(sm.log[0]), worker_config=sm.config)
