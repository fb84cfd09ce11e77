"""Errors every layer may raise (the foundation layer: imports nothing of the package)."""


class ConfigError(ValueError):
    """A config problem, with the key that has it and the fix."""
