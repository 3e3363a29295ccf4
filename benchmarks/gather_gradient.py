"""Gradient of the group-effect gather ``r[codes]``: which formulation is fastest?

The gradient of a gather is a scatter-add. Per number of groups G (rows sorted by
group, as the reduced data are), one jitted loop of ``value_and_grad`` of a
Gaussian loss of ``sum(r[codes] * Z, -1)`` with the gather written as:

* ``index``: ``r[codes]`` (what the models use);
* ``take_sorted``: ``jnp.take(..., indices_are_sorted=True, mode="clip")`` (sorted hint,
  no negative-index fix-up);
* ``segment``: the forward gather with the gradient as ``jax.ops.segment_sum`` over
  sorted segments (a custom VJP);
* ``onehot``: a one-hot matrix product (dense; only sensible for few groups).

Run: python -m benchmarks.gather_gradient [--out benchmarks/results/gather_gradient_cpu.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .common import machine, save_json


def _segment_gather(num_groups: int, codes: jax.Array):
    @jax.custom_vjp
    def gather(r):
        return r[codes]

    def fwd(r):
        return r[codes], None

    def bwd(_, cotangent):
        return (jax.ops.segment_sum(cotangent, codes, num_segments=num_groups, indices_are_sorted=True),)

    gather.defvjp(fwd, bwd)
    return gather


def gathers(num_groups: int, codes: jax.Array) -> dict:
    out = {
        "index": lambda r: r[codes],
        "take_sorted": lambda r: jnp.take(r, codes, axis=0, indices_are_sorted=True, mode="clip"),
        "segment": _segment_gather(num_groups, codes),
    }
    if num_groups <= 200:
        onehot = jax.nn.one_hot(codes, num_groups, dtype=jnp.float32)
        out["onehot"] = lambda r: onehot @ r
    return out


def gradient_ms(gather, z: jax.Array, y: jax.Array, num_groups: int, repeats: int = 2000) -> float:
    def loss(r):
        return jnp.sum((y - jnp.sum(gather(r) * z, -1)) ** 2)

    value_and_grad = jax.value_and_grad(loss)

    @jax.jit
    def many(r):
        def body(_, carry):
            r, total = carry
            value, grad = value_and_grad(r)
            return r - 1e-9 * grad, total + value
        return jax.lax.fori_loop(0, repeats, body, (r, 0.0))

    r = jnp.zeros((num_groups, z.shape[1]))
    jax.block_until_ready(many(r))
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(many(r))
        best = min(best, time.perf_counter() - t0)
    return 1000 * best / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gather_gradient_cpu.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results = {"machine": machine(), "rows": []}
    for num_groups, num_rows in [(20, 4000), (2000, 4000), (2000, 100_000)]:
        codes = jnp.asarray(np.sort(rng.integers(0, num_groups, num_rows)).astype(np.int32))
        z = jnp.asarray(rng.normal(size=(num_rows, 2)).astype(np.float32))
        y = jnp.asarray(rng.normal(size=num_rows).astype(np.float32))
        for name, gather in gathers(num_groups, codes).items():
            ms = gradient_ms(gather, z, y, num_groups)
            results["rows"].append({"groups": num_groups, "rows": num_rows, "gather": name, "gradient_ms": ms})
            print(f"G={num_groups:5d} N={num_rows:6d} {name:12s} {ms:.4f} ms", flush=True)
    save_json(results, args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
