"""Centeredness for the location-scale sites of any NumPyro model.

A hand-written hierarchical model says ``a = numpyro.sample("a", dist.Normal(mu, tau))``
inside a plate (the centered form) or samples a standard normal and scales it (the
non-centered form); which one NUTS samples well depends on how strongly the data
identify each group. This module finds the eligible sites of any model, learns a
centeredness per ELEMENT of each by the SVI pre-pass of ``autoreparam.py`` and gives
back the model NUTS should run, built with NumPyro's ``handlers.reparam`` and
``LocScaleReparam`` (Gorinova, Moore and Hoffman 2020):

    a_decentered ~ D(c * loc, scale**c),    a = loc + scale**(1 - c) * (a_decentered - c * loc)

so ``a`` is a deterministic site of the run model with the draws of the original one,
and ``a_decentered`` the variable NUTS sees (an internal site, not stored in the draws).

Eligible sites: latent sample sites whose distribution, under ``expand`` and
``to_event`` (plates included), is one of ``SHAPE_PARAMS`` (the location-scale families
``LocScaleReparam`` can take) and whose parameters depend on another latent site
(NumPyro's ``get_model_relations``). A prior with constant parameters gains nothing.

The centeredness of a site is either the same for every element (0 is the fast
non-centered path of ``LocScaleReparam``, 1 leaves the site as written) or an array of
the site's shape; arrays travel as data (``centeredness:<site>``), so the run model is
one function per model and form, and new values reuse its compiled program.
"""

from __future__ import annotations

import numbers
import time
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.infer.reparam import LocScaleReparam

from bhmjax._src import autoreparam, engine
from bhmjax._src.batch import site_shapes
from bhmjax._src.reparam import AUTO, PARAMETERIZATIONS, data_key

__all__ = ["SHAPE_PARAMS", "SiteReparamInfo", "eligible_sites", "reparameterize", "run_model", "internal_name"]

# The location-scale families LocScaleReparam can take, with the parameters it copies unchanged.
SHAPE_PARAMS: dict[type, tuple[str, ...]] = {
    dist.Normal: (), dist.Cauchy: (), dist.Laplace: (), dist.Logistic: (), dist.Gumbel: (),
    dist.SoftLaplace: (), dist.StudentT: ("df",),
}
_BY_NAME = {cls.__name__: cls for cls in SHAPE_PARAMS}
NONCENTERED, PARTIAL = "noncentered", "partial"

_RUN_MODELS: dict[tuple, Callable] = {}
_SITES: dict[tuple, dict] = {}


class SiteReparamInfo(NamedTuple):
    """What ``reparameterize`` did to a model.

    Attributes
    ----------
    requested : str
        "auto", "centered", "noncentered" or "per site".
    sites : dict of str -> tuple of int
        The eligible sites and their shapes.
    centeredness : dict of str -> float or np.ndarray
        Per eligible site, the centeredness NUTS uses (a float for all elements, or an
        array of the site's shape).
    internal : tuple of str
        The decentered sites NUTS samples (``<site>_decentered``), not stored in the draws.
    learned : autoreparam.ReparamInfo or None
        The SVI pre-pass, where values were learned.
    seconds : float
        Wall time of finding the sites and of the pre-pass.
    """

    requested: str
    sites: dict[str, tuple[int, ...]]
    centeredness: dict[str, Any]
    internal: tuple[str, ...]
    learned: autoreparam.ReparamInfo | None
    seconds: float

    def describe(self) -> str:
        """The ``describe()``-like text of ``fit.settings["reparam"]["text"]``."""
        if not self.sites:
            return (f"parameterization={self.requested!r}: the model has no eligible site (a latent "
                    f"{'/'.join(_BY_NAME)} site whose parameters depend on another latent), so it runs as written.")
        head = f"parameterization={self.requested!r} ({self.seconds:.1f} s; values: 1 = centered, 0 = non-centered):"
        if self.learned is not None:
            head += (f" learned by the curvature pre-pass ({self.learned.num_steps} SVI steps, compile "
                     f"{self.learned.compile_seconds:.1f} s)")
        lines = [head] + [f"  {name} {self.sites[name]}: {autoreparam.describe_values(c)}"
                          for name, c in self.centeredness.items()]
        return "\n".join(lines)

    def record(self) -> dict[str, Any]:
        """JSON-able values per site (what ``fit.settings["parameterization"]`` holds and
        what ``reparameterize`` takes back to rebuild the same run model)."""
        return {k: float(v) if np.ndim(v) == 0 else np.asarray(v).tolist() for k, v in self.centeredness.items()}


def internal_name(site: str) -> str:
    """The decentered site LocScaleReparam samples in place of ``site``."""
    return f"{site}_decentered"


