"""Thin wrapper: a cell's fine-tune, generations and learning curve in one job (see
workflow/rules/cell.smk, ipcond.stages.cell.cell_job), in a child of the warm worker where
execution.warm_worker allows (ipcond.worker)."""
from ipcond.worker import call

sm = snakemake  # noqa: F821 (injected by Snakemake)
call("ipcond.stages.cell:cell_job", sm.config, sm.wildcards.setup, sm.wildcards.condition, int(sm.wildcards.seed),
     str(sm.input.train), str(sm.input.eval), str(sm.output.adapter), str(sm.output.generations),
     str(sm.output.curve), sm.threads, str(sm.log.finetune), str(sm.log.generate), worker_config=sm.config)
