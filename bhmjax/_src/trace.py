"""One abstract trace of a model per (model, static data, array shapes, precision).

:func:`model_trace` runs the model once under ``jax.eval_shape``, where a uniform start
would put it, with every site's log density (no computation, nothing compiled), and
keeps what every question about the model's sites needs: each site's kind, shape,
dtype and distribution (site shapes for the memory estimate, streams and padding), the
unconstrained latent sites, and the potential and constraining functions that take the data as arguments (the chain
programs). Shape errors and Python branching on traced values are explained here,
before anything compiles.

:func:`check_initial_point` is the model check: the log density of every site at
the point the run itself starts from (:func:`bhmjax._src.start.initial_point` with the
run's init strategy and the first chain's key),
so a model that is valid where the run starts is never refused.

:func:`select` is the one rule for which sites are stored (``keep`` / ``drop``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from bhmjax._src.keys import ABSTRACT_KEY
from bhmjax._src.lru import LRU

__all__ = ["ModelTrace", "Site", "check_initial_point", "check_log_densities", "model_trace", "select",
           "site_log_densities"]


@dataclass(frozen=True)
class Site:
    """One site of a model run on data of given shapes.

    Attributes
    ----------
    name : str
    kind : {"latent", "observed", "deterministic"}
        ``numpyro.factor`` terms are observed sites of distribution ``Unit``.
    shape : tuple of int
        The value's shape.
    dtype : np.dtype
    dist : str or None
        The distribution's class name (sample sites).
    dist_shape : tuple of int
        The distribution's batch + event shape.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    dtype: np.dtype
    dist: str | None = None
    dist_shape: tuple[int, ...] = ()


@dataclass(frozen=True, eq=False)
class ModelTrace:
    """Every fact about a model's sites, from one abstract run (see :func:`model_trace`).

    Attributes
    ----------
    sites : dict of str -> Site
        In the order the model creates them.
    latent : tuple of str
        The unconstrained sites the sampler moves (NumPyro's ``param_info.z``).
    unconstrained : dict of str -> jax.ShapeDtypeStruct
        Their shapes on the unconstrained scale (a simplex of K has K - 1).
    model : callable
        The NumPyro model, for :meth:`potential_fn` and :meth:`constrain_fn`.
    """

    sites: dict[str, Site]
    latent: tuple[str, ...]
    unconstrained: dict[str, Any]
    model: Callable

    def potential_fn(self, **data) -> Callable:
        """``z -> potential energy`` (unconstrained latent values) of the model on ``data``."""
        from numpyro.infer.util import potential_energy

        return partial(potential_energy, self.model, (), data)

    def constrain_fn(self, **data) -> Callable:
        """``z -> {site: value}``: latent and deterministic sites on their own scales.

        The model is run again on ``data`` (nothing is taken from the abstract trace:
        a support whose bijection depends on the data, as standardized priors' does,
        would otherwise carry the trace's abstract values into a compiled program).
        """
        from numpyro.infer.util import constrain_fn

        return partial(constrain_fn, self.model, (), data, return_deterministic=True)

    def latent_size(self) -> int:
        """The number of unconstrained elements the sampler moves (one chain)."""
        return int(sum(np.prod(s.shape, dtype=np.int64) for s in self.unconstrained.values()))

    def stored(self, keep: Iterable[str] | None = None, drop: Iterable[str] = ()) -> dict[str, Site]:
        """The latent and deterministic sites a run stores under ``keep`` / ``drop``."""
        names = [n for n, s in self.sites.items() if s.kind != "observed"]
        return {n: self.sites[n] for n in select(names, keep, drop)}

    def observed(self) -> dict[str, Site]:
        return {n: s for n, s in self.sites.items() if s.kind == "observed"}


def select(names: Iterable[str], keep: Iterable[str] | None, drop: Iterable[str]) -> list[str]:
    """The names a run stores: those in ``keep`` (all when None) and not in ``drop``, in order."""
    keep = None if keep is None else set(keep)
    drop = set(drop)
    return [n for n in names if n not in drop and (keep is None or n in keep)]


_TRACES: dict[tuple, ModelTrace] = {}


def _signature(arrays: Mapping[str, Any]) -> tuple:
    return tuple((k, tuple(np.shape(v)), np.dtype(getattr(v, "dtype", np.asarray(v).dtype)).str)
                 for k, v in sorted(arrays.items()))


def _cache_key(model: Callable, arrays: Mapping[str, Any], static: Mapping[str, Any], *extra) -> tuple | None:
    key = (model, tuple(sorted(static.items())), jnp.result_type(float).name, _signature(arrays), *extra)
    try:
        hash(key)
    except TypeError:  # unhashable static data: no reuse
        return None
    return key


def _site(name: str, site: dict) -> Site:
    value = site["value"]
    if site["type"] == "deterministic":
        return Site(name, "deterministic", tuple(jnp.shape(value)), np.dtype(jnp.result_type(value)))
    kind = "observed" if site.get("is_observed") else "latent"
    return Site(name, kind, tuple(jnp.shape(value)), np.dtype(jnp.result_type(value)), type(site["fn"]).__name__,
                tuple(site["fn"].shape()))


