"""Errors every layer may raise (the foundation layer: imports nothing of the package)."""


class ConfigError(ValueError):
    """A config problem, with the key that has it and the fix."""


class JudgeError(RuntimeError):
    """A judge run could not complete. Results obtained before the error are in the cache."""
