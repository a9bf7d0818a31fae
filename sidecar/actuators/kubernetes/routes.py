"""Gateway API HTTPRoute edits: weights on one rule's backendRefs, and a preview rule.

The edits are pure (route in, route out) and touch only what promgate owns: the weights of
the named rule's backendRefs to promgate's Services, and the one rule promgate adds for
a blue-green preview (named ``promgate-preview``, placed first so the header wins). Every
other rule, match, filter and field of the route stays as its owner wrote it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from sidecar.actuators.kubernetes.writes import update
from sidecar.domain.kubernetes import HttpRouteRouter
from sidecar.errors import ActuationError
from sidecar.kube.api import HTTPROUTE, KubeApi, Object

PREVIEW_RULE = "promgate-preview"
"""The ``name`` of the rule promgate adds for a preview, so it finds it again."""
PREVIEW_HEADER = "X-Promgate-Preview"
"""Requests with this header set to ``1`` reach the preview."""


def _rules(route: Object) -> list[dict[str, Any]]:
    rules = route.get("spec", {}).get("rules")
    return rules if isinstance(rules, list) else []


def user_rule_index(route: Object, rule: int) -> int:
    """The position in ``spec.rules`` of the owner's rule number ``rule`` (promgate's
    preview rule does not count, so the policy's index stays right while it exists)."""
    owned = [i for i, r in enumerate(_rules(route)) if r.get("name") != PREVIEW_RULE]
    if rule >= len(owned):
        name = route.get("metadata", {}).get("name", "")
        raise ActuationError(
            f"kubernetes: HTTPRoute {name} has {len(owned)} rule(s), so it has no rule {rule}; "
            "set kubernetes.router.httpRoute.rule to the index of the rule to weight",
            permanent=True,
        )
    return owned[rule]


def _template_ref(rule: Mapping[str, Any], route: Object) -> dict[str, Any]:
    """A backendRef of the rule to copy port, group and kind from for a Service it lacks."""
    for ref in rule.get("backendRefs") or []:
        if "port" in ref:
            return {k: v for k, v in ref.items() if k in ("group", "kind", "port")}
    name = route.get("metadata", {}).get("name", "")
    raise ActuationError(
        f"kubernetes: the weighted rule of HTTPRoute {name} has no backendRef with a port; "
        "give it a backendRef to the stable Service with its port",
        permanent=True,
    )


def with_weights(
    route: Object, rule: int, weights: Mapping[str, int], rest_prefix: str | None = None
) -> Object:
    """A copy of ``route`` whose rule ``rule`` sends ``weights[service]`` to each Service
    named; a Service the rule lacks is added with the port of one it has (unless its
    weight is 0). With ``rest_prefix``, a Service whose name starts with it and that
    ``weights`` does not name gets 0 (a slot the state no longer lists). Other backendRefs
    of the rule, and everything else, are left as they are."""
    edited = copy.deepcopy(route)
    target = _rules(edited)[user_rule_index(edited, rule)]
    template = _template_ref(target, route)
    refs: list[dict[str, Any]] = target.setdefault("backendRefs", [])
    for service, weight in weights.items():
        ref = next((r for r in refs if r.get("name") == service and _is_service(r)), None)
        if ref is not None:
            ref["weight"] = weight
        elif weight > 0:
            refs.append({**template, "name": service, "weight": weight})
    for ref in refs:
        name = str(ref.get("name", ""))
        if rest_prefix and name.startswith(rest_prefix) and name not in weights:
            ref["weight"] = 0
    return edited


def with_preview(route: Object, rule: int, service: str | None) -> Object:
    """A copy of ``route`` with promgate's preview rule sending requests that carry
    ``X-Promgate-Preview: 1`` (and match rule ``rule``) to ``service``; without a service,
    the preview rule is removed."""
    edited = copy.deepcopy(route)
    base = _rules(edited)[user_rule_index(edited, rule)]
    current = [r for r in _rules(edited) if r.get("name") == PREVIEW_RULE]
    rules = [r for r in _rules(edited) if r.get("name") != PREVIEW_RULE]
    if service is not None:
        wanted = _preview_rule(base, service, route)
        # the API server fills in defaults (a match's path, a ref's weight): a rule that
        # holds everything wanted is the same rule, and is kept as it is
        keep = len(current) == 1 and _holds(current[0], wanted)
        rules.insert(0, current[0] if keep else wanted)
    edited.setdefault("spec", {})["rules"] = rules
    return edited


def _holds(actual: Any, wanted: Any) -> bool:
    """Whether ``actual`` has every field of ``wanted`` with the same value (lists item by
    item), whatever else it has."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(
            key in actual and _holds(actual[key], value) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(wanted)
            and all(_holds(a, w) for a, w in zip(actual, wanted, strict=True))
        )
    return bool(actual == wanted)


def _preview_rule(base: Mapping[str, Any], service: str, route: Object) -> dict[str, Any]:
    header = {"type": "Exact", "name": PREVIEW_HEADER, "value": "1"}
    matches = [
        {**match, "headers": [*(match.get("headers") or []), header]}
        for match in base.get("matches") or [{}]
    ]
    rule: dict[str, Any] = {
        "name": PREVIEW_RULE,
        "matches": matches,
        "backendRefs": [{**_template_ref(base, route), "name": service}],
    }
    if base.get("filters"):
        rule["filters"] = copy.deepcopy(base["filters"])
    return rule


def _is_service(ref: Mapping[str, Any]) -> bool:
    return bool(ref.get("group", "") == "" and ref.get("kind", "Service") == "Service")


async def route_traffic(
    api: KubeApi,
    namespace: str,
    router: HttpRouteRouter,
    weights: Mapping[str, int],
    *,
    preview: str | None = None,
    rest_prefix: str | None = None,
) -> Object:
    """Set the route's weights and preview rule in one write (none when already so)."""
    return await update(
        api,
        HTTPROUTE,
        namespace,
        router.name,
        lambda route: with_preview(
            with_weights(route, router.rule, weights, rest_prefix), router.rule, preview
        ),
    )
