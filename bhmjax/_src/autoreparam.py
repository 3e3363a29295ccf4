"""Learned centeredness: a variational pre-pass that picks each group's parameterization.

Gorinova, Moore and Hoffman (2020), "Automatic Reparameterisation of Probabilistic
Programs" (ICML): write each hierarchical site in the partially centered form

    z ~ D(c * mu, sd**c),    theta = mu + sd**(1 - c) * (z - c * mu),

with a centeredness ``c`` in [0, 1] per ELEMENT of the site (per group and column) as a
``numpyro.param``, and maximise the ELBO of a mean-field normal guide (``AutoNormal``)
jointly over the guide and ``c`` with SVI and Adam. A mean-field guide fits best where
the posterior of ``z`` is least coupled to the scales, so the learned ``c`` is near 1
for a group the data identify (centered wins) and near 0 for a group the prior
dominates (the funnel; non-centered wins). NUTS then runs with the values fixed.

Two kinds of model use it, one pre-pass: formula models (``reparam.group_effects``,
params ``c_<g>`` of shape (G, K)) and hand-written NumPyro models (``locscale.py``,
NumPyro's ``LocScaleReparam`` with a param per site). NumPyro's own
``LocScaleReparam(centered=None)`` learns nothing under NUTS (the parameter stays at
its initial 0.5, numpyro issue 1598) and only one value per site under SVI.

Everything here is deterministic: a fixed key, a fixed number of steps, one compiled
program per model and static data, all starts in one vectorized run (the data are
traced arguments, so a new dataset of the same shapes reuses the program).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal

from bhmjax._src.lru import LRU
from bhmjax._src.models import ModelStructure, all_groups, build_model

__all__ = ["ReparamInfo", "learn", "learn_centeredness", "snap", "with_centeredness", "NUM_STEPS",
           "LEARNING_RATE"]

NUM_STEPS = 1500
LEARNING_RATE = 0.05
NUM_PARTICLES = 1
STARTS = (0.02, 0.5, 0.98)
DECIMALS = 2
SNAP = 0.1

_PROGRAMS: LRU[Callable] = LRU(16)  # jitted SVI runs
_TRACES = {"svi": 0}


class ReparamInfo(NamedTuple):
    """What the pre-pass learned and what it cost.

    Attributes
    ----------
    centeredness : dict of str -> np.ndarray
        Per learned site (grouping or sample site), the values NUTS uses, one per
        element (shape (G, K) for a formula term, the site's shape for a hand-written
        site), rounded and snapped to 0 or 1 near the ends (see :func:`snap`).
    raw : dict of str -> np.ndarray
        The values at the last SVI step of the best start, unrounded.
    loss : np.ndarray, shape (num_steps,)
        The negative ELBO per step of the best start (a noisy estimate).
    num_steps : int
    seconds : float
        Wall time of the pre-pass, compile included.
    """

    centeredness: dict[str, np.ndarray]
    raw: dict[str, np.ndarray]
    loss: np.ndarray
    num_steps: int
    seconds: float

    def describe(self) -> str:
        """One line per learned site: its values, or their spread when there are many."""
        lines = [f"centeredness learned by SVI ({self.num_steps} steps, {self.seconds:.1f} s; "
                 "1 centered, 0 non-centered):"]
        lines += [f"  {name}: {describe_values(values)}" for name, values in self.centeredness.items()]
        return "\n".join(lines)


def describe_values(values: Any) -> str:
    """``(1.0, 0.25)`` for a few values; counts of centered / non-centered / between for many."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 0:
        return f"{float(v)} (every element)"
    if v.size <= 8:
        return str(tuple(float(x) for x in v.reshape(-1)))
    ones, zeros = int((v == 1.0).sum()), int((v == 0.0).sum())
    return (f"{v.size} values (shape {v.shape}): {ones} centered, {zeros} non-centered, "
            f"{v.size - ones - zeros} between; mean {v.mean():.2f}")


def _program(model: Callable, static: tuple, names: tuple[str, ...], num_steps: int, learning_rate: float,
             num_particles: int) -> Callable:
    """``run(key, arrays, starts) -> (params, losses)``: one SVI run per start, compiled once.

    ``starts[name]`` has shape (S, *param_shape): S runs from these values of the
    ``numpyro.param`` sites ``names``; the outputs have a leading axis S (losses
    (S, num_steps)). Kept per model, static data and SVI settings; jit keys the
    executable on the array shapes.
    """
    cache_key = (model, static, names, num_steps, learning_rate, num_particles)
    run = _PROGRAMS.get(cache_key)
    if run is not None:
        return run
    fixed = dict(static)

    def bound(**arrays):
        return model(**arrays, **fixed)

    def one(key, arrays, start):
        # A fresh guide per trace: autoguides keep their prototype trace (tracers) after the first call.
        svi = SVI(bound, AutoNormal(bound), optax.adam(learning_rate), Trace_ELBO(num_particles=num_particles))
        state = svi.init(key, init_params=dict(start), **arrays)
        state, losses = lax.scan(lambda s, _: svi.update(s, **arrays), state, None, length=num_steps)
        params = svi.get_params(state)
        return {n: params[n] for n in names}, losses

    def counted(key, arrays, starts):
        _TRACES["svi"] += 1
        return jax.vmap(one, in_axes=(None, None, 0))(key, arrays, starts)

    run = jax.jit(counted)
    _PROGRAMS[cache_key] = run
    return run


def trace_counts() -> dict[str, int]:
    """How many times the SVI program was traced (compiled) in this process."""
    return dict(_TRACES)