def _explain(err: Exception, arrays: Mapping[str, Any]) -> ValueError:
    """A model failure during tracing as a ValueError that says what to do."""
    if isinstance(err, jax.errors.ConcretizationTypeError):
        return ValueError(
            f"the model branches in Python on a value that is only known while sampling ({err}). "
            "Use jnp.where or lax.cond instead of `if` on data or parameters, and pass sizes as Python ints.")
    lengths = ", ".join(f"{k}: {np.shape(v)[0]}" for k, v in arrays.items() if np.ndim(v) >= 1)
    text = str(err)
    shapes = any(w in text.lower() for w in ("shape", "broadcast", "incompatible", "index", "size"))
    hint = "arrays of mismatched length are the usual cause" if shapes else "check the data and the model's parameters"
    return ValueError(f"the model failed when run on the data ({type(err).__name__}: {text}). "
                      f"Data lengths: {lengths or 'no arrays'}; {hint}.")


def _name_failing_site(model: Callable, abstract: Mapping[str, Any], static: Mapping[str, Any]) -> None:
    """After a failed trace: the site whose log density cannot be evaluated, if that is what failed."""
    from numpyro import handlers

    def run(arrs):
        with handlers.block(), handlers.trace() as tr, handlers.seed(rng_seed=0):
            model(**arrs, **static)
        for name, site in tr.items():
            if site["type"] != "sample":
                continue
            try:
                site["fn"].log_prob(site["value"])
            except Exception as err:  # noqa: BLE001 - reported with the site's name
                raise ValueError(f"the log density of site {name!r} ({type(site['fn']).__name__}) cannot be "
                                 f"evaluated: {type(err).__name__}: {err}") from err

    try:
        jax.eval_shape(run, abstract)
    except ValueError as err:
        if str(err).startswith("the log density of site"):
            raise
    except Exception:  # noqa: BLE001 - the model itself fails: the caller explains that
        pass


def _check_shapes(sites: Mapping[str, Site], arrays: Mapping[str, Any]) -> None:
    """An observed site whose data would be broadcast to a larger shape is named."""
    for site in sites.values():
        if site.kind != "observed" or site.dist == "Unit":
            continue
        try:
            joint = np.broadcast_shapes(site.shape, site.dist_shape)
        except ValueError:
            joint = None
        if joint != site.shape:
            lengths = ", ".join(f"{k}: {np.shape(v)[0]}" for k, v in arrays.items() if np.ndim(v) >= 1)
            raise ValueError(
                f"observed site {site.name!r} has data of shape {site.shape} but its distribution "
                f"has shape {site.dist_shape}; data lengths: {lengths}. Arrays of mismatched length?")


class DiscreteLatentError(ValueError):
    """A discrete latent site, which NUTS cannot move (raised as it is, not as a data failure)."""


def _refuse_discrete_latents(tr: Mapping[str, dict]) -> None:
    """NUTS moves continuous parameters only: a discrete latent site of the model's trace ``tr`` (not
    marked for enumeration) is named."""
    for name, site in tr.items():
        support = getattr(site.get("fn"), "support", None)
        if (site["type"] == "sample" and not site.get("is_observed") and getattr(support, "is_discrete", False)
                and (site.get("infer") or {}).get("enumerate") is None):
            raise DiscreteLatentError(
                f"site {name!r} is a discrete latent variable ({type(site['fn']).__name__}): NUTS moves only "
                "continuous parameters. Sum it out of the model (e.g. a mixture: dist.MixtureSameFamily), or "
                "pass its values as observed data.")


