"""``bj.Model``: a hierarchical GLM from a formula, checked before anything compiles."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from bhmjax._build import _as_frame, build_spec
from bhmjax._src import marginalize as marginalize_lib
from bhmjax._src import layout as layout_lib
from bhmjax._src import standardize
from bhmjax._src.describe import describe
from bhmjax._src.design import predictor_arrays
from bhmjax._src.models import all_groups, build_model, row_keys, site_order
from bhmjax._src.reparam import LAPLACE, PER_GROUP, data_key
from bhmjax.fit import Fit
from bhmjax.records import ModelSource, from_record, to_record

__all__ = ["Model"]


class Model:
    """A Bayesian hierarchical GLM written as an lme4/brms formula.

    Parameters
    ----------
    formula : str
        ``"y ~ 1 + x + (1 + x | g)"``. Population terms go to formulaic (numeric and
        categorical predictors, ``C(x, contr.treatment(base="b"))`` for the reference
        level, ``a:b``, ``a*b``, ``0 +`` / ``- 1``); group terms ``(expr | g)``
        (correlated), ``(expr || g)`` (independent), ``(1 | a) + (1 | b)`` (crossed),
        ``(1 | a/b)`` (nested); ``offset(log(exposure))``; penalized splines ``s(x)``,
        ``s(x, k = 10)``. The response takes brms' addition terms joined by ``+``:
        ``"r | trials(n) ~ ..."``, ``weights(w)``, ``cens(c)`` / ``cens(c, upper)``.
    data : pandas.DataFrame, polars.DataFrame (any frame narwhals reads), or dict of 1-d arrays
        Other frames are converted to pandas column by column (a polars Enum keeps its
        level order); duplicated column names are refused.
    family : str
        One of ``bhmjax._src.families.FAMILIES`` (gaussian, student_t, lognormal, gamma,
        beta, exponential, weibull, bernoulli, binomial, poisson, negative_binomial,
        zero_inflated_poisson, zero_inflated_negative_binomial, hurdle_poisson,
        hurdle_negative_binomial, cumulative, categorical) or a brms spelling
        ("negbinomial", "hurdle_negbinomial", ...).
    parameterization : "noncentered", "centered", "auto", float in [0, 1], sequence or dict
        The centeredness of the group effects (1 centered, 0 non-centered, see
        ``bhmjax._src.reparam``): one value for every term, a sequence with one value
        per column of the term (``(1.0, 0.0)`` for ``(1 + x | g)``), or a dict per
        grouping (``{"county": "centered", "state": (1.0, 0.5)}``; others
        non-centered). ``"auto"`` learns one value per group and column with a short
        pre-pass before the first fit (``bhmjax._src.autoreparam``): each group's share
        of its effect's precision that comes from its data, measured on a mean-field
        fit; a group with many informative rows gets 1, a group with a row or two a
        small value or 0. ``"laplace"`` centres each group's effects on one Newton step of
        its rows' likelihood at every evaluation (``bhmjax._src.laplace``): the form for
        bernoulli, binomial and Poisson rows in many small groups. The values are
        in ``model.centeredness`` (arrays (G, K)), ``describe()`` and
        ``fit.settings["parameterization"]``, the pre-pass seconds in
        ``fit.timings["reparam"]`` and ``fit.settings["reparam"]``. Dict keys of an auxiliary
        parameter's terms are ``g__sigma``.
    priors : dict, optional
        NumPyro distributions overriding defaults: "Intercept", "b" or a slope's
        column name, "sd", "sd_<g>" or "sd_<g>__<column>", "cor"/"cor_<g>" (an LKJ
        concentration), "sds"/"sds_<spline>", family parameters ("sigma", "nu",
        "phi", "shape", "zi", "hu"), the cumulative cutpoints "Intercept" or
        "Intercept[k]"; for a predicted parameter d: "d_Intercept", "b_d",
        "b_d_<column>", "sd_<g>__d", "sd_<g>__d_<column>", "cor_<g>__d".
    trials : str, optional
        The binomial trials column (instead of ``| trials(n)``).
    weights : str, optional
        Observation weights (instead of ``| weights(w)``): each row's log-likelihood is
        multiplied by its weight, as in brms.
    cens, cens_upper : str, optional
        Censoring column ("none"/"left"/"right"/"interval" or brms' 0/-1/1/2) and the
        upper bound of interval-censored rows (instead of ``| cens(c, upper)``).
    na_action : {"raise", "drop"}
        Rows with missing values in used columns raise ``ValueError``, or are dropped
        with a warning.
    **dpars : str
        Distributional regression: a formula for an auxiliary parameter of the family,
        e.g. ``sigma="~ x + (1 | g)"`` (or ``"sigma ~ x"``), ``zi="~ x"``. The parameter
        is then its link's inverse of that linear predictor per row (log for sigma,
        phi, shape, nu; logit for zi, hu) with brms' names ``sigma_Intercept``,
        ``b_sigma`` (rows ``b_sigma_x``), ``sd_g__sigma`` (rows ``sd_g__sigma_Intercept``)
        and ``r_g__sigma``.

    Examples
    --------
    >>> import numpy as np, bhmjax as bj
    >>> rng = np.random.default_rng(0)
    >>> g = np.repeat(np.arange(5), 4); y = rng.normal(g * 0.5, 1.0)
    >>> model = bj.Model("y ~ 1 + (1 | g)", data={"y": y, "g": g})
    >>> fit = model.fit(chains=2, warmup=200, draws=200, progress=False)
    >>> "sd_g[Intercept]" in fit.summary().index
    True
    """

    def __init__(self, formula: str, data: Any, family: str = "gaussian", *,
                 parameterization: Any = "noncentered", priors: Mapping[str, Any] | None = None,
                 trials: str | None = None, weights: str | None = None, cens: str | None = None,
                 cens_upper: str | None = None, na_action: str = "raise", **dpars: str) -> None:
        self.spec, self._arrays, self.num_rows = build_spec(
            formula, data, family, dpars, parameterization=parameterization, priors=priors, trials=trials,
            weights=weights, cens=cens, cens_upper=cens_upper, na_action=na_action)
        self.reparam_info = None
        self._per_group: dict[str, np.ndarray] = {}  # learned (G, K) centeredness of PER_GROUP terms

    # ------------------------------------------------------------------ the model

    @property
    def numpyro_model(self) -> Callable:
        """The generated NumPyro model; call it as ``numpyro_model(**model.data)``."""
        return build_model(self.spec.structure)

    def model_data(self, x64: bool = False) -> dict[str, Any]:
        """The model's keyword arguments: arrays (traced) and sizes as Python ints (static)."""
        f = np.float64 if x64 else np.float32
        out: dict[str, Any] = {"N": self.num_rows}
        for key, value in self._arrays.items():
            if value is None:
                continue
            if key.startswith("G_"):
                out[key] = int(value)
            else:
                out[key] = np.asarray(value).astype(np.int32 if key.startswith("codes_") else f)
        for site, prior in self.spec.priors.items():
            out.update({k: np.asarray(v, dtype=f) for k, v in prior.arrays(site).items()})
        for g in all_groups(self.spec.structure):
            if g.centeredness == PER_GROUP:
                out[data_key(g.name)] = self._per_group[g.name].astype(f)
        return out

    @property
    def data(self) -> dict[str, Any]:
        """``model_data()`` in 32-bit floats."""
        return self.model_data()

    def design(self, new_data: Any, *, allow_new_levels: bool = False) -> tuple[dict[str, Any], dict]:
        """Design arrays of new rows with the training encoding (for prediction).

        Returns the arrays ``N``, ``X<d>``, ``Z_t``, ``codes_t``, ``Zs_t`` and ``offset<d>``
        (see ``linear_predictors``) and, per grouping, the tuple of levels not seen in
        training (their codes are >= the number of fitted groups). Unseen levels raise
        ``ValueError`` unless ``allow_new_levels``.
        """
        from bhmjax._build import _check_columns

        frame = _as_frame(new_data)
        spec = self.spec
        needed = [v for p in spec.predictors for v in p.formula.variables() if v != p.formula.response]
        needed = [v for v in needed if v not in (spec.formula.trials, spec.formula.weights, spec.formula.cens)]
        _check_columns(frame, list(dict.fromkeys(needed)))
        out: dict[str, Any] = {"N": len(frame)}
        for p in spec.predictors:
            out.update(predictor_arrays(p, frame))
        new = {}
        for t, g in enumerate(spec.groups):
            out[f"Z_{t}"] = g.matrix(frame)
            out[f"codes_{t}"], new[g.name] = g.codes(frame, allow_new=allow_new_levels)
        return out, new

    # ------------------------------------------------------------------ names

    def names(self) -> tuple[dict, dict, dict]:
        """``names``, ``coords`` and ``dims`` for :func:`bhmjax.sample`, in ArviZ's terms.

        Slopes ``b`` lie over ``coef`` (the design's columns), group effects ``r_<g>``
        over the levels ``<g>`` and the terms ``<g>__term``, group sds over
        ``<g>__sd_term`` (the same terms);
        a correlation matrix shows its upper triangle. Rows read ``b[floor]``,
        ``sd_county[Intercept]``, ``cor_county[Intercept, floor]``,
        ``r_county[AITKIN, Intercept]``, as ArviZ names them. Sampler-only sites
        (``Intercept_c``, ``z_<g>``, ``theta_<g>``, ``L_<g>``) are hidden. An auxiliary
        parameter's sites carry its name (``b_sigma[x]``, ``sd_g__sigma[Intercept]``,
        ``r_g__sigma[a, Intercept]``), as do a categorical response's levels (``b_mub[x]``);
        cumulative cutpoints read ``Intercept[1]``, spline coefficients ``s_sx_1[1]``.
        """
        from bhmjax._src import sites

        s = self.spec.structure
        names: dict[str, list] = {}
        coords: dict[str, list] = {}
        dims: dict[str, list] = {}
        for p in s.predictors():
            if p.intercept:
                names[sites.intercept_site(p.dpar) + "_c"] = [None]
            if p.slopes:
                coef = "coef" if p.dpar == sites.MU else f"coef_{p.dpar}"
                coords[coef], dims[sites.b_site(p.dpar)] = list(p.slopes), [coef]
            for g in p.groups:
                self._group_names(g, self.spec.groups[g.term], names, coords, dims)
            for sm in p.smooths:
                names[f"zs_{sm.name}"] = [None] * sm.size
                names[f"s_{sm.name}"] = [f"s_{sm.name}[{j + 1}]" for j in range(sm.size)]
        if s.thresholds:  # brms' b_Intercept[k], 1-based
            names["Intercept_c"] = [None] * s.thresholds
            names["Intercept"] = [f"Intercept[{k + 1}]" for k in range(s.thresholds)]
        return names, coords, dims

    @staticmethod
    def _group_names(g, design, names: dict, coords: dict, dims: dict) -> None:
        """ArviZ names of one group term's sites (``g.name`` is ``g`` or ``g__sigma``)."""
        cols, k, n_groups = g.columns, len(g.columns), design.encoding.num_groups
        term, sd_term = f"{g.name}__term", f"{g.name}__sd_term"
        coords[design.name] = [str(v) for v in design.encoding.labels]
        coords[term] = coords[sd_term] = list(cols)
        # sd_g has a dim of its own: ArviZ 1.3's summary mislabels rows of a variable whose
        # dims come in another order than their first appearance in the group (g__term, g)
        dims[f"sd_{g.name}"], dims[f"r_{g.name}"] = [sd_term], [design.name, term]
        if g.correlated:
            dims[f"cor_{g.name}"] = [sd_term, sd_term]
            names[f"cor_{g.name}"] = [f"cor_{g.name}[{cols[i]}, {cols[j]}]" if i < j else None
                                      for i in range(k) for j in range(k)]
            names[f"L_{g.name}"] = [None] * (k * k)
        names[f"z_{g.name}"] = [None] * (n_groups * k)  # sampler variables, when present
        names[f"theta_{g.name}"] = [None] * (n_groups * k)

    # ------------------------------------------------------------------ fitting

    def fit(self, *, reduce: Any = "auto", marginalize: Any = "auto", **sample_kwargs) -> Fit:
        """Sample the posterior with :func:`bhmjax.sample` (same keyword arguments).

        ``reduce`` ("auto", True or False) picks the exact data reduction of
        :meth:`reduced_data`: "auto" uses it where it pays, True insists on it
        (``ValueError`` when there is none), False samples on the rows. A reduced fit
        has the rows' posterior; ``fit.data`` keeps the rows (for LOO and predictions)
        and ``fit.settings["reduction"]`` records ``kind``, ``rows`` and ``pseudo_rows``
        (the rows the likelihood evaluates; for counts also ``cells``, the same number).

        ``marginalize`` ("auto", True or False): "auto" integrates out the group effects of
        the grouping with the most levels when the family is gaussian (exact there; see
        ``bhmjax._src.marginal``), True insists (``ValueError`` when it cannot), False
        samples every group effect. NUTS then runs on the other parameters only, and
        ``r_<g>`` is drawn exactly for every stored draw, so summaries, predictions, LOO
        and export are those of a sampled fit; ``fit.settings["marginalized"]`` says what
        was integrated out. Gaussian models sample on a standardized response
        (``fit.settings["standardized"]``, see ``bhmjax._src.standardize``); every site is
        reported on the data's scale.

        ``init_strategy`` defaults to the family's start where it has one (weibull: "median",
        see ``bhmjax._src.families.continuous``), else "uniform"; ``fit.settings`` records it.

        Returns a :class:`~bhmjax.Fit` whose ``spec`` is this model's :class:`ModelSpec`.
        """
        from bhmjax import runner

        if "parameterization" in sample_kwargs:  # bj.sample's option for NumPyro functions: here it would find no site
            raise TypeError(f"Model.fit() got parameterization={sample_kwargs['parameterization']!r}: a formula "
                            "model's parameterization is chosen when it is built, "
                            "bj.Model(formula, data, parameterization=...).")
        if "init_strategy" not in sample_kwargs and self.spec.family.init is not None:
            sample_kwargs = {**sample_kwargs, "init_strategy": self.spec.family.init}
        config, labels, sinks = runner.request_options(sample_kwargs, "Model.fit()")
        return runner.execute(self.run_request(config, reduce=reduce, marginalize=marginalize, **labels, **sinks))

    def run_request(self, config, *, reduce: Any = "auto", marginalize: Any = "auto", coords=None, dims=None,
                    names=None, checkpoint=None, out=None, progress: bool = True, pays_only: bool = True,
                    layout: bool = True):
        """What :meth:`fit` runs: a :class:`~bhmjax.runner.RunRequest` for ``config`` (a RunConfig).

        Everything the Fit holds comes from here (spec, the rows, the data the sampler
        runs on (standardized, reduced, with the basis of an integrated grouping), names,
        site order, pre-pass seconds), so a checkpoint resumed from this model's record
        gives the Fit of an uninterrupted run. ``pays_only=False``: with ``reduce="auto"``,
        reduce wherever an exact reduction exists (``fit_many``: one program for every
        dataset, and a reduction never has more rows than the data). ``layout``: store reduced
        rows group-major for a laplace grouping, where that pays (``bhmjax._src.layout``; ``fit_many`` pads rows itself).
        """
        from dataclasses import replace

        from bhmjax import runner
        from bhmjax._src import data as data_lib

        if reduce not in ("auto", True, False):
            raise ValueError(f"reduce must be 'auto', True or False, got {reduce!r}")
        marginal = self._marginal(marginalize)
        reparam_s = self._learn_centeredness(marginal)
        model_names, model_coords, model_dims = self.names()
        internal = tuple(k for k, v in model_names.items() if all(n is None for n in v))
        data = self.model_data(x64=config.x64)
        sampled, reduced = self.sampling_data(x64=config.x64, reduce=reduce, marginalize=marginal is not None,
                                              pays_only=pays_only)
        structure = marginalize_lib.marginal_structure(self.spec.structure, marginal)
        reduction = None
        if reduced:  # the posterior is the row-level one; the fit keeps the rows for LOO and predictions
            kind = self._reduction_kind()
            reduction = {"kind": kind, "rows": self.num_rows, "pseudo_rows": sampled["N"]}
            if kind != "gaussian":
                reduction["cells"] = sampled["N"]
            # group-major cells pay where the laplace form sums per group at every gradient (benchmarks.batch gradient)
            laplace = [g for g in all_groups(structure) if g.centeredness == LAPLACE]
            if layout and laplace and not marginal:
                g = max(laplace, key=lambda g: sampled[f"G_{g.term}"])
                grouped = layout_lib.group_major(sampled, row_keys(structure, sampled), g.term)
                if grouped is not None:  # gathers and group sums become reshapes (see layout.py)
                    sampled = grouped
                    reduction["group_major"] = {"grouping": g.name,
                                                "rows_per_group": grouped[layout_lib.per_group_key(g.term)],
                                                "padded_rows": grouped["N"]}
        order = site_order(self.spec.structure)
        arrays, static = data_lib.split_data(sampled)
        data_lib.check_data(arrays)
        # the centeredness as run: an integrated grouping's is moot (and not learned: no pre-pass for it)
        settings = {"parameterization": {k: np.asarray(v).tolist() if isinstance(v, np.ndarray)
                                         else v if isinstance(v, str) else list(v)
                                         for k, v in self._centeredness_now(skip=marginal).items()}}
        if self.reparam_info is not None:
            settings["reparam"] = {"requested": "auto", "seconds": self.reparam_info.seconds,
                                   "text": self.reparam_info.describe()}
        if "response:loc" in sampled or any(k.startswith("scale:") for k in sampled):
            loc = sampled.get("response:loc")
            settings["standardized"] = {"loc": None if loc is None else float(self._response_loc()),
                                        "scale": float(self.spec.family.scale(self._arrays["y"]))}
        if marginal is not None:
            settings["marginalized"] = marginalize_lib.record(structure, self._num_groups()[marginal])
            if config.keep is not None:  # the draws of r_<g> replay the model: store every site, keep after
                settings["keep"] = list(config.keep)
                config = replace(config, keep=None)
        return runner.RunRequest(
            model=build_model(structure), arrays=arrays, static=static, config=config,
            coords={**model_coords, **(coords or {})}, dims={**model_dims, **(dims or {})},
            names={**model_names, **(names or {})}, data=data, spec=self.spec,
            reduction=reduction, order=tuple(order), timings={"reparam": reparam_s}, internal=internal,
            settings=settings, checkpoint=checkpoint, out=out, progress=progress)

    def _num_groups(self) -> dict[str, int]:
        """Levels per grouping of every predictor, by site suffix (``g``, ``g__sigma``)."""
        return {g.name: self.spec.groups[g.term].encoding.num_groups for g in all_groups(self.spec.structure)}

    def _response_loc(self) -> float:
        return float(np.mean(self._arrays["y"]))

    def _marginal(self, marginalize: Any) -> str | None:
        """The grouping ``fit(marginalize=...)`` integrates out, or None."""
        return marginalize_lib.choose(self.spec.structure, self._num_groups(), marginalize, self._additions())

    def _additions(self) -> tuple[str, ...]:
        """The response's addition terms that change the likelihood of a row (weights, censoring)."""
        return tuple(k for k in ("weights", "cens") if getattr(self.spec.formula, k) is not None)

    def sampling_data(self, *, x64: bool = False, reduce: Any = "auto", marginalize: Any = "auto",
                      pays_only: bool = True) -> tuple[dict[str, Any], bool]:
        """The data the sampler runs on, and whether the rows were reduced.

        The model data, standardized for gaussian models (``bhmjax._src.standardize``),
        reduced to exact sufficient statistics where ``reduce`` asks and it pays (see
        :meth:`reduced_data`), with the basis of the integrated grouping when
        ``marginalize`` picks one (see :meth:`fit`); built in float64, returned in the
        sampling precision. Call ``build_model(marginal_structure(...))`` on it, as
        :meth:`fit` does. ``pays_only``: as in :meth:`reduced_data`.
        """
        from bhmjax._src import reduce as exact

        marginal = self._marginal(marginalize)
        structure = marginalize_lib.marginal_structure(self.spec.structure, marginal)
        data = standardize.standardize(self.model_data(x64=True), structure, self.spec.family)
        if marginal is not None and len(structure.groups) == 1 and reduce:  # every group's rows as k pseudo rows
            reduced = exact.block_gaussian_data(data, structure.intercept)
        else:
            reduced = self.reduced_data(data, pays_only=pays_only) if reduce else None
        if reduce is True and reduced is None:
            raise ValueError("reduce=True, but this model has no exact reduction that pays: it needs the "
                             "gaussian family and far fewer cells of group levels than rows, or a "
                             "discrete response (counts, 0/1, levels) and far fewer cells of identical "
                             "covariates, group levels and responses than rows.")
        out = data if reduced is None else reduced
        if marginal is not None:
            out = marginalize_lib.add_basis(out, structure)
        f = np.float64 if x64 else np.float32
        out = {k: v.astype(f) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v for k, v in out.items()}
        return out, reduced is not None

    @property
    def centeredness(self) -> dict[str, tuple[float, ...] | np.ndarray]:
        """Per grouping, the centeredness of each column (a tuple), or of each group and column
        (an array (G, K), where learned values differ between groups); ``"auto"`` ones are
        learned on first use."""
        self._learn_centeredness()
        return self._centeredness_now()

    def _centeredness_now(self, skip: str | None = None) -> dict[str, tuple[float, ...] | np.ndarray | None]:
        """The centeredness per grouping as it stands (None: not learned), without a pre-pass;
        ``skip``: a grouping integrated out, whose centeredness is moot."""
        return {g.name: self._per_group[g.name] if g.centeredness == PER_GROUP else g.centeredness
                for g in all_groups(self.spec.structure) if g.name != skip}

    def _learn_centeredness(self, marginal: str | None = None) -> float:
        """Run the SVI pre-pass of ``parameterization="auto"`` once; its seconds (0 when done).

        With ``marginal`` (a grouping integrated out), on that model: only the sampled
        groupings are learned.
        """
        if all(g.centeredness is not None for g in all_groups(self.spec.structure) if g.name != marginal):
            return 0.0
        from bhmjax._src import data as data_lib
        from bhmjax._src import keys
        from bhmjax._src.autoreparam import learn_centeredness

        data, _ = self.sampling_data(marginalize=marginal is not None)
        arrays, static = data_lib.split_data(data)
        structure = marginalize_lib.marginal_structure(self.spec.structure, marginal)
        self.reparam_info = learn_centeredness(keys.seed_key(0), structure, arrays, static)
        self.use_centeredness(self.reparam_info.centeredness)
        return self.reparam_info.seconds

    def _reduction_kind(self) -> str | None:
        """"gaussian", "counts", "rows" or None: which exact reduction :meth:`reduced_data` tries."""
        from bhmjax._src import reduce as exact

        s, family = self.spec.structure, self.spec.family
        plain = not (s.dpars or s.smooths or s.offset or self.spec.formula.weights or self.spec.formula.cens
                     or s.thresholds)
        if plain and family.name == "gaussian":
            return "gaussian"
        if plain and family.name in exact.COUNT_FAMILIES:
            return "counts"
        return "rows" if family.discrete else None

    def reduced_data(self, data: dict[str, Any] | None = None, pays_only: bool = True) -> dict[str, Any] | None:
        """The model data with rows compressed to exact sufficient statistics, or None.

        * gaussian: rows that share every group level become at most rank(W'W)
          pseudo rows per cell plus a sigma-dependent correction; the log density
          and its gradient are exactly the row-level ones (up to float rounding).
        * bernoulli, binomial, poisson: rows with identical population design,
          group levels and group-term columns (the same linear predictor) are summed
          into one count per cell: successes and trials into a binomial row, Poisson
          counts into one count whose rate is multiplied by the cell's rows. The log
          density changes by a constant only, its gradient not at all.
        * other discrete responses (negative binomial, zero-inflated, hurdle, cumulative,
          categorical, and the count families with offsets, weights, censoring, splines
          or predicted parameters): identical rows (every design array, code, offset,
          weight-free term and the response equal) merge into one row whose weight is
          their number (their summed weights). Exact for any likelihood; a sum of
          counts is not sufficient there (the negative binomial's split of a sum
          depends on phi, a zero-inflated one's on zi).

        Either way the posterior is the row-level one and a gradient costs O(cells)
        instead of O(rows). None for continuous responses other than gaussian (their
        rows rarely repeat), or when the cells are not well under the rows
        (continuous covariates, say; see ``bhmjax._src.reduce``) and ``pays_only``.
        """
        from bhmjax._src import reduce as exact

        kind = self._reduction_kind()
        if kind is None:
            return None
        data = self.model_data() if data is None else data
        if kind == "gaussian":
            return exact.reduce_gaussian_data(data, self.spec.structure.intercept, len(self.spec.groups), pays_only)
        if kind == "counts":
            return exact.reduce_count_data(data, self.spec.family.name, len(self.spec.groups), pays_only)
        return exact.merge_identical_rows(data, row_keys(self.spec.structure, data), pays_only)

    # ------------------------------------------------------------------ files

    def to_record(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The model as a JSON-able record and named numpy arrays (see :mod:`bhmjax.records`).

        ``Model.from_record(*model.to_record())`` is the same model: formula, family,
        priors, encodings, design, centeredness (learned values included). A data
        column or prior that cannot be stored raises ``TypeError``/``ValueError`` naming it.
        """
        return to_record(self.spec, self._per_group)

    def use_centeredness(self, values: Mapping[str, np.ndarray]) -> None:
        """Set learned per-group centeredness, shape (G, K) per grouping, without a pre-pass
        (a model rebuilt from its record: the values ``parameterization="auto"`` learned)."""
        import dataclasses

        from bhmjax._src.autoreparam import with_centeredness

        structure = with_centeredness(self.spec.structure, values)
        # groupings not in ``values`` keep what they had (a pre-pass that learned only some of them)
        self._per_group = {g.name: np.asarray(values[g.name]) if g.name in values else self._per_group[g.name]
                           for g in all_groups(structure) if g.centeredness == PER_GROUP}
        self.spec = dataclasses.replace(self.spec, structure=structure)

    @classmethod
    def from_record(cls, record: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> "Model":
        """The model that :meth:`to_record` recorded, built again from its data columns."""
        return from_record(record, arrays)

    # ------------------------------------------------------------------ description

    def describe(self, verbose: bool = True, marginalize: Any = "auto") -> str:
        """Priors, parameter shapes and groups per term, and what ``fit(marginalize=...)``
        integrates out; printed unless ``verbose=False``."""
        text = describe(self.spec, self.num_rows)
        text += "\n\n" + marginalize_lib.describe(self.spec.structure, self._marginal(marginalize),
                                                  self._num_groups(), marginalize, self._additions())
        if self.spec.family.name in standardize.STANDARDIZED_FAMILIES:
            text += ("\nsampled on a standardized response (y minus its mean, coordinates in units of its sd); "
                     "every site is reported on the data's scale.")
        if getattr(self, "reparam_info", None) is not None:
            text += "\n\n" + self.reparam_info.describe()
        if verbose:
            print(text)
        return text

    def _repr_html_(self) -> str:
        from bhmjax.display import card

        s = self.spec
        lines = [("family", s.family.name), ("rows", f"{self.num_rows:,}"),
                 ("population terms", ", ".join((["Intercept"] if s.fixed.intercept else []) + list(s.fixed.columns))
                  or "none")]
        for gs in all_groups(s.structure):
            g, c = s.groups[gs.term], gs.centeredness
            cent = ("auto (learned on first fit)" if c is None else "laplace" if c == "laplace"
                    else "per group (learned)" if isinstance(c, str)
                    else ", ".join(f"{v:g}" for v in c))
            lines.append((f"group {gs.name}", f"{g.encoding.num_groups:,} levels; terms {', '.join(g.columns)}; "
                          f"centeredness {cent}"))
        return card(f"bhmjax Model: {s.formula.text}", lines, note="model.describe() lists every prior")

    def __repr__(self) -> str:
        groups = ", ".join(f"{g.name}: {g.encoding.num_groups}" for g in self.spec.groups)
        return (f"Model({self.spec.formula.text!r}, family={self.spec.family.name!r}, "
                f"{self.num_rows} rows{', groups ' + groups if groups else ''})")
