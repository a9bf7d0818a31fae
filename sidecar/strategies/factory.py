"""Picks the strategy a stage names."""

from __future__ import annotations

from sidecar.domain.policy import Analysis, Stage
from sidecar.strategies.base import Strategy
from sidecar.strategies.blue_green import BlueGreenStrategy
from sidecar.strategies.canary import CanaryStrategy


def build_strategy(stage: Stage, analysis: Analysis) -> Strategy:
    if stage.strategy.canary is not None:
        return CanaryStrategy(stage.strategy.canary, analysis)
    assert stage.strategy.blue_green is not None  # the policy model guarantees one of them
    return BlueGreenStrategy(stage.strategy.blue_green, analysis)
