"""Ordinal and categorical responses: cumulative logit and multinomial logit (softmax).

cumulative
    ``P(y <= k) = logistic(Intercept[k] - eta)`` for k = 1..K-1, with ordered cutpoints
    ``Intercept`` (K-1,) (brms' ``b_Intercept[k]``) and no population intercept in eta.
    The cutpoints' prior is brms': StudentT(3, 0, 2.5) on each, restricted to the
    ordered set (an ordered vector with those densities, not transformed draws).
categorical
    ``P(y = k) = softmax(eta)[k]`` with ``eta[reference] = 0``: a response with K levels
    has K-1 linear predictors ``mu<level>`` (the first level is the reference, as in
    brms), each with its own coefficients and group effects.

Responses are coded 0..K-1 by :func:`encode_categories`: integers or an ordered
pandas categorical for cumulative (sorted values / the category order), any labels for
categorical (sorted, or the category order of a pandas categorical).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

from bhmjax._src.families.base import Family

__all__ = ["CATEGORIES", "OrderedPrior", "encode_categories", "category_dpars"]


class _OrderedLogistic(dist.OrderedLogistic):
    """NumPyro's ordered logistic with a log density that keeps its precision in both tails.

    ``log P(y = k) = log(s(c_k - eta) - s(c_(k-1) - eta))`` (``s`` the logistic, ``c_0 = -inf``,
    ``c_K = inf``): the difference of two probabilities near 1 rounds to 0 in float32 (a
    -inf log density where NUTS starts), so above the median it is taken as
    ``s(eta - c_(k-1)) - s(eta - c_k)`` instead, each in log space.
    """

    def log_prob(self, value):
        value = jnp.asarray(value).astype(jnp.int32)
        eta, cut = self.predictor, self.cutpoints  # (...,), (..., K - 1) after NumPyro's promotion
        inf = jnp.full(cut.shape[:-1] + (1,), jnp.inf, cut.dtype)
        bounds = jnp.broadcast_to(jnp.concatenate([-inf, cut, inf], axis=-1), jnp.shape(eta) + (cut.shape[-1] + 2,))
        upper = jnp.take_along_axis(bounds, (value + 1)[..., None], axis=-1)[..., 0] - eta
        lower = jnp.take_along_axis(bounds, value[..., None], axis=-1)[..., 0] - eta
        # lower tail: log s(upper) + log(1 - s(lower) / s(upper)); upper tail: the mirror image
        log_hi, log_lo = jax.nn.log_sigmoid(upper), jax.nn.log_sigmoid(lower)
        log_hi_m, log_lo_m = jax.nn.log_sigmoid(-lower), jax.nn.log_sigmoid(-upper)
        above = lower + upper > 0
        first = jnp.where(above, log_hi_m, log_hi)
        gap = jnp.minimum(jnp.where(above, log_lo_m - log_hi_m, log_lo - log_hi), -1e-30)
        return first + jnp.where(gap > -0.6931472, jnp.log(-jnp.expm1(gap)), jnp.log1p(-jnp.exp(gap)))


def _cumulative(eta, params, trials):
    return _OrderedLogistic(eta, params["Intercept"])


def _cumulative_probs(eta, params):
    cdf = jax.nn.sigmoid(params["Intercept"] - eta[..., None])
    ones = jnp.ones(cdf.shape[:-1] + (1,), cdf.dtype)
    full = jnp.concatenate([jnp.zeros_like(ones), cdf, ones], axis=-1)
    return full[..., 1:] - full[..., :-1]


def _categorical(eta, params, trials):
    return dist.CategoricalLogits(eta)


CATEGORIES = [
    Family("cumulative", "logit", (), _cumulative, "ordinal", mean_fn=_cumulative_probs),
    Family("categorical", "logit", (), _categorical, "categorical",
           mean_fn=lambda eta, p: jax.nn.softmax(eta, axis=-1)),
]


def _labels_of(values, family: str, column: str):
    import pandas as pd

    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype):
        if family == "cumulative" and not values.cat.ordered:
            raise ValueError(f"response {column!r} is an unordered pandas categorical; the cumulative family "
                             "needs ordered levels: values.cat.as_ordered() (or reorder_categories(..., "
                             "ordered=True)), or integer codes.")
        return tuple(values.cat.categories.tolist())
    arr = np.asarray(values)
    if family == "cumulative":
        num = pd.to_numeric(pd.Series(arr), errors="coerce").to_numpy(dtype=np.float64)
        bad = np.isnan(num) | (num != np.round(num))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"response {column!r} must hold integers or an ordered pandas categorical for the "
                             f"cumulative family (the order of the levels matters); row {i} is {arr[i]!r}.")
    try:
        return tuple(np.unique(arr).tolist())
    except TypeError:
        raise TypeError(f"response {column!r} mixes label types that cannot be ordered; convert it to str "
                        "or to a pandas categorical.") from None


def encode_categories(values, family: str, column: str, labels: tuple | None = None) -> tuple[np.ndarray, tuple]:
    """Codes 0..K-1 of an ordinal or categorical response and the level labels.

    With ``labels`` (the training levels), new values are coded by them and unseen
    levels raise ``ValueError`` naming the first row. Fewer than two levels raise.
    """
    import pandas as pd

    if labels is None:
        labels = _labels_of(values, family, column)
        if len(labels) < 2:
            raise ValueError(f"response {column!r} has a single level ({labels[0]!r}); the {family} family "
                             "needs at least two.")
    flat = np.asarray(values, dtype=object) if not isinstance(values, pd.Series) else values.astype(object).to_numpy()
    codes = pd.Index(list(labels)).get_indexer(flat)
    if (codes < 0).any():
        i = int(np.flatnonzero(codes < 0)[0])
        raise ValueError(f"response {column!r} has level {flat[i]!r} at row {i}, which is not one of the "
                         f"{len(labels)} levels {list(labels)[:20]} of the {family} model.")
    return codes.astype(np.float64), tuple(labels)


def category_dpars(labels: tuple) -> tuple[str, ...]:
    """brms' names of the non-reference categories' predictors: ``mu<level>`` (letters, digits, _)."""
    names = []
    for label in labels[1:]:
        clean = re.sub(r"[^A-Za-z0-9_]", "", str(label)) or "cat"
        name, n = f"mu{clean}", 2
        while name in names:
            name, n = f"mu{clean}{n}", n + 1
        names.append(name)
    return tuple(names)


class OrderedPrior(dist.Distribution):
    """Independent priors on the entries of an ordered vector (cutpoints), restricted to the ordered set.

    The density is ``(K-1)! prod_k f_k(x_k)`` on ``x_1 < ... < x_{K-1}``: brms' prior on
    ordered thresholds. With equal ``f_k`` (the default) it is the law of the sorted
    iid draws, which is how :meth:`sample` draws; with unequal overrides the sorted
    draws are an approximation (the posterior is exact either way).
    """

    support = dist.constraints.ordered_vector
    pytree_data_fields = ("base",)

    def __init__(self, base: dist.Distribution, *, validate_args=None):
        self.base = base
        super().__init__(batch_shape=(), event_shape=base.event_shape, validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        return jnp.sort(self.base.sample(key, sample_shape), axis=-1)

    def log_prob(self, value):
        k = self.event_shape[-1]
        return self.base.log_prob(value) + jax.scipy.special.gammaln(k + 1.0)
