"""The settings of a run: one frozen, typed config, built and validated once.

:class:`RunConfig` is what runs (the driver reads it), what a checkpoint fingerprints
(:meth:`RunConfig.shaping`: every field that changes the draws) and what
``fit.settings`` shows (:meth:`RunConfig.to_dict`). :func:`build_config` checks user
values on the concrete inputs, before anything compiles, and
:func:`check_keywords` answers a misspelled or foreign keyword argument with the
name this library uses.
"""

from __future__ import annotations

import dataclasses
import difflib
import numbers
import secrets
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from bhmjax._src import adapt

__all__ = ["CHAIN_METHODS", "INIT_STRATEGIES", "SAMPLERS", "RunConfig", "build_config", "check_keywords",
           "positive_int"]

SAMPLERS = ("nuts", "chees")
CHAIN_METHODS = ("auto", "parallel", "vectorized", "sequential")
INIT_STRATEGIES = ("uniform", "median", "feasible", "sample")
DEFAULT_TARGET_ACCEPT = {"nuts": 0.8, "chees": 0.651}  # 0.651: optimal harmonic-mean acceptance of HMC

# Other libraries' names for our arguments (NumPyro, PyMC, Stan, BlackJAX).
ALIASES = {"num_chains": "chains", "n_chains": "chains", "tune": "warmup", "num_warmup": "warmup",
           "n_warmup": "warmup", "iter_warmup": "warmup", "num_samples": "draws", "samples": "draws",
           "n_samples": "draws", "iter_sampling": "draws", "random_seed": "seed", "rng_key": "seed",
           "key": "seed", "thinning": "thin", "num_draws": "draws", "target_accept_prob": "target_accept",
           "adapt_delta": "target_accept", "max_treedepth": "max_tree_depth", "init": "init_strategy",
           "cores": "chain_method"}


def check_keywords(given: Iterable[str], known: Iterable[str], where: str) -> None:
    """Refuse unknown keyword arguments with a ``TypeError`` that suggests our name for them."""
    known = list(known)
    unknown = [k for k in given if k not in known]
    if not unknown:
        return
    hints = []
    for name in unknown:
        match = ALIASES.get(name) if ALIASES.get(name) in known else None
        match = match or next(iter(difflib.get_close_matches(name, known, n=1)), None)
        hints.append(f"{name!r}" + (f" (did you mean {match!r}?)" if match else ""))
    raise TypeError(f"{where} got unexpected keyword argument(s) {', '.join(hints)}; its keyword arguments "
                    f"are {sorted(known)}.")


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int at least ``minimum``: TypeError for non-integers, ValueError below it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def resolve_seed(seed: Any) -> int | tuple[int, int]:
    """An int seed, or a JAX key's two words; None draws a seed from the OS, a numpy Generator one from itself."""
    if seed is None:
        return secrets.randbits(31)
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2**31))
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return positive_int("seed", seed, minimum=0)
    if isinstance(seed, (list, tuple)) and len(seed) == 2 and all(isinstance(w, numbers.Integral) for w in seed):
        seed = np.asarray(seed, np.uint32)  # a key's two words, as to_dict writes them
    import jax

    if isinstance(seed, (jax.Array, np.ndarray)):
        if jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key):
            seed = jax.random.key_data(seed)
        words = np.asarray(seed)
        if words.dtype == np.uint32 and words.shape == (2,):
            return int(words[0]), int(words[1])
        raise ValueError(f"seed as a JAX key must be one threefry key (two uint32 words, "
                         f"jax.random.key(0) or jax.random.PRNGKey(0)); got dtype {words.dtype} and shape "
                         f"{words.shape}.")
    raise TypeError(f"seed must be an int, a JAX PRNG key, a numpy Generator or None, got {type(seed).__name__}")


def seed_key(seed: int | tuple[int, int]) -> np.ndarray:
    """The PRNG key (raw uint32 words, numpy (2,)) of a resolved seed (:func:`resolve_seed`)."""
    from bhmjax._src import keys

    if isinstance(seed, tuple):
        return np.asarray(seed, np.uint32)
    return keys.seed_key(seed)


def _init_strategy(value: Any) -> Any:
    if isinstance(value, str):
        if value not in INIT_STRATEGIES:
            raise ValueError(f"init_strategy must be one of {sorted(INIT_STRATEGIES)}, a NumPyro init function "
                             f"or a dict of values; got {value!r}")
        return value
    if isinstance(value, Mapping):
        if set(value) == {"function"}:  # the description of a function, as a checkpoint stores it
            return dict(value)
        values = value["values"] if set(value) == {"values"} else value
        return {str(k): np.asarray(v) for k, v in values.items()}
    if callable(value):
        return value
    raise TypeError(f"init_strategy must be one of {sorted(INIT_STRATEGIES)}, a NumPyro init function or a dict "
                    f"of values, got {type(value).__name__}")


