"""PRNG keys made on the host: ``jax.random``'s threefry keys, bit for bit, without compiling.

Every eager ``jax.random`` call is a small XLA program, compiled once per process. A fit
derives its chain keys, dataset keys and generated-quantity keys before its first draw,
so those compiles sat on the way to it. The keys are a few Threefry-2x32 hashes
(Salmon et al. 2011, as ``jax._src.random.threefry2x32`` computes them), so they are
computed here in numpy instead. Under another PRNG implementation, or JAX's original
(non-partitionable) split, or for seeds outside the 32-bit range, these call
``jax.random`` (``tests/test_keys.py`` checks the equality).

Keys are raw ``uint32`` words of shape (2,) (``(n, 2)`` for :func:`split`).
"""

from __future__ import annotations

import jax
import numpy as np

__all__ = ["ABSTRACT_KEY", "fold_in", "seed_key", "split"]

#: A raw key's shape and dtype, to trace with (``jax.eval_shape``) where no key is drawn.
ABSTRACT_KEY = jax.ShapeDtypeStruct((2,), np.uint32)

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def _host_threefry() -> bool:
    """Whether numpy reproduces this process's ``jax.random`` (threefry keys, partitionable split)."""
    return (jax.config.jax_default_prng_impl == "threefry2x32"
            and bool(jax.config.jax_threefry_partitionable))


def _rotate_left(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _hash(key: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Threefry-2x32 (20 rounds) of the count pairs ``(x1, x2)`` (uint32 arrays) under ``key`` (2,)."""
    ks = (key[0], key[1], key[0] ^ key[1] ^ _PARITY)
    x1, x2 = x1 + ks[0], x2 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x1 = x1 + x2
            x2 = x1 ^ _rotate_left(x2, r)
        x1 = x1 + ks[(i + 1) % 3]
        x2 = x2 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x1, x2


def _words(key) -> np.ndarray:
    words = np.asarray(key)
    if words.dtype != np.uint32 or words.shape != (2,):
        raise ValueError(f"a raw threefry key has two uint32 words, got dtype {words.dtype} and shape {words.shape}")
    return words


def seed_key(seed: int) -> np.ndarray:
    """``jax.random.PRNGKey(seed)`` as numpy words (2,)."""
    if not (_host_threefry() and 0 <= int(seed) < 2**31):
        return np.asarray(jax.random.PRNGKey(seed))
    return np.array([0, seed], np.uint32)


def split(key, num: int) -> np.ndarray:
    """``jax.random.split(key, num)`` of a raw key (2,), as numpy words (num, 2)."""
    if not _host_threefry():
        return np.asarray(jax.random.split(np.asarray(key), num))
    with np.errstate(over="ignore"):
        bits1, bits2 = _hash(_words(key), np.zeros(num, np.uint32), np.arange(num, dtype=np.uint32))
    return np.stack([bits1, bits2], axis=-1)


def fold_in(key, data: int) -> np.ndarray:
    """``jax.random.fold_in(key, data)`` of a raw key (2,), as numpy words (2,)."""
    if not (_host_threefry() and 0 <= int(data) < 2**32):
        return np.asarray(jax.random.fold_in(np.asarray(key), data))
    with np.errstate(over="ignore"):
        bits1, bits2 = _hash(_words(key), np.zeros(1, np.uint32), np.array([data], np.uint32))
    return np.concatenate([bits1, bits2])
