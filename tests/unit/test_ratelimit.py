"""The token bucket (edge_agent/ratelimit.py) that bounds shipped log records and paces the backlog."""

import pytest

from edge_agent.ratelimit import TokenBucket


def test_ratelimit_burst_then_rate():
    t = [0.0]
    b = TokenBucket(rate=2.0, burst=3, clock=lambda: t[0])
    assert [b.take() for _ in range(4)] == [True, True, True, False]
    t[0] += 0.5                                  # one token back
    assert b.take() and not b.take()
    t[0] += 100.0                                # never more than the burst
    assert sum(b.take() for _ in range(10)) == 3


def test_ratelimit_refuses_nonsense():
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1)
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=0)


def test_ratelimit_pacing_budget_starts_empty_grows_and_is_spent():
    # The backlog pacer: starts empty, whole tokens are the records a pass may send.
    t = [0.0]
    b = TokenBucket(rate=500.0, burst=500, clock=lambda: t[0], full=False)
    assert b.available() == 0
    t[0] += 0.1234                               # 61.7 tokens
    assert b.available() == 61
    b.spend(40)
    assert b.available() == 21
    t[0] += 10.0                                 # capped at the burst
    assert b.available() == 500
    b.spend(500)
    assert b.available() == 0 and not b.take()


def test_ratelimit_take_and_spend_draw_on_the_same_tokens():
    t = [0.0]
    b = TokenBucket(rate=1.0, burst=5, clock=lambda: t[0])
    b.spend(3)
    assert b.available() == 2 and b.take(2) and not b.take()