def _describe_init(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        if set(value) == {"function"}:
            return dict(value)
        return {"values": {k: np.asarray(v).tolist() for k, v in value.items()}}
    return {"function": f"{getattr(value, '__module__', '?')}:{getattr(value, '__qualname__', repr(value))}"}


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a run's draws, and how it is chunked.

    Attributes
    ----------
    sampler : {"nuts", "chees"}
    chains, warmup, draws : int
        Chains, warmup steps per chain and stored draws per chain (after thinning).
    seed : int or (int, int)
        An int seed, or the two words of a JAX key.
    chain_method : {"auto", "parallel", "vectorized", "sequential"}
        As requested; the run records the method it resolved to.
    target_accept : float
        Target acceptance of the step-size adaptation (NUTS 0.8 and ChEES 0.651 by default).
    max_tree_depth : int
    dense_mass : bool
    adaptation : {"hybrid", "nutpie", "stan"}
        Resolved from "auto" (see :mod:`bhmjax._src.adapt`).
    init_strategy : str, dict of arrays, or callable
    thin : int
    keep : tuple of str or None
        Sites to store (None: every latent and deterministic site).
    drop : tuple of str
        Sites never stored.
    x64 : bool
        Sample in float64.
    parameterization : None or str or dict
        How the user layer reparameterizes the model before sampling (None: as written).
    chunk_size : int or None
        Steps per compiled call (None: from ``draws``, ``warmup`` and ``progress``); draws do not depend on it.
    every : int
        Steps between checkpoints; draws do not depend on it.
    """

    sampler: str = "nuts"
    chains: int = 4
    warmup: int = 1000
    draws: int = 1000
    seed: Any = 0
    chain_method: str = "auto"
    target_accept: float = 0.8
    max_tree_depth: int = 10
    dense_mass: bool = False
    adaptation: str = "hybrid"
    init_strategy: Any = "uniform"
    thin: int = 1
    keep: tuple[str, ...] | None = None
    drop: tuple[str, ...] = ()
    x64: bool = False
    parameterization: Any = None
    chunk_size: int | None = None
    every: int = 200

    NOT_SHAPING = ("chunk_size", "every")  # draws do not depend on the chunking

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON values (``fit.settings`` and checkpoints)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["seed"] = list(self.seed) if isinstance(self.seed, tuple) else self.seed
        out["init_strategy"] = _describe_init(self.init_strategy)
        out["keep"] = None if self.keep is None else list(self.keep)
        out["drop"] = list(self.drop)
        if self.parameterization is not None and not isinstance(self.parameterization, str):
            out["parameterization"] = {str(k): np.asarray(v).tolist() if not isinstance(v, str) else v
                                       for k, v in dict(self.parameterization).items()}
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "RunConfig":
        """The config :meth:`to_dict` wrote (unknown keys, e.g. run facts, are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in names}
        return build_config(**kwargs)

    def shaping(self) -> dict[str, Any]:
        """The fields that change the draws, as JSON values (what a checkpoint fingerprints)."""
        return {k: v for k, v in self.to_dict().items() if k not in self.NOT_SHAPING}

    def differences(self, other: Mapping[str, Any]) -> list[str]:
        """The draw-shaping fields whose values differ from ``other`` (a :meth:`shaping` dict)."""
        mine = self.shaping()
        return [k for k in mine if mine[k] != other.get(k)]

    def root_key(self):
        """The run's PRNG key (raw uint32 words)."""
        return seed_key(self.seed)

    def init_fn(self) -> Callable:
        """The NumPyro init strategy."""
        from numpyro import infer

        strategy = self.init_strategy
        if isinstance(strategy, str):
            return getattr(infer, f"init_to_{strategy}")()
        if isinstance(strategy, Mapping):
            if set(strategy) == {"function"}:
                raise ValueError(f"the init strategy {strategy['function']} was a function, which a checkpoint "
                                 "does not store; it is needed only to start a new run.")
            return infer.init_to_value(values=dict(strategy))
        return strategy


def build_config(*, sampler: str = "nuts", chains: int = 4, warmup: int = 1000, draws: int = 1000, seed: Any = 0,
                 chain_method: str = "auto", target_accept: float | None = None, max_tree_depth: int = 10,
                 dense_mass: bool = False, adaptation: str = "auto", init_strategy: Any = "uniform", thin: int = 1,
                 keep: Iterable[str] | None = None, drop: Iterable[str] = (), x64: bool = False,
                 parameterization: Any = None, chunk_size: int | None = None, every: int = 200) -> RunConfig:
    """A validated :class:`RunConfig` from user values (every error names the argument)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be 'nuts' or 'chees', got {sampler!r}")
    chains = positive_int("chains", chains)
    if sampler == "chees" and chains < 2:
        raise ValueError(f"sampler='chees' adapts from the spread between chains, so it needs at least 2 "
                         f"chains (hundreds are typical); got chains={chains}.")
    if chain_method not in CHAIN_METHODS:
        raise ValueError(f"chain_method must be one of {CHAIN_METHODS}, got {chain_method!r}")
    target = DEFAULT_TARGET_ACCEPT[sampler] if target_accept is None else target_accept
    if isinstance(target, bool) or not isinstance(target, numbers.Real):
        raise TypeError(f"target_accept must be a number in (0, 1), got {target!r} ({type(target).__name__})")
    if not 0 < float(target) < 1:
        raise ValueError(f"target_accept must be in (0, 1), got {target}")
    for name, value in (("keep", keep), ("drop", drop)):
        if isinstance(value, str):
            raise TypeError(f"{name} must be a list of site names, got the string {value!r} (use [{value!r}])")
    return RunConfig(
        sampler=sampler, chains=chains, warmup=positive_int("warmup", warmup),
        draws=positive_int("draws", draws), seed=resolve_seed(seed), chain_method=chain_method,
        target_accept=float(target), max_tree_depth=positive_int("max_tree_depth", max_tree_depth),
        dense_mass=bool(dense_mass), adaptation=adapt.resolve_adaptation(adaptation, bool(dense_mass)),
        init_strategy=_init_strategy(init_strategy), thin=positive_int("thin", thin),
        keep=None if keep is None else tuple(keep), drop=tuple(drop), x64=bool(x64),
        parameterization=parameterization,
        chunk_size=None if chunk_size is None else positive_int("chunk_size", chunk_size),
        every=positive_int("every", every))
