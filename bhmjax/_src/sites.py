"""Site names of a linear predictor's parameters: brms' names, one owner.

The mean predictor ("mu") keeps bhmjax's names (``Intercept``, ``b``, ``sd_g``, ``r_g``);
every other predictor ``d`` (an auxiliary parameter such as ``sigma``, or a category
``mu<level>``) prefixes them as brms does: ``d_Intercept``, ``b_d``, ``sd_g__d``,
``r_g__d``. Summary rows follow ArviZ (``b_sigma[x]``, ``sd_g__sigma[Intercept]``; see
``Model.names``); prior keys of single slopes keep brms' ``b_sigma_x``
(:func:`slope_name`). Penalized splines ``s(x)`` are ``sx_1`` (``d_sx_1``): sites
``sds_sx_1`` (the wiggliness sd), ``s_sx_1`` (basis coefficients), ``zs_sx_1``.
"""

from __future__ import annotations

__all__ = ["MU", "intercept_site", "b_site", "slope_name", "group_site", "group_column", "smooth_name"]

MU = "mu"


def intercept_site(dpar: str) -> str:
    """The intercept on the data's scale: ``Intercept`` or ``sigma_Intercept``."""
    return "Intercept" if dpar == MU else f"{dpar}_Intercept"


def b_site(dpar: str) -> str:
    """The slope vector: ``b`` or ``b_sigma``."""
    return "b" if dpar == MU else f"b_{dpar}"


def slope_name(dpar: str, column: str) -> str:
    """A slope's prior key: ``x`` or ``b_sigma_x``."""
    return column if dpar == MU else f"b_{dpar}_{column}"


def group_site(grouping: str, dpar: str) -> str:
    """The suffix of a group term's sites (``sd_``, ``r_``, ``z_``, ``L_``, ``cor_``): ``g`` or ``g__sigma``."""
    return grouping if dpar == MU else f"{grouping}__{dpar}"


def group_column(dpar: str, column: str) -> str:
    """A group term column's label in prior keys and describe(): ``x`` or ``sigma_x``."""
    return column if dpar == MU else f"{dpar}_{column}"


def smooth_name(dpar: str, variable: str) -> str:
    """brms' name of ``s(variable)``: ``sx_1`` or ``sigma_sx_1``."""
    name = f"s{variable}_1"
    return name if dpar == MU else f"{dpar}_{name}"