def eligible_sites(model: Callable, arrays: Mapping[str, Any], static: Mapping[str, Any]) -> dict[str, tuple]:
    """The latent location-scale sites whose parameters depend on other latents, with their shapes.

    From NumPyro's ``get_model_relations`` (distribution of each site under its
    expand/to_event wrappers and the sites its log density depends on) and the
    abstract site shapes of ``batch.site_shapes``; no array computation. Kept per
    model, static data and array shapes.
    """
    from numpyro.infer.inspect import get_model_relations

    key = (model, tuple(sorted(static.items())), tuple((k, np.shape(v)) for k, v in sorted(arrays.items())))
    try:
        hit = _SITES.get(key)
    except TypeError:  # unhashable static data: no reuse
        key, hit = None, None
    if hit is not None:
        return hit
    kwargs = {**engine.stage(dict(arrays)), **static}
    relations = get_model_relations(model, model_kwargs=kwargs)
    observed = set(relations["observed"])
    latent = {name for name in relations["sample_dist"] if name not in observed}
    shapes = site_shapes(model, arrays, static)
    out = {}
    for name, upstream in relations["sample_sample"].items():
        if name in observed or relations["sample_dist"].get(name) not in _BY_NAME or name not in shapes:
            continue
        if any(u != name and u in latent for u in upstream):
            out[name] = tuple(shapes[name].shape)
    if key is not None:
        _SITES[key] = out
    return out


def _locscale(value: Any, shape_params: tuple[str, ...]) -> LocScaleReparam:
    return LocScaleReparam(centered=value, shape_params=shape_params)


def run_model(model: Callable, forms: tuple[tuple[str, str], ...]) -> Callable:
    """``model`` with each named site decentered; one function per (model, forms).

    ``forms`` pairs each site with "noncentered" (c = 0) or "partial" (c from the data
    key ``centeredness:<site>``, an array of the site's shape). The data keys are taken
    out of the keyword arguments before ``model`` is called. Sites not named stay as written.
    """
    key = (model, forms)
    fn = _RUN_MODELS.get(key)
    if fn is not None:
        return fn
    form_of = dict(forms)

    def reparameterized(**kwargs):
        values = {s: kwargs.pop(data_key(s)) for s, f in forms if f == PARTIAL}

        def config(msg):
            form = form_of.get(msg["name"])
            if form is None or msg.get("is_observed"):
                return None
            base = msg["fn"]
            while isinstance(base, (dist.Independent, dist.ExpandedDistribution)):
                base = base.base_dist
            shape_params = SHAPE_PARAMS.get(type(base))
            if shape_params is None:  # not a location-scale family here (masked, say): as written
                return None
            return _locscale(0.0 if form == NONCENTERED else values[msg["name"]], shape_params)

        with handlers.reparam(config=config):
            return model(**kwargs)

    name = getattr(model, "__name__", "model")
    reparameterized.__name__ = reparameterized.__qualname__ = f"{name}_reparameterized"
    _RUN_MODELS[key] = reparameterized
    return reparameterized


def _requested(parameterization: Any) -> str:
    if isinstance(parameterization, str):
        return parameterization
    return "per site"


def _resolve(parameterization: Any, sites: Mapping[str, tuple]) -> dict[str, Any]:
    """Per eligible site: a float in [0, 1], an array of the site's shape, or AUTO. Checks everything."""
    if isinstance(parameterization, str):
        if parameterization != AUTO and parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be 'auto', 'centered', 'noncentered' or a dict "
                             f"{{site: value}}; got {parameterization!r}")
        value = AUTO if parameterization == AUTO else PARAMETERIZATIONS[parameterization]
        return {s: value for s in sites}
    if not isinstance(parameterization, Mapping):
        raise TypeError(f"parameterization must be a str or a dict {{site: value}}, got "
                        f"{type(parameterization).__name__}")
    unknown = [k for k in parameterization if k not in sites]
    if unknown:
        raise ValueError(f"parameterization names site {unknown[0]!r}, which is not an eligible site of the "
                         f"model; eligible sites (latent {'/'.join(_BY_NAME)} sites whose parameters depend "
                         f"on another latent) are {sorted(sites)}.")
    return {s: _site_value(s, parameterization.get(s, "centered"), sites[s]) for s in sites}


