"""Warmup that learns a diagonal mass matrix from draws *and* gradients.

For a Gaussian target with covariance ``Sigma``, the gradient of the potential
has covariance ``Sigma^{-1}``, so per coordinate ``sqrt(var(x) / var(grad))``
estimates the posterior scale with far fewer draws than ``var(x)`` alone
(Seyboldt et al., the adaptation of nutpie / nuts-rs). The schedule follows
theirs, for ``N`` warmup steps:

* the mass matrix starts at ``1 / |grad|`` of the initial point;
* during the first ``0.85 N`` steps every draw and gradient enters two running
  estimators (foreground, background); the mass matrix is re-estimated from
  the foreground after every step, and the background replaces it every 10
  steps in the first ``0.3 N`` steps and every 80 afterwards, so the estimate
  forgets the transient;
* the step size follows dual averaging throughout (restarted when the mass
  matrix first changes) and ends at the averaged value; the last ``0.15 N``
  steps adapt the step size only.

The "hybrid" scheme keeps this schedule but, after the early window, estimates
the mass matrix by Stan's regularized variance of the draws on windows of 150
(``n / (n + 5) var + 5 / (n + 5) 1e-3``; shrinking towards the gradient estimate instead,
which is scale-free, tipped three fixed-seed convergence tests of funnel-shaped models
over their R-hat limits, so Stan's form stays):
the gradient estimate finds the scales fast, and the draw variance is the
better metric for the funnel-shaped (non-Gaussian) coordinates of hierarchical
models. Measured (4 chains, 1,000 + 1,000, mean over seeds, min bulk ESS per
1,000 sampling gradients; ``python -m benchmarks.adaptation``): eight schools
non-centered 84.7 hybrid, 82.3 nutpie, 65.3 stan; varying intercepts and slopes
(G=50, N=1,000) 22.2 hybrid, 13.9 nutpie, 18.5 stan; warmup gradients about half of
"stan"'s on the latter.

It builds on NumPyro's kernel: NUTS runs with NumPyro's own adaptation off and
this module writes the step size and mass matrix into the kernel's
``HMCAdaptState`` between steps; its estimator state lives in that tuple's
``mm_state`` slot (the mass-matrix adaptation state, unused by NumPyro then)
and the dual averaging in ``ss_state`` (NumPyro's own dual averaging).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from numpyro.infer.hmc_util import dual_averaging

__all__ = ["ADAPTATIONS", "DrawGradState", "Moments", "init_draw_grad", "resolve_adaptation", "schedule",
           "update_draw_grad"]

ADAPTATIONS = ("hybrid", "nutpie", "stan")
EARLY_WINDOW = 0.3
STEP_SIZE_WINDOW = 0.15
EARLY_SWITCH_FREQ = 10
SWITCH_FREQ = {"nutpie": 80, "hybrid": 150}  # a draw variance needs longer windows
MIN_DRAWS = 3  # foreground draws before the mass matrix is estimated from them
_ss_init, _ss_update = dual_averaging()


def resolve_adaptation(adaptation: str, dense_mass: bool) -> str:
    """The warmup adaptation scheme "auto" stands for; checks the name."""
    choices = ("auto",) + ADAPTATIONS
    if adaptation not in choices:
        raise ValueError(f"adaptation must be one of {choices}, got {adaptation!r}")
    if adaptation == "auto":
        return "stan" if dense_mass else "hybrid"
    if dense_mass and adaptation != "stan":
        raise ValueError(f"adaptation={adaptation!r} learns a diagonal mass matrix; dense_mass=True needs "
                         "adaptation='stan' (or 'auto')")
    return adaptation


class Moments(NamedTuple):
    """Welford running mean and sum of squared deviations of a flat vector (d,)."""

    n: jax.Array  # () int32
    mean: jax.Array  # (d,)
    m2: jax.Array  # (d,)


class DrawGradState(NamedTuple):
    """Foreground and background moments of the draws and the gradients."""

    draws: Moments
    grads: Moments
    draws_bg: Moments
    grads_bg: Moments
    changed: jax.Array  # () bool: has the mass matrix left its initial value


def _empty(like: jax.Array) -> Moments:
    return Moments(jnp.zeros((), jnp.int32), jnp.zeros_like(like), jnp.zeros_like(like))


def _add(m: Moments, x: jax.Array) -> Moments:
    n = m.n + 1
    delta = x - m.mean
    mean = m.mean + delta / n
    return Moments(n, mean, m.m2 + delta * (x - mean))


def _variance(m: Moments) -> jax.Array:
    return m.m2 / jnp.maximum(m.n - 1, 1)


def schedule(num_warmup: int) -> tuple[int, int]:
    """(end of the early window, first step of the step-size-only window)."""
    return int(EARLY_WINDOW * num_warmup), num_warmup - int(STEP_SIZE_WINDOW * num_warmup)


def _flat(tree: dict, names: tuple[str, ...]) -> jax.Array:
    return ravel_pytree(tuple(tree[k] for k in names))[0]


def _limits(dtype) -> tuple[float, float]:
    finfo = jnp.finfo(dtype)
    return float(finfo.eps) ** 2, 1.0 / float(finfo.eps) ** 2


def _with_mass(adapt_state, block: tuple[str, ...], inverse_mass: jax.Array):
    """``adapt_state`` with the diagonal inverse mass matrix of ``block`` replaced."""
    def put(old: dict, value):
        return {**old, block: value}

    return adapt_state._replace(
        inverse_mass_matrix=put(adapt_state.inverse_mass_matrix, inverse_mass),
        mass_matrix_sqrt=put(adapt_state.mass_matrix_sqrt, jax.lax.rsqrt(inverse_mass)),
        mass_matrix_sqrt_inv=put(adapt_state.mass_matrix_sqrt_inv, jnp.sqrt(inverse_mass)),
    )


def _block(adapt_state) -> tuple[str, ...]:
    blocks = list(adapt_state.inverse_mass_matrix)
    if len(blocks) != 1 or jnp.ndim(adapt_state.inverse_mass_matrix[blocks[0]]) != 1:
        raise ValueError("the nutpie adaptation estimates one diagonal mass matrix; use adaptation='stan' "
                         "with dense_mass=True")
    return blocks[0]


def init_draw_grad(hmc_state):
    """The kernel's initial state set up for draw+gradient adaptation.

    Starts the mass matrix at ``1 / |grad|`` (clipped) and both estimators at the
    initial point. ``hmc_state`` is one chain's NumPyro ``HMCState``.
    """
    a = hmc_state.adapt_state
    block = _block(a)
    x, g = _flat(hmc_state.z, block), _flat(hmc_state.z_grad, block)
    lo, hi = _limits(x.dtype)
    inverse_mass = jnp.clip(1.0 / jnp.abs(g), lo, hi)
    inverse_mass = jnp.where(jnp.isfinite(inverse_mass), inverse_mass, 1.0)
    first = (_add(_empty(x), x), _add(_empty(g), g))
    mm = DrawGradState(*first, *first, changed=jnp.asarray(False))
    a = _with_mass(a, block, inverse_mass)._replace(mm_state=mm)  # NumPyro already set up the dual averaging
    return hmc_state._replace(adapt_state=a)


def update_draw_grad(t: jax.Array, hmc_state, num_warmup: int, target_accept: float, scheme: str = "hybrid"):
    """Adapt after warmup step ``t`` (0-based), given the state that step produced.

    ``scheme`` "nutpie" estimates ``sqrt(var(x) / var(grad))`` throughout; "hybrid"
    switches to Stan's regularized ``var(x)`` after the early window.
    """
    a, mm = hmc_state.adapt_state, hmc_state.adapt_state.mm_state
    block = _block(a)
    early_end, final_start = schedule(num_warmup)
    in_mass = t < final_start

    x, g = _flat(hmc_state.z, block), _flat(hmc_state.z_grad, block)
    good = in_mass & jnp.all(jnp.isfinite(x)) & jnp.all(jnp.isfinite(g))
    pick = lambda c, new, old: jax.tree.map(lambda u, v: jnp.where(c, u, v), new, old)  # noqa: E731
    draws, grads, draws_bg, grads_bg = pick(
        good, (_add(mm.draws, x), _add(mm.grads, g), _add(mm.draws_bg, x), _add(mm.grads_bg, g)),
        (mm.draws, mm.grads, mm.draws_bg, mm.grads_bg))

    # The background takes over once it holds enough draws, unless too few steps remain.
    freq = jnp.where(t < early_end, EARLY_SWITCH_FREQ, SWITCH_FREQ[scheme])
    switch = in_mass & (draws_bg.n >= freq) & (t + freq <= final_start)
    draws, grads = pick(switch, (draws_bg, grads_bg), (draws, grads))
    draws_bg, grads_bg = pick(switch, (_empty(x), _empty(g)), (draws_bg, grads_bg))

    lo, hi = _limits(x.dtype)
    estimate = jnp.sqrt(_variance(draws) / _variance(grads))
    if scheme == "hybrid":  # after the early window: Stan's regularized variance of the draws
        n = draws.n.astype(x.dtype)
        regularized = (n / (n + 5.0)) * _variance(draws) + 1e-3 * (5.0 / (n + 5.0))
        estimate = jnp.where(t >= early_end, regularized, estimate)
    usable = in_mass & (draws.n >= MIN_DRAWS) & jnp.all(jnp.isfinite(estimate) & (estimate > 0))
    inverse_mass = jnp.where(usable, jnp.clip(estimate, lo, hi), a.inverse_mass_matrix[block])
    first_change = usable & ~mm.changed

    # Dual averaging on the acceptance statistic, restarted at the first new mass matrix.
    ss = _ss_update(target_accept - hmc_state.accept_prob, a.ss_state)
    ss = pick(first_change, _ss_init(jnp.log(10 * a.step_size)), ss)
    log_step = jnp.where(first_change, jnp.log(a.step_size), jnp.where(t == num_warmup - 1, ss[1], ss[0]))
    finfo = jnp.finfo(a.step_size.dtype)
    step_size = jnp.clip(jnp.exp(log_step), finfo.tiny, finfo.max).astype(a.step_size.dtype)

    mm = DrawGradState(draws, grads, draws_bg, grads_bg, mm.changed | usable)
    a = _with_mass(a, block, inverse_mass.astype(x.dtype))._replace(mm_state=mm, ss_state=ss, step_size=step_size)
    return hmc_state._replace(adapt_state=a)
