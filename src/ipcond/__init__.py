"""Inoculation prompting and conditionalization: the science behind the Snakemake workflow.

One module per concern: ``toyworld`` (the embedded synthetic world), ``data`` and ``prompts``
(datasets and training prompts), ``training`` (LoRA fine-tuning), ``generation`` (sampling),
``judging`` and ``scoring`` (trait scores), ``stats`` and ``plots`` (figures), ``jobs`` (what each
Snakemake rule runs), ``provenance`` (atomic writes and what made each output).
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ipcond")
except PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"
