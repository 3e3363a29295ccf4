"""Reference posteriors for the radon and pilots tests (``tests/data/references.json``).

Run from the repository root (a few minutes on one CPU core)::

    python -m tests.data.make_references [path/to/posteriordb]

How they are made, independently of bhmjax's model builder, sampler and diagnostics:

* the models are written here by hand in NumPyro, non-centered, with the priors that
  ``bj.Model`` documents as its defaults (``bhmjax/_src/priors.py``): Intercept
  ``StudentT(3, mean(y), 2.5 s_y)`` for centred predictors, slopes ``Normal(0, 2.5 s_y /
  s_x)``, sigma and each group sd ``HalfStudentT(3, 2.5 s_y / s_z)`` (``s_z`` = 1 for the
  intercept column), LKJ(2) on the correlation; ``s`` are population sds (ddof=0);
* they are sampled by NumPyro's own ``MCMC(NUTS)`` (Stan's windowed adaptation, float64),
  4 chains x 2,000 warmup x 5,000 draws (pilots: 10,000 draws, target_accept 0.99);
* means, sds and their Monte Carlo standard errors come from ArviZ's ``summary``.

A test then asks ``|mean_bhmjax - mean_ref| / sqrt(mcse_bhmjax^2 + mcse_ref^2) < 4`` (and
the same for sds) of every scalar, group effects included; the names are bhmjax's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import arviz as az  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

OUT = Path(__file__).resolve().parent / "references.json"
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "posteriordb"


def half_t(scale):
    return dist.FoldedDistribution(dist.StudentT(3.0, 0.0, scale))


def radon_model(floor, county, y, num_counties):
    """log_radon ~ 1 + floor_measure + (1 + floor_measure | county), non-centered."""
    s_y, s_x = np.std(y), np.std(floor)
    b = numpyro.sample("b", dist.Normal(0.0, 2.5 * s_y / s_x))
    a_c = numpyro.sample("Intercept_c", dist.StudentT(3.0, np.mean(y), 2.5 * s_y))
    numpyro.deterministic("Intercept", a_c - np.mean(floor) * b)
    sd = jnp.stack([numpyro.sample("sd_int", half_t(2.5 * s_y)), numpyro.sample("sd_slope", half_t(2.5 * s_y / s_x))])
    chol = numpyro.sample("L", dist.LKJCholesky(2, 2.0))
    numpyro.deterministic("cor", (chol @ chol.T)[1, 0])
    z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand((num_counties, 2)).to_event(2))
    r = numpyro.deterministic("r", z @ (sd[:, None] * chol).T)
    sigma = numpyro.sample("sigma", half_t(2.5 * s_y))
    eta = a_c + (floor - np.mean(floor)) * b + r[county, 0] + r[county, 1] * floor
    numpyro.sample("y", dist.Normal(eta, sigma), obs=y)


def pilots_model(group, scenario, y, num_groups, num_scenarios):
    """y ~ 1 + (1 | group_id) + (1 | scenario_id), non-centered."""
    s_y = np.std(y)
    a = numpyro.sample("Intercept", dist.StudentT(3.0, np.mean(y), 2.5 * s_y))
    sigma = numpyro.sample("sigma", half_t(2.5 * s_y))
    sd_g = numpyro.sample("sd_g", half_t(2.5 * s_y))
    sd_s = numpyro.sample("sd_s", half_t(2.5 * s_y))
    r_g = numpyro.deterministic("r_g", sd_g * numpyro.sample("z_g", dist.Normal(0, 1).expand((num_groups,))))
    r_s = numpyro.deterministic("r_s", sd_s * numpyro.sample("z_s", dist.Normal(0, 1).expand((num_scenarios,))))
    numpyro.sample("y", dist.Normal(a + r_g[group] + r_s[scenario], sigma), obs=y)


def run(model, data, *, draws, target_accept, seed):
    mcmc = MCMC(NUTS(model, target_accept_prob=target_accept), num_warmup=2000, num_samples=draws,
                num_chains=4, chain_method="sequential", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), **data)
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    divergences = int(np.asarray(mcmc.get_extra_fields(group_by_chain=True)["diverging"]).sum())
    return samples, divergences


def table(columns: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """name -> mean, sd, mcse_mean, mcse_sd, ess_bulk, r_hat (ArviZ) of (chain, draw) arrays."""
    summary = az.summary(az.convert_to_inference_data({k: v for k, v in columns.items()}), round_to="none")
    out = {}
    for name in columns:
        row = summary.loc[name]
        out[name] = {k: float(row[k]) for k in ("mean", "sd", "mcse_mean", "mcse_sd", "ess_bulk", "r_hat")}
    return out


def radon(folder: Path) -> dict:
    d = json.loads((folder / "radon_mn.json").read_text())
    county_idx = np.asarray(d["county_idx"])
    labels = np.unique(county_idx)
    data = {"floor": np.asarray(d["floor_measure"], float), "county": np.searchsorted(labels, county_idx),
            "y": np.asarray(d["log_radon"], float), "num_counties": len(labels)}
    s, divergences = run(radon_model, data, draws=5000, target_accept=0.9, seed=1)
    columns = {"Intercept": s["Intercept"], "b[floor_measure]": s["b"], "sigma": s["sigma"],
               "sd_county[Intercept]": s["sd_int"], "sd_county[floor_measure]": s["sd_slope"],
               "cor_county[Intercept, floor_measure]": s["cor"]}
    for j, label in enumerate(labels):
        columns[f"r_county[{label}, Intercept]"] = s["r"][:, :, j, 0]
        columns[f"r_county[{label}, floor_measure]"] = s["r"][:, :, j, 1]
    return {"formula": "log_radon ~ 1 + floor_measure + (1 + floor_measure | county)",
            "divergences": divergences, "draws": "4 x 5000 after 2000 warmup, target_accept 0.9",
            "parameters": table(columns)}


def pilots(folder: Path) -> dict:
    d = json.loads((folder / "pilots.json").read_text())
    g_labels, s_labels = np.unique(d["group_id"]), np.unique(d["scenario_id"])
    data = {"group": np.searchsorted(g_labels, d["group_id"]), "scenario": np.searchsorted(s_labels, d["scenario_id"]),
            "y": np.asarray(d["y"], float), "num_groups": len(g_labels), "num_scenarios": len(s_labels)}
    s, divergences = run(pilots_model, data, draws=10000, target_accept=0.99, seed=2)
    columns = {"Intercept": s["Intercept"], "sigma": s["sigma"], "sd_group_id[Intercept]": s["sd_g"],
               "sd_scenario_id[Intercept]": s["sd_s"]}
    columns.update({f"r_group_id[{label}, Intercept]": s["r_g"][:, :, j] for j, label in enumerate(g_labels)})
    columns.update({f"r_scenario_id[{label}, Intercept]": s["r_s"][:, :, j] for j, label in enumerate(s_labels)})
    return {"formula": "y ~ 1 + (1 | group_id) + (1 | scenario_id)", "divergences": divergences,
            "draws": "4 x 10000 after 2000 warmup, target_accept 0.99", "parameters": table(columns)}


def main(folder: Path = DEFAULT_DATA) -> None:
    out = {"made_by": "python -m tests.data.make_references (hand-written NumPyro models, NumPyro NUTS)",
           "numpyro": numpyro.__version__, "jax": jax.__version__,
           "radon_mn": radon(folder), "pilots": pilots(folder)}
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    for name in ("radon_mn", "pilots"):
        worst = max(v["r_hat"] for v in out[name]["parameters"].values())
        print(f"{name}: {len(out[name]['parameters'])} parameters, max r_hat {worst:.4f}, "
              f"{out[name]['divergences']} divergences")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DATA)
