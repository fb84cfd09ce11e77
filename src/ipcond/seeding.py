"""Seeding: every random choice is seeded from a tuple of names (setup, condition, seed, ...).

Foundation layer: imports nothing of the package.
"""

from __future__ import annotations

import hashlib
import random


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any tuple of names and numbers (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def rng_for(*parts: object) -> random.Random:
    """A ``random.Random`` seeded with :func:`derive_seed` of ``parts``."""
    return random.Random(derive_seed(*parts))
