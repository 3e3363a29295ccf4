"""JAX's persistent compilation cache, on by default in a user cache folder.

A second Python process fitting a model of the same shapes then loads the
compiled executables from disk instead of compiling them again.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

__all__ = ["default_cache_dir", "set_compilation_cache", "compilation_cache_dir"]


def default_cache_dir() -> Path | None:
    """``$BHMJAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/bhmjax/xla`` (``~/.cache``); None if
    ``BHMJAX_COMPILATION_CACHE=0``."""
    if os.environ.get("BHMJAX_COMPILATION_CACHE", "1").lower() in ("0", "false", "no", "off"):
        return None
    if os.environ.get("BHMJAX_CACHE_DIR"):
        return Path(os.environ["BHMJAX_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "bhmjax" / "xla"


def set_compilation_cache(path: str | os.PathLike | None) -> None:
    """Switch the persistent compilation cache to ``path`` (None turns it off).

    Every compiled program is cached, however fast it compiled, so even small
    models skip compilation in a new process.
    """
    if path is None:
        jax.config.update("jax_enable_compilation_cache", False)
        return
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: run without the cache rather than fail
        return
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def compilation_cache_dir() -> str | None:
    """The folder in use, or None when the cache is off."""
    if not jax.config.jax_enable_compilation_cache:
        return None
    return jax.config.jax_compilation_cache_dir
