"""Formula models with one grouping's effects integrated out: which grouping, its data, its draws.

``Model.fit(marginalize="auto")`` integrates out the group effects of the grouping with
the most levels whenever that is exact: the gaussian family (identity link), where the
rows of a group are jointly Gaussian given everything else (``marginal.py``). Other
groupings (crossed) stay sampled in their parameterization and enter the mean. The
NumPyro model is the formula model with ``ModelStructure.marginal`` set (``models.py``);
its sites are those of the sampled model without ``r_<g>``, ``z_<g>`` and
``theta_<g>`` of that grouping, whose ``r_<g>`` is then drawn for every stored draw by
:func:`effects_generator`, a pure ``generate(key, values, arrays)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np
from numpyro import handlers

from bhmjax._src.lru import LRU
from bhmjax._src.marginal import basis_data, block_basis, group_basis
from bhmjax._src.models import ModelStructure

__all__ = ["MARGINALIZE", "why_not", "choose", "marginal_structure", "add_basis", "effects_generator",
           "record", "describe"]

MARGINALIZE = ("auto", True, False)

_GENERATORS: LRU[Callable] = LRU(32)


def why_not(structure: ModelStructure, additions: tuple[str, ...] = ()) -> str | None:
    """Why no grouping of ``structure`` can be integrated out exactly (None: one can).

    ``additions`` names the response's addition terms that reweight or censor rows
    ("weights", "cens"): the marginal likelihood (``marginal.MarginalNormalGroups``) is
    that of plain, equally weighted gaussian rows with one sigma, so a predicted sigma,
    weights, censoring, an offset or splines are refused (the offset and splines are
    not carried by the blocked rows of ``reduce.block_gaussian_data``).
    """
    if not structure.groups:
        return "the formula has no group terms in the mean"
    if structure.family != "gaussian":
        return (f"the {structure.family} family's group effects are not Gaussian given the data; only the "
                "gaussian family (identity link) integrates them out exactly")
    found = [f"a predicted {', '.join(p.dpar for p in structure.dpars)}"] if structure.dpars else []
    found += [{"weights": "weights(...)", "cens": "cens(...)"}[a] for a in additions]
    found += ["an offset"] if structure.offset else []
    found += ["splines s(...)"] if structure.smooths else []
    if found:
        return (f"the model has {' and '.join(found)}, which the integrated gaussian likelihood (plain rows, one "
                "sigma) does not carry")
    return None


def choose(structure: ModelStructure, num_groups: Mapping[str, int], marginalize: Any,
           additions: tuple[str, ...] = ()) -> str | None:
    """The grouping to integrate out for ``marginalize`` ("auto", True or False), or None.

    "auto" and True pick the grouping of the mean with the most levels (the first such in
    the formula); True raises ``ValueError`` saying why when none can be (see :func:`why_not`).
    """
    if isinstance(marginalize, str) and marginalize != "auto" or not isinstance(marginalize, (str, bool)):
        raise ValueError(f"marginalize must be 'auto', True or False, got {marginalize!r}")
    if marginalize is False:
        return None
    reason = why_not(structure, additions)
    if reason is not None:
        if marginalize is True:
            raise ValueError(f"marginalize=True, but {reason}. Fit with marginalize=False (or 'auto').")
        return None
    names = [g.name for g in structure.groups]
    return max(names, key=lambda n: (num_groups[n], -names.index(n)))


def marginal_structure(structure: ModelStructure, name: str | None) -> ModelStructure:
    """``structure`` with ``name``'s effects integrated out (its centeredness is then moot: fixed to 1).

    One structure per choice, so the compiled program is shared by every fit that makes it.
    """
    if name is None:
        return structure
    groups = tuple(dataclasses.replace(g, centeredness=(1.0,) * len(g.columns)) if g.name == name else g
                   for g in structure.groups)
    return dataclasses.replace(structure, groups=groups, marginal=name)


def add_basis(data: Mapping[str, Any], structure: ModelStructure) -> dict:
    """Model data with ``marginal:codes``, ``marginal:coords`` and ``marginal:root`` of the grouping.

    Built in float64 from the (possibly reduced) rows of ``data`` (see :func:`group_basis`),
    or read off rows in blocks (``marginal:block``, see :func:`block_basis`); returned in the
    dtype of ``data["y"]``.
    """
    i = [g.name for g in structure.groups].index(structure.marginal)
    f = np.asarray(data["y"]).dtype
    if "marginal:block" in data:  # rows in blocks per group (reduce.block_gaussian_data)
        basis = block_basis(np.asarray(data[f"Z_{i}"], f), int(data[f"G_{i}"]), int(data["marginal:block"]))
    else:
        basis = group_basis(data[f"Z_{i}"], data[f"codes_{i}"], int(data[f"G_{i}"]), dtype=f)
    return {**data, **basis_data(basis)}


def effects_generator(model: Callable, static: Mapping[str, Any], name: str, site: str = "y") -> Callable:
    """``generate(key, values, arrays) -> {name: (G, q)}``: one exact draw of the integrated effects.

    ``values`` holds one posterior draw of the model's sites; the model is replayed
    with them (so the mean of every row, crossed effects included, is the model's
    own) and the observed ``site``'s :class:`~bhmjax._src.marginal.MarginalNormalGroups`
    draws the effects. Pure and jit/vmap-safe: the engine can run it per stored draw.
    """
    cache_key = (model, tuple(sorted(static.items())), name, site)
    generate = _GENERATORS.get(cache_key)
    if generate is not None:  # the same function object: its compiled chunks are reused
        return generate
    fixed = dict(static)

    def generate(key, values, arrays):
        with handlers.trace() as tr, handlers.substitute(data=values):
            model(**arrays, **fixed)
        node = tr[site]
        return {name: node["fn"].group_effects(key, node["value"])}

    _GENERATORS[cache_key] = generate
    return generate


def record(structure: ModelStructure, num_groups: int) -> dict:
    """What ``fit.settings["marginalized"]`` says: the grouping, its columns and how it was drawn."""
    g = next(g for g in structure.groups if g.name == structure.marginal)
    return {"group": g.name, "columns": list(g.columns), "groups": int(num_groups), "site": f"r_{g.name}",
            "correlated": bool(g.correlated),
            "draws": "exact, from the Gaussian conditional of each stored draw",
            "log_likelihood": "rows given the drawn group effects (as for sampled fits; bj.compare uses it)"}



def describe(structure: ModelStructure, name: str | None, num_groups: Mapping[str, int], marginalize: Any,
             additions: tuple[str, ...] = ()) -> str:
    """The lines of ``Model.describe()`` saying what ``fit(marginalize=...)`` integrates out."""
    if name is None:
        reason = "marginalize=False" if marginalize is False else why_not(structure, additions)
        return f"integrated out: nothing ({reason}); every group effect is sampled."
    g = next(g for g in structure.groups if g.name == name)
    return (f"integrated out (marginalize={marginalize!r}): r_{name} ({num_groups[name]} groups x {len(g.columns)} "
            f"columns), exactly: NUTS samples the other sites and r_{name} is drawn from its Gaussian "
            "conditional for every stored draw; marginalize=False samples it.")
