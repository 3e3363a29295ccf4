"""Where sampling time goes: raw gradient vs NUTS per gradient, ESS per gradient, repeat runs.

Per model, for bhmjax (``bj.sample`` / ``bj.Model.fit``, with the exact data reduction
where it applies) and for NumPyro's ``MCMC`` on the row-level model, in one run:

* raw gradient ms: one jitted ``value_and_grad`` of the potential (the floor);
* NUTS ms per gradient: sampling seconds / sampling gradient evaluations, and its
  ratio to the raw gradient (what sits between them);
* ESS per 1,000 gradients (min bulk ESS over parameters, ``benchmarks.common.ess_stats``);
* ESS/s on sampling alone and on total wall time (compile included);
* first-run and repeat-run wall seconds of eight schools in fresh processes (the
  persistent compilation cache at work);
* posterior agreement: each row's means of the hyperparameters against the bhmjax row's,
  in units of their joint Monte Carlo standard error.

PyMC and nutpie rows (same fields, same ESS function over the same sites; models in
``benchmarks/peers.py``, chains one after another like the others) are added when they are
installed (the ``peers`` extra); otherwise their rows say "not installed". Their gradient
counts are the summed ``n_steps`` of warmup and sampling draws; raw gradient ms is PyMC's
compiled logp+gradient called from Python (as its NUTS calls it) and nutpie's numba
function called in a numba loop (as its Rust sampler calls it).

Run: python -m benchmarks.speed [--quick] [--large-iterations N] [--out benchmarks/results/speed_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
from numpyro.infer import MCMC, NUTS
from numpyro.infer.util import initialize_model

import bhmjax as bj
from bhmjax._src.marginalize import marginal_structure
from bhmjax._src.models import build_model

from . import peers
from .common import DATA_DIR, REPO, ess_stats, machine, save_json
from .overhead import eight_schools_ncp

LATENT_SKIP = ("z_", "L_", "Intercept_c")


def raw_gradient_ms(model, data: dict, repeats: int = 500) -> float:
    """ms of one value_and_grad of the potential: ``repeats`` evaluations in one jitted loop.

    The loop (each step nudges the point by the gradient, so nothing is hoisted)
    keeps Python dispatch out of the figure: it is the floor a sampler can reach.
    """
    info = initialize_model(jax.random.PRNGKey(0), model, dynamic_args=True, model_kwargs=data)
    arrays = {k: v for k, v in data.items() if isinstance(v, np.ndarray)}
    static = {k: v for k, v in data.items() if k not in arrays}

    @jax.jit
    def many(z, arrays):
        value_and_grad = jax.value_and_grad(info.potential_fn(**arrays, **static))

        def body(_, carry):
            z, total = carry
            value, grad = value_and_grad(z)
            return jax.tree.map(lambda a, g: a - 1e-9 * g, z, grad), total + value

        return jax.lax.fori_loop(0, repeats, body, (z, 0.0))

    z = info.param_info.z
    jax.block_until_ready(many(z, arrays))
    t0 = time.perf_counter()
    jax.block_until_ready(many(z, arrays))
    return 1000 * (time.perf_counter() - t0) / repeats


def comparable(draws: dict) -> dict:
    return {k: v for k, v in draws.items() if not k.startswith(LATENT_SKIP)}


def posterior_summary(draws: dict) -> dict[str, list[float]]:
    """[mean, sd, MCSE of the mean] of each scalar of the comparable sites but the group effects
    ``r_*`` and the diagonal and lower triangle of correlation matrices (MCSE = sd / sqrt(bulk ESS))."""
    out = {}
    for site, v in comparable(draws).items():
        if site.startswith("r_"):
            continue
        v = np.asarray(v, np.float64)
        x = v.reshape(v.shape[0], v.shape[1], -1)
        ess = np.asarray(bj.ess(x, method="bulk"))
        for j in range(x.shape[-1]):
            index = np.unravel_index(j, v.shape[2:])
            if site.startswith("cor_") and len(index) == 2 and index[0] >= index[1]:
                continue  # a correlation matrix's unit diagonal and its mirror image
            sd = float(x[..., j].std())
            if not sd > 0:
                continue
            label = site if v.ndim == 2 else f"{site}[{','.join(map(str, index))}]"
            out[label] = [float(x[..., j].mean()), sd, sd / float(np.sqrt(ess[j]))]
    return out


def agreement(rows: list[dict], reference: str = "bhmjax") -> None:
    """Add ``vs_<reference>`` to each row: the largest |difference of means| / joint MCSE and the
    largest relative difference of posterior sds over the scalars both rows summarise."""
    ref = next((r for r in rows if r.get("sampler") == reference and "posterior" in r), None)
    if ref is None:
        return
    for r in rows:
        if r is ref or "posterior" not in r:
            continue
        # theta_* (centered group coefficients) is on bhmjax's standardized sampler scale, a twin's on the data's
        shared = [k for k in r["posterior"] if k in ref["posterior"] and not k.startswith("theta_")]
        if not shared:
            continue
        z = {k: abs(r["posterior"][k][0] - ref["posterior"][k][0])
             / np.hypot(r["posterior"][k][2], ref["posterior"][k][2]) for k in shared}
        sd = {k: abs(r["posterior"][k][1] / ref["posterior"][k][1] - 1) for k in shared}
        worst = max(z, key=z.get)
        r[f"vs_{reference}"] = {"scalars": len(shared), "max_abs_z_mean": z[worst], "worst": worst,
                                "max_rel_diff_sd": max(sd.values())}
        print(f"{r['model']:28s} {r['sampler']:16s} vs {reference}: max |mean diff| / MCSE {z[worst]:.2f} "
              f"({worst}), max sd rel. diff {max(sd.values()):.3f} over {len(shared)} scalars", flush=True)


def _fmt(value, spec: str) -> str:
    return "   n/a" if value is None else format(value, spec)


def row(name: str, who: str, draws: dict, wall: float, sampling_s: float, grads: dict,
        raw_ms: float | None) -> dict:
    ess = ess_stats(comparable(draws))["min_ess_bulk"]
    per_grad = 1000 * sampling_s / max(grads["sampling"], 1)
    out = {"model": name, "sampler": who, "status": "ok", "raw_gradient_ms": raw_ms,
           "nuts_ms_per_gradient": per_grad, "nuts_over_raw": None if not raw_ms else per_grad / raw_ms,
           "warmup_gradients": grads["warmup"], "sampling_gradients": grads["sampling"], "min_ess_bulk": ess,
           "ess_per_1000_gradients": 1000 * ess / max(grads["sampling"], 1),
           "ess_per_s_sampling": ess / sampling_s, "ess_per_s_total": ess / wall, "wall_s": wall,
           "sites": sorted(comparable(draws)), "posterior": posterior_summary(draws)}
    print(f"{name:28s} {who:16s} raw {_fmt(raw_ms, '7.3f')} ms  NUTS {per_grad:7.3f} ms/grad "
          f"(x{_fmt(out['nuts_over_raw'], '.2f')})  ESS/1k grads {out['ess_per_1000_gradients']:6.1f}  "
          f"ESS/s {out['ess_per_s_sampling']:8.1f} (total {out['ess_per_s_total']:7.1f})  "
          f"warmup grads {grads['warmup']}  wall {wall:.1f} s", flush=True)
    return out


def peer_rows(name: str, build, sites, chains: int, warmup: int, draws: int,
              which=peers.PEERS, suffix: str = "") -> list[dict]:
    """PyMC and nutpie rows of one model (``build()`` makes the PyMC model), or their status;
    each row's sampler is labelled with ``suffix`` (" centered": the centered twin)."""
    out, have = [], peers.available()
    settings = {"chains": chains, "warmup": warmup, "draws": draws, "seed": 0}
    for sampler in which:
        if have[sampler] == "not installed" or have[sampler].startswith("broken"):
            print(f"{name:28s} {sampler:16s} {have[sampler]}", flush=True)
            out.append({"model": name, "sampler": sampler, "status": have[sampler]})
            continue
        try:
            res = peers.sample_peer(sampler, build(), settings, sites)
        except Exception as err:  # noqa: BLE001 - a failed peer is recorded, the run goes on
            print(f"{name:28s} {sampler:16s} error: {type(err).__name__}: {err}", flush=True)
            out.append({"model": name, "sampler": sampler, "status": "error",
                        "error": f"{type(err).__name__}: {err}"})
            continue
        out.append({**row(name, sampler + suffix, res["draws"], res["wall_s"], res["timings"]["sampling"],
                          res["gradients"], res["raw_gradient_ms"]),
                    "version": have[sampler], "divergences": res["divergences"], "timings": res["timings"]})
    return out


