"""Flagger-, Argo-Rollouts- and Kayenta-style judges, after ../shared/PEERS.md.

Each sees the same per-evaluation windows as promgate: the candidate's and the
baseline's counts over the last interval (windowed queries such as ``rate(x[30s])``), so
a scrape gap loses that window's data instead of delaying it. Each judges both SLOs:
the error ratio and the slow ratio (requests slower than the baseline p99). Vectorised
over runs; ``rollback_at`` is the evaluation index that rolls back, -1 for none.

- Flagger: a check fails when a window's ratio exceeds its bound, or the query finds no
  values, or the ratio is NaN (no candidate requests); failed checks are counted over the
  whole analysis, never reset, one per interval however many metrics fail; ``threshold``
  failed checks roll back. Bounds are absolute: ``k`` times the baseline's usual ratio
  (default k = 2: success rate >= 99%, slow requests <= 2%), threshold default 1.
- Argo Rollouts: each metric counts its failed measurements (ratio beyond the bound, or
  NaN: a condition without an isNaN guard fails); more than ``failureLimit`` fails the
  analysis. An empty result is an error; more than ``consecutiveErrorLimit`` (4) errors
  in a row fail it too. Defaults: failureLimit 0, k = 2.
- Kayenta: at every interval, a Mann-Whitney U test of the candidate's per-interval
  ratio points against the baseline's, all points since the canary began; a metric is
  High when the candidate is higher at 98% confidence (two-sided, so one-sided z above
  2.326; normal approximation with tie and continuity correction). NODATA points (no
  data, or no requests) are removed; a metric without points scores 100. Two metrics in
  two groups of equal weight: one High scores 50, below the marginal 75, so it fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
from scipy.stats import rankdata

from benchmarks.decisions.simulate import Z99, Streams, World

DEFAULT_K = 2.0
_SCORES: dict[int, tuple[Streams, np.ndarray]] = {}  # Kayenta's last scores


class PeerJudge(Protocol):
    name: str

    def rollback_at(self, streams: Streams) -> np.ndarray: ...

    def statistic(self, streams: Streams) -> np.ndarray:
        """Per run, the smallest bound ``k`` (or critical value) that keeps it from
        rolling back: the run rolls back iff statistic > bound. Used for calibration."""
        ...

    def with_bound(self, bound: float) -> PeerJudge: ...

    @property
    def bound(self) -> float: ...

    def describe(self) -> str: ...


def first(mask: np.ndarray) -> np.ndarray:
    """Index of the first True per row, -1 for none."""
    hit = mask.any(axis=1)
    return np.where(hit, mask.argmax(axis=1), -1)


def window_ratios(streams: Streams) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per metric: (candidate, baseline) window ratios relative to the baseline's usual
    ratio; NaN where the window has no requests."""
    world: World = streams.world
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "errors": (
                streams.cand_errors / streams.cand_total / world.error_ratio,
                streams.base_errors / streams.base_total / world.error_ratio,
            ),
            "slow": (
                streams.cand_slow / streams.cand_total / world.slow_ratio,
                streams.base_slow / streams.base_total / world.slow_ratio,
            ),
        }


def nth_largest(values: np.ndarray, n: int) -> np.ndarray:
    """The ``n``-th largest value of each row (1-based); -inf when a row has fewer."""
    if n > values.shape[1]:
        return np.full(values.shape[0], -np.inf)
    return -np.partition(-values, n - 1, axis=1)[:, n - 1]


@dataclass(frozen=True)
class FlaggerJudge:
    k: float = DEFAULT_K
    threshold: int = 1
    name: str = "flagger"

    def severity(self, streams: Streams) -> np.ndarray:
        """Per window, the largest ratio / usual ratio; inf for no values or NaN."""
        ratios = window_ratios(streams)
        worst = np.fmax(ratios["errors"][0], ratios["slow"][0])
        return np.where(streams.missing | np.isnan(worst), np.inf, worst)

    def rollback_at(self, streams: Streams) -> np.ndarray:
        failed = np.cumsum(self.severity(streams) > self.k, axis=1)
        return first(failed >= self.threshold)

    def statistic(self, streams: Streams) -> np.ndarray:
        return nth_largest(self.severity(streams), self.threshold)

    def with_bound(self, bound: float) -> FlaggerJudge:
        return replace(self, k=bound)

    @property
    def bound(self) -> float:
        return self.k

    def describe(self) -> str:
        return f"bounds {self.k:.3g}x usual ratios, threshold {self.threshold} failed checks"


