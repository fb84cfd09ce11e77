"""Thin wrapper: see ipcond.stages.cell.finetune_job; run in a child of the warm worker where
execution.warm_worker allows (ipcond.worker)."""
from ipcond.worker import call

sm = snakemake  # noqa: F821 (injected by Snakemake)
call("ipcond.stages.cell:finetune_job", sm.config, sm.wildcards.setup, sm.wildcards.condition, int(sm.wildcards.seed),
     str(sm.input.train), str(sm.output.adapter), sm.threads, str(sm.log[0]), worker_config=sm.config)