def run_numpyro(name, model, data, chains, warmup, draws, raw_ms) -> dict:
    t0 = time.perf_counter()
    mcmc = MCMC(NUTS(model), num_warmup=warmup, num_samples=draws, num_chains=chains,
                chain_method="sequential", progress_bar=False)
    mcmc.warmup(jax.random.PRNGKey(0), **data, extra_fields=("num_steps",), collect_warmup=True)
    warm_grads = int(np.sum(mcmc.get_extra_fields()["num_steps"]))
    t1 = time.perf_counter()
    mcmc.run(mcmc.post_warmup_state.rng_key, **data, extra_fields=("num_steps",))
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    t2 = time.perf_counter()
    grads = {"warmup": warm_grads, "sampling": int(np.sum(mcmc.get_extra_fields()["num_steps"]))}
    return row(name, "numpyro MCMC", samples, t2 - t0, t2 - t1, grads, raw_ms)


def run_bhmjax(name, fit_fn, raw_ms, who: str = "bhmjax") -> dict:
    t0 = time.perf_counter()
    fit = fit_fn()
    wall = time.perf_counter() - t0
    return row(name, who, fit.draws, wall, fit.timings["sampling"], fit.num_grad_evals, raw_ms)


def varying_slopes(num_groups: int, num_rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, num_groups, num_rows)
    x = rng.normal(size=num_rows)
    a, b = rng.normal(0, 1, num_groups), rng.normal(0, 0.5, num_groups)
    y = 1.0 + a[g] + (0.5 + b[g]) * x + rng.normal(0, 1.0, num_rows)
    return pd.DataFrame({"y": y, "x": x, "g": g})


