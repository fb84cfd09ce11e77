"""Inoculation prompting and conditionalization: the science behind the Snakemake workflow.

Four layers, each importing only from its own and those below (``[tool.importlinter]`` in
pyproject.toml): the stages (``ipcond.stages``: what each Snakemake rule runs, one module per rule
file), the configuration (``config``), the science (``prompts``, ``rephrasing``, ``data``,
``training``, ``generation``, ``scoring``, ``sources``, ``plots``, ...) and the foundations
(``provenance``, ``stats``, ``sandbox``, ``judging``, ``toyworld``, ``seeding``, ``errors``).
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ipcond")
except PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"
