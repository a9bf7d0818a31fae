"""Simulated request streams of canary releases, as every judge sees them.

The peers run a release's canary steps on a fixed clock: ``steps`` weights, ``step_s``
each, one evaluation every ``interval_s``. promgate keeps a step going past ``step_s``
while its gates have not yet ruled out the regression they must (up to ``extend_s``
more, its ``noDataTimeout``), so each step is simulated as a *block* of evaluations at
the step's weight, longer than ``step_s``: the peers see the first ``step_s`` of every
block, promgate as much of it as it uses. Both read the same draws where they overlap.

Requests arrive as a Poisson process whose rate swings over the day (a random time of
day per release); each request goes to the candidate with the step's weight. A request
is *bad* for the error SLO if it fails and for the latency SLO if it is slower than the
baseline's p99 (latencies are log-normal; a candidate whose p99 is ``x`` times the
baseline's has every latency scaled by ``x``), so both SLOs are bad/total ratios. Per
evaluation interval and per side the simulator draws the counts (total, errors, slow);
everything is vectorised over runs.

Scenarios add, on the candidate only unless said otherwise: an error-ratio multiple, a
p99 multiple, a one-interval error blip (candidate only, or shared by both versions),
scrape gaps (evaluations that find no data for either side: windowed queries lose those
windows, counters catch up at the next reading) and other traffic volumes or weights.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np

Z99 = 2.3263478740408408  # the standard normal 99% quantile
DAY_S = 86_400.0
GAP_LENGTHS = (1, 4)  # a scrape gap hides this many evaluations (uniform, inclusive)
GAP_SLACK = 10  # evaluations beyond step_s + extend_s: time without data does not count
COUNTS = (
    "cand_total", "cand_errors", "cand_slow", "base_total", "base_errors", "base_slow",
    "missing", "expected_bad",
)  # fmt: skip


@dataclass(frozen=True)
class World:
    """The service and the release budget: the same for every judge."""

    rps: float = 100.0  # mean requests per second, both versions together
    diurnal: float = 0.5  # the rate swings +-50% over the day
    error_ratio: float = 0.005  # the baseline's share of failed requests
    latency_sigma: float = 0.5  # log-normal latency: sigma of log(latency)
    steps: tuple[int, ...] = (10, 25, 50)  # canary weights, %
    step_s: float = 600.0
    interval_s: float = 30.0
    extend_s: float = 1200.0  # promgate: how long a step may wait for evidence past step_s

    @property
    def slow_ratio(self) -> float:
        """The baseline's share of requests slower than its own p99: 1% by definition."""
        return slow_ratio(1.0, self.latency_sigma)

    @property
    def per_step(self) -> int:
        return round(self.step_s / self.interval_s)

    @property
    def evaluations(self) -> int:
        """Evaluations of a release on the fixed clock."""
        return len(self.steps) * self.per_step

    def block(self, budget: bool) -> int:
        """Evaluations simulated per step: the fixed clock's, or promgate's whole budget."""
        if not budget:
            return self.per_step
        return round((self.step_s + self.extend_s) / self.interval_s) + GAP_SLACK

    @property
    def horizon_s(self) -> float:
        """The longest a release can run (promgate's steps at their longest): bad requests
        are compared over this span, a promoted candidate serving all traffic after."""
        return len(self.steps) * (self.step_s + self.extend_s)

    @property
    def budget_s(self) -> float:
        return self.evaluations * self.interval_s

    def step_index(self) -> np.ndarray:
        """The step of each evaluation (0-based)."""
        return np.repeat(np.arange(len(self.steps)), self.per_step)

    def weights(self) -> np.ndarray:
        """The candidate's share of requests in each evaluation interval."""
        return np.asarray(self.steps, dtype=float)[self.step_index()] / 100.0


