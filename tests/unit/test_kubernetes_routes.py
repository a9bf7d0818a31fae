"""HTTPRoute edits are pure: the named rule's weights and promgate's preview rule change,
and nothing else of the route does."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sidecar.actuators.kubernetes.routes import (
    PREVIEW_HEADER,
    PREVIEW_RULE,
    user_rule_index,
    with_preview,
    with_weights,
)
from sidecar.errors import ActuationError


def route() -> dict[str, Any]:
    """A route with a rule before the weighted one, filters, matches and other fields."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "checkout", "namespace": "shop", "resourceVersion": "7"},
        "spec": {
            "parentRefs": [{"name": "edge"}],
            "hostnames": ["shop.example"],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
                    "backendRefs": [{"name": "assets", "port": 80}],
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/checkout"}}],
                    "filters": [{"type": "RequestHeaderModifier",
                                 "requestHeaderModifier": {"set": [{"name": "x", "value": "1"}]}}],
                    "backendRefs": [
                        {"name": "checkout", "port": 8080, "weight": 100},
                        {"name": "sidecar", "port": 9000, "weight": 5},
                    ],
                },
            ],
        },
    }  # fmt: skip


def refs(edited: dict[str, Any], index: int) -> list[tuple[str, int, Any]]:
    return [
        (r["name"], r["port"], r.get("weight"))
        for r in edited["spec"]["rules"][index]["backendRefs"]
    ]


def without_rule(edited: dict[str, Any], index: int) -> dict[str, Any]:
    rest = copy.deepcopy(edited)
    del rest["spec"]["rules"][index]
    return rest


@pytest.mark.parametrize(
    ("weights", "rest_prefix", "expected"),
    [
        pytest.param({"checkout": 90, "checkout-canary": 10}, None,
                     [("checkout", 8080, 90), ("sidecar", 9000, 5), ("checkout-canary", 8080, 10)],
                     id="adds-the-candidate-with-the-stable-port"),
        pytest.param({"checkout": 100, "checkout-canary": 0}, None,
                     [("checkout", 8080, 100), ("sidecar", 9000, 5)],
                     id="no-ref-added-for-a-weight-of-0"),
        pytest.param({"checkout-blue": 100}, "side",
                     [("checkout", 8080, 100), ("sidecar", 9000, 0), ("checkout-blue", 8080, 100)],
                     id="refs-with-the-prefix-not-listed-get-0"),
    ],
)  # fmt: skip
def test_weights_change_only_the_named_rule(
    weights: dict[str, int], rest_prefix: str | None, expected: list[tuple[str, int, int]]
) -> None:
    """The named rule's refs get their weights; the rest of the route stays as it was."""
    before = route()
    edited = with_weights(before, 1, weights, rest_prefix)
    assert refs(edited, 1) == expected
    assert without_rule(edited, 1) == without_rule(before, 1)
    assert {k: v for k, v in edited["spec"]["rules"][1].items() if k != "backendRefs"} == {
        k: v for k, v in before["spec"]["rules"][1].items() if k != "backendRefs"
    }
    assert before == route()  # the input is not touched


def test_a_slot_the_state_no_longer_lists_gets_no_traffic() -> None:
    """After a blue-green rollback only the stable slot is listed: the other slot's ref,
    live a moment ago, drops to 0 rather than keeping its weight."""
    switched = with_weights(route(), 1, {"checkout-blue": 0, "checkout-green": 100})
    back = with_weights(switched, 1, {"checkout-blue": 100}, rest_prefix="checkout-")
    assert refs(back, 1)[2:] == [("checkout-green", 8080, 0), ("checkout-blue", 8080, 100)]


def test_weights_already_set_give_the_same_route() -> None:
    """Setting the weights a route has yields an equal route, so no write is needed."""
    assert with_weights(route(), 1, {"checkout": 100}) == route()


def test_a_rule_that_does_not_exist_is_a_permanent_error_naming_the_setting() -> None:
    """A rule index past the route's rules cannot be cured by retrying."""
    with pytest.raises(ActuationError, match=r"has 2 rule\(s\), so it has no rule 2") as caught:
        with_weights(route(), 2, {"checkout": 100})
    assert caught.value.permanent


def test_a_rule_without_a_port_to_copy_is_refused() -> None:
    """A Service ref needs a port; with none to copy the error says what to add."""
    bare = route()
    bare["spec"]["rules"][1]["backendRefs"] = []
    with pytest.raises(ActuationError, match="no backendRef with a port"):
        with_weights(bare, 1, {"checkout": 100})


def test_the_preview_rule_goes_first_and_copies_the_rule_with_the_header() -> None:
    """The preview rule matches what the weighted rule matches plus the header, keeps its
    filters, routes to the preview Service, and leaves every other rule as it was."""
    edited = with_preview(route(), 1, "checkout-green")
    preview, *rest = edited["spec"]["rules"]
    assert rest == route()["spec"]["rules"]
    assert preview == {
        "name": PREVIEW_RULE,
        "matches": [
            {
                "path": {"type": "PathPrefix", "value": "/checkout"},
                "headers": [{"type": "Exact", "name": PREVIEW_HEADER, "value": "1"}],
            }
        ],
        "filters": route()["spec"]["rules"][1]["filters"],
        "backendRefs": [{"name": "checkout-green", "port": 8080}],
    }


def test_the_policy_rule_index_skips_the_preview_rule() -> None:
    """With the preview rule in front, rule 1 is still the owner's rule 1."""
    edited = with_preview(route(), 1, "checkout-green")
    assert user_rule_index(edited, 1) == 2
    weighted = with_weights(edited, 1, {"checkout": 100, "checkout-green": 0})
    assert weighted == edited
    assert with_preview(edited, 1, "checkout-green") == edited  # repeated: unchanged


def test_a_preview_rule_the_server_filled_with_defaults_is_kept_as_it_is() -> None:
    """Defaults the API server added to the preview rule do not count as a difference, so a
    repeated preview writes nothing; a preview to another Service replaces the rule."""
    added = with_preview(route(), 1, "checkout-green")
    defaulted = copy.deepcopy(added)
    preview = defaulted["spec"]["rules"][0]
    preview["backendRefs"][0].update({"group": "", "kind": "Service", "weight": 1})
    preview["matches"][0]["headers"][0]["type"] = "Exact"
    assert with_preview(defaulted, 1, "checkout-green") == defaulted
    assert with_preview(defaulted, 1, "checkout-blue") == with_preview(route(), 1, "checkout-blue")


def test_removing_the_preview_gives_back_the_route_as_it_was() -> None:
    """Without a preview the rule promgate added is gone and nothing else moved."""
    added = with_preview(route(), 1, "checkout-green")
    assert with_preview(added, 1, None) == route()
    assert with_preview(route(), 1, None) == route()


def test_a_rule_without_matches_previews_on_the_header_alone() -> None:
    """A catch-all rule gets a preview rule that matches the header on every path."""
    catch_all = route()
    del catch_all["spec"]["rules"][1]["matches"]
    preview = with_preview(catch_all, 1, "checkout-green")["spec"]["rules"][0]
    assert preview["matches"] == [
        {"headers": [{"type": "Exact", "name": PREVIEW_HEADER, "value": "1"}]}
    ]
