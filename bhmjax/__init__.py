"""bhmjax: Bayesian hierarchical models on JAX and NumPyro."""

from bhmjax._src.devices import default_host_device_count as _default_host_device_count
from bhmjax._src.devices import set_host_device_count

set_host_device_count(_default_host_device_count())

from bhmjax._src.cache import compilation_cache_dir  # noqa: E402
from bhmjax._src.cache import default_cache_dir as _default_cache_dir  # noqa: E402
from bhmjax._src.cache import set_compilation_cache  # noqa: E402

set_compilation_cache(_default_cache_dir())

from bhmjax._src.data import GroupEncoding  # noqa: E402
from bhmjax._src.data import encode_groups  # noqa: E402
from bhmjax._src.diagnostics import bfmi  # noqa: E402
from bhmjax._src.engine import set_compile_options  # noqa: E402
from bhmjax._src.diagnostics import ess  # noqa: E402
from bhmjax._src.diagnostics import hdi  # noqa: E402
from bhmjax._src.diagnostics import mcse  # noqa: E402
from bhmjax._src.diagnostics import rhat  # noqa: E402
from bhmjax._src.marginal import GroupBasis  # noqa: E402
from bhmjax._src.marginal import MarginalNormalGroups  # noqa: E402
from bhmjax._src.marginal import group_basis  # noqa: E402
from bhmjax.batch import FitCollection  # noqa: E402
from bhmjax.comparison import compare  # noqa: E402
from bhmjax.batch import fit_many  # noqa: E402
from bhmjax.diagnose import DiagnosticReport  # noqa: E402
from bhmjax.fit import Fit  # noqa: E402
from bhmjax.io import FitFileError  # noqa: E402
from bhmjax.io import load  # noqa: E402
from bhmjax.marginal import marginal_effects  # noqa: E402
from bhmjax.model import Model  # noqa: E402
from bhmjax.predict import Prediction  # noqa: E402
from bhmjax.predict import prior_predictive  # noqa: E402
from bhmjax.sampler import resume  # noqa: E402
from bhmjax.sampler import sample  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "DiagnosticReport",
    "Fit",
    "FitFileError",
    "FitCollection",
    "GroupBasis",
    "GroupEncoding",
    "MarginalNormalGroups",
    "Model",
    "Prediction",
    "bfmi",
    "compare",
    "compilation_cache_dir",
    "encode_groups",
    "fit_many",
    "group_basis",
    "ess",
    "hdi",
    "load",
    "marginal_effects",
    "mcse",
    "prior_predictive",
    "rhat",
    "resume",
    "sample",
    "set_compilation_cache",
    "set_compile_options",
    "set_host_device_count",
]
