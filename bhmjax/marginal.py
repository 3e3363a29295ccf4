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

from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from bhmjax._src import generated, marginalize, standardize
from bhmjax._src import data as data_lib
from bhmjax._src.precision import x64_mode

if TYPE_CHECKING:  # pragma: no cover
    from bhmjax.fit import Fit

__all__ = ["marginal_effects", "complete_fit", "GENERATE_TAG"]

#: Folded into the run's seed for the keys of generated draws (independent of the sampler's keys).
GENERATE_TAG = 0x6D61_7267


def _key(seed: int) -> jax.Array:
    return jax.random.fold_in(jax.random.PRNGKey(int(seed)), GENERATE_TAG)


def _values(fit: "Fit", arrays, static) -> tuple[dict[str, np.ndarray], list[str]]:
    """The stored draws of the model's sites, and the sites not stored."""
    from bhmjax._src.batch import site_shapes

    sites = site_shapes(fit.model, arrays, static)
    return {k: np.asarray(fit.draws[k]) for k in sites if k in fit.draws}, [k for k in sites if k not in fit.draws]


def _generate(fit: "Fit", generate, *, seed: int, first_draw: int, max_bytes: int) -> dict[str, np.ndarray]:
    data = fit.data if fit.sampled_data is None else fit.sampled_data
    arrays, static = data_lib.split_data(data)
    with x64_mode(fit.settings.get("x64", False)):
        values, missing = _values(fit, arrays, static)
        try:
            return generated.apply_generate(_key(seed), generate, values, arrays, first_draw=first_draw,
                                            max_bytes=max_bytes)
        except Exception as err:  # noqa: BLE001 - a site the replay needs was not stored
            if not missing:
                raise
            raise ValueError(f"the group effects are drawn by replaying the model with each stored draw, but the "
                             f"fit has no draws of {missing}; sample without dropping them (keep=/drop=)."
                             ) from err


def marginal_effects(fit: "Fit", site: str = "y", *, seed: int = 0, first_draw: int = 0,
                     max_bytes: int = 256 * 2**20) -> np.ndarray:
    """Exact draws of the effects a :class:`~bhmjax.MarginalNormalGroups` site integrated out.

    Parameters
    ----------
    fit : Fit
        A fit of a NumPyro model whose observed ``site`` is a ``MarginalNormalGroups``.
    site : str
        The observed site.
    seed : int
        Same seed, same draws (each draw's key depends on its chain and index only).
    first_draw : int
        Index of the fit's first draw within its run (for the draws of an extension).
    max_bytes : int
        Working memory of one chunk of draws.

    Returns
    -------
    np.ndarray, shape (chains, draws, G, q)
        One draw of every group's effects per posterior draw.
    """
    if fit.model is None:
        raise ValueError("marginal_effects replays the model with each draw, but this fit has none (a loaded "
                         "fit?); pass the fit returned by bj.sample.")
    data = fit.data if fit.sampled_data is None else fit.sampled_data
    _, static = data_lib.split_data(data)
    generate = marginalize.effects_generator(fit.model, static, "effects", site)
    return _generate(fit, generate, seed=seed, first_draw=first_draw, max_bytes=max_bytes)["effects"]


def complete_fit(fit: "Fit", spec: Any, *, first_draw: int = 0, max_bytes: int = 256 * 2**20) -> "Fit":
    """Add what a formula fit's sampler did not draw: ``r_<g>`` of an integrated grouping
    (``fit.settings["marginalized"]``) and, for standardized fits in float32, ``Intercept``
    in float64 (``fit.settings["standardized"]``). Returns ``fit``, its draws extended."""
    done = fit.settings.get("marginalized")
    if done is not None and f"r_{done['group']}" not in fit.settings.get("drop", ()):
        data = fit.sampled_data if fit.sampled_data is not None else fit.data
        _, static = data_lib.split_data(data)
        generate = marginalize.effects_generator(fit.model, static, done["site"])
        fit.draws.update(_generate(fit, generate, seed=fit.settings["seed"], first_draw=first_draw,
                                   max_bytes=max_bytes))
    shift = fit.settings.get("standardized")
    if shift is not None and shift.get("loc") is not None and "Intercept_c" in fit.draws \
            and not fit.settings.get("x64", False):
        x_mean = spec.fixed.means if spec.structure.slopes else None
        fit.draws["Intercept"] = standardize.user_intercept(fit.draws["Intercept_c"], fit.draws.get("b"), x_mean,
                                                            shift["loc"])
    return fit
