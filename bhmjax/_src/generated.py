"""Generated quantities: a pure per-draw function applied to stored draws, after sampling.

``generate(key, values, arrays) -> dict[str, Array]`` maps one draw's site values (and
the model data) to new sites, e.g. exact draws of integrated group effects
(``marginalize.py``). Here it runs after sampling, ``jax.vmap``-ed over draws in
chunks of bounded memory; the key of the draw ``d`` of chain ``c`` is
``fold_in(fold_in(key, c), d)``, so the result depends on neither the chunking nor
where a run was split (an extension continues the draw index).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import numpy as np

from bhmjax._src import engine
from bhmjax._src.keys import ABSTRACT_KEY

__all__ = ["apply_generate", "draw_keys", "program_ahead"]


def draw_keys(key: jax.Array, chains: jax.Array, draws: jax.Array) -> jax.Array:
    """One key per (chain, draw) pair: ``fold_in(fold_in(key, chain), draw)``."""
    return jax.vmap(lambda c, d: jax.random.fold_in(jax.random.fold_in(key, c), d))(chains, draws)


def _chunk_of(generate: Callable) -> Callable:
    def generate_draws(key, chains, draws, values, arrays):
        keys = draw_keys(key, chains, draws)
        return jax.vmap(generate, in_axes=(0, 0, None))(keys, values, arrays)
    return generate_draws


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    if x.shape[0] == size:
        return x
    return np.concatenate([x, np.repeat(x[-1:], size - x.shape[0], axis=0)], axis=0)


def _plan(generate: Callable, one: Mapping[str, jax.ShapeDtypeStruct], arrays: Mapping[str, Any], total: int,
          max_bytes: int) -> tuple[int, dict]:
    """Draws per chunk for ``total`` draws of sites shaped ``one``, and one draw's outputs' shapes."""
    shapes = jax.eval_shape(generate, ABSTRACT_KEY, dict(one), arrays)
    out_bytes = sum(int(np.prod(s.shape)) * s.dtype.itemsize for s in jax.tree.leaves(shapes))
    work = 3 * sum(int(np.asarray(v).nbytes) for v in jax.tree.leaves(dict(arrays)))
    return int(max(1, min(total, max_bytes // max(1, out_bytes + work)))), shapes


def program_ahead(key: jax.Array, generate: Callable, one: Mapping[str, jax.ShapeDtypeStruct],
                  arrays: Mapping[str, Any], total: int, max_bytes: int = 256 * 2**20) -> tuple:
    """``(tag, fn, key, args)`` of the program :func:`apply_generate` will compile for ``total`` draws
    of sites shaped ``one`` (one draw each), for ``engine.prepare(ahead=...)``."""
    size, _ = _plan(generate, one, arrays, total, max_bytes)
    index = jax.ShapeDtypeStruct((size,), np.int32)
    values = {k: jax.ShapeDtypeStruct((size, *s.shape), s.dtype) for k, s in one.items()}
    return _program(generate, (key, index, index, values, engine.abstract_arrays(arrays)))


def _program(generate: Callable, args: tuple) -> tuple:
    """``(tag, fn, key, args)``: the one identity of ``generate``'s chunk program, for :func:`engine.compiled`
    (an ahead compile of another identity would never be used)."""
    return "generate", _chunk_of(generate), (generate,), args


def apply_generate(key: jax.Array, generate: Callable, draws: Mapping[str, np.ndarray],
                   arrays: Mapping[str, Any], *, draw_index: np.ndarray | None = None,
                   max_bytes: int = 256 * 2**20) -> dict[str, np.ndarray]:
    """``generate`` for every stored draw, outputs stacked as ``(chains, draws, *shape)``.

    Parameters
    ----------
    key : jax.Array
        Base key; see the module docstring for the per-draw keys.
    generate : callable
        ``generate(key, values, arrays)``, pure and traceable; one compiled program per
        function, chunk size and data shapes (:func:`bhmjax._src.engine.compiled`, its options chosen by size).
    draws : dict of str -> (chains, draws, *shape)
        The site values ``generate`` reads.
    arrays : dict
        Model data (traced arrays).
    draw_index : (draws,) int, optional
        Each stored draw's index within its run (default ``0, 1, ...``): an extension
        continues the index, a thinned selection keeps the draws' own.
    max_bytes : int
        Bound on one chunk's working memory: its outputs and per-draw temporaries
        (taken as three times the model data).
    """
    first = next(iter(draws.values()))
    num_chains, num_draws = first.shape[:2]
    total = num_chains * num_draws
    flat = {k: np.asarray(v).reshape(total, *np.shape(v)[2:]) for k, v in draws.items()}
    one = {k: jax.ShapeDtypeStruct(v.shape[1:], v.dtype) for k, v in flat.items()}
    size, shapes = _plan(generate, one, arrays, total, max_bytes)
    chain_of = np.repeat(np.arange(num_chains), num_draws).astype(np.int32)
    index = np.arange(num_draws) if draw_index is None else np.asarray(draw_index)
    draw_of = np.tile(index, num_chains).astype(np.int32)
    out = {k: np.empty((total, *s.shape), s.dtype) for k, s in shapes.items()}
    arrays = engine.stage(dict(arrays))
    for start in range(0, total, size):
        stop = min(start + size, total)
        args = (key, _pad(chain_of[start:stop], size), _pad(draw_of[start:stop], size),
                {k: _pad(v[start:stop], size) for k, v in flat.items()}, arrays)
        tag, fn, identity, args = _program(generate, args)
        part = engine.compiled(tag, fn, identity, *args)(*args)
        for k, v in part.items():
            out[k][start:stop] = np.asarray(v)[:stop - start]
    return {k: v.reshape(num_chains, num_draws, *v.shape[1:]) for k, v in out.items()}