def learn(key: jax.Array, model: Callable, arrays: Mapping[str, Any], static: Mapping[str, Any],
          shapes: Mapping[str, tuple[int, ...]], *, num_steps: int = NUM_STEPS,
          learning_rate: float = LEARNING_RATE, num_particles: int = NUM_PARTICLES,
          starts: tuple[float, ...] = STARTS) -> ReparamInfo:
    """Learn the centeredness params ``shapes`` of ``model`` by SVI from several starts.

    SVI runs once from each value of ``starts`` (every element of every param starting
    there, all runs in one vectorized program) and keeps the run with the best ELBO,
    averaged over its last quarter of steps. Restarts matter: when the groups are
    strongly identified the mean-field guide first collapses onto the coupled
    directions and the ELBO is then nearly flat in ``c``, so a single run stays near
    where it began; the run started near 1 then ends with an ELBO better by several nats.

    Parameters
    ----------
    key : PRNG key
        The SVI key (the pre-pass is deterministic given it; every start uses it).
    model : callable
        A NumPyro model whose ``numpyro.param`` sites ``shapes`` (constraint
        unit_interval) are centeredness values; called as ``model(**arrays, **static)``.
    arrays, static : dict
        The model's array data (traced) and Python values (compiled in).
    shapes : dict of str -> tuple of int
        The shape of each param to learn.
    num_steps, learning_rate, num_particles
        SVI steps, Adam's learning rate and ELBO particles per step.
    starts : tuple of float
        Initial centeredness of each run, in (0, 1).

    Returns
    -------
    ReparamInfo
        Keyed by param name.
    """
    names = tuple(sorted(shapes))
    t0 = time.perf_counter()
    run = _program(model, tuple(sorted(static.items())), names, int(num_steps), float(learning_rate),
                   int(num_particles))
    dtype = jnp.result_type(float)
    init = {n: jnp.broadcast_to(jnp.asarray(starts, dtype).reshape((-1,) + (1,) * len(shapes[n])),
                                (len(starts), *shapes[n])) for n in names}
    learned, losses = run(key, {k: jnp.asarray(v) for k, v in arrays.items()}, init)
    losses = np.asarray(losses)
    best = int(np.argmin(losses[:, -max(1, num_steps // 4):].mean(axis=1)))
    raw = {n: np.asarray(v[best], dtype=np.float64) for n, v in learned.items()}
    return ReparamInfo(centeredness={n: snap(v) for n, v in raw.items()}, raw=raw, loss=losses[best],
                       num_steps=int(num_steps), seconds=time.perf_counter() - t0)


def snap(values: Any) -> np.ndarray:
    """Round to ``DECIMALS`` and snap values within ``SNAP`` of 0 or 1 to the end (elementwise).

    The ELBO is nearly flat near the ends when groups are strongly (or weakly)
    identified, so SVI stops short of them (0.97 where 1 is best); NUTS, though, pays
    for every bit of the gap: with ``theta`` pinned by the data, ``z = theta - (1 - c) mu``
    is a ridge of width ~ ``(1 - c) sd(mu)``, which at c = 0.97 costs a tree depth or two.
    """
    v = np.round(np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0), DECIMALS)
    return np.where(v >= 1.0 - SNAP, 1.0, np.where(v <= SNAP, 0.0, v))


def learn_centeredness(key: jax.Array, structure: ModelStructure, arrays: Mapping[str, Any],
                       static: Mapping[str, Any], **options) -> ReparamInfo:
    """Learn a centeredness per group and column of every formula term whose centeredness is None.

    ``structure``'s learned terms build ``numpyro.param`` sites ``c_<g>`` of shape
    (G, K); ``options`` are those of :func:`learn`. The result is keyed by grouping.

    Examples
    --------
    >>> import jax, numpy as np, bhmjax as bj
    >>> from bhmjax._src import data as data_lib
    >>> g = np.repeat(np.arange(4), 50); y = np.random.default_rng(0).normal(g, 0.1)
    >>> m = bj.Model("y ~ 1 + (1 | g)", {"y": y, "g": g}, parameterization="auto")
    >>> arrays, static = data_lib.split_data(m.data)
    >>> info = learn_centeredness(jax.random.PRNGKey(0), m.spec.structure, arrays, static)
    >>> info.centeredness["g"].shape, bool(info.centeredness["g"].min() > 0.8)
    ((4, 1), True)
    """
    shapes = {f"c_{g.name}": (static[f"G_{g.term}"], len(g.columns))
              for g in all_groups(structure) if g.centeredness is None}
    info = learn(key, build_model(structure), arrays, static, shapes, **options)
    strip = lambda d: {k[len("c_"):]: v for k, v in d.items()}  # noqa: E731
    return info._replace(centeredness=strip(info.centeredness), raw=strip(info.raw))


def with_centeredness(structure: ModelStructure, values: Mapping[str, Any]) -> ModelStructure:
    """``structure`` with the centeredness form of the named groupings set from per-group values.

    ``values[name]`` of shape (G, K): all 1 gives the centered form, all 0 the
    non-centered one, one value per column a tuple; anything else the per-group form
    (``reparam.PER_GROUP``), whose values the model then reads from its data.
    """
    from bhmjax._src.reparam import form_of

    def update(groups):
        return tuple(dataclasses.replace(g, centeredness=form_of(values[g.name])) if g.name in values else g
                     for g in groups)

    dpars = tuple(dataclasses.replace(p, groups=update(p.groups)) for p in structure.dpars)
    return dataclasses.replace(structure, groups=update(structure.groups), dpars=dpars)
