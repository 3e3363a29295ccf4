"""Statistical assertions tied to Monte Carlo error, shared by the tests."""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

import bhmjax as bj


def mcse_z(draws: np.ndarray, truth: float | np.ndarray) -> np.ndarray:
    """|posterior mean - truth| / MCSE of the mean, per scalar; draws (chain, draw, ...)."""
    mean = draws.mean(axis=(0, 1))
    return np.abs(mean - truth) / np.asarray(bj.mcse(draws))


def agreement_z(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|mean_a - mean_b| / sqrt(mcse_a^2 + mcse_b^2) for two independent fits."""
    diff = a.mean(axis=(0, 1)) - b.mean(axis=(0, 1))
    return np.abs(diff) / np.sqrt(np.asarray(bj.mcse(a)) ** 2 + np.asarray(bj.mcse(b)) ** 2)


def assert_converged(fit, rhat_max: float = 1.01, ess_min: float = 100.0) -> None:
    """R-hat and bulk ESS of every parameter are fine before any posterior check."""
    table = fit.summary(round_to="none")
    assert table["r_hat"].max() < rhat_max, table.sort_values("r_hat").tail()
    assert table["ess_bulk"].min() > ess_min, table.sort_values("ess_bulk").head()


def sbc_rank(draws: np.ndarray, truth: float, num_draws: int, thin: int = 4) -> int:
    """Rank of ``truth`` among the first ``num_draws`` thinned draws (chains concatenated), 0..num_draws.

    ``draws`` has shape (chains, draws); ``num_draws + 1`` should be a multiple of the bins
    :func:`uniform_p` uses.
    """
    kept = np.asarray(draws)[:, ::thin].reshape(-1)
    if kept.size < num_draws:
        raise ValueError(f"{kept.size} thinned draws, fewer than num_draws={num_draws}")
    return int(np.sum(kept[:num_draws] < truth))


def uniform_p(ranks: np.ndarray, num_draws: int, bins: int = 10) -> float:
    """Chi-square p-value of SBC ranks 0..num_draws being uniform; every bin holds the
    same number of integer ranks (uneven bins make uniform ranks look skewed)."""
    values = num_draws + 1
    if values % bins:
        raise ValueError(f"{bins} bins cannot split the {values} integer ranks evenly")
    counts = np.bincount(np.asarray(ranks), minlength=values).reshape(bins, values // bins).sum(axis=1)
    return float(sps.chisquare(counts).pvalue)
