"""Model specs to NumPyro models with vectorized group effects.

The generated model reads everything that varies with the data from keyword
arrays (traced) and its sizes from Python ints (static), so one function (cached
per :class:`ModelStructure`) serves every dataset with the same structure and a
new dataset of the same shapes reuses the compiled program.

A model has one or more linear predictors (:class:`PredictorStructure`): the mean's
("mu"), one per auxiliary parameter with a formula of its own ("sigma", "zi", ...)
and, for the categorical family, one per non-reference level ("mu<level>") instead
of the mean's. Site names per predictor come from ``sites.py``.

Model data (keyword arguments)
------------------------------
``y`` (N,)                    the response (None: draw it); category codes 0..K-1 for
                              ordinal and categorical families
``N``                          number of rows (static int)
``X<d>`` (N, K), ``X_mean<d>`` (K,)
                               slope columns and their training means of the predictors
                               with data suffix ``<d>`` ("" for the mean, ``_sigma``...)
``offset<d>`` (N,)             the predictor's ``offset(...)`` terms, summed
``trials`` (N,)                binomial trials (bernoulli too, for rows summed into counts:
                               the likelihood is then binomial)
``weights`` (N,)               observation weights: each row's log-likelihood is multiplied
                               by its weight (brms); rows of weight 0 are masked
``cens`` (N,), ``cens_upper`` (N,)
                               censoring codes -1/0/1/2 and interval bounds (``censoring.py``)
``Z_t`` (N, K_t), ``codes_t`` (N,), ``G_t`` (static int)
                               group term t's columns, group codes, number of groups; terms
                               are numbered over all predictors (the mean's first)
``rows_per_group_t`` (static int)
                               C when term t's rows are stored group-major, padded to C a
                               group (``layout.py``): row ``g C + j`` is in group g
``Zs_t`` (N, k_t)              spline t's wiggly columns (``smooth.py``)
``prior:<site>:...``           default prior parameters (see ``priors.py``)

Exactly reduced data (see ``reduce.py``) add ``Intercept_col`` (N,), ``reduction:rss`` and
``reduction:dropped`` (Gaussian pseudo rows), or ``reduction:offset`` (N,), the log of each
Poisson count's rows, added to the log rate in the likelihood only, and ``count:log_norm`` (N,),
each summed count's data-only log-likelihood term (``families.counts.KnownNormalizer``); merged identical rows
carry their multiplicity in ``weights``.

Sites (mean predictor; others prefixed as in ``sites.py``)
---------------------------------------------------------
``Intercept_c`` (the intercept for centred slope columns, sampled) and
``Intercept`` = ``Intercept_c - X_mean @ b`` (deterministic, the user's scale);
``b`` (K,); ``sd_<g>`` (K_g,); ``L_<g>`` (K_g, K_g) LKJ Cholesky factor and
``cor_<g>`` = L L^T (deterministic) for correlated terms; ``r_<g>`` (G, K_g), the
deviations from the population coefficients: sampled (centered, no population
counterpart) or deterministic from ``theta_<g>`` (centered on the matching population
coefficients, see ``reparam.py``) or ``z_<g>``; ``sds_<s>`` (), ``zs_<s>`` (k,) and
``s_<s>`` = sds zs (deterministic) per spline; family parameters without a formula;
for the cumulative family the ordered cutpoints ``Intercept_c`` (K-1,) and ``Intercept`` =
``Intercept_c + X_mean @ b``; ``y``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from bhmjax._src import marginal, sites
from bhmjax._src.families import DPARS, FAMILIES, Family, inverse_link
from bhmjax._src.families.categories import OrderedPrior
from bhmjax._src.families.counts import KnownNormalizer
from bhmjax._src.families.censoring import Censored
from bhmjax._src.design import FixedDesignSpec, GroupDesignSpec
from bhmjax._src.formula import FormulaSpec
from bhmjax._src.identity import structure_digest
from bhmjax._src.priors import Prior, VectorPrior, make_vector
from bhmjax._src.laplace import laplace_effects
from bhmjax._src.layout import group_index
from bhmjax._src.reparam import LAPLACE, data_key, group_effects
from bhmjax._src.standardize import on_sampler_scale

__all__ = ["GroupStructure", "SmoothStructure", "PredictorStructure", "ModelStructure", "ModelSpec",
           "build_model", "linear_predictor", "linear_predictors", "family_parameters",
           "mean_predictor", "row_keys", "site_order", "all_groups"]


@dataclass(frozen=True)
class GroupStructure:
    """What the program needs to know about one group term (static, hashable).

    Attributes
    ----------
    name : str
        The suffix of its sites: the grouping ("county", "a:b"), ``g__sigma`` in the
        predictor of sigma (``sites.group_site``).
    columns : tuple of str
        The term's columns (last axis of ``r_<name>``).
    correlated : bool
        An LKJ-correlated block (only when the term has two or more columns).
    centeredness : tuple of float, "per_group" or None
        Per column, in [0, 1]: 1 centered, 0 non-centered; "per_group": (G, K) values in
        the model data (``reparam.PER_GROUP``); None: learned (``autoreparam.py``).
    sd_prior : VectorPrior
    cor_prior : Prior or None
    term : int
        Index of its data arrays ``Z_t``, ``codes_t``, ``G_t`` (-1: its position in
        ``ModelStructure.groups``).
    """

    name: str
    columns: tuple[str, ...]
    correlated: bool
    centeredness: tuple[float, ...] | str | None
    sd_prior: VectorPrior
    cor_prior: Prior | None = None
    term: int = -1


@dataclass(frozen=True)
class SmoothStructure:
    """A penalized spline: ``s_<name> = sds_<name> * zs_<name>`` on the columns ``Zs_<term>`` (N, size)."""

    name: str
    term: int
    size: int
    sds_prior: Prior


@dataclass(frozen=True)
class PredictorStructure:
    """One linear predictor (static, hashable).

    Attributes
    ----------
    dpar : str
        "mu", an auxiliary parameter ("sigma") or a category's "mu<level>".
    intercept : bool
    slopes : tuple of str
    groups : tuple of GroupStructure
    intercept_prior : Prior or None
    b_prior : VectorPrior or None
    smooths : tuple of SmoothStructure
    data : str
        Suffix of its arrays ``X<data>``, ``X_mean<data>``, ``offset<data>``.
    offset : bool
        Whether it adds ``offset<data>``.
    centered : bool
        Centre the slope columns without an intercept (the cumulative cutpoints absorb it).
    """

    dpar: str
    intercept: bool
    slopes: tuple[str, ...]
    groups: tuple[GroupStructure, ...]
    intercept_prior: Prior | None
    b_prior: VectorPrior | None
    smooths: tuple[SmoothStructure, ...] = ()
    data: str = ""
    offset: bool = False
    centered: bool = False


@dataclass(frozen=True)
class ModelStructure:
    """Everything that shapes the generated program (the cache key of :func:`build_model`).

    The fields up to ``family_priors`` describe the mean predictor; ``dpars`` holds the
    other predictors (auxiliary parameters with formulas, categories' ``mu<level>``),
    ``family_priors`` the priors of the scalar family parameters (and of the cumulative
    cutpoints, "Intercept"), ``categories`` the categorical family's predictors in level
    order, ``thresholds`` the number of cumulative cutpoints.
    """

    family: str
    intercept: bool
    slopes: tuple[str, ...]
    groups: tuple[GroupStructure, ...]
    intercept_prior: Prior | None
    b_prior: VectorPrior | None
    family_priors: tuple[tuple[str, Any], ...]
    smooths: tuple[SmoothStructure, ...] = ()
    offset: bool = False
    dpars: tuple[PredictorStructure, ...] = ()
    categories: tuple[str, ...] = ()
    thresholds: int = 0
    marginal: str | None = None  # the mean's grouping whose effects are integrated out (see ``marginal.py``)

    def mean(self) -> PredictorStructure | None:
        """The mean predictor (None for the categorical family, whose means are in ``dpars``)."""
        if self.categories:
            return None
        groups = tuple(g if g.term >= 0 else dataclasses.replace(g, term=i) for i, g in enumerate(self.groups))
        return PredictorStructure(sites.MU, self.intercept, self.slopes, groups, self.intercept_prior,
                                  self.b_prior, self.smooths, "", self.offset, centered=self.thresholds > 0)

    def predictors(self) -> tuple[PredictorStructure, ...]:
        """Every linear predictor, the mean's first."""
        mean = self.mean()
        return ((mean,) if mean is not None else ()) + self.dpars


def all_groups(structure: ModelStructure) -> tuple[GroupStructure, ...]:
    """The group terms of every predictor, with their data terms resolved."""
    return tuple(g for p in structure.predictors() for g in p.groups)


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """A formula model, all of it: what ``fit.spec`` holds and what prediction needs.

    Attributes
    ----------
    formula : FormulaSpec
        The parsed formula.
    family : Family
    fixed : FixedDesignSpec
        Formulaic's ModelSpec of the mean predictor's population design, its slope
        columns and means.
    groups : tuple of GroupDesignSpec
        Per group term (data term t), formulaic's ModelSpec of its columns and the
        GroupEncoding of its levels: the mean predictor's first, in the order of
        ``structure.groups``, then the auxiliary parameters'.
    priors : dict
        The prior of every site after overrides (Prior or VectorPrior).
    structure : ModelStructure
        The static description the NumPyro model is generated from.
    predictors : tuple
        Per linear predictor its design (:class:`bhmjax._src.design.PredictorDesign`), the
        mean's first.
    categories : tuple
        The response levels of ordinal and categorical families (codes index them).
    dpar_formulas : dict
        The auxiliary parameters' formulas as given (``{"sigma": "~ x"}``).
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
    predictors: tuple = ()
    categories: tuple = ()
    dpar_formulas: dict = field(default_factory=dict)
    source: Any = field(default=None, repr=False)


# ---------------------------------------------------------------- the model

_MODELS: dict[ModelStructure, Callable] = {}


def _scalar(site: str, prior: Prior, data: Mapping[str, Any]) -> dist.Distribution:
    return prior.make({n: data[f"prior:{site}:{n}"] for n, _ in prior.args})


def _vector(site: str, prior: VectorPrior, data: Mapping[str, Any]) -> dist.Distribution:
    def values_of(j):
        return {n: data[f"prior:{site}:{j}:{n}"] for n, _ in prior.parts[j][1].args}
    return make_vector(prior, values_of)


def _population(p: PredictorStructure, data: Mapping[str, Any]):
    """The population part of the predictor, its coefficients by column name, and ``b``.

    The coefficients are on the data's scale (``Intercept``, not ``Intercept_c``): the
    group columns are not centred, so these are what a group's coefficients vary around.
    """
    eta = jnp.zeros((data["N"],))
    b, coefs = None, {}
    x_mean = data.get("X_mean" + p.data)
    if p.slopes:
        site = sites.b_site(p.dpar)
        b = numpyro.sample(site, on_sampler_scale(site, _vector(site, p.b_prior, data), data))
        x = data["X" + p.data]
        eta = eta + (x - x_mean if p.intercept or p.centered else x) @ b
        coefs.update({name: b[j] for j, name in enumerate(p.slopes)})
    if p.intercept:
        site = sites.intercept_site(p.dpar)
        prior = _scalar(site, p.intercept_prior, data)
        a = numpyro.sample(site + "_c", on_sampler_scale(site + "_c", prior, data,
                                                         shift=p.dpar == sites.MU and p.intercept_prior.kind == "user"))
        coefs["Intercept"] = a - x_mean @ b if p.slopes else a
        # standardized data (standardize.py) are shifted by response:loc; the site is on the user's scale
        loc = data.get("response:loc", 0.0) if p.dpar == sites.MU else 0.0
        numpyro.deterministic(site, coefs["Intercept"] + loc)
        col = data.get("Intercept_col", 1.0) if p.dpar == sites.MU else 1.0  # a pseudo feature in reduced data
        eta = eta + a * col
    return eta, coefs, b


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


def _group(g: GroupStructure, data: Mapping[str, Any], coefs: Mapping[str, Any], eta=None, row_derivatives=None):
    sd, chol = _scales(g, data)
    index, z_design = group_index(data, g.term), data[f"Z_{g.term}"]
    if g.centeredness == LAPLACE:  # centred on the rows' Gaussian approximation (laplace.py)
        r = laplace_effects(g.name, sd, index, chol, z_design, eta, row_derivatives)
        return jnp.sum(index.take(r) * z_design, axis=-1)
    # Centre the group coefficients on the matching population ones (textbook centered form).
    loc = (jnp.stack([jnp.asarray(coefs.get(c, 0.0), sd.dtype) for c in g.columns])
           if any(c in coefs for c in g.columns) else None)
    r = group_effects(g.name, sd, index.num_groups, g.centeredness, chol, loc, data.get(data_key(g.name)))
    return jnp.sum(index.take(r) * z_design, axis=-1)


def _smooth(sm: SmoothStructure, data: Mapping[str, Any]):
    sds = numpyro.sample(f"sds_{sm.name}", _scalar(f"sds_{sm.name}", sm.sds_prior, data))
    zs = numpyro.sample(f"zs_{sm.name}", dist.Normal(0.0, 1.0).expand((sm.size,)).to_event(1))
    return data[f"Zs_{sm.term}"] @ numpyro.deterministic(f"s_{sm.name}", sds * zs)


def _predictor(p: PredictorStructure, data: Mapping[str, Any], integrated: str | None = None,
               row_derivatives: Callable | None = None):
    """The predictor's value per row and its slopes ``b`` (None without slopes).

    The mean's grouping ``integrated`` is left out: its effects are integrated out (see ``_glmm``).
    ``row_derivatives`` (eta -> two (N,)) is given when a group term has the laplace form: its effects
    are centred on the rows' likelihood at the predictor built so far (offsets included).
    """
    eta, coefs, b = _population(p, data)
    offset = data["offset" + p.data] if p.offset else 0.0
    if row_derivatives is not None:  # the laplace form expands the likelihood at the predictor built so far
        eta = eta + offset
    for g in p.groups:
        if not (p.dpar == sites.MU and g.name == integrated):
            eta = eta + _group(g, data, coefs, eta, row_derivatives)
    for sm in p.smooths:
        eta = eta + _smooth(sm, data)
    if row_derivatives is None:
        eta = eta + offset
    return eta, b


def _cutpoints(s: ModelStructure, data: Mapping[str, Any], b) -> jnp.ndarray:
    """The cumulative family's ordered cutpoints for centred slope columns (and the user-scale ones)."""
    prior = dict(s.family_priors)["Intercept"]
    cut = numpyro.sample("Intercept_c", OrderedPrior(_vector("Intercept", prior, data)))
    numpyro.deterministic("Intercept", cut + data["X_mean"] @ b if s.slopes else cut)
    return cut


def family_parameters(s: ModelStructure, etas: Mapping[str, Any], scalars: Mapping[str, Any]) -> dict:
    """The family's auxiliary parameters: inverse links of their predictors, else the scalars."""
    family = FAMILIES[s.family]
    out = {name: scalars[name] for name in family.params if name not in etas}
    out.update({name: inverse_link(DPARS[name][0], etas[name]) for name in family.params if name in etas})
    if s.thresholds:
        out["Intercept"] = scalars["Intercept"]
    return out


def mean_predictor(s: ModelStructure, etas: Mapping[str, Any]) -> jnp.ndarray:
    """The mean's predictor (N,), or the categorical logits (N, K) with the reference column 0."""
    if not s.categories:
        return etas[sites.MU]
    first = etas[s.categories[0]]
    return jnp.stack([jnp.zeros_like(first)] + [etas[c] for c in s.categories], axis=-1)


def _observe(family: Family, d: dist.Distribution, data: Mapping[str, Any]) -> None:
    y = data.get("y")
    if y is not None and family.kind in ("ordinal", "categorical"):
        y = y.astype(jnp.int32)
    d = _censored(d, data)
    w = data.get("weights")
    if w is None:
        numpyro.sample("y", d, obs=y)
        return
    with numpyro.handlers.mask(mask=w > 0), numpyro.handlers.scale(scale=jnp.where(w > 0, w, 1.0)):
        numpyro.sample("y", d, obs=y)


def _likelihood(family: Family, eta, params: Mapping[str, Any], data: Mapping[str, Any]) -> dist.Distribution:
    """The family's distribution of each row (cell) given its predictor ``eta`` (reduction offset included)."""
    d = family.likelihood(eta, params, data.get("trials"))
    if "count:log_norm" in data and "cens" not in data:  # summed counts: their data-only term computed once
        d = KnownNormalizer(d, data["count:log_norm"])
    return d


def _censored(d: dist.Distribution, data: Mapping[str, Any]) -> dist.Distribution:
    return Censored(d, data["cens"], data["cens_upper"]) if "cens" in data else d


def _row_derivatives(family: Family, params: Mapping[str, Any], data: Mapping[str, Any]) -> Callable:
    """The first and second derivatives (N,) of each row's weighted log-likelihood (the density
    ``_observe`` gives the rows) in the mean's predictor: the laplace form's score and curvature.
    Closed form for summed counts (``KnownNormalizer``), else forward-over-reverse autodiff."""
    w = data.get("weights")

    def weigh(v):
        return v if w is None else jnp.where(w > 0, w * v, 0.0)

    def likelihood(eta):
        return _censored(_likelihood(family, eta + data.get("reduction:offset", 0.0), params, data), data)

    def derivatives(eta):
        rows = likelihood(eta)
        if isinstance(rows, KnownNormalizer):
            first, second = rows.natural_derivatives(data["y"])
            return weigh(first), weigh(second)
        total = lambda e: jnp.sum(weigh(likelihood(e).log_prob(data["y"])))  # noqa: E731
        return jax.jvp(jax.grad(total), (eta,), (jnp.ones_like(eta),))  # separable: the Hessian's diagonal

    return derivatives


def _glmm(s: ModelStructure, data: Mapping[str, Any]) -> None:
    family: Family = FAMILIES[s.family]
    trials = data.get("trials")
    if s.family == "bernoulli" and trials is not None:  # rows summed into counts per cell (reduce.py)
        family = FAMILIES["binomial"]

    def family_scalars():
        return {name: numpyro.sample(name, on_sampler_scale(name, _scalar(name, prior, data), data))
                for name, prior in s.family_priors if name != "Intercept"}

    etas, b_mu, scalars, laplace = {}, None, None, None
    predictors = s.predictors()
    if any(g.centeredness == LAPLACE and g.name != s.marginal for g in s.groups):
        # the laplace form needs the likelihood given everything else: the family's parameters first
        *predictors, mean = predictors[1:] + predictors[:1]
        for p in predictors:
            etas[p.dpar], _ = _predictor(p, data)
        scalars = family_scalars()
        laplace = _row_derivatives(family, family_parameters(s, etas, scalars), data)
        etas[sites.MU], b_mu = _predictor(mean, data, s.marginal, laplace)
    else:
        for p in predictors:
            etas[p.dpar], b = _predictor(p, data, s.marginal)
            b_mu = b if p.dpar == sites.MU else b_mu
        scalars = family_scalars()
    if s.thresholds:
        scalars["Intercept"] = _cutpoints(s, data, b_mu)
    params = family_parameters(s, etas, scalars)
    eta = mean_predictor(s, etas)
    if "reduction:offset" in data:  # Poisson counts summed per cell: rate times the cell's rows
        eta = eta + data["reduction:offset"]
    if s.marginal is None:
        likelihood = _likelihood(family, eta, params, data)
    else:  # gaussian rows with one grouping's effects integrated out (marginalize.why_not: nothing else)
        g = next(g for g in s.groups if g.name == s.marginal)
        sd, chol = _scales(g, data)
        likelihood = marginal.MarginalNormalGroups(eta, marginal.basis_of(data), sd, params["sigma"], chol,
                                                   block=data.get("marginal:block"))
    _observe(family, likelihood, data)
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
            # Without NumPyro's argument validation: the data are checked before tracing, priors when
            # they are made, the rest is traced (nothing to check), and its checks (of a Cholesky factor,
            # a binomial count) build their constants eagerly: small programs compiled while tracing.
            with numpyro.validation_enabled(False):
                return _glmm(structure, data)
        model.__name__ = model.__qualname__ = f"formula_model_{structure_digest(structure)[:12]}"
        model.structure = structure  # its stable identity (bhmjax._src.identity.model_identity)
        _MODELS[structure] = model
    return model


def _predictor_value(p: PredictorStructure, params: Mapping[str, Any], data: Mapping[str, Any]):
    eta = jnp.zeros((data["N"],))
    if p.intercept:
        eta = eta + params[sites.intercept_site(p.dpar)]
    if p.slopes:
        eta = eta + jnp.asarray(data["X" + p.data]) @ params[sites.b_site(p.dpar)]
    for g in p.groups:
        r = params[f"r_{g.name}"]
        eta = eta + jnp.sum(group_index(data, g.term, r.shape[0]).take(r) * data[f"Z_{g.term}"], axis=-1)
    for sm in p.smooths:
        eta = eta + jnp.asarray(data[f"Zs_{sm.term}"]) @ params[f"s_{sm.name}"]
    if p.offset:
        eta = eta + data["offset" + p.data]
    return eta


def linear_predictors(structure: ModelStructure, params: Mapping[str, Any],
                      data: Mapping[str, Any]) -> dict[str, jnp.ndarray]:
    """Every linear predictor, by dpar, for rows ``data`` given one draw of ``params``.

    ``params`` holds the user-scale intercepts (``Intercept``, ``sigma_Intercept``),
    slopes, ``r_<g>`` and ``s_<spline>``; ``data`` the design arrays of the rows (``N``,
    ``X<d>``, ``Z_t``, ``codes_t``, ``Zs_t``, ``offset<d>``) as built by ``Model.design``.
    Rows whose code is >= the number of fitted groups need their effect supplied in an
    extended ``r_<g>`` (new groups drawn from the population).
    """
    return {p.dpar: _predictor_value(p, params, data) for p in structure.predictors()}


def linear_predictor(structure: ModelStructure, params: Mapping[str, Any],
                     data: Mapping[str, Any]) -> jnp.ndarray:
    """The mean's linear predictor (categorical: the logits (N, K)); see :func:`linear_predictors`."""
    return mean_predictor(structure, linear_predictors(structure, params, data))


def row_keys(structure: ModelStructure, data: Mapping[str, Any]) -> tuple[str, ...]:
    """The names of the model data indexed by row (axis 0): response, designs, codes, bounds."""
    keys = ["y", "trials", "weights", "cens", "cens_upper", "Intercept_col", "reduction:offset", "count:log_norm"]
    for p in structure.predictors():
        keys += ["X" + p.data, "offset" + p.data] + [f"Zs_{sm.term}" for sm in p.smooths]
        keys += [k for g in p.groups for k in (f"Z_{g.term}", f"codes_{g.term}")]
    return tuple(k for k in dict.fromkeys(keys) if k in data and data[k] is not None)


def site_order(structure: ModelStructure) -> list[str]:
    """The sites of a fit in the order users read them (population, family, groups, splines)."""
    family = FAMILIES[structure.family]
    order = []
    for p in structure.predictors():
        order += [sites.intercept_site(p.dpar), sites.b_site(p.dpar)]
    order += (["Intercept"] if structure.thresholds else []) + list(family.params)
    for p in structure.predictors():
        for g in p.groups:
            order += [f"sd_{g.name}", f"cor_{g.name}", f"r_{g.name}"]
        for sm in p.smooths:
            order += [f"sds_{sm.name}", f"s_{sm.name}"]
    return list(dict.fromkeys(order))