def slow_ratio(p99_multiple: float, sigma: float) -> float:
    """Share of requests slower than the baseline p99 when every latency is scaled by
    ``p99_multiple`` (so the p99 is too): log-normal latencies, log-sd ``sigma``."""
    z = Z99 - math.log(p99_multiple) / sigma
    return 0.5 * math.erfc(z / math.sqrt(2.0))


@dataclass(frozen=True)
class Scenario:
    name: str
    label: str
    kind: str  # "aa": no regression, any rollback is false; "regression"; "blip"
    error_x: float = 1.0  # candidate error ratio = baseline's x this
    p99_x: float = 1.0  # candidate p99 = baseline's x this
    onset_s: float = 0.0  # the regression starts this long after the release began
    blip: str | None = None  # one interval of blip_x errors: "candidate" or "shared"
    blip_x: float = 10.0
    gap_rate: float = 0.0  # chance that an evaluation starts a scrape gap
    world: World = field(default_factory=World)

    def bad_ratio(self) -> float:
        """The candidate's share of bad requests (errors plus slow) once regressed."""
        w = self.world
        return min(1.0, w.error_ratio * self.error_x) + slow_ratio(self.p99_x, w.latency_sigma)


@dataclass
class Streams:
    """Counts per run, step and evaluation within the step: arrays (runs, steps, block).
    The attributes named in ``COUNTS`` are the fixed clock's view, (runs, evaluations)."""

    scenario: Scenario
    blocks: dict[str, np.ndarray]
    _fixed: dict[str, np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __getattr__(self, name: str) -> np.ndarray:
        """The fixed clock's view of ``name``, built once (a copy when the blocks are
        longer than a step: the judges read these views many times)."""
        if name not in COUNTS:
            raise AttributeError(name)
        view = self._fixed.get(name)
        if view is None:
            block = self.blocks[name][:, :, : self.world.per_step]
            view = self._fixed[name] = block.reshape(block.shape[0], -1)
        return view

    @property
    def runs(self) -> int:
        return int(self.blocks["cand_total"].shape[0])

    @property
    def block(self) -> int:
        return int(self.blocks["cand_total"].shape[2])

    @property
    def world(self) -> World:
        return self.scenario.world

    def subset(self, rows: slice) -> Streams:
        return Streams(self.scenario, {name: a[rows] for name, a in self.blocks.items()})

    def bad_served(self, rollback_at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bad requests, bad requests beyond the baseline's ratios) the candidate served
        on the fixed clock up to and including evaluation ``rollback_at`` (-1: never
        rolled back: the whole canary)."""
        bad = np.cumsum(self.cand_errors + self.cand_slow, axis=1)
        extra = bad - np.cumsum(self.expected_bad, axis=1)
        last = np.where(rollback_at < 0, self.world.evaluations - 1, rollback_at)
        rows = np.arange(self.runs)
        return bad[rows, last].astype(float), extra[rows, last]


def reference_aa(scenario: Scenario, found: list[Scenario]) -> Scenario:
    """The A/A scenario of the same world and scrape gaps: what peers are tuned on."""
    for candidate in found:
        if (
            candidate.kind == "aa"
            and candidate.world == scenario.world
            and candidate.gap_rate == scenario.gap_rate
        ):
            return candidate
    raise LookupError(f"no A/A scenario like {scenario.name}")


def seed_for(seed: int, name: str) -> np.random.Generator:
    """A generator per (seed, scenario): adding a scenario does not shift the others."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def simulate(
    scenario: Scenario, runs: int, rng: np.random.Generator, *, budget: bool = True
) -> Streams:
    """``runs`` releases of ``scenario``; with ``budget``, each step as long as promgate may
    make it, else only the fixed clock (enough for the peers)."""
    w = scenario.world
    steps, block = len(w.steps), w.block(budget)
    shape = (runs, steps, block)
    weights = np.asarray(w.steps, dtype=float)[None, :, None] / 100.0
    # nominal time within the release: step k starts at k * step_s
    middle = np.arange(steps)[:, None] * w.per_step + np.arange(block)[None, :] + 0.5
    middle = middle * w.interval_s
    phase = rng.uniform(0.0, DAY_S, size=(runs, 1, 1))
    rate = w.rps * (1.0 + w.diurnal * np.sin(2.0 * math.pi * (phase + middle) / DAY_S))
    total = rng.poisson(rate * w.interval_s)
    cand = rng.binomial(total, np.broadcast_to(weights, shape))
    base = total - cand

    regressed = np.broadcast_to(middle >= scenario.onset_s, shape)
    cand_err = np.where(regressed, min(1.0, w.error_ratio * scenario.error_x), w.error_ratio)
    cand_slow = np.where(regressed, slow_ratio(scenario.p99_x, w.latency_sigma), w.slow_ratio)
    base_err = np.full(shape, w.error_ratio)
    if scenario.blip is not None:  # at one evaluation of the fixed clock
        at = rng.integers(0, w.evaluations, size=runs)
        blipped = np.zeros(shape, dtype=bool)
        blipped[np.arange(runs), at // w.per_step, at % w.per_step] = True
        cand_err = np.where(blipped, np.minimum(1.0, cand_err * scenario.blip_x), cand_err)
        if scenario.blip == "shared":
            base_err = np.where(blipped, np.minimum(1.0, base_err * scenario.blip_x), base_err)

    missing = np.zeros(shape, dtype=bool)
    if scenario.gap_rate > 0:
        starts = rng.random(shape) < scenario.gap_rate
        lengths = rng.integers(GAP_LENGTHS[0], GAP_LENGTHS[1] + 1, size=shape)
        for lag in range(GAP_LENGTHS[1]):
            hidden = starts[:, :, : block - lag] & (lengths[:, :, : block - lag] > lag)
            missing[:, :, lag:] |= hidden

    return Streams(
        scenario,
        {
            "cand_total": cand,
            "cand_errors": rng.binomial(cand, cand_err),
            "cand_slow": rng.binomial(cand, cand_slow),
            "base_total": base,
            "base_errors": rng.binomial(base, base_err),
            "base_slow": rng.binomial(base, w.slow_ratio),
            "missing": missing,
            "expected_bad": cand * (w.error_ratio + w.slow_ratio),
        },
    )


def scenarios() -> list[Scenario]:
    """The benchmark's scenarios, in report order."""
    low = World(rps=2.0)
    one_pct = World(steps=(1, 2, 5))
    found: list[Scenario] = [Scenario("aa", "A/A (no difference)", "aa")]
    for x in (1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0):
        found.append(Scenario(f"err-{x:g}x", f"errors {x:g}x", "regression", error_x=x))
    for pct in (10, 25, 50, 100):
        found.append(Scenario(f"p99+{pct}%", f"p99 +{pct}%", "regression", p99_x=1.0 + pct / 100.0))
    found += [
        Scenario("err-2x-onset5m", "errors 2x from minute 5", "regression", 2.0, onset_s=300.0),
        Scenario("blip-cand", "1-interval 10x error blip, candidate", "blip", blip="candidate"),
        Scenario("blip-shared", "1-interval 10x error blip, both", "blip", blip="shared"),
        Scenario("aa-gaps", "A/A, scrape gaps", "aa", gap_rate=0.03),
        Scenario("err-2x-gaps", "errors 2x, scrape gaps", "regression", 2.0, gap_rate=0.03),
        Scenario("aa-low", "A/A, low traffic (2 rps)", "aa", world=low),
        Scenario("err-2x-low", "errors 2x, low traffic", "regression", 2.0, world=low),
        Scenario("err-5x-low", "errors 5x, low traffic", "regression", 5.0, world=low),
        Scenario("aa-1pct", "A/A, steps 1/2/5%", "aa", world=one_pct),
        Scenario("err-2x-1pct", "errors 2x, steps 1/2/5%", "regression", 2.0, world=one_pct),
    ]
    return found
