"""The door's estimate: refuse only what could not start in time while the batch is full."""

from __future__ import annotations

import time

from lamina.serving.admission import DOOR_FACTOR, WaitEstimate


def test_the_door_refuses_only_a_full_batch_with_a_long_wait_ahead() -> None:
    door = WaitEstimate()
    assert not door.refuses(50, 0.5, full=True)  # no history yet: admit (the budget still sheds)
    for i in range(20):  # 20 places freed in one second: 20 per second
        door.finished(now=100.0 + i * 0.05)

    now = 100.0 + 20 * 0.05
    wait = door.expected_wait(9, now=now)
    assert wait is not None and abs(wait - 10 / 20) < 0.1
    # the decision itself reads the clock: shift the history to now
    door = WaitEstimate()
    start = time.monotonic() - 1.0
    for i in range(20):
        door.finished(now=start + i * 0.05)
    ahead = int(20 * 0.5 * DOOR_FACTOR) + 5  # clearly more than DOOR_FACTOR budgets of work
    assert door.refuses(ahead, 0.5, full=True)
    assert not door.refuses(ahead, 0.5, full=False)  # places are free: they are on their way in
    assert not door.refuses(3, 0.5, full=True)  # a short wait: admitted, the batch stays full
    assert not door.refuses(ahead, None, full=True)  # no budget configured


def test_retry_after_is_the_queues_drain_time_within_bounds() -> None:
    door = WaitEstimate()
    assert door.retry_after(100) == 1.0  # no history: the minimum
    start = time.monotonic() - 1.0
    for i in range(10):  # 10 per second
        door.finished(now=start + i * 0.1)
    assert 4.0 < door.retry_after(49) < 6.5  # 50 ahead at ~10/s: about 5 s
    assert door.retry_after(10_000) == 30.0  # capped


def test_refused_clients_get_appointments_one_freed_place_apart() -> None:
    """Clients refused together must not all come back together (the queue would overflow again)."""
    door = WaitEstimate()
    now = time.monotonic()
    for i in range(20):  # 10 places free per second
        door.finished(now=now - 2.0 + i * 0.1)
    waits = [door.retry_after(9, now=now) for _ in range(30)]
    assert 0.9 < waits[0] < 1.2  # the 10 ahead drain first: about 1 s
    gaps = [b - a for a, b in zip(waits, waits[1:], strict=False)]
    assert all(0.09 < gap < 0.12 for gap in gaps)  # then one per freed place
    later = now + 60
    for i in range(20):
        door.finished(now=later - 2.0 + i * 0.1)
    assert door.retry_after(0, now=later) < 0.2  # appointments long past do not push new ones out
