"""Sampler statistics: the one definition of their names, dtypes and ArviZ names.

Every chain program's ``step`` returns a :class:`SampleInfo`; the driver stores its
fields per draw as ``fit.stats[name]`` with axes (chain, draw); streams, checkpoints
and the ArviZ export read the names, dtypes and ArviZ names from :data:`STATS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

import jax.numpy as jnp
from jax import lax
import numpy as np

__all__ = ["STATS", "SampleInfo", "Stat", "stat_dtypes", "to_arviz", "tree_depth"]


class SampleInfo(NamedTuple):
    """What one transition of one chain reports (leaves of shape (), or (chains,) for an ensemble).

    ``tree_depth`` is None for samplers that build no tree (ChEES): a synthesized depth
    would read as saturation in ``diagnose()``.
    """

    diverging: Any
    num_steps: Any
    tree_depth: Any
    accept_prob: Any
    energy: Any
    step_size: Any
    potential_energy: Any

    def as_dict(self) -> dict[str, Any]:
        """The statistics this sampler reports, by name (None fields left out)."""
        return {k: v for k, v in self._asdict().items() if v is not None}


@dataclass(frozen=True)
class Stat:
    """One sampler statistic.

    Attributes
    ----------
    name : str
        Its key in ``fit.stats``.
    dtype : str or None
        Its numpy dtype; None: the float dtype of the run (float32, or float64 with ``x64``).
    arviz : str
        Its name in ArviZ's ``sample_stats`` group.
    sign : float
        Factor applied for ArviZ (``lp`` is minus the potential energy).
    doc : str
    """

    name: str
    dtype: str | None
    arviz: str
    sign: float = 1.0
    doc: str = ""


STATS: dict[str, Stat] = {s.name: s for s in (
    Stat("diverging", "bool", "diverging", doc="the transition diverged"),
    Stat("num_steps", "int32", "n_steps", doc="leapfrog steps (gradient evaluations)"),
    Stat("tree_depth", "int32", "tree_depth", doc="NUTS tree depth (a tree of depth d takes < 2**d steps)"),
    Stat("accept_prob", None, "acceptance_rate", doc="mean Metropolis acceptance probability"),
    Stat("energy", None, "energy", doc="Hamiltonian energy"),
    Stat("step_size", None, "step_size", doc="the step size (adapted during warmup)"),
    Stat("potential_energy", None, "lp", sign=-1.0, doc="minus the log density"),
)}


def stat_dtypes(names, float_dtype) -> dict[str, np.dtype]:
    """``name -> dtype`` of the statistics ``names`` for a run in ``float_dtype``."""
    return {n: np.dtype(STATS[n].dtype or float_dtype) for n in names}


def tree_depth(num_steps):
    """NUTS tree depth from leapfrog steps: a tree of depth d takes < 2**d steps (int32)."""
    n = jnp.maximum(jnp.asarray(num_steps, jnp.int32), 1)
    return (32 - lax.clz(n)).astype(jnp.int32)  # the bit length of n: floor(log2 n) + 1, exactly


def to_arviz(stats: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``fit.stats`` under ArviZ's names (``lp`` = minus the potential energy)."""
    out = {}
    for name, value in stats.items():
        stat = STATS.get(name)
        if stat is not None:
            value = np.asarray(value)
            out[stat.arviz] = value if stat.sign == 1.0 else stat.sign * value
    return out