def model_trace(model: Callable, arrays: Mapping[str, Any], static: Mapping[str, Any]) -> ModelTrace:
    """The abstract trace of ``model(**arrays, **static)`` in the current precision (cached).

    Raises
    ------
    ValueError
        When the model fails on the data (naming the data lengths), branches in Python
        on a traced value, or an observed site's data would be broadcast.
    """
    from numpyro import handlers
    from numpyro.distributions import biject_to
    from numpyro.infer import init_to_uniform

    key = _cache_key(model, arrays, static)
    hit = None if key is None else _TRACES.get(key)
    if hit is not None:
        return hit
    captured: dict[str, Any] = {}

    def probe(rng, arrs):
        # The model run once where NUTS would start it, and every site's log density: the shapes, the
        # latent sites and their unconstrained shapes as initialize_model has them, without its gradient.
        with handlers.block():  # latent values as NUTS would start them: an improper prior cannot be sampled
            tr = handlers.trace(handlers.substitute(handlers.seed(model, rng), substitute_fn=init_to_uniform())
                                ).get_trace(**arrs, **static)
        _refuse_discrete_latents(tr)
        latent = {n: s for n, s in sorted(tr.items()) if s["type"] == "sample" and not s["is_observed"]
                  and not s["fn"].support.is_discrete}  # enumerated discrete sites are summed out, not moved
        captured["sites"] = {n: _site(n, s) for n, s in tr.items() if s["type"] in ("sample", "deterministic")}
        captured["latent"] = tuple(latent)
        unconstrained = {n: biject_to(s["fn"].support).inv(s["value"]) for n, s in latent.items()}
        captured["unconstrained"] = {n: jax.ShapeDtypeStruct(jnp.shape(v), jnp.result_type(v))
                                     for n, v in unconstrained.items()}
        return sum(jnp.sum(s["fn"].log_prob(s["value"])) for s in tr.values() if s["type"] == "sample")

    abstract = {k: jax.ShapeDtypeStruct(np.shape(v), getattr(v, "dtype", np.asarray(v).dtype))
                for k, v in arrays.items()}
    try:
        jax.eval_shape(probe, ABSTRACT_KEY, abstract)  # an abstract key: nothing compiles
    except DiscreteLatentError:
        raise
    except (TypeError, ValueError, IndexError, jax.errors.ConcretizationTypeError) as err:
        raise _explain(err, arrays) from err
    except Exception:  # a distribution that cannot evaluate its density, say: named when it is one site's
        _name_failing_site(model, abstract, static)
        raise
    _check_shapes(captured["sites"], arrays)
    trace = ModelTrace(sites=captured["sites"], latent=captured["latent"], unconstrained=captured["unconstrained"],
                       model=model)
    if key is not None:
        _TRACES[key] = trace
    return trace


# ---------------------------------------------------------------- the model check

_CHECKS: LRU[Callable] = LRU(32)  # jitted: each holds its executables


def site_log_densities(model: Callable, kwargs: Mapping[str, Any], values: Mapping[str, Any]) -> dict:
    """``{site: log density}`` of every sample site of ``model(**kwargs)`` at ``values`` (constrained).

    Traceable: the chain programs evaluate it where each chain starts (their ``checks``).
    """
    from numpyro import handlers

    with handlers.block(), handlers.trace() as tr, handlers.seed(rng_seed=0), handlers.substitute(data=values):
        model(**kwargs)
    out = {}
    for name, site in tr.items():
        if site["type"] != "sample":
            continue
        lp = site["fn"].log_prob(site["value"])
        if site.get("mask") is not None:
            lp = jnp.where(site["mask"], lp, 0.0)
        out[name] = lp
    return out


def _check_program(trace: ModelTrace, static: Mapping[str, Any], init_fn: Callable) -> Callable:
    """``(key_init, arrays) -> {site: log density}`` at the point ``init_fn`` starts from (jitted)."""
    from bhmjax._src.start import initial_point

    def run(key_init, arrays):
        kwargs = {**arrays, **static}
        z = initial_point(key_init, trace, kwargs, init_fn).z
        return site_log_densities(trace.model, kwargs, trace.constrain_fn(**kwargs)(z))

    return jax.jit(run)


def check_initial_point(model: Callable, arrays: Mapping[str, Any], static: Mapping[str, Any],
                        init_fn: Callable, init_key: Any, init_name: str, trace: ModelTrace) -> None:
    """Refuse a run whose first chain would start where some site's log density is NaN or infinite.

    The point is the one the run starts from: ``init_fn`` (its init strategy) with
    ``init_key`` (the key of the first chain's initialization). The offending site is
    named, with its role: observed data outside the distribution's support, or an
    invalid initial value.
    """
    key = _cache_key(model, arrays, static, init_name)
    program = None if key is None else _CHECKS.get(key)
    if program is None:
        program = _check_program(trace, static, init_fn)
        if key is not None:
            _CHECKS[key] = program
    try:
        log_densities = program(init_key, dict(arrays))
    except (TypeError, ValueError, IndexError) as err:
        raise _explain(err, arrays) from err
    check_log_densities(trace, log_densities, init_name)


def check_log_densities(trace: ModelTrace, log_densities: Mapping[str, Any], init_name: str) -> None:
    """Refuse the start ``log_densities`` (from :func:`site_log_densities`) where a site's is not finite."""
    for name, lp in log_densities.items():
        _check_log_density(trace.sites[name], np.asarray(lp), init_name)


def _check_log_density(site: Site, lp: np.ndarray, init_name: str) -> None:
    bad = ~np.isfinite(lp)
    if not bad.any():
        return
    what = "NaN" if np.isnan(lp).any() else "infinite"
    role = ("value (a factor)" if site.dist == "Unit" else "observed data") if site.kind == "observed" \
        else "initial value"
    where = f", first at index {int(np.flatnonzero(bad.reshape(-1))[0])}" if lp.ndim >= 1 else ""
    raise ValueError(
        f"the log density of site {site.name!r} is {what} at its {role} ({int(bad.sum())} value(s){where}) "
        f"where the run starts (init_strategy={init_name}): {site.dist} cannot produce it. Check the data for "
        "values outside the distribution's support (a negative count, a 2 for a Bernoulli) and the parameters "
        "for invalid values (a negative scale); if the data are right, start where they are possible "
        "(init_strategy={'param': value} or 'median').")
