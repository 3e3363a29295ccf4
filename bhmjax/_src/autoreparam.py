"""Learned centeredness: a variational pre-pass that picks each element's parameterization.

A hierarchical element ``theta_j ~ D(loc, scale)`` can be sampled in the partially
centered form (Papaspiliopoulos, Roberts and Skold 2007; Gorinova, Moore and Hoffman
2020, "Automatic Reparameterisation of Probabilistic Programs")

    z_j ~ D(c_j * loc, scale**c_j),    theta_j = loc + scale**(1 - c_j) * (z_j - c_j * loc),

``c_j = 1`` centered, ``c_j = 0`` non-centered. For a normal prior and a normal
likelihood carrying information ``I_j`` about ``theta_j`` (``n_j / sigma**2`` for a
group mean), ``z_j`` is a posteriori independent of ``loc`` exactly when

    c_j = scale**2 I_j / (1 + scale**2 I_j) = L_j / (L_j + P_j),

the share of ``theta_j``'s conditional posterior precision that comes from below
(``L_j``, the likelihood and any sites that depend on ``theta_j``) rather than from
its own prior (``P_j = 1 / scale**2``). Elsewhere the same formula holds locally,
with ``L_j`` the curvature of the log density at a posterior point and ``P_j`` the
location Fisher information of the prior family (:data:`LOCATION_INFORMATION`).

The pre-pass measures both at posterior points, per element, in one compiled program
(compiled without optimizations: it runs once):

1. fit a mean-field normal guide (``AutoNormal``) to the model with every learned
   element centered (``c = 1``, read from the data), ``num_steps`` steps of Adam;
2. draw ``num_draws`` points from the guide; at each, ``L_j`` is the diagonal of the
   Hessian of the log joint without the site's own prior term (one Hessian-vector
   product per column of the site, with random signs over the groups: exact when
   different groups do not interact in the likelihood, unbiased otherwise), ``P_j``
   the prior precision at that point;
3. ``c_j`` is the median of ``L_j / (L_j + P_j)`` over the draws: a typical point's
   optimum, not pulled up by the few draws with a large group scale (in a funnel the
   neck, where c = 0 is right, is where NUTS diverges).

Each pass after the first fits the guide again at the values the one before learned and
measures again. The ratio is the same whichever ``c`` the site is sampled at (the
curvature and the prior precision of ``z`` both scale by ``scale**(2 - 2c)`` relative to
``theta``'s), so every pass measures the same quantity on a different guide: one closer to
the posterior where the learned form decouples it better. Two passes are the default. The
second costs one more SVI run, not a compile; ``benchmarks/auto_checks.py`` measures how
far it moves the values of the hand-written benchmark model.

Why the centered fit and the curvature, rather than the ELBO over ``c`` (Gorinova et
al.'s VIP): the ELBO is nearly flat in ``c`` where groups are strongly identified, so
SVI stopped wherever it started (on that benchmark it learned non-centered for 1,732 of
2,000 intercepts that the data identify). The mean-field centered fit is accurate for
strongly identified groups. Where the group scale is weakly identified it can overstate
it (the guide's own spread of each effect is read as spread between groups), so values
lean centered there; the non-centered fit errs the other way (it understates the scale),
and more for strong groups.

Two kinds of model use it, one pre-pass: formula models (``learn_centeredness``: the
sites ``z_<g>`` of the per-group form, ``reparam.PER_GROUP``) and hand-written NumPyro
models (``locscale.py``: the decentered sites of NumPyro's ``LocScaleReparam``).

Everything here is deterministic given the key; the program is compiled once per model,
static data, sites, settings and array shapes (the data are traced arguments, so a new
dataset of the same shapes reuses it).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
from jax import lax
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal
from numpyro.infer.initialization import init_to_feasible
from numpyro.infer.util import compute_log_probs

from bhmjax._src import compiles, engine
from bhmjax._src.models import ModelStructure, all_groups, build_model
from bhmjax._src.reparam import PER_GROUP, data_key, form_of

__all__ = ["LOCATION_INFORMATION", "ReparamInfo", "learn", "learn_centeredness", "prior_precision", "snap",
           "with_centeredness", "NUM_STEPS", "NUM_DRAWS", "NUM_PASSES", "LEARNING_RATE"]

NUM_STEPS = 300
NUM_DRAWS = 32
NUM_PASSES = 2
LEARNING_RATE = 0.05
DECIMALS = 2
SNAP = 0.1

# Fisher information about the location of the standard (loc 0, scale 1) family:
# the prior's share of the precision of an element whose scale is ``scale`` is this / scale**2.
LOCATION_INFORMATION: dict[type, Callable[[Any], Any]] = {
    dist.Normal: lambda fn: 1.0,
    dist.Cauchy: lambda fn: 0.5,
    dist.Laplace: lambda fn: 1.0,
    dist.Logistic: lambda fn: 1.0 / 3.0,
    dist.Gumbel: lambda fn: 1.0,
    dist.SoftLaplace: lambda fn: 0.5,
    dist.StudentT: lambda fn: (fn.df + 1.0) / (fn.df + 3.0),
}

class ReparamInfo(NamedTuple):
    """What the pre-pass learned and what it cost.

    Attributes
    ----------
    centeredness : dict of str -> np.ndarray
        Per learned site (grouping or sample site), the values NUTS uses, one per
        element (shape (G, K) for a formula term, the site's shape for a hand-written
        site), rounded and snapped to 0 or 1 at the ends (see :func:`snap`).
    raw : dict of str -> np.ndarray
        The medians of ``L / (L + P)`` over the guide's draws, unrounded.
    loss : np.ndarray, shape (num_steps,)
        The negative ELBO per SVI step of the last pass (a noisy estimate).
    num_steps : int
    seconds : float
        Wall time of the pre-pass, compile included.
    compile_seconds : float
        The part of ``seconds`` spent compiling (0 when the program was compiled before).
    """

    centeredness: dict[str, np.ndarray]
    raw: dict[str, np.ndarray]
    loss: np.ndarray
    num_steps: int
    seconds: float
    compile_seconds: float = 0.0

    def describe(self) -> str:
        """One line per learned site: its values, or their spread when there are many."""
        lines = [f"centeredness learned by the curvature pre-pass ({self.num_steps} SVI steps, "
                 f"{self.seconds:.1f} s of which compile {self.compile_seconds:.1f} s; "
                 "values: 1 = centered, 0 = non-centered):"]
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


def prior_precision(fn: dist.Distribution, shape: tuple[int, ...]) -> jnp.ndarray:
    """``information / scale**2`` per element of a location-scale site's distribution ``fn``.

    ``fn`` may be wrapped in expand/to_event; ``information`` is the location Fisher
    information of its standard family (:data:`LOCATION_INFORMATION`). Shape ``shape``.
    """
    while isinstance(fn, (dist.Independent, dist.ExpandedDistribution)):
        fn = fn.base_dist
    information = LOCATION_INFORMATION.get(type(fn))
    if information is None:
        raise TypeError(f"no location information for {type(fn).__name__}; the learned sites must be one of "
                        f"{sorted(c.__name__ for c in LOCATION_INFORMATION)}")
    return jnp.broadcast_to(information(fn) / fn.scale ** 2, shape)


def _centeredness_at(model: Callable, arrays: Mapping[str, Any], latent: Mapping[str, Any],
                     sites: tuple[str, ...], key: jax.Array) -> dict[str, jnp.ndarray]:
    """``L / (L + P)`` per element of each site at one point ``latent`` of the model.

    ``L`` is the diagonal of the Hessian of the log joint without the site's own prior
    term. A site of shape (..., K) gets one probe per column k, signs drawn over the
    other axes: exact when elements in different groups do not interact (one grouping),
    unbiased otherwise (crossed groupings), and never mixing a group's own columns.
    """
    _, trace = compute_log_probs(model, (), arrays, dict(latent))
    out = {}
    for site, k in zip(sites, jax.random.split(key, len(sites))):
        theta = latent[site]

        def rest(value, site=site):  # the log joint without the site's own prior term
            log_probs, _ = compute_log_probs(model, (), arrays, {**latent, site: value})
            return sum(jnp.sum(v) for name, v in log_probs.items() if name != site)

        grad = jax.grad(rest)
        signs = jax.random.rademacher(k, theta.shape, theta.dtype)
        columns = theta.shape[-1] if theta.ndim >= 2 else 1
        curvature = jnp.zeros_like(theta)
        for column in range(columns):
            probe = signs if columns == 1 else signs * (jnp.arange(columns) == column)
            curvature = curvature - probe * jax.jvp(grad, (theta,), (probe,))[1]
        prior = prior_precision(trace[site]["fn"], theta.shape)
        below = jnp.maximum(curvature, 0.0)
        out[site] = below / (below + prior)
    return out


def _program(model: Callable, static: tuple, sites: tuple[tuple[str, str], ...], num_steps: int,
             learning_rate: float, num_draws: int, num_passes: int) -> Callable:
    """``run(key, arrays) -> (centeredness per data key, losses of the last pass)``, one function to compile.

    ``sites`` pairs each centeredness data key (in ``arrays``, read by ``model``) with
    the sample site whose curvature gives it. Each pass fits the guide to the model at the
    values the pass before learned and learns them again; the passes are one ``lax.scan``
    over the same body, so more passes cost run time, not compile time.
    """
    fixed = dict(static)
    probes = tuple(site for _, site in sites)

    def bound(**arrays):
        return model(**arrays, **fixed)

    def one_pass(arrays, values, key):
        data = {**arrays, **values}
        k_init, k_draw = jax.random.split(key)
        # A fresh guide per trace: autoguides keep their prototype trace (tracers) after the first call.
        # It starts at 0 unconstrained (scales 1, effects 0): a prior median drew every site 15 times
        # through its sampler's rejection loops, twice the compile of the rest of the fit.
        guide = AutoNormal(bound, init_loc_fn=init_to_feasible)
        svi = SVI(bound, guide, optax.adam(learning_rate), Trace_ELBO())
        state = svi.init(k_init, **data)
        state, losses = lax.scan(lambda s, _: svi.update(s, **data), state, None, length=num_steps)
        params = svi.get_params(state)
        # Only the latent sample sites: a substituted deterministic site would cut its dependence on them.
        names = [n for n, site in guide.prototype_trace.items()
                 if site["type"] == "sample" and not site["is_observed"]]

        def at(k):
            k_guide, k_probe = jax.random.split(k)
            drawn = guide.sample_posterior(k_guide, params, **data)
            return _centeredness_at(bound, data, {n: drawn[n] for n in names}, probes, k_probe)

        per_draw = jax.vmap(at)(jax.random.split(k_draw, num_draws))
        learned = {key: jnp.median(per_draw[site], axis=0).astype(values[key].dtype) for key, site in sites}
        return learned, losses

    def run(key, arrays):
        start = {k: jnp.ones_like(arrays[k]) for k, _ in sites}  # the first pass fits the centered model
        rest = {k: v for k, v in arrays.items() if k not in start}
        values, losses = lax.scan(lambda values, k: one_pass(rest, values, k), start,
                                  jax.random.split(key, num_passes))
        return values, losses[-1]

    run.__name__ = f"prepass_{getattr(model, '__name__', 'model')}"
    return run


def learn(key: jax.Array, model: Callable, arrays: Mapping[str, Any], static: Mapping[str, Any],
          sites: Mapping[str, str], *, num_steps: int = NUM_STEPS, learning_rate: float = LEARNING_RATE,
          num_draws: int = NUM_DRAWS, num_passes: int = NUM_PASSES) -> ReparamInfo:
    """Learn a centeredness per element of the location-scale sites of ``model``.

    Parameters
    ----------
    key : PRNG key
        The pre-pass key (the result is deterministic given it).
    model : callable
        A NumPyro model, called as ``model(**arrays, **static)``, that samples each
        learned site in the partially centered form with its centeredness read from
        the data: ``z ~ D(c * loc, scale**c)`` (:data:`LOCATION_INFORMATION` families,
        under expand/to_event), ``c = arrays[data_key]`` (``locscale.run_model``'s
        "partial" form, ``reparam.PER_GROUP``).
    arrays, static : dict
        The model's array data (traced) and Python values (compiled in). Each data key
        of ``sites`` must be there with the shape of its site (its values are not read:
        the first pass starts at 1, the centered form).
    sites : dict of str -> str
        Each centeredness data key and the sample site ``z`` it decenters.
    num_steps, learning_rate
        SVI steps of each pass's mean-field fit and Adam's learning rate.
    num_draws : int
        Guide draws the curvature is taken at (each one Hessian-vector product per site and column).
    num_passes : int
        Fits of the guide: the first on the centered form, each next one at the values
        the one before learned.

    Returns
    -------
    ReparamInfo
        Keyed by data key; ``centeredness[key]`` has the shape of ``arrays[key]``.

    Examples
    --------
    >>> import jax, numpy as np, numpyro, numpyro.distributions as dist
    >>> from bhmjax._src import locscale
    >>> def model(g, y):
    ...     mu, tau = numpyro.sample("mu", dist.Normal(0, 5)), numpyro.sample("tau", dist.HalfNormal(2))
    ...     with numpyro.plate("groups", 2):
    ...         a = numpyro.sample("a", dist.Normal(mu, tau))
    ...     numpyro.sample("y", dist.Normal(a[g], 1.0), obs=y)
    >>> g = np.repeat([0, 1], [400, 1]); y = np.random.default_rng(0).normal(g, 1.0)
    >>> partial = locscale.run_model(model, (("a", "partial"),))
    >>> arrays = {"g": g, "y": y, "centeredness:a": np.ones(2, np.float32)}
    >>> info = learn(jax.random.PRNGKey(0), partial, arrays, {}, {"centeredness:a": "a_decentered"})
    >>> info.centeredness["centeredness:a"].tolist()[0], bool(info.centeredness["centeredness:a"][1] < 0.7)
    (1.0, True)
    """
    pairs = tuple(sorted(sites.items()))
    t0 = time.perf_counter()
    arrays = engine.stage(dict(arrays))
    static_key = tuple(sorted(static.items()))
    settings = (model, static_key, pairs, int(num_steps), float(learning_rate), int(num_draws), int(num_passes))
    with compiles.watch() as log:
        run = engine.compiled("prepass", _program(*settings), settings, key, arrays)
        learned, losses = run(key, arrays)
        losses = np.asarray(losses)
    compile_s = sum(e.seconds for e in log if e.kind != "cache_hit")
    raw = {k: np.asarray(learned[k], dtype=np.float64) for k, _ in pairs}
    return ReparamInfo(centeredness={k: snap(v) for k, v in raw.items()}, raw=raw, loss=losses,
                       num_steps=int(num_steps), seconds=time.perf_counter() - t0, compile_seconds=compile_s)


def snap(values: Any) -> np.ndarray:
    """Round to ``DECIMALS`` and snap values within ``SNAP`` of 0 or 1 to the end (elementwise).

    Within ``SNAP`` of an end the other form's share of the element's precision is under
    a tenth, so the end form samples as well; and a site whose elements are all at one
    end runs as written (1) or on the plain non-centered path (0), with no partial
    transform in its gradient.
    """
    v = np.round(np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0), DECIMALS)
    return np.where(v >= 1.0 - SNAP, 1.0, np.where(v <= SNAP, 0.0, v))


def learn_centeredness(key: jax.Array, structure: ModelStructure, arrays: Mapping[str, Any],
                       static: Mapping[str, Any], **options) -> ReparamInfo:
    """Learn a centeredness per group and column of every formula term whose centeredness is None.

    The pre-pass runs on the per-group form (``reparam.PER_GROUP``) with every value 1:
    the sites ``z_<g>`` (G, K) are then ``Normal(loc, sd)`` elementwise, the group
    coefficients written centered. ``options`` are those of :func:`learn`. The result
    is keyed by grouping.

    Examples
    --------
    >>> import jax, numpy as np, bhmjax as bj
    >>> from bhmjax._src import data as data_lib
    >>> g = np.repeat(np.arange(4), 50); y = np.random.default_rng(0).normal(g, 0.1)
    >>> auto = bj.Model("y ~ 1 + (1 | g)", {"y": y, "g": g}, parameterization="auto")
    >>> arrays, static = data_lib.split_data(bj.Model("y ~ 1 + (1 | g)", {"y": y, "g": g}).data)
    >>> info = learn_centeredness(jax.random.PRNGKey(0), auto.spec.structure, arrays, static)
    >>> info.centeredness["g"].shape, bool(info.centeredness["g"].min() > 0.8)
    ((4, 1), True)
    """
    learned = {g.name: (static[f"G_{g.term}"], len(g.columns))
               for g in all_groups(structure) if g.centeredness is None}
    dtype = jnp.result_type(float)
    ones = {data_key(name): np.ones(shape, dtype) for name, shape in learned.items()}
    model = build_model(_as_per_group(structure, set(learned)))
    info = learn(key, model, {**arrays, **ones}, static, {data_key(name): f"z_{name}" for name in learned},
                 **options)
    strip = lambda d: {k[len(data_key("")):]: v for k, v in d.items()}  # noqa: E731
    return info._replace(centeredness=strip(info.centeredness), raw=strip(info.raw))


def with_centeredness(structure: ModelStructure, values: Mapping[str, Any]) -> ModelStructure:
    """``structure`` with the centeredness form of the named groupings set from per-group values.

    ``values[name]`` of shape (G, K): all 1 gives the centered form, all 0 the
    non-centered one, one value per column a tuple; anything else the per-group form
    (``reparam.PER_GROUP``), whose values the model then reads from its data.
    """
    return _with_forms(structure, {name: form_of(v) for name, v in values.items()})


def _as_per_group(structure: ModelStructure, names: set[str]) -> ModelStructure:
    """``structure`` with the named groupings in the per-group form (values from the data)."""
    return _with_forms(structure, {name: PER_GROUP for name in names})


def _with_forms(structure: ModelStructure, forms: Mapping[str, Any]) -> ModelStructure:
    def update(groups):
        return tuple(dataclasses.replace(g, centeredness=forms[g.name]) if g.name in forms else g for g in groups)

    dpars = tuple(dataclasses.replace(p, groups=update(p.groups)) for p in structure.dpars)
    return dataclasses.replace(structure, groups=update(structure.groups), dpars=dpars)
