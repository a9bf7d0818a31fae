"""A small policy for engine-level tests: a gated canary stage, an ordered stage, a plain one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from sidecar.domain.policy import PromotionPolicy, parse_policy

GATE = {
    "name": "errors",
    "ratio": {"bad": 'sum(x{digest="$digest",code="500"})', "total": 'sum(x{digest="$digest"})'},
    "max": 0.05,
}


def policy(
    interval: str = "1s",
    no_data: str = "30s",
    approval: bool = False,
    gate: Mapping[str, Any] = GATE,
    step_duration: str = "5s",
) -> PromotionPolicy:
    """staging (canary, one ratio gate, optional approval), production (requires staging),
    qa (canary without gates). ``gate`` and ``step_duration`` replace staging's gate and
    the duration of its steps."""
    return parse_policy(
        yaml.safe_load(f"""
apiVersion: promgate/v1
kind: PromotionPolicy
metadata: {{name: engine}}
version: "7"
analysis: {{interval: {interval}, confirm: 3, noDataTimeout: {no_data}, maxProviderHold: 1m}}
stages:
  - name: staging
    strategy: {{canary: {{steps: [20, 50], stepDuration: {step_duration}}}}}
    approval: {{required: {str(approval).lower()}}}
    gates:
      metadata: {{maxVulnerabilities: {{critical: 0}}}}
      slo: [{yaml.safe_dump(dict(gate), default_flow_style=True).strip()}]
  - name: production
    requires: [staging]
    strategy: {{canary: {{steps: [50], stepDuration: 5s}}}}
  - name: qa
    strategy: {{canary: {{steps: [50], stepDuration: 5s}}}}
""")
    )