FORMULA = "y ~ 1 + x + (1 + x | g)"


SAMPLERS = ("numpyro MCMC", "bhmjax", "bhmjax reduced", "bhmjax reduced centered", "bhmjax marginalized", "pymc",
            "nutpie", "nutpie centered")


def formula_case(name, frame, chains, warmup, draws, samplers=SAMPLERS) -> list[dict]:
    """The varying-slopes model, non-centered for every sampler (the issue's setting), plus
    bhmjax reduced and centered: the better fixed form where groups have many rows, and
    bhmjax with the group effects integrated out (``marginalize=True``, the default for
    gaussian models); their posteriors checked against the first of bhmjax, bhmjax reduced and
    bhmjax reduced centered that ran (``vs_<row>``)."""
    model = bj.Model(FORMULA, frame, parameterization="noncentered")
    centered = bj.Model(FORMULA, frame, parameterization="centered")  # bhmjax's and the peers' centered rows
    rows_data = model.model_data()
    reduced = model.reduced_data(rows_data)
    out = []
    settings = dict(chains=chains, warmup=warmup, draws=draws, seed=0, progress=False, chain_method="sequential")
    raw_rows = raw_gradient_ms(model.numpyro_model, rows_data)
    if "numpyro MCMC" in samplers:
        out.append(run_numpyro(name, model.numpyro_model, rows_data, chains, warmup, draws, raw_rows))
    if "bhmjax" in samplers:
        out.append(run_bhmjax(name, lambda: model.fit(reduce=False, marginalize=False, **settings), raw_rows))
    if reduced is not None:
        raw_reduced = raw_gradient_ms(model.numpyro_model, reduced)
        if "bhmjax reduced" in samplers:
            out.append(run_bhmjax(name, lambda: model.fit(marginalize=False, **settings), raw_reduced,
                                  "bhmjax reduced"))
            out[-1]["pseudo_rows"] = reduced["N"]
        if "bhmjax reduced centered" in samplers:
            raw_centered = raw_gradient_ms(centered.numpyro_model, centered.reduced_data())
            out.append(run_bhmjax(name, lambda: centered.fit(marginalize=False, **settings), raw_centered,
                                  "bhmjax reduced centered"))
    if "bhmjax marginalized" in samplers:
        marginal, _ = model.sampling_data(marginalize=True)
        raw_marginal = raw_gradient_ms(build_model(marginal_structure(model.spec.structure, "g")), marginal)
        out.append(run_bhmjax(name, lambda: model.fit(marginalize=True, **settings), raw_marginal,
                              "bhmjax marginalized"))
    sites = next((r["sites"] for r in out if r["sampler"] == "bhmjax reduced"), None) or out[0]["sites"]
    out += peer_rows(name, lambda: peers.pymc_formula_model(model), sites, chains, warmup, draws,
                     [p for p in peers.PEERS if p in samplers])
    centered_peers = [p for p in peers.PEERS if f"{p} centered" in samplers]
    if centered_peers:  # the better form where groups have many rows, for the peers too
        out += peer_rows(name, lambda: peers.pymc_formula_model(centered), sites, chains, warmup, draws,
                         centered_peers, suffix=" centered")
    present = {r["sampler"] for r in out}
    agreement(out, next((who for who in ("bhmjax", "bhmjax reduced", "bhmjax reduced centered") if who in present),
                        "bhmjax"))
    return out


