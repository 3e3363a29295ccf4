"""Host-made PRNG keys (bhmjax._src.keys) equal jax.random's, bit for bit, and compile nothing."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from bhmjax._src import keys
from bhmjax._src.precision import x64_mode


@pytest.mark.parametrize("seed", [0, 1, 7, 42, 12345, 2**31 - 1])
def test_seed_split_and_fold_in_equal_jax_random(seed):
    root = jax.random.PRNGKey(seed)
    np.testing.assert_array_equal(keys.seed_key(seed), np.asarray(root))
    for num in (1, 2, 3, 4, 8, 101):
        np.testing.assert_array_equal(keys.split(keys.seed_key(seed), num), np.asarray(jax.random.split(root, num)))
    for data in (0, 1, 5, 0x67656E, 0x6D617267, 2**32 - 1):
        np.testing.assert_array_equal(keys.fold_in(keys.seed_key(seed), data),
                                      np.asarray(jax.random.fold_in(root, data)))
    # chained, as fit_many's dataset keys are made: split(fold_in(root, d), chains)
    chained = keys.split(keys.fold_in(keys.seed_key(seed), 17), 4)
    np.testing.assert_array_equal(chained, np.asarray(jax.random.split(jax.random.fold_in(root, 17), 4)))


def test_host_keys_compile_no_program():
    from tests._compiles import compile_log

    with compile_log() as log:
        keys.split(keys.fold_in(keys.seed_key(3), 9), 4)
    assert log == []


def test_outside_what_numpy_reproduces_jax_random_decides():
    """Large seeds and the original (non-partitionable) split go to jax.random itself."""
    big = 2**33 + 5
    with x64_mode(True):
        np.testing.assert_array_equal(keys.seed_key(big), np.asarray(jax.random.PRNGKey(big)))
    previous = jax.config.jax_threefry_partitionable
    try:
        jax.config.update("jax_threefry_partitionable", False)
        root = keys.seed_key(3)
        np.testing.assert_array_equal(keys.split(root, 4), np.asarray(jax.random.split(jax.random.PRNGKey(3), 4)))
    finally:
        jax.config.update("jax_threefry_partitionable", previous)
