"""MCMC convergence diagnostics in pure JAX.

Every function takes draws ``x`` of shape ``(chain, draw, *shape)``, reduces over the
first two axes and returns an array of shape ``shape`` (``hdi`` appends a trailing axis of
size 2). The computations use ``jax.numpy`` only, so they run under ``jax.jit`` and
``jax.vmap`` (for example over many fits at once). Inputs are cast to the default float
type: float64 when ``jax_enable_x64`` is on, float32 otherwise.

The algorithms follow Vehtari, Gelman, Simpson, Carpenter and Bürkner (2021),
"Rank-normalization, folding, and localization: an improved R-hat for assessing
convergence of MCMC", Bayesian Analysis 16(2), with the conventions of ArviZ 0.23
(``arviz.rhat``, ``arviz.ess``, ``arviz.mcse``, ``arviz.hdi``, ``arviz.bfmi``):

- chains are split in half (the middle draw is dropped when the number of draws is odd);
- rank normalization uses average ranks of ties over all pooled split chains and the normal
  quantile of ``(rank - 3/8) / (n + 1/4)`` (Blom, 1958);
- autocovariances are computed by FFT and truncated with Geyer's initial positive and
  initial monotone sequences; ``tau`` is bounded below by ``1 / log10(n)``;
- an array whose range is below ``1e-15`` has an ESS equal to its number of draws;
- fewer than 4 draws gives NaN, as does R-hat with a single chain and any NaN in the input.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import Array
from jax.scipy.special import ndtri
from jax.typing import ArrayLike

__all__ = ["bfmi", "ess", "hdi", "mcse", "rhat", "summary_stats"]

_MIN_DRAWS = 4
# ArviZ treats an array as constant below ``np.finfo(float).resolution``.
_CONSTANT_RANGE = 1e-15
_TAIL_PROBS = (0.05, 0.95)


# --------------------------------------------------------------------------- validation


def _as_float(x: ArrayLike, name: str) -> Array:
    """Cast ``x`` to the default float type (float64 under ``jax_enable_x64``)."""
    if not hasattr(x, "shape"):
        try:
            x = jnp.asarray(x)
        except TypeError as err:
            raise TypeError(
                f"`{name}` must be an array of MCMC draws; received an object of type "
                f"{type(x).__name__}."
            ) from err
    return jnp.asarray(x, dtype=jnp.result_type(float))


def _as_draws(x: ArrayLike, name: str = "x") -> Array:
    """Check that ``x`` has shape (chain, draw, *shape) and cast it to the default float."""
    x = _as_float(x, name)
    if x.ndim < 2:
        raise ValueError(
            f"`{name}` must have shape (chain, draw, *shape) with at least 2 dimensions, "
            f"but received shape {tuple(x.shape)}. For a single chain, add a chain axis: "
            f"`{name}[None]`."
        )
    return x


def _check_prob(prob: float) -> float:
    """Return ``prob`` as a Python float after checking that it lies in (0, 1)."""
    try:
        value = float(prob)
    except TypeError as err:
        raise TypeError(
            "`prob` must be a concrete number in (0, 1), not a traced value; it fixes the "
            "shape of the computation. Under `jax.jit`, pass it as a static argument "
            "(`static_argnames='prob'`) or close over it."
        ) from err
    if not 0.0 < value < 1.0:
        raise ValueError(f"`prob` must lie in the open interval (0, 1), but received {prob!r}.")
    return value


def _check_method(method: str, valid: tuple[str, ...], func: str) -> None:
    if method not in valid:
        raise ValueError(
            f"Unknown {func} method {method!r}. Valid methods are: "
            f"{', '.join(repr(m) for m in valid)}."
        )


# --------------------------------------------------------------------------- site mapping


def _map_sites(fn: Callable[[Array], Array], x: Array) -> Array:
    """Apply ``fn`` from (chain, draw) to a scalar, or to (k,), over trailing site axes."""
    chains, draws, *shape = x.shape
    flat = jnp.moveaxis(x.reshape(chains, draws, math.prod(shape)), -1, 0)
    out = jax.vmap(fn)(flat)
    return out.reshape(*shape, *out.shape[1:])


def _nan_if_any_nan(value: Array, ary: Array) -> Array:
    return jnp.where(jnp.any(jnp.isnan(ary)), jnp.nan, value)


def _nan_like_sites(x: Array, *trailing: int) -> Array:
    return jnp.full((*x.shape[2:], *trailing), jnp.nan, dtype=x.dtype)


# --------------------------------------------------------------------------- 2-D building blocks


def _split_chains(ary: Array) -> Array:
    """(chain, draw) -> (2 * chain, draw // 2): first halves, then second halves."""
    half = ary.shape[1] // 2
    return jnp.concatenate([ary[:, :half], ary[:, ary.shape[1] - half :]], axis=0)


def _z_scale(ary: Array, ordered: Array | None = None) -> Array:
    """Rank-normalize all values pooled: average ranks of ties, Blom's offset 3/8.

    ``ordered``: the values already sorted (a sort is most of the cost on a CPU)."""
    flat = ary.ravel()
    ordered = jnp.sort(flat) if ordered is None else ordered
    below = jnp.searchsorted(ordered, flat, side="left")
    upto = jnp.searchsorted(ordered, flat, side="right")
    rank = (below + upto + 1) / 2.0
    return ndtri((rank - 0.375) / (flat.size + 0.25)).reshape(ary.shape)


def _fold(ary: Array) -> Array:
    return jnp.abs(ary - jnp.median(ary))


def _quantile_type7(ordered: Array, prob: float) -> Array:
    """Quantile of sorted values, computed exactly as ``scipy.stats.mstats.mquantiles``."""
    n = ordered.size
    aleph = n * prob + 1.0 - prob
    k = int(math.floor(min(max(aleph, 1.0), n - 1.0)))
    gamma = min(max(aleph - k, 0.0), 1.0)
    return (1.0 - gamma) * ordered[k - 1] + gamma * ordered[k]


def _autocov(ary: Array) -> Array:
    """Autocovariance of each chain at every lag, by FFT. (chain, draw) -> (chain, draw)."""
    n = ary.shape[1]
    centered = ary - ary.mean(axis=1, keepdims=True)
    freq = jnp.fft.rfft(centered, n=2 * n, axis=1)
    return jnp.fft.irfft(freq * jnp.conj(freq), n=2 * n, axis=1)[:, :n] / n


def _tau_geyer(rho: Array, n_draw: int) -> Array:
    """Integrated autocorrelation time from autocorrelations ``rho`` (rho[0] = 1).

    Geyer's initial positive sequence sums pairs ``rho[2j] + rho[2j+1]`` while they are
    positive; the initial monotone sequence replaces each pair sum by the running minimum.
    This is a loop-free form of ArviZ's ``_ess``, including its handling of the last pair.
    """
    n_pairs = n_draw // 2
    pairs = rho[: 2 * n_pairs].reshape(n_pairs, 2)
    pair_sums = pairs.sum(axis=1)
    # Pair j >= 1 is visited while 2j - 1 < n_draw - 3 and the previous pair sum is > 0.
    j = jnp.arange(1, n_pairs)
    visit = (2 * j - 1 < n_draw - 3) & (pair_sums[:-1] > 0)
    last = jnp.argmin(jnp.append(visit, False))  # index of the last pair visited
    monotone = jax.lax.cummin(pair_sums)
    body = jnp.sum(jnp.where(jnp.arange(n_pairs) < last, monotone, 0.0))
    last_even = pairs[last, 0]
    kept = (last == 0) | (pair_sums[last] >= 0)
    last_even = jnp.where(kept, last_even, jnp.where(last_even > 0, last_even, 0.0))
    return -1.0 + 2.0 * body + last_even


def _ess_2d(ary: Array) -> Array:
    """Effective sample size of a (chain, draw) array without splitting (ArviZ ``_ess``)."""
    n_chain, n_draw = ary.shape
    acov = _autocov(ary)
    mean_acov = acov.mean(axis=0)
    mean_var = mean_acov[0] * n_draw / (n_draw - 1.0)
    var_plus = mean_var * (n_draw - 1.0) / n_draw
    if n_chain > 1:
        var_plus = var_plus + jnp.var(ary.mean(axis=1), ddof=1)
    rho = 1.0 - (mean_var - mean_acov) / var_plus
    rho = rho.at[0].set(1.0)
    size = n_chain * n_draw
    tau = jnp.maximum(_tau_geyer(rho, n_draw), 1.0 / math.log10(size))
    ess = jnp.where(jnp.isnan(rho[1]), jnp.nan, size / tau)
    is_constant = jnp.max(ary) - jnp.min(ary) < _CONSTANT_RANGE
    return _nan_if_any_nan(jnp.where(is_constant, float(size), ess), ary)


def _rhat_2d(ary: Array) -> Array:
    """Potential scale reduction of a (chain, draw) array as given (no split, no ranks)."""
    n_draw = ary.shape[1]
    between = n_draw * jnp.var(ary.mean(axis=1), ddof=1)
    within = jnp.mean(jnp.var(ary, axis=1, ddof=1))
    value = jnp.sqrt((between / within + n_draw - 1.0) / n_draw)
    # All values tied: ArviZ divides 0 by 0. Say so exactly, not through rounding noise.
    return jnp.where(jnp.max(ary) == jnp.min(ary), jnp.nan, value)


def _merge_sorted(a: Array, b: Array) -> Array:
    """The values of two sorted 1-D arrays, sorted: each lands at its own index plus the count of
    the other's values before it (ties: ``a``'s first), without another sort."""
    where_a = jnp.arange(a.size) + jnp.searchsorted(b, a, side="left")
    where_b = jnp.arange(b.size) + jnp.searchsorted(a, b, side="right")
    return jnp.zeros(a.size + b.size, a.dtype).at[where_a].set(a).at[where_b].set(b)


def _z_bulk_tail(ary: Array, ordered: Array) -> Array:
    """The split chains rank-normalized, and their values folded around the median then
    rank-normalized: (2, 2 * chain, draw // 2). ``ordered``: every draw, sorted.

    With an even number of draws the split chains hold every draw, so the ranks, the median
    and the order of the folded values (the two halves of ``ordered``, merged) all come from
    that one sort: on a CPU a sort is most of a summary's cost.
    """
    split = _split_chains(ary)
    if ary.shape[1] % 2:  # the split drops each chain's middle draw
        return jax.vmap(_z_scale)(jnp.stack([split, _fold(split)]))
    median = _quantile_type7(ordered, 0.5)
    half = ordered.size // 2
    folded = _merge_sorted(median - ordered[:half][::-1], ordered[half:] - median)
    return jnp.stack([_z_scale(split, ordered), _z_scale(jnp.abs(split - median), folded)])


def _rhat_rank_2d(ary: Array) -> Array:
    z_bulk_tail = _z_bulk_tail(ary, jnp.sort(ary.ravel()))
    return jnp.max(jax.vmap(_rhat_2d)(z_bulk_tail))


def _tail_indicators(ary: Array, ordered: Array) -> Array:
    """Split indicators ``x <= q05`` and ``x <= q95``: (2, 2 * chain, draw // 2)."""
    return jnp.stack([
        _split_chains((ary <= _quantile_type7(ordered, p)).astype(ary.dtype))
        for p in _TAIL_PROBS
    ])  # fmt: skip


def _ess_quantile_2d(ary: Array, prob: float) -> Array:
    indicator = (ary <= _quantile_type7(jnp.sort(ary.ravel()), prob)).astype(ary.dtype)
    return _ess_2d(_split_chains(indicator))


def _ess_tail_2d(ary: Array) -> Array:
    return jnp.min(jax.vmap(_ess_2d)(_tail_indicators(ary, jnp.sort(ary.ravel()))))


def _ess_mad_2d(ary: Array) -> Array:
    folded = _fold(ary)
    indicator = (folded <= jnp.median(folded)).astype(ary.dtype)
    return _ess_2d(_z_scale(_split_chains(indicator)))


def _mcse_mean_2d(ary: Array) -> Array:
    return jnp.std(ary, ddof=1) / jnp.sqrt(_ess_2d(_split_chains(ary)))


def _mcse_sd_2d(ary: Array) -> Array:
    sq_dev = (ary - ary.mean()) ** 2
    evar = sq_dev.mean()
    varvar = (jnp.mean(sq_dev**2) - evar**2) / _ess_2d(_split_chains(sq_dev))
    return jnp.sqrt(varvar / evar / 4.0)


def _hdi_sorted(ordered: Array, prob: float) -> Array:
    """Narrowest interval spanning ``floor(prob * n)`` steps of the sorted values: (2,)."""
    inc = int(math.floor(prob * ordered.size))
    widths = ordered[inc:] - ordered[: ordered.size - inc]
    start = jnp.argmin(widths)
    return jnp.stack([ordered[start], ordered[start + inc]])


_RHAT_METHODS: dict[str, Callable[[Array], Array]] = {
    "rank": _rhat_rank_2d,
    "split": lambda a: _rhat_2d(_split_chains(a)),
    "folded": lambda a: _rhat_2d(_z_scale(_fold(_split_chains(a)))),
    "z_scale": lambda a: _rhat_2d(_z_scale(_split_chains(a))),
    "identity": _rhat_2d,
}

_ESS_METHODS: dict[str, Callable[[Array], Array]] = {
    "bulk": lambda a: _ess_2d(_z_scale(_split_chains(a))),
    "tail": _ess_tail_2d,
    "mean": lambda a: _ess_2d(_split_chains(a)),
    "sd": lambda a: _ess_2d(_split_chains((a - a.mean()) ** 2)),
    "median": lambda a: _ess_quantile_2d(a, 0.5),
    "mad": _ess_mad_2d,
    "z_scale": lambda a: _ess_2d(_z_scale(_split_chains(a))),
    "folded": lambda a: _ess_2d(_z_scale(_fold(_split_chains(a)))),
    "identity": _ess_2d,
}

_MCSE_METHODS: dict[str, Callable[[Array], Array]] = {
    "mean": _mcse_mean_2d,
    "sd": _mcse_sd_2d,
}

_METHOD_TABLES = {"rhat": _RHAT_METHODS, "ess": _ESS_METHODS, "mcse": _MCSE_METHODS}


@functools.partial(jax.jit, static_argnames=("table", "method"))
def _by_method(x: Array, table: str, method: str) -> Array:
    """Apply ``_METHOD_TABLES[table][method]`` to every site, NaN where a site has NaN."""
    fn = _METHOD_TABLES[table][method]
    return _map_sites(lambda a: _nan_if_any_nan(fn(a), a), x)


@functools.partial(jax.jit, static_argnames=("prob",))
def _hdi_sites(x: Array, prob: float) -> Array:
    fn = lambda a: _hdi_sorted(jnp.sort(a.ravel()), prob)  # noqa: E731
    return _map_sites(lambda a: _nan_if_any_nan(fn(a), a), x)


# --------------------------------------------------------------------------- public API


def rhat(x: ArrayLike, method: str = "rank") -> Array:
    """Potential scale reduction factor R-hat.

    Parameters
    ----------
    x : array of shape (chain, draw, *shape)
        MCMC draws.
    method : {"rank", "split", "folded", "z_scale", "identity"}, default "rank"
        ``"rank"`` is the rank-normalized split R-hat: the larger of the bulk R-hat
        (split, rank-normalized) and the tail R-hat (split, folded around the median,
        rank-normalized). ``"split"`` is the classic split R-hat of Gelman et al. (2013),
        ``"identity"`` the original R-hat without splitting.

    Returns
    -------
    Array of shape ``shape``
        R-hat per site. NaN with fewer than 2 chains or 4 draws, for constant draws, or
        when ``x`` contains NaN (as in ArviZ).

    Raises
    ------
    ValueError
        If ``x`` has fewer than 2 dimensions or ``method`` is unknown.

    References
    ----------
    Vehtari, Gelman, Simpson, Carpenter, Bürkner (2021). Rank-normalization, folding, and
    localization: an improved R-hat for assessing convergence of MCMC. Bayesian Analysis.

    Examples
    --------
    >>> import jax
    >>> x = jax.random.normal(jax.random.key(0), (4, 500, 3))
    >>> rhat(x).shape
    (3,)
    """
    x = _as_draws(x)
    _check_method(method, tuple(_RHAT_METHODS), "rhat")
    if x.shape[0] < 2 or x.shape[1] < _MIN_DRAWS:
        return _nan_like_sites(x)
    return _by_method(x, "rhat", method)


def ess(x: ArrayLike, method: str = "bulk") -> Array:
    """Effective sample size.

    Parameters
    ----------
    x : array of shape (chain, draw, *shape)
        MCMC draws.
    method : {"bulk", "tail", "mean", "sd", "median", "mad", "z_scale", "folded", \
"identity"}, default "bulk"
        ``"bulk"``: split, rank-normalized ESS. ``"tail"``: the smaller ESS of the
        indicators ``x <= q05`` and ``x <= q95``. ``"mean"``: split ESS of the raw draws
        (for the MCSE of the mean). The others match ``arviz.ess`` of the same name.

    Returns
    -------
    Array of shape ``shape``
        ESS per site. NaN with fewer than 4 draws or NaN draws; equal to the number of
        (split) draws for constant draws, as in ArviZ.

    Raises
    ------
    ValueError
        If ``x`` has fewer than 2 dimensions or ``method`` is unknown.

    References
    ----------
    Vehtari, Gelman, Simpson, Carpenter, Bürkner (2021), Bayesian Analysis; Geyer (1992),
    Practical Markov chain Monte Carlo, Statistical Science.

    Examples
    --------
    >>> import jax
    >>> x = jax.random.normal(jax.random.key(0), (4, 500))
    >>> ess(x, method="tail").shape
    ()
    """
    x = _as_draws(x)
    _check_method(method, tuple(_ESS_METHODS), "ess")
    if x.shape[1] < _MIN_DRAWS:
        return _nan_like_sites(x)
    return _by_method(x, "ess", method)


def mcse(x: ArrayLike, method: str = "mean") -> Array:
    """Monte Carlo standard error of the posterior mean or standard deviation.

    Parameters
    ----------
    x : array of shape (chain, draw, *shape)
        MCMC draws.
    method : {"mean", "sd"}, default "mean"
        ``"mean"``: ``sd(x) / sqrt(ess(x, "mean"))``. ``"sd"``: delta-method error of the
        standard deviation, using the ESS of the squared deviations.

    Returns
    -------
    Array of shape ``shape``
        MCSE per site; NaN with fewer than 4 draws or NaN draws.

    Raises
    ------
    ValueError
        If ``x`` has fewer than 2 dimensions or ``method`` is unknown.

    Examples
    --------
    >>> import jax
    >>> x = jax.random.normal(jax.random.key(0), (4, 500, 2))
    >>> mcse(x, method="sd").shape
    (2,)
    """
    x = _as_draws(x)
    _check_method(method, tuple(_MCSE_METHODS), "mcse")
    if x.shape[1] < _MIN_DRAWS:
        return _nan_like_sites(x)
    return _by_method(x, "mcse", method)


def hdi(x: ArrayLike, prob: float = 0.94) -> Array:
    """Highest density interval: the narrowest interval over all draws pooled.

    Parameters
    ----------
    x : array of shape (chain, draw, *shape)
        MCMC draws.
    prob : float, default 0.94
        Probability mass of the interval, in (0, 1). It must be a concrete number (static
        under ``jax.jit``) because it fixes the shape of the computation.

    Returns
    -------
    Array of shape (*shape, 2)
        Lower and upper bounds per site (NaN where ``x`` has NaN). Meant for unimodal
        distributions, like ``arviz.hdi(..., multimodal=False)``.

    Raises
    ------
    ValueError
        If ``x`` has fewer than 2 dimensions or ``prob`` is outside (0, 1).
    TypeError
        If ``prob`` is a traced value.

    Examples
    --------
    >>> import jax
    >>> x = jax.random.normal(jax.random.key(0), (4, 500, 3))
    >>> hdi(x, prob=0.9).shape
    (3, 2)
    """
    x = _as_draws(x)
    prob = _check_prob(prob)
    return _hdi_sites(x, prob)


def bfmi(energy: ArrayLike) -> Array:
    """Estimated Bayesian fraction of missing information (E-BFMI) per chain.

    ``E-BFMI = mean(diff(E)**2) / var(E)`` per chain, with ``ddof=1`` in the variance.
    Values below about 0.3 suggest that momentum resampling explores the energy poorly.

    Parameters
    ----------
    energy : array of shape (chain, draw)
        Hamiltonian energy at each draw, from an HMC or NUTS sampler.

    Returns
    -------
    Array of shape (chain,)

    Raises
    ------
    ValueError
        If ``energy`` is not 2-dimensional or has fewer than 2 draws.

    References
    ----------
    Betancourt (2016). Diagnosing suboptimal cotangent disintegrations in Hamiltonian Monte
    Carlo. arXiv:1604.00695.

    Examples
    --------
    >>> import jax
    >>> bfmi(jax.random.normal(jax.random.key(0), (4, 500))).shape
    (4,)
    """
    energy = _as_float(energy, "energy")
    if energy.ndim != 2 or energy.shape[1] < 2:
        raise ValueError(
            "`energy` must have shape (chain, draw) with at least 2 draws, but received "
            f"shape {tuple(energy.shape)}. Pass the sampler's per-draw energy, e.g. "
            "`extra_fields['energy']` reshaped to (chain, draw)."
        )
    num = jnp.mean(jnp.diff(energy, axis=1) ** 2, axis=1)
    return num / jnp.var(energy, axis=1, ddof=1)


def _summary_2d(ary: Array, prob: float) -> Array:
    """Every summary statistic of one (chain, draw) site, in ``_SUMMARY_KEYS`` order.

    Shares one sort (of all draws: for ranks, quantiles, the median and the HDI) and
    batches the five ESS and two R-hat computations, which keeps the compiled program small.
    """
    split = _split_chains(ary)
    ordered = jnp.sort(ary.ravel())
    z_bulk_tail = _z_bulk_tail(ary, ordered)
    sq_dev = (ary - ary.mean()) ** 2
    ess_inputs = jnp.concatenate([
        z_bulk_tail[:1],
        _tail_indicators(ary, ordered),
        jnp.stack([split, _split_chains(sq_dev)]),
    ])  # fmt: skip
    ess_bulk, ess_q05, ess_q95, ess_mean, ess_sq = jax.vmap(_ess_2d)(ess_inputs)
    if ary.shape[0] >= 2:
        r_hat = jnp.max(jax.vmap(_rhat_2d)(z_bulk_tail))
    else:
        r_hat = jnp.array(jnp.nan, ary.dtype)
    sd = jnp.std(ary, ddof=1)
    evar = sq_dev.mean()
    varvar = (jnp.mean(sq_dev**2) - evar**2) / ess_sq
    stats = jnp.stack([
        ary.mean(), sd, *_hdi_sorted(ordered, prob), sd / jnp.sqrt(ess_mean),
        jnp.sqrt(varvar / evar / 4.0), ess_bulk, jnp.minimum(ess_q05, ess_q95), r_hat,
    ])  # fmt: skip
    return _nan_if_any_nan(stats, ary)


_SUMMARY_KEYS = (
    "mean", "sd", "hdi_lower", "hdi_upper", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail",
    "r_hat",
)  # fmt: skip


def summary_stats(x: ArrayLike, prob: float = 0.94) -> dict[str, Array]:
    """Posterior summary and convergence diagnostics in one pass, as in ``arviz.summary``.

    Parameters
    ----------
    x : array of shape (chain, draw, *shape)
        MCMC draws.
    prob : float, default 0.94
        Probability mass of the HDI, in (0, 1); static under ``jax.jit``.

    Returns
    -------
    dict of str to Array of shape ``shape``
        Keys ``"mean"``, ``"sd"`` (``ddof=1``), ``"hdi_lower"``, ``"hdi_upper"``,
        ``"mcse_mean"``, ``"mcse_sd"``, ``"ess_bulk"``, ``"ess_tail"`` and ``"r_hat"``,
        equal to :func:`hdi`, :func:`mcse`, :func:`ess` and :func:`rhat` with their
        default methods. Diagnostics are NaN with fewer than 4 draws; ``r_hat`` also with
        a single chain.

    Notes
    -----
    With an odd number of draws, ``arviz.summary`` folds the tail R-hat around the median
    of all draws, while ``arviz.rhat`` folds around the median of the split chains (which
    drop each chain's middle draw). Here ``r_hat`` always equals :func:`rhat`, as
    ``arviz.rhat`` does; with an even number of draws all three agree.

    Raises
    ------
    ValueError
        If ``x`` has fewer than 2 dimensions or ``prob`` is outside (0, 1).

    Examples
    --------
    >>> import jax
    >>> stats = summary_stats(jax.random.normal(jax.random.key(0), (4, 500, 3)))
    >>> stats["r_hat"].shape
    (3,)
    """
    x = _as_draws(x)
    prob = _check_prob(prob)
    if x.shape[1] < _MIN_DRAWS:
        bounds = hdi(x, prob)
        basic = {
            "mean": x.mean(axis=(0, 1)),
            "sd": jnp.std(x, axis=(0, 1), ddof=1),
            "hdi_lower": bounds[..., 0],
            "hdi_upper": bounds[..., 1],
        }
        return basic | {key: _nan_like_sites(x) for key in _SUMMARY_KEYS[4:]}
    stats = _summary_sites(x, prob)
    return {key: stats[..., i] for i, key in enumerate(_SUMMARY_KEYS)}


@functools.partial(jax.jit, static_argnames=("prob",))
def _summary_sites(x: Array, prob: float) -> Array:
    return _map_sites(lambda a: _summary_2d(a, prob), x)
