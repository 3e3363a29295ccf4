"""Group effects integrated out: their exact draws for formula fits and hand-written models.

``bj.Model.fit(marginalize="auto")`` samples the hyperparameters of a gaussian model
with the largest grouping's effects integrated out (``bhmjax._src.marginal``), then
:func:`complete_fit` draws ``r_<g>`` for every stored draw from its exact Gaussian
conditional; a hand-written model that uses :class:`bhmjax.MarginalNormalGroups` gets
the same draws from :func:`marginal_effects`.

This is the one place where generated quantities are applied after sampling
(``bhmjax._src.generated``); the engine's per-draw hook replaces it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Mapping

import jax
import numpy as np

from bhmjax._src import generated, keys, marginalize, standardize
from bhmjax._src import data as data_lib
from bhmjax._src.config import resolve_seed, seed_key
from bhmjax._src.precision import x64_mode

if TYPE_CHECKING:  # pragma: no cover
    from bhmjax.fit import Fit

__all__ = ["marginal_effects", "complete_fit", "GENERATE_TAG"]

#: Folded into the run's seed for the keys of generated draws (independent of the sampler's keys).
GENERATE_TAG = 0x6D61_7267


def _key(seed: Any) -> np.ndarray:
    """The base key of the generated draws of a run with this seed (an int or a key's words)."""
    return _key_of(resolve_seed(seed))


@functools.lru_cache(maxsize=64)
def _key_of(seed: int | tuple[int, int]) -> np.ndarray:  # cached: made while the sampler compiles, used after
    return keys.fold_in(seed_key(seed), GENERATE_TAG)


def _values(fit: "Fit", arrays, static) -> tuple[dict[str, np.ndarray], list[str]]:
    """The stored draws of the model's sites, and the sites not stored."""
    from bhmjax._src.batch import site_shapes

    sites = site_shapes(fit.model, arrays, static)
    return {k: np.asarray(fit.draws[k]) for k in sites if k in fit.draws}, [k for k in sites if k not in fit.draws]


def _generate(fit: "Fit", generate, *, seed: int, select: np.ndarray | None, draw_index: np.ndarray | None,
              max_bytes: int) -> dict[str, np.ndarray]:
    """``generate`` for the fit's draws at positions ``select`` (all by default), keyed by ``draw_index``."""
    data = fit.data if fit.sampled_data is None else fit.sampled_data
    arrays, static = data_lib.split_data(data)
    with x64_mode(fit.settings.get("x64", False)):
        values, missing = _values(fit, arrays, static)
        if select is not None:
            values = {k: v[:, select] for k, v in values.items()}
        try:
            return generated.apply_generate(_key(seed), generate, values, arrays, draw_index=draw_index,
                                            max_bytes=max_bytes)
        except Exception as err:  # noqa: BLE001 - a site the replay needs was not stored
            if not missing:
                raise
            raise ValueError(f"the group effects are drawn by replaying the model with each stored draw, but the "
                             f"fit has no draws of {missing}; sample without dropping them (keep=/drop=)."
                             ) from err


def marginal_effects(fit: "Fit", site: str = "y", *, draws: int | None = None, seed: int | None = None,
                     max_bytes: int = 256 * 2**20) -> np.ndarray:
    """Exact draws of the group effects a :class:`~bhmjax.MarginalNormalGroups` site integrated out.

    Parameters
    ----------
    fit : Fit
        A fit of a NumPyro model whose observed ``site`` is a ``MarginalNormalGroups``;
        or a formula fit with ``marginalize`` (its ``r_<g>`` again, for fits sampled with
        ``drop=["r_<g>"]`` to bound memory).
    site : str
        The observed site.
    draws : int, optional
        Draws per chain, evenly spaced (all by default): a thinned set for large G.
    seed : int, optional
        Same seed, same draws: each draw's key depends on the seed, its chain and its
        index in the run only. Default: the fit's seed (a formula fit's ``r_<g>``).
    max_bytes : int
        Working memory of one chunk of draws.

    Returns
    -------
    np.ndarray, shape (chains, draws, G, q)
        One draw of every group's effects per selected posterior draw.
    """
    if fit.model is None:
        raise ValueError("marginal_effects replays the model with each draw, but this fit has none (a loaded "
                         "fit?); pass the fit returned by bj.sample or bj.Model.fit.")
    data = fit.data if fit.sampled_data is None else fit.sampled_data
    _, static = data_lib.split_data(data)
    generate = marginalize.effects_generator(fit.model, static, "effects", site)
    index = None if draws is None else _draw_index(fit.num_draws, draws)
    seed = fit.settings.get("seed", 0) if seed is None else seed
    return _generate(fit, generate, seed=seed, select=index, draw_index=index, max_bytes=max_bytes)["effects"]


def _draw_index(total: int, draws: int) -> np.ndarray:
    if isinstance(draws, bool) or not isinstance(draws, (int, np.integer)) or not 1 <= draws <= total:
        raise ValueError(f"draws must be an integer from 1 to the fit's {total} draws per chain, got {draws!r}")
    return np.unique(np.linspace(0, total - 1, int(draws)).round().astype(int))


def _draws_effects(done: Any, keep: Any, drop: Any) -> bool:
    """Whether a fit with this ``settings["marginalized"]`` record, keep and drop gets ``r_<g>`` drawn."""
    return done is not None and done["site"] not in drop and (keep is None or done["site"] in keep)


def complete_ahead(request: Any, stored: Mapping[str, jax.ShapeDtypeStruct]) -> list[Callable[[], tuple]]:
    """The program :func:`complete_fit` will compile for the fit of ``request`` (a RunRequest whose
    draws are the sites ``stored``, one draw each), for ``engine.prepare(ahead=...)``: it then
    compiles beside the sampler instead of after it. Empty where nothing is drawn afterwards."""
    done, config = request.settings.get("marginalized"), request.config
    if request.spec is None or not _draws_effects(done, config.keep, config.drop):
        return []

    def make() -> tuple:
        from bhmjax._src.batch import site_shapes

        arrays, static = data_lib.split_data({**request.arrays, **request.static})
        generate = marginalize.effects_generator(request.model, static, done["site"])
        one = {k: stored[k] for k in site_shapes(request.model, arrays, static) if k in stored}
        return generated.program_ahead(_key(config.seed), generate, one, arrays,
                                       config.chains * config.draws)

    return [make]


def complete_fit(fit: "Fit", spec: Any, *, first_draw: int = 0, max_bytes: int = 256 * 2**20) -> "Fit":
    """Add what a formula fit's sampler did not draw: ``r_<g>`` of an integrated grouping
    (``fit.settings["marginalized"]``; unless dropped or not kept) and, for standardized fits
    in float32, ``Intercept`` in float64 (``fit.settings["standardized"]``). ``first_draw``:
    the index of the fit's first draw in its run (an extension). Effects already drawn (by
    fit_many, inside its compiled program) are kept. Returns ``fit``, its draws extended."""
    done = fit.settings.get("marginalized")
    if _draws_effects(done, fit.settings.get("keep"), fit.settings.get("drop", ())) and done["site"] not in fit.draws:
        data = fit.sampled_data if fit.sampled_data is not None else fit.data
        _, static = data_lib.split_data(data)
        generate = marginalize.effects_generator(fit.model, static, done["site"])
        index = first_draw + np.arange(fit.num_draws)
        fit.draws.update(_generate(fit, generate, seed=fit.settings["seed"], select=None, draw_index=index,
                                   max_bytes=max_bytes))
    shift = fit.settings.get("standardized")
    if shift is not None and shift.get("loc") is not None and "Intercept_c" in fit.draws \
            and "Intercept" in fit.draws and not fit.settings.get("x64", False):
        x_mean = spec.fixed.means if spec.structure.slopes else None
        fit.draws["Intercept"] = standardize.user_intercept(fit.draws["Intercept_c"], fit.draws.get("b"), x_mean,
                                                            shift["loc"])
    return fit
