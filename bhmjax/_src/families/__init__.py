"""GLM families: link, likelihood, auxiliary parameters, default priors, response checks.

=================================  ========  =================  ============================
family                             link      parameters          response
=================================  ========  =================  ============================
gaussian                           identity  sigma              real
student_t                          identity  sigma, nu          real
lognormal                          identity  sigma              positive
gamma                              log       shape              positive
beta                               logit     phi                in (0, 1)
exponential                        log       -                  positive
weibull                            log       shape              positive
bernoulli                          logit     -                  0/1
binomial                           logit     -                  counts of trials
poisson                            log       -                  counts
negative_binomial                  log       phi                counts
zero_inflated_poisson              log       zi                 counts
zero_inflated_negative_binomial    log       phi, zi            counts
hurdle_poisson                     log       hu                 counts
hurdle_negative_binomial           log       phi, hu            counts
cumulative                         logit     Intercept (K-1)    ordered levels
categorical                        logit     mu<level> (K-1)    levels
=================================  ========  =================  ============================

brms' spellings are accepted too (:data:`ALIASES`). The modules hold the details:
``continuous``, ``counts``, ``categories`` and ``censoring``.
"""

from __future__ import annotations

import difflib

from bhmjax._src.families.base import DPARS, Family, inverse_link
from bhmjax._src.families.categories import CATEGORIES
from bhmjax._src.families.continuous import CONTINUOUS
from bhmjax._src.families.counts import COUNTS

__all__ = ["Family", "FAMILIES", "ALIASES", "DPARS", "get_family", "inverse_link"]

FAMILIES: dict[str, Family] = {f.name: f for f in CONTINUOUS + COUNTS + CATEGORIES}

#: brms' (and common) spellings of the families.
ALIASES = {
    "normal": "gaussian", "student": "student_t", "negbinomial": "negative_binomial",
    "zero_inflated_negbinomial": "zero_inflated_negative_binomial",
    "hurdle_negbinomial": "hurdle_negative_binomial", "logistic": "bernoulli",
}


def get_family(family: str | Family) -> Family:
    """The family named ``family`` (or ``family`` itself); ``ValueError`` listing the known ones."""
    if isinstance(family, Family):
        return family
    if not isinstance(family, str):
        raise TypeError(f"family must be a name such as 'gaussian', got {type(family).__name__}")
    name = ALIASES.get(family, family)
    if name not in FAMILIES:
        hint = difflib.get_close_matches(family, list(FAMILIES) + list(ALIASES), n=1)
        raise ValueError(f"unknown family {family!r}{f' (did you mean {hint[0]!r}?)' if hint else ''}; "
                         f"choose one of {sorted(FAMILIES)}.")
    return FAMILIES[name]
