"""The example service, run as a real subprocess: traffic, metrics and injected faults."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from tests.conftest import DemoServiceFactory
from tests.support.processes import metric_value, wait_until

DIGEST = "sha256:" + "c0" * 32


@dataclass
class Demo:
    url: str
    http: aiohttp.ClientSession

    async def get(self, path: str = "/") -> tuple[int, str]:
        async with self.http.get(self.url + path) as response:
            return response.status, await response.text()

    async def metrics(self) -> str:
        status, text = await self.get("/metrics")
        assert status == 200
        return text

    async def requests(self, code: str) -> float | None:
        labels = {"version": "v1", "digest": DIGEST, "code": code}
        return metric_value(await self.metrics(), "demo_requests_total", labels)

    async def fault(self, method: str, body: object = None) -> tuple[int, dict[str, object]]:
        data = body if isinstance(body, str) else json.dumps(body)
        async with self.http.request(method, self.url + "/admin/fault", data=data) as response:
            return response.status, await response.json()


@pytest.fixture
async def demo(demo_service_factory: DemoServiceFactory) -> AsyncIterator[Demo]:
    _, url = await demo_service_factory(version="v1", digest=DIGEST, latency_ms=2)
    async with aiohttp.ClientSession() as http:
        yield Demo(url, http)


async def test_series_exist_before_any_request(demo: Demo) -> None:
    text = await demo.metrics()
    labels = {"version": "v1", "digest": DIGEST}
    assert metric_value(text, "demo_requests_total", {**labels, "code": "200"}) == 0
    assert metric_value(text, "demo_requests_total", {**labels, "code": "500"}) == 0
    assert metric_value(text, "demo_request_duration_seconds_count", labels) == 0
    for le in ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "+Inf"):
        bucket = metric_value(text, "demo_request_duration_seconds_bucket", {**labels, "le": le})
        assert bucket == 0, le


async def test_traffic_is_counted_and_timed(demo: Demo) -> None:
    for path in ("/", "/orders/42", "/", "/healthzz"):
        assert await demo.get(path) == (200, "hello from v1\n")
    status, _ = await demo.get("/admin/unknown")
    assert status == 404

    text = await demo.metrics()
    labels = {"version": "v1", "digest": DIGEST}
    assert metric_value(text, "demo_requests_total", {**labels, "code": "200"}) == 4
    assert metric_value(text, "demo_requests_total", {**labels, "code": "500"}) == 0
    assert metric_value(text, "demo_request_duration_seconds_count", labels) == 4
    duration = metric_value(text, "demo_request_duration_seconds_sum", labels)
    assert duration is not None and 0.004 < duration < 1.0


async def test_fault_without_duration_lasts_until_cleared(demo: Demo) -> None:
    status, state = await demo.fault("POST", {"error_rate": 1.0})
    assert status == 200
    assert state["active"] is True and state["error_rate"] == 1.0 and state["duration_s"] is None

    for _ in range(5):
        assert await demo.get() == (500, "error from v1\n")
    assert await demo.requests("500") == 5
    assert (await demo.fault("GET"))[1]["active"] is True

    status, state = await demo.fault("DELETE")
    assert status == 200 and state["active"] is False and state["error_rate"] == 0.0
    assert await demo.get() == (200, "hello from v1\n")


async def test_fault_with_duration_ends_by_itself(demo: Demo) -> None:
    status, state = await demo.fault("POST", {"error_rate": 1.0, "duration_s": 0.5})
    assert status == 200 and state["duration_s"] == 0.5
    assert await demo.get() == (500, "error from v1\n")

    async def recovered() -> bool:
        return (await demo.get())[0] == 200

    await wait_until(recovered, 5.0, what="the timed fault to end")
    assert (await demo.fault("GET"))[1]["active"] is False


async def test_latency_fault_shows_in_the_histogram(demo: Demo) -> None:
    labels = {"version": "v1", "digest": DIGEST}
    status, _ = await demo.fault("POST", {"latency_ms": 300})
    assert status == 200
    assert await demo.get() == (200, "hello from v1\n")

    text = await demo.metrics()
    assert metric_value(text, "demo_request_duration_seconds_count", labels) == 1
    fast = metric_value(text, "demo_request_duration_seconds_bucket", {**labels, "le": "0.1"})
    slow = metric_value(text, "demo_request_duration_seconds_bucket", {**labels, "le": "1.0"})
    assert (fast, slow) == (0, 1)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"error_rate": 1.5}, "error_rate"),
        ({"error_rate": -0.1}, "error_rate"),
        ({"error_rate": "high"}, "error_rate"),
        ({"error_rate": True}, "error_rate"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"latency_ms": None}, "latency_ms"),
        ('{"latency_ms": NaN}', "latency_ms"),
        ({"duration_s": 0}, "duration_s"),
        ({"duration_s": "soon"}, "duration_s"),
        ({"error_rate": 0.5, "errors": 1}, "errors"),
        ([0.5], "body"),
        ("not json", "body"),
    ],
)
async def test_bad_fault_input_is_refused(demo: Demo, body: object, field: str) -> None:
    status, answer = await demo.fault("POST", body)
    assert status == 400
    assert answer["field"] == field
    assert (await demo.fault("GET"))[1]["active"] is False
