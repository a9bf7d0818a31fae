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

Evidence carries over from step to step: each step's e-value is computed at that step's
own traffic share and their product is still a test supermartingale under the null, so
a release is one test, however many steps it has.

The same construction mirrored is the *clearance* test: evidence that the candidate is
*not* ``detect`` times worse (its share of bad events is below the share it would take
if it were). A step passes only once that reaches ``1 / (1 - power)``, so a regression
of ``detect`` times gets past a step with probability at most ``1 - power``: the power
of the gate is guaranteed rather than hoped for. Ratios of near-spotless services say
little (twice zero is zero), so a gate may also give an absolute ``floor``: a regression
that matters is then ``detect`` times worse *and* above the floor, and the clearance
e-value is the mean of the relative one and a one-sample one that the candidate's ratio
is below the floor (a mean of e-values is an e-value).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

PRIOR_CONCENTRATION = 10.0  # prior Beta(c * rho0, c * (1 - rho0)), truncated to (rho0, 1)
_CF_ITERATIONS = 10_000
_CF_EPSILON = 1e-14
_TINY = 1e-300

Counts = tuple[float, float, float, float]  # candidate bad, candidate total, baseline bad, total


@dataclass(frozen=True)
class SequentialEvidence:
    """The test's numbers for one gate at one evaluation, for people and metrics."""

    e_value: float
    threshold: float  # 1 / alpha
    null_share: float  # the share of bad events the tested hypothesis is about
    bad_share: float  # the share the candidate took this step
    confirmed: bool  # e_value >= threshold: worse (regression) or cleared (clearance)


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


def regression_log_e(counts: Counts, margin: float) -> float:
    """log E that the candidate is more than ``margin`` worse, from one step's counts (0
    when a side has no requests or there are no bad events: no evidence either way)."""
    rho = _traffic_share(counts)
    bad_c, _, bad_b, _ = counts
    return log_e_value(bad_c, bad_b, null_share(rho, margin)) if rho is not None else 0.0


def clearance_log_e(counts: Counts, detect: float) -> float:
    """log E that the candidate is *less* than ``detect`` times worse, from one step's
    counts: the regression test with the roles of the two versions swapped."""
    rho = _traffic_share(counts)
    bad_c, _, bad_b, _ = counts
    return (
        log_e_value(bad_b, bad_c, 1.0 - null_share(rho, detect - 1.0)) if rho is not None else 0.0
    )


def _traffic_share(counts: Counts) -> float | None:
    """The candidate's share of requests, or None when the counts cannot tell anything."""
    bad_c, total_c, bad_b, total_b = counts
    if total_c <= 0 or total_b <= 0 or bad_c + bad_b <= 0:
        return None
    return total_c / (total_c + total_b)


def sequential_test(steps: Sequence[Counts], *, margin: float, alpha: float) -> SequentialEvidence:
    """Is the candidate more than ``margin`` worse? On the release's counts, one entry per
    step, the current step last."""
    log_e = sum(regression_log_e(counts, margin) for counts in steps)
    return _evidence(steps, log_e, margin, 1.0 / alpha)


def floor_log_e(bad: float, total: float, floor: float) -> float:
    """log E that a ratio of ``bad`` in ``total`` events is below ``floor`` (one sample)."""
    return log_e_value(total - bad, bad, 1.0 - floor) if total > 0 else 0.0


def clearance_test(
    steps: Sequence[Counts], *, detect: float, power: float, floor: float | None = None
) -> SequentialEvidence:
    """Is the candidate less than ``detect`` times worse (or below ``floor``)?
    ``confirmed`` means cleared."""
    if detect <= 1.0 or not 0.0 < power < 1.0:
        raise ValueError(f"detect must exceed 1 and power lie in (0, 1), got {detect}, {power}")
    log_e = sum(clearance_log_e(counts, detect) for counts in steps)
    if floor is not None:
        bad = sum(counts[0] for counts in steps)
        total = sum(counts[1] for counts in steps)
        log_e = _log_mean_exp(log_e, floor_log_e(bad, total, floor))
    return _evidence(steps, log_e, detect - 1.0, 1.0 / (1.0 - power))


def _log_mean_exp(x: float, y: float) -> float:
    top = max(x, y)
    return top + math.log((math.exp(x - top) + math.exp(y - top)) / 2.0)


def _evidence(
    steps: Sequence[Counts], log_e: float, margin: float, threshold: float
) -> SequentialEvidence:
    if not steps or steps[-1][1] <= 0 or steps[-1][3] <= 0:
        raise ValueError("both sides need requests this step to compare their bad events")
    bad_c, total_c, bad_b, total_b = steps[-1]
    bad = bad_c + bad_b
    return SequentialEvidence(
        e_value=math.exp(min(log_e, 700.0)),
        threshold=threshold,
        null_share=null_share(total_c / (total_c + total_b), margin),
        bad_share=bad_c / bad if bad > 0 else 0.0,
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