def _site_value(site: str, value: Any, shape: tuple) -> Any:
    if isinstance(value, str):
        if value != AUTO and value not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization[{site!r}] must be 'auto', 'centered', 'noncentered', a float in "
                             f"[0, 1] or an array of shape {shape}; got {value!r}")
        return AUTO if value == AUTO else PARAMETERIZATIONS[value]
    if isinstance(value, bool) or not (isinstance(value, numbers.Real) or hasattr(value, "__len__")
                                       or hasattr(value, "shape")):
        raise TypeError(f"parameterization[{site!r}] must be a str, a float or an array; got "
                        f"{type(value).__name__}")
    v = np.asarray(value, dtype=np.float64)
    if v.ndim and v.shape != tuple(shape):
        raise ValueError(f"parameterization[{site!r}] has shape {v.shape} but site {site!r} has shape "
                         f"{tuple(shape)}; give one value per element, or one float for all.")
    if not np.all((v >= 0.0) & (v <= 1.0)):
        raise ValueError(f"parameterization[{site!r}] must lie in [0, 1] (1 centered, 0 non-centered); "
                         f"got values from {v.min():g} to {v.max():g}")
    return float(v) if v.ndim == 0 else v


def _compact(value: Any) -> float | np.ndarray:
    """One float where every element has the same value, else the array."""
    v = np.asarray(value, dtype=np.float64)
    flat = v.reshape(-1)
    return float(flat[0]) if flat.size and np.all(flat == flat[0]) else v


def _form(value: Any) -> str | None:
    """None (as written), NONCENTERED or PARTIAL for a fixed centeredness."""
    v = np.asarray(value)
    if np.all(v == 1.0):
        return None
    if np.all(v == 0.0):
        return NONCENTERED
    return PARTIAL


def _fixed(model: Callable, arrays: Mapping[str, Any], values: Mapping[str, Any],
           shapes: Mapping[str, tuple]) -> tuple[Callable, dict]:
    """The run model and data of fixed values (all-1 sites untouched, all-0 on the fast path)."""
    forms = tuple((s, f) for s in sorted(values) if (f := _form(values[s])) is not None)
    if not forms:
        return model, dict(arrays)
    dtype = jnp.result_type(float)
    extra = {data_key(s): np.broadcast_to(np.asarray(values[s], dtype), shapes[s]).copy()
             for s, f in forms if f == PARTIAL}
    return run_model(model, forms), {**arrays, **extra}


def reparameterize(key: jax.Array, model: Callable, arrays: Mapping[str, Any], static: Mapping[str, Any],
                   parameterization: Any, **options) -> tuple[Callable, dict, SiteReparamInfo]:
    """The model NUTS runs, its data and what was done, for a requested parameterization.

    Parameters
    ----------
    key : PRNG key
        Key of the SVI pre-pass (used only where values are learned).
    model : callable
        A NumPyro model, called as ``model(**arrays, **static)``.
    arrays, static : dict
        Its array data (traced) and Python values (compiled in).
    parameterization : "auto", "centered", "noncentered" or dict
        For every eligible site (:func:`eligible_sites`), or per site: ``{"a": "auto",
        "b": 0.3, "theta": array of the site's shape}`` (sites not named stay centered,
        as written). "auto" learns a centeredness per element.
    **options
        Settings of the pre-pass, :func:`autoreparam.learn` (``num_steps``, ``num_draws``...).

    Returns
    -------
    model_to_run : callable
        ``model`` itself where nothing changes, else its reparameterized twin, whose
        draws hold the original sites (now deterministic) and the internal
        ``<site>_decentered`` ones.
    arrays_to_run : dict
        ``arrays`` plus the per-element centeredness arrays the twin reads.
    info : SiteReparamInfo

    Raises
    ------
    ValueError, TypeError
        An unknown name, a site that is not eligible, a value outside [0, 1] or of the
        wrong shape, before anything compiles.
    """
    t0 = time.perf_counter()
    shapes = eligible_sites(model, arrays, static)
    values = _resolve(parameterization, shapes)
    learned = None
    to_learn = sorted(s for s, v in values.items() if isinstance(v, str))
    if to_learn:  # learned on the model with the fixed values applied and the learned sites partial (data)
        placeholder = np.full((), 0.5)  # any value strictly between 0 and 1 gives the partial form
        learner, learner_arrays = _fixed(model, arrays, {**values, **{s: placeholder for s in to_learn}}, shapes)
        learned = autoreparam.learn(key, learner, learner_arrays, static,
                                    {data_key(s): internal_name(s) for s in to_learn}, **options)
        learned = learned._replace(centeredness={s: learned.centeredness[data_key(s)] for s in to_learn},
                                   raw={s: learned.raw[data_key(s)] for s in to_learn})
        values.update(learned.centeredness)
    model_to_run, arrays_to_run = _fixed(model, arrays, values, shapes)
    centeredness = {s: _compact(v) for s, v in values.items()}
    internal = tuple(sorted(internal_name(s) for s in values if _form(values[s]) is not None))
    info = SiteReparamInfo(requested=_requested(parameterization), sites=dict(shapes), centeredness=centeredness,
                           internal=internal, learned=learned, seconds=time.perf_counter() - t0)
    return model_to_run, arrays_to_run, info
