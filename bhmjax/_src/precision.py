"""JAX's 64-bit switch, set for a block and restored afterwards."""

from __future__ import annotations

from contextlib import contextmanager

import jax

__all__ = ["x64_mode"]


@contextmanager
def x64_mode(enabled: bool):
    """Run a block with JAX's 64-bit mode set as asked, restoring it afterwards."""
    before = bool(jax.config.jax_enable_x64)
    if before != bool(enabled):
        jax.config.update("jax_enable_x64", bool(enabled))
    try:
        yield
    finally:
        if before != bool(enabled):
            jax.config.update("jax_enable_x64", before)