def repeat_runs() -> dict:
    """Wall seconds of two fresh processes fitting eight schools with an empty cache dir."""
    script = ("import sys, json, numpy as np, bhmjax as bj; sys.path.insert(0, '.');"
              "from benchmarks.overhead import eight_schools_ncp as m;"
              f"d = json.load(open({str(DATA_DIR / 'eight_schools.json')!r}));"
              "bj.sample(m, {'y': np.array(d['y'], np.float32), 'sigma': np.array(d['sigma'], np.float32)},"
              " progress=False)")
    times = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "BHMJAX_CACHE_DIR": cache}
        for _ in range(2):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, check=True)
            times.append(time.perf_counter() - t0)
    print(f"eight schools in a new process: first {times[0]:.1f} s, repeat {times[1]:.1f} s", flush=True)
    return {"first_run_s": times[0], "repeat_run_s": times[1]}


PEER_SCRIPTS = {  # eight schools, 4 chains x 1,000 + 1,000, each peer's default cores and init
    "pymc": ("import pymc as pm;"
             "with model: pm.sample(draws=1000, tune=1000, chains=4, progressbar=False,"
             " compute_convergence_checks=False)"),
    "nutpie": ("import nutpie;"
               "nutpie.sample(nutpie.compile_pymc_model(model), draws=1000, tune=1000, chains=4,"
               " progress_bar=False)"),
}


def peer_repeat_runs() -> dict:
    """As :func:`repeat_runs` for PyMC and nutpie: two fresh processes sharing an empty
    PyTensor compile dir (PyMC's C modules; numba's cache there too)."""
    out, have = {}, peers.available()
    for sampler, fit in PEER_SCRIPTS.items():
        if have[sampler] == "not installed" or have[sampler].startswith("broken"):
            out[sampler] = {"status": have[sampler]}
            continue
        script = ("import sys, json, numpy as np; sys.path.insert(0, '.');"
                  "from benchmarks.peers import pymc_model;"
                  f"d = json.load(open({str(DATA_DIR / 'eight_schools.json')!r}));"
                  "model = pymc_model('eight_schools_ncp', {'y': np.array(d['y'], float),"
                  " 'sigma': np.array(d['sigma'], float)})\n" + fit.replace(";", "\n"))
        times = []
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={cache}",
                   "NUMBA_CACHE_DIR": os.path.join(cache, "numba")}
            try:
                for _ in range(2):
                    t0 = time.perf_counter()
                    subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, check=True,
                                   capture_output=True, text=True)
                    times.append(time.perf_counter() - t0)
            except subprocess.CalledProcessError as err:
                out[sampler] = {"status": "error", "error": err.stderr[-2000:]}
                print(f"eight schools in a new process, {sampler}: error\n{err.stderr[-2000:]}", flush=True)
                continue
        out[sampler] = {"status": "ok", "first_run_s": times[0], "repeat_run_s": times[1]}
        print(f"eight schools in a new process, {sampler}: first {times[0]:.1f} s, repeat {times[1]:.1f} s",
              flush=True)
    return out


