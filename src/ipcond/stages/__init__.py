"""The workflow's stages: the job of every Snakemake rule, one module per rule file.

Each module matches a file of ``workflow/rules/`` and its docstring names the rules whose jobs it
holds: ``model`` (the base model), ``sources`` (real datasets), ``data`` (eval and training data,
a cell's training file), ``cell`` (a cell's fine-tune, generations and learning curve),
``evaluate`` (scores, elicitation, curves) and ``report`` (tables, checks, figures); ``common``
holds what they share. The scripts in ``workflow/scripts/`` only call these functions.

The top layer of the package: stages import the configuration (``ipcond.config``) and the science
modules, and nothing below imports a stage (``[tool.importlinter]`` in ``pyproject.toml``).
"""
