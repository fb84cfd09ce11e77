"""Thin wrapper: see ipcond.stages.sources.convert_dataset_job."""
from ipcond.stages.sources import convert_dataset_job
from ipcond.stages.common import log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    convert_dataset_job(sm.config, sm.wildcards.dataset, {k: str(v) for k, v in sm.input.items()}, str(sm.output[0]))