def tree_state() -> list[str]:
    """Uncommitted changes under bhmjax/ when the run started (the commit alone may not say what ran)."""
    try:
        return subprocess.run(["git", "status", "--porcelain", "--", "bhmjax"], cwd=REPO, capture_output=True,
                              text=True, check=False).stdout.splitlines()
    except OSError:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller large model and fewer draws")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/speed_cpu.json"))
    parser.add_argument("--large-iterations", type=int, default=None, metavar="N",
                        help="warmup = draws = N for the large model only, every sampler (caps the run time)")
    parser.add_argument("--models", default="eight_schools,small,large,repeat",
                        help="comma-separated subset of eight_schools, small, large, repeat")
    parser.add_argument("--samplers", default=",".join(SAMPLERS),
                        help="formula models only: comma-separated subset of " + ", ".join(SAMPLERS))
    args = parser.parse_args()
    chains = 4
    warmup = draws = 500 if args.quick else 1000
    large_iters = args.large_iterations or warmup
    large = (500, 25_000) if args.quick else (2000, 100_000)
    results = {"machine": machine(), "bhmjax_uncommitted": tree_state(),
               "settings": {"chains": chains, "warmup": warmup, "draws": draws, "chain_method": "sequential",
                            "peers": "cores=1 (chains one after another)",
                            "large_model": {"groups": large[0], "rows": large[1], "warmup": large_iters,
                                            "draws": large_iters}},
               "peers": peers.versions(), "rows": []}
    models, samplers = args.models.split(","), args.samplers.split(",")
    if "eight_schools" in models:
        raw = json.loads((DATA_DIR / "eight_schools.json").read_text())
        schools = {"y": np.asarray(raw["y"], np.float32), "sigma": np.asarray(raw["sigma"], np.float32)}
        raw_ms = raw_gradient_ms(eight_schools_ncp, schools)
        results["rows"].append(run_numpyro("eight_schools_ncp", eight_schools_ncp, schools, chains, warmup, draws,
                                           raw_ms))
        results["rows"].append(run_bhmjax("eight_schools_ncp", lambda: bj.sample(
            eight_schools_ncp, schools, chains=chains, warmup=warmup, draws=draws, progress=False,
            chain_method="sequential"), raw_ms))
        schools64 = {k: v.astype(np.float64) for k, v in schools.items()}
        results["rows"] += peer_rows("eight_schools_ncp", lambda: peers.pymc_model("eight_schools_ncp", schools64),
                                     results["rows"][1]["sites"], chains, warmup, draws)
        agreement(results["rows"])
        save_json(results, args.out)  # after each model: a long run keeps what it has
    if "small" in models:
        results["rows"] += formula_case("slopes_G50_N1000", varying_slopes(50, 1000), chains, warmup, draws,
                                        samplers)
        save_json(results, args.out)
    if "large" in models:
        results["rows"] += formula_case(f"slopes_G{large[0]}_N{large[1]}", varying_slopes(*large), chains,
                                        large_iters, large_iters, samplers)
        save_json(results, args.out)
    if "repeat" in models:
        results["repeat_runs"] = repeat_runs()
        results["peer_repeat_runs"] = peer_repeat_runs()
        save_json(results, args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
