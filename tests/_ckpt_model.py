"""A model importable by name, for the crash-and-resume tests (run in a child process)."""

import sys

import numpy as np
import numpyro
import numpyro.distributions as dist

SETTINGS = dict(chains=2, warmup=200, draws=3000, seed=7, every=50, chain_method="sequential",
                progress=False)
LONG_WARMUP = dict(SETTINGS, warmup=4000, draws=100)  # a run killed while it is still warming up


def model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    numpyro.sample("y", dist.StudentT(4.0, mu, sigma), obs=y)


def data():
    return {"y": np.random.default_rng(3).standard_t(4, size=200)}


if __name__ == "__main__":  # python -m tests._ckpt_model FOLDER [warmup]: sample with checkpoints
    import bhmjax as bj
    from tests._ckpt_model import data as named_data  # the importable names, not __main__'s
    from tests._ckpt_model import model as named_model

    settings = LONG_WARMUP if sys.argv[2:] == ["warmup"] else SETTINGS
    bj.sample(named_model, named_data(), checkpoint=sys.argv[1], **settings)