@dataclass(frozen=True)
class ArgoJudge:
    k: float = DEFAULT_K
    failure_limit: int = 0
    consecutive_error_limit: int = 4
    name: str = "argo"

    def severities(self, streams: Streams) -> list[np.ndarray]:
        """Per metric and window: ratio / usual ratio; inf for NaN (fails), -inf for an
        empty result (an error, not a failure)."""
        found = []
        for cand, _ in window_ratios(streams).values():
            sev = np.where(np.isnan(cand), np.inf, cand)
            found.append(np.where(streams.missing, -np.inf, sev))
        return found

    def error_at(self, streams: Streams) -> np.ndarray:
        """Where more than consecutiveErrorLimit empty results in a row fail the analysis."""
        run = np.zeros(streams.runs, dtype=np.int64)
        over = np.zeros(streams.missing.shape, dtype=bool)
        for t in range(streams.missing.shape[1]):
            run = np.where(streams.missing[:, t], run + 1, 0)
            over[:, t] = run > self.consecutive_error_limit
        return first(over)

    def rollback_at(self, streams: Streams) -> np.ndarray:
        times = [
            first(np.cumsum(sev > self.k, axis=1) > self.failure_limit)
            for sev in self.severities(streams)
        ]
        times.append(self.error_at(streams))
        stacked = np.stack([np.where(t < 0, np.iinfo(np.int64).max, t) for t in times])
        earliest = stacked.min(axis=0)
        return np.where(earliest == np.iinfo(np.int64).max, -1, earliest)

    def statistic(self, streams: Streams) -> np.ndarray:
        worst = np.max(
            [nth_largest(sev, self.failure_limit + 1) for sev in self.severities(streams)],
            axis=0,
        )
        return np.where(self.error_at(streams) >= 0, np.inf, worst)

    def with_bound(self, bound: float) -> ArgoJudge:
        return replace(self, k=bound)

    @property
    def bound(self) -> float:
        return self.k

    def describe(self) -> str:
        return (
            f"bounds {self.k:.3g}x usual ratios, failureLimit {self.failure_limit}, "
            f"consecutiveErrorLimit {self.consecutive_error_limit}"
        )


def mann_whitney_z(cand: np.ndarray, base: np.ndarray) -> np.ndarray:
    """One-sided z of "candidate higher" per row (NaN points removed), by the normal
    approximation with tie and continuity correction; 0 where a side has no points."""
    both = np.concatenate([cand, base], axis=1)
    low = rankdata(both, axis=1, method="min", nan_policy="omit")
    high = rankdata(both, axis=1, method="max", nan_policy="omit")
    ranks = (low + high) / 2.0
    width = cand.shape[1]
    n1 = np.sum(~np.isnan(cand), axis=1).astype(float)
    n2 = np.sum(~np.isnan(base), axis=1).astype(float)
    n = n1 + n2
    u = np.nansum(ranks[:, :width], axis=1) - n1 * (n1 + 1.0) / 2.0
    tied = high - low + 1.0
    ties = np.nansum(tied * tied - 1.0, axis=1)  # sum over tie groups of t^3 - t
    with np.errstate(invalid="ignore", divide="ignore"):
        var = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)))
        z = (u - n1 * n2 / 2.0 - 0.5) / np.sqrt(var)
    return np.where((n1 > 0) & (n2 > 0) & (var > 0), z, 0.0)


@dataclass(frozen=True)
class KayentaJudge:
    critical: float = Z99  # 98% two-sided confidence
    name: str = "kayenta"

    def scores(self, streams: Streams) -> np.ndarray:
        """Per run and look: the largest Mann-Whitney z over the two metrics (memoised per
        streams object: they do not depend on the critical value)."""
        cached = _SCORES.get(id(streams))
        if cached is not None and cached[0] is streams:
            return cached[1]
        points = []
        for cand, base in window_ratios(streams).values():
            gone = streams.missing
            points.append((np.where(gone, np.nan, cand), np.where(gone, np.nan, base)))
        looks = streams.world.evaluations
        z = np.full((streams.runs, looks), -np.inf)
        for t in range(looks):
            for cand, base in points:
                z[:, t] = np.fmax(z[:, t], mann_whitney_z(cand[:, : t + 1], base[:, : t + 1]))
        _SCORES.clear()
        _SCORES[id(streams)] = (streams, z)
        return z

    def rollback_at(self, streams: Streams) -> np.ndarray:
        return first(self.scores(streams) > self.critical)

    def statistic(self, streams: Streams) -> np.ndarray:
        return self.scores(streams).max(axis=1)

    def with_bound(self, bound: float) -> KayentaJudge:
        return replace(self, critical=bound)

    @property
    def bound(self) -> float:
        return self.critical

    def describe(self) -> str:
        confidence = 1.0 - 2.0 * _normal_sf(self.critical)
        return f"Mann-Whitney at {confidence:.4%} two-sided (z > {self.critical:.3f})"


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def calibrate_bound(statistic: np.ndarray, target: float) -> float:
    """The smallest bound whose rollback rate (statistic > bound) is at most ``target``."""
    ordered = np.sort(statistic)[::-1]
    allowed = int(np.floor(target * len(ordered)))
    return float(ordered[min(allowed, len(ordered) - 1)])
