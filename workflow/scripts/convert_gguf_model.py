"""Thin wrapper: see ipcond.stages.model."""
from ipcond.stages.model import convert_gguf_model
from ipcond.stages.common import log_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    convert_gguf_model(sm.config, sm.input.wheel or None, sm.output.model, sm.threads)
