"""An anytime-valid sequential test: do bad events land on the candidate more than its
traffic share says they should?

Pure math, no I/O. Given the candidate's share of requests ``rho`` (measured) and the
bad events on candidate and baseline since the step began, the share of bad events that
falls on the candidate is, if the candidate is no worse than the baseline by more than
the non-inferiority ``margin``, at most

    rho0 = rho (1 + margin) / (rho (1 + margin) + 1 - rho).

The e-value mixes the binomial likelihood of that share over a Beta prior restricted to
shares above ``rho0`` and divides by the likelihood at ``rho0`` (Lindon & Malek, 2022,
for multinomial counts). Under the null it is a nonnegative supermartingale whatever the
true share below ``rho0`` is, so it may be looked at after every evaluation: the chance
that it ever reaches ``1 / alpha`` is at most ``alpha`` (Ville's inequality). Only counts
are needed, i.e. Prometheus ``increase()`` of two counters per side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PRIOR_CONCENTRATION = 10.0  # prior Beta(c * rho0, c * (1 - rho0)), truncated to (rho0, 1)
_CF_ITERATIONS = 10_000
_CF_EPSILON = 1e-14
_TINY = 1e-300


@dataclass(frozen=True)
class SequentialEvidence:
    """The test's numbers for one gate at one evaluation, for people and metrics."""

    e_value: float
    threshold: float  # 1 / alpha
    null_share: float  # rho0: the most the candidate may take of the bad events
    bad_share: float  # the share it took
    confirmed: bool  # e_value >= threshold: the candidate is worse, with confidence


def null_share(rho: float, margin: float) -> float:
    """The candidate's largest share of bad events if it is at most ``margin`` worse."""
    worse = rho * (1.0 + margin)
    return worse / (worse + 1.0 - rho)


def log_e_value(
    bad_candidate: float, bad_baseline: float, rho0: float,
    concentration: float = PRIOR_CONCENTRATION,
) -> float:  # fmt: skip
    """log E for ``bad_candidate`` of ``bad_candidate + bad_baseline`` bad events on the
    candidate, against the null share ``rho0``."""
    if not 0.0 < rho0 < 1.0:
        raise ValueError(f"the null share must be between 0 and 1, got {rho0}")
    a, b = concentration * rho0, concentration * (1.0 - rho0)
    posterior = _log_beta(a + bad_candidate, b + bad_baseline) + _log_upper_tail(
        a + bad_candidate, b + bad_baseline, rho0
    )
    prior = _log_beta(a, b) + _log_upper_tail(a, b, rho0)
    null = bad_candidate * math.log(rho0) + bad_baseline * math.log1p(-rho0)
    return posterior - prior - null


def sequential_test(
    bad_candidate: float, total_candidate: float, bad_baseline: float, total_baseline: float,
    *, margin: float, alpha: float,
) -> SequentialEvidence:  # fmt: skip
    """Test the candidate against the baseline on counts since the step began."""
    if total_candidate <= 0 or total_baseline <= 0:
        raise ValueError("both sides need requests to compare their bad events")
    rho0 = null_share(total_candidate / (total_candidate + total_baseline), margin)
    bad = bad_candidate + bad_baseline
    log_e = log_e_value(bad_candidate, bad_baseline, rho0) if bad > 0 else 0.0
    threshold = 1.0 / alpha
    return SequentialEvidence(
        e_value=math.exp(min(log_e, 700.0)),
        threshold=threshold,
        null_share=rho0,
        bad_share=bad_candidate / bad if bad > 0 else 0.0,
        confirmed=log_e >= math.log(threshold),
    )


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _log_upper_tail(a: float, b: float, x: float) -> float:
    """log(1 - I_x(a, b)): the log of a Beta(a, b) distribution's mass above ``x``."""
    log_front = a * math.log(x) + b * math.log1p(-x) - _log_beta(a, b)
    if x < (a + 1.0) / (a + b + 2.0):
        lower = math.exp(log_front) * _continued_fraction(a, b, x) / a
        return math.log(max(1.0 - lower, _TINY))
    return log_front + math.log(_continued_fraction(b, a, 1.0 - x)) - math.log(b)


def _continued_fraction(a: float, b: float, x: float) -> float:
    """The incomplete beta function's continued fraction, by the modified Lentz method."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    result = d
    for m in range(1, _CF_ITERATIONS + 1):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            result *= d * c
        if abs(d * c - 1.0) < _CF_EPSILON:
            return result
    return result
