"""Spreading chains over CPU cores: JAX's host devices must be set before JAX starts."""

from __future__ import annotations

import os

__all__ = ["set_host_device_count", "default_host_device_count"]

_FLAG = "--xla_force_host_platform_device_count"


def default_host_device_count() -> int:
    """One host device per core, at most 8 (``BHMJAX_HOST_DEVICES`` overrides; 1 turns it off)."""
    env = os.environ.get("BHMJAX_HOST_DEVICES")
    if env:
        return max(1, int(env))
    return max(1, min(os.cpu_count() or 1, 8))


def set_host_device_count(n: int) -> None:
    """Ask XLA for ``n`` CPU devices, so chains can run in parallel on CPU cores.

    Takes effect only if JAX has not yet started its CPU backend (call it, or
    import bhmjax, before any JAX computation). An ``XLA_FLAGS`` setting that
    already names a device count is left alone.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if _FLAG in flags:
        return
    if n > 1:
        os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}={int(n)}".strip()
