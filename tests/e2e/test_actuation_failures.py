"""A webhook receiver that is briefly unavailable must delay a promotion, never strand it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import StackFactory, WebhookReceiver, bounded, demo_digest

pytestmark = pytest.mark.e2e

STAGE = "production"
STABLE, CANDIDATE = "1.0.0", "1.1.0"
LOAD_RPS = 60.0
WEBHOOK_ATTEMPTS = 3  # WebhookActuator's default: one failed actuation is 3 refused POSTs


@bounded(90)
@pytest.mark.parametrize(
    ("sequence", "moment"), [(2, "the step to 50%"), (3, "the switch to 100% on promotion")]
)
async def test_a_briefly_unavailable_receiver_delays_but_does_not_strand_the_promotion(
    stack_factory: StackFactory, webhook_receiver: WebhookReceiver, sequence: int, moment: str
) -> None:
    """The receiver answers 503 to every attempt of one actuation, then recovers: the
    actuation is retried, the promotion ends promoted, traffic and history follow."""
    stack = await stack_factory(versions={STAGE: [STABLE, CANDIDATE]}, receiver=webhook_receiver)
    await stack.seed(STAGE, STABLE)
    stack.start_weighted_load(STAGE, LOAD_RPS)
    await stack.wait_scraped()
    webhook_receiver.unavailable[sequence] = WEBHOOK_ATTEMPTS
    promotion_id = await stack.start_promotion(CANDIDATE, STAGE)

    last: dict[str, Any] = {}

    def delivered(promotion: dict[str, Any]) -> bool:
        last.update(promotion)
        return promotion["phase"] not in ("pending", "progressing") and (
            webhook_receiver.sequences(promotion_id)[-1:] == [promotion["actuation_seq"]]
        )

    try:
        final = await stack.wait_promotion(
            promotion_id, delivered, 45, f"the promotion to end after {moment} failed once"
        )
    except TimeoutError as exc:
        refused = webhook_receiver.refused
        pytest.fail(
            f"stranded: {exc}; receiver refused {refused}, then received "
            f"{webhook_receiver.sequences(promotion_id)}; the sidecar's log says:\n"
            + "\n".join(
                line[:300]
                for line in stack.sidecar.log_text().splitlines()  # type: ignore[union-attr]
                if "actuation" in line or "Traceback" in line or "Error" in line
            )[-3000:]
        )
    assert final["phase"] == "promoted", final
    assert webhook_receiver.refused == [(promotion_id, sequence)] * WEBHOOK_ATTEMPTS
    assert webhook_receiver.sequences(promotion_id) == [1, 2, 3]
    backends = webhook_receiver.state[STAGE]["backends"]
    assert [(b["digest"], b["weight"]) for b in backends] == [(demo_digest(CANDIDATE), 100)]
    history = await stack.client.history("demo", STAGE)
    assert [h["version"] for h in history] == [STABLE, CANDIDATE], history
