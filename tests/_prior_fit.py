"""A Fit whose draws are prior draws of every site: predictions without sampling (shared by tests)."""

import numpy as np

import bhmjax as bj


def prior_fit(model: bj.Model, draws: int = 40, seed: int = 0) -> bj.Fit:
    """Two identical "chains" of ``draws`` prior draws of every site of ``model``."""
    prior = bj.prior_predictive(model, draws=draws, seed=seed)
    d = {k: np.concatenate([v, v]) for k, v in prior.items() if k != "y"}
    return bj.Fit(draws=d, stats={"diverging": np.zeros((2, draws), bool)}, timings={}, num_grad_evals={},
                  settings={}, spec=model.spec, data=model.model_data(), model=model.numpyro_model)
