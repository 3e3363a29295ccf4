"""Model specs to NumPyro models with vectorized group effects.

The generated model reads everything that varies with the data from keyword
arrays (traced) and its sizes from Python ints (static), so one function (cached
per :class:`ModelStructure`) serves every dataset with the same structure and a
new dataset of the same shapes reuses the compiled program.

Model data (keyword arguments)
------------------------------
``y`` (N,)                    the response (None: draw it)
``N``                          number of rows (static int)
``X`` (N, K), ``X_mean`` (K,)  slope columns and their training means (K > 0)
``trials`` (N,)                binomial trials (bernoulli too, for rows summed into counts:
                               the likelihood is then binomial)
``Z_i`` (N, K_i), ``codes_i`` (N,), ``G_i`` (static int)
                               the i-th group term's columns, group codes, number of groups
``prior:<site>:...``           default prior parameters (see ``priors.py``)

Exactly reduced data (see ``reduce.py``) add ``Intercept_col`` (N,), ``reduction:rss`` and
``reduction:dropped`` (Gaussian pseudo rows), or ``reduction:offset`` (N,), the log of each
Poisson count's rows, added to the log rate in the likelihood only.

Sites
-----
``Intercept_c`` (the intercept for centred slope columns, sampled) and
``Intercept`` = ``Intercept_c - X_mean @ b`` (deterministic, the user's scale);
``b`` (K,); ``sd_<g>`` (K_g,); ``L_<g>`` (K_g, K_g) LKJ Cholesky factor and
``cor_<g>`` = L L^T (deterministic) for correlated terms; ``r_<g>`` (G, K_g), the
deviations from the population coefficients: sampled (centered, no population
counterpart) or deterministic from ``theta_<g>`` (centered on the matching population
coefficients, see ``reparam.py``) or ``z_<g>``; family parameters; ``y``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from bhmjax._src import marginal
from bhmjax._src.families import FAMILIES, Family
from bhmjax._src.formula import FixedDesignSpec, FormulaSpec, GroupDesignSpec
from bhmjax._src.identity import structure_digest
from bhmjax._src.priors import Prior, VectorPrior, make_vector
from bhmjax._src.reparam import data_key, group_effects
from bhmjax._src.standardize import on_sampler_scale

__all__ = ["GroupStructure", "ModelStructure", "ModelSpec", "build_model", "describe", "linear_predictor"]


@dataclass(frozen=True)
class GroupStructure:
    """What the program needs to know about one group term (static, hashable).

    Attributes
    ----------
    name : str
        The grouping, e.g. "county" or "a:b".
    columns : tuple of str
        The term's columns (last axis of ``r_<name>``).
    correlated : bool
        An LKJ-correlated block (only when the term has two or more columns).
    centeredness : tuple of float, "per_group" or None
        Per column, in [0, 1]: 1 centered, 0 non-centered; "per_group": (G, K) values in
        the model data (``reparam.PER_GROUP``); None: learned (``autoreparam.py``).
    sd_prior : VectorPrior
    cor_prior : Prior or None
    """

    name: str
    columns: tuple[str, ...]
    correlated: bool
    centeredness: tuple[float, ...] | str | None
    sd_prior: VectorPrior
    cor_prior: Prior | None = None


@dataclass(frozen=True)
class ModelStructure:
    """Everything that shapes the generated program (the cache key of :func:`build_model`)."""

    family: str
    intercept: bool
    slopes: tuple[str, ...]
    groups: tuple[GroupStructure, ...]
    intercept_prior: Prior | None
    b_prior: VectorPrior | None
    family_priors: tuple[tuple[str, Prior], ...]
    marginal: str | None = None  # the grouping whose effects are integrated out (see ``marginal.py``)


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """A formula model, all of it: what ``fit.spec`` holds and what prediction needs.

    Attributes
    ----------
    formula : FormulaSpec
        The parsed formula.
    family : Family
    fixed : FixedDesignSpec
        Formulaic's ModelSpec of the population design, its slope columns and means.
    groups : tuple of GroupDesignSpec
        Per group term: formulaic's ModelSpec of its columns and the GroupEncoding
        of its levels, in the order of ``structure.groups``.
    priors : dict
        The prior of every site after overrides (Prior or VectorPrior).
    structure : ModelStructure
        The static description the NumPyro model is generated from.
    source : object, optional
        What the spec was built from that it does not hold itself (the used data
        columns, the user's priors; ``bhmjax.records.ModelSource``), so a saved fit
        rebuilds the model; None for specs built another way.
    """

    formula: FormulaSpec
    family: Family
    fixed: FixedDesignSpec
    groups: tuple[GroupDesignSpec, ...]
    priors: dict[str, Any]
    structure: ModelStructure
    source: Any = field(default=None, repr=False)


# ---------------------------------------------------------------- the model

_MODELS: dict[ModelStructure, Callable] = {}


def _scalar(site: str, prior: Prior, data: Mapping[str, Any]) -> dist.Distribution:
    return prior.make({n: data[f"prior:{site}:{n}"] for n, _ in prior.args})


def _vector(site: str, prior: VectorPrior, data: Mapping[str, Any]) -> dist.Distribution:
    def values_of(j):
        return {n: data[f"prior:{site}:{j}:{n}"] for n, _ in prior.parts[j][1].args}
    return make_vector(prior, values_of)


def _population(s: ModelStructure, data: Mapping[str, Any]):
    """The population part of the linear predictor and its coefficients by column name.

    The coefficients are on the data's scale (``Intercept``, not ``Intercept_c``): the
    group columns are not centred, so these are what a group's coefficients vary around.
    """
    eta = jnp.zeros((data["N"],))
    b, coefs = None, {}
    if s.slopes:
        b = numpyro.sample("b", on_sampler_scale("b", _vector("b", s.b_prior, data), data))
        x = data["X"] - data["X_mean"] if s.intercept else data["X"]
        eta = eta + x @ b
        coefs.update({name: b[j] for j, name in enumerate(s.slopes)})
    if s.intercept:
        prior = _scalar("Intercept", s.intercept_prior, data)
        a = numpyro.sample("Intercept_c", on_sampler_scale("Intercept_c", prior, data,
                                                           shift=s.intercept_prior.kind == "user"))
        coefs["Intercept"] = a - data["X_mean"] @ b if s.slopes else a
        # standardized data (standardize.py) are shifted by response:loc; the site is on the user's scale
        numpyro.deterministic("Intercept", coefs["Intercept"] + data.get("response:loc", 0.0))
        eta = eta + a * data.get("Intercept_col", 1.0)  # a pseudo feature in reduced data
    return eta, coefs


def _scales(g: GroupStructure, data: Mapping[str, Any]):
    """The term's sds (K,) and, for correlated terms, the Cholesky factor of its correlation."""
    sd = numpyro.sample(f"sd_{g.name}", on_sampler_scale(f"sd_{g.name}", _vector(f"sd_{g.name}", g.sd_prior, data),
                                                         data))
    chol = None
    if g.correlated:
        conc = data[f"prior:cor_{g.name}:concentration"]
        chol = numpyro.sample(f"L_{g.name}", dist.LKJCholesky(len(g.columns), conc))
        numpyro.deterministic(f"cor_{g.name}", chol @ chol.T)
    return sd, chol


def _group(i: int, g: GroupStructure, data: Mapping[str, Any], coefs: Mapping[str, Any]):
    sd, chol = _scales(g, data)
    # Centre the group coefficients on the matching population ones (textbook centered form).
    loc = (jnp.stack([jnp.asarray(coefs.get(c, 0.0), sd.dtype) for c in g.columns])
           if any(c in coefs for c in g.columns) else None)
    r = group_effects(g.name, sd, data[f"G_{i}"], g.centeredness, chol, loc, data.get(data_key(g.name)))
    return jnp.sum(r[data[f"codes_{i}"]] * data[f"Z_{i}"], axis=-1)


def _glmm(s: ModelStructure, data: Mapping[str, Any]) -> None:
    family: Family = FAMILIES[s.family]
    eta, coefs = _population(s, data)
    for i, g in enumerate(s.groups):
        if g.name != s.marginal:
            eta = eta + _group(i, g, data, coefs)
    params = {name: numpyro.sample(name, on_sampler_scale(name, _scalar(name, prior, data), data))
              for name, prior in s.family_priors}
    trials = data.get("trials")
    if s.family == "bernoulli" and trials is not None:  # rows summed into counts per cell (reduce.py)
        family = FAMILIES["binomial"]
    if "reduction:offset" in data:  # Poisson counts summed per cell: rate times the cell's rows
        eta = eta + data["reduction:offset"]
    if s.marginal is None:
        likelihood = family.likelihood(eta, params, trials)
    else:  # gaussian rows with one grouping's effects integrated out
        g = next(g for g in s.groups if g.name == s.marginal)
        sd, chol = _scales(g, data)
        likelihood = marginal.MarginalNormalGroups(eta, marginal.basis_of(data), sd, params["sigma"], chol,
                                                   block=data.get("marginal:block"))
    numpyro.sample("y", likelihood, obs=data.get("y"))
    if "reduction:rss" in data:  # rows compressed to pseudo rows (see reduce.py): the rest of the sum
        var = params["sigma"] ** 2
        numpyro.factor("y_reduction", -0.5 * data["reduction:rss"] / var
                       - 0.5 * data["reduction:dropped"] * jnp.log(2 * jnp.pi * var))


def build_model(structure: ModelStructure) -> Callable:
    """The NumPyro model for ``structure``, called with the model data as keywords.

    The same structure gives the same function object, so bhmjax's compile cache
    (keyed by the model function) is shared by every dataset with that structure.
    """
    model = _MODELS.get(structure)
    if model is None:
        def model(**data):
            return _glmm(structure, data)
        model.__name__ = model.__qualname__ = f"formula_model_{structure_digest(structure)[:12]}"
        model.structure = structure  # its stable identity (bhmjax._src.identity.model_identity)
        _MODELS[structure] = model
    return model


def linear_predictor(structure: ModelStructure, params: Mapping[str, Any],
                     data: Mapping[str, Any]) -> jnp.ndarray:
    """The linear predictor for rows ``data`` given one draw of ``params``.

    ``params`` holds ``Intercept`` (user's scale), ``b`` and ``r_<g>``; ``data``
    holds ``N``, ``X``, ``Z_i`` and ``codes_i`` as built by ``Model.design``. Rows whose
    code is >= the number of fitted groups need their effect supplied in an
    extended ``r_<g>`` (new groups drawn from the population).
    """
    eta = jnp.zeros((data["N"],))
    if structure.intercept:
        eta = eta + params["Intercept"]
    if structure.slopes:
        eta = eta + jnp.asarray(data["X"]) @ params["b"]
    for i, g in enumerate(structure.groups):
        r = params[f"r_{g.name}"]
        eta = eta + jnp.sum(r[data[f"codes_{i}"]] * data[f"Z_{i}"], axis=-1)
    return eta


# ---------------------------------------------------------------- description


def _prior_rows(site: str, prior: Any, labels: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
    if isinstance(prior, VectorPrior):
        rows = []
        for i in range(prior.size):
            p, j = prior.prior_of(i)
            rows.append((f"{site}[{labels[i] if labels else i}]", p.describe(j)))
        return rows
    return [(site, prior.describe())]


def describe(spec: ModelSpec, num_rows: int) -> str:
    """The text of ``Model.describe()``: terms, site shapes, groups and every prior."""
    s, fam = spec.structure, spec.family
    lines = [f"formula: {spec.formula.text}",
             f"family:  {fam.name} (link: {fam.link}); {num_rows} rows", "", "sites (shape):"]
    if s.intercept:
        lines.append(f"  {'Intercept ()':<14}population intercept, on the data's scale "
                     "(sampled as Intercept_c for centred slope columns)")
    if s.slopes:
        lines.append(f"  {f'b ({len(s.slopes)},)':<14}slopes: {', '.join(s.slopes)}")
    for g, d in zip(s.groups, spec.groups):
        k, n = len(g.columns), d.encoding.num_groups
        c = g.centeredness
        form = ("auto (centeredness learned by SVI before the first fit)" if c is None
                else "centeredness per group (learned)" if isinstance(c, str)
                else "centered" if all(v == 1 for v in c) else "noncentered" if all(v == 0 for v in c)
                else f"centeredness {c}")
        bar = "|" if d.term.correlated else "||"
        lines.append(f"  ({d.term.expr} {bar} {g.name}): {n} groups x {k} columns "
                     f"({', '.join(g.columns)}); {form}")
        lines.append(f"    sd_{g.name} ({k},)" + (f", L_{g.name} and cor_{g.name} ({k}, {k})"
                                                  if g.correlated else ""))
        centred_on = [col for col in g.columns if col == "Intercept" and s.intercept or col in s.slopes]
        sampled = (f"z_{g.name}" if c is None or isinstance(c, str) or any(v != 1 for v in c)
                   else f"theta_{g.name}" if centred_on else None)
        lines.append(f"    r_{g.name} ({n}, {k})" + ("" if sampled is None else
                                                    f" = transform of {sampled} ({n}, {k})"))
    for p in fam.params:
        lines.append(f"  {p} ()")
    lines += ["", "priors:"]
    rows = []
    if s.intercept:
        rows += _prior_rows("Intercept", spec.priors["Intercept"])
    if s.slopes:
        rows += _prior_rows("b", spec.priors["b"], s.slopes)
    for p in fam.params:
        rows += _prior_rows(p, spec.priors[p])
    for g in s.groups:
        rows += _prior_rows(f"sd_{g.name}", g.sd_prior, g.columns)
        if g.correlated:
            rows += _prior_rows(f"cor_{g.name}", g.cor_prior)
    width = max(len(r[0]) for r in rows) if rows else 0
    lines += [f"  {name:<{width}}  {text}" for name, text in rows]
    if s.intercept:
        lines.append("  (the Intercept prior applies to the intercept for centred slope columns)")
    return "\n".join(lines)
