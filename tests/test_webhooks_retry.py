"""Retry schedule of failed deliveries and the viewer count throttle."""

from __future__ import annotations

import pytest

from realcast_box.live.watch import ViewerCountThrottle
from realcast_box.webhooks.dispatcher import RetryPolicy


def test_retry_schedule_defaults_span_about_a_day():
    policy = RetryPolicy()
    delays = [policy.next_delay(attempt, 0.5) for attempt in range(1, 8)]

    assert delays == [80, 240, 720, 2160, 6480, 19440, 58320]
    assert 20 * 3600 < sum(delays) < 28 * 3600
    assert policy.next_delay(8, 0.5) is None


@pytest.mark.parametrize(("random_value", "factor"), [(0.0, 0.8), (0.999999, 1.2)])
def test_retry_jitter_bounds(random_value, factor):
    policy = RetryPolicy(max_attempts=3, base_delay=10.0)
    assert policy.next_delay(2, random_value) == pytest.approx(30 * factor, rel=1e-4)


def test_retry_single_attempt_never_retries():
    assert RetryPolicy(max_attempts=1).next_delay(1, 0.5) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_first_change_sent_at_once():
    clock = FakeClock()
    throttle = ViewerCountThrottle(10.0, clock)

    assert not throttle.should_send("session", 0)
    assert throttle.should_send("session", 3)


def test_throttle_waits_interval_between_sends():
    clock = FakeClock()
    throttle = ViewerCountThrottle(10.0, clock)
    throttle.should_send("session", 1)

    clock.now += 9.9
    held = throttle.should_send("session", 2)
    clock.now += 0.1
    sent = throttle.should_send("session", 2)

    assert not held
    assert sent


def test_throttle_unchanged_count_not_sent():
    clock = FakeClock()
    throttle = ViewerCountThrottle(10.0, clock)
    throttle.should_send("session", 1)
    clock.now += 60

    assert not throttle.should_send("session", 1)
    assert throttle.should_send("session", 0)


def test_throttle_back_to_last_sent_count_not_sent():
    clock = FakeClock()
    throttle = ViewerCountThrottle(10.0, clock)
    throttle.should_send("session", 1)
    clock.now += 5
    throttle.should_send("session", 2)
    clock.now += 5

    assert not throttle.should_send("session", 1)


def test_throttle_sessions_separate_and_forgotten():
    clock = FakeClock()
    throttle = ViewerCountThrottle(10.0, clock)
    throttle.should_send("a", 1)

    assert throttle.should_send("b", 1)
    throttle.keep_only({"b"})
    assert throttle.should_send("a", 1)
