"""The token bucket that bounds the agent's shipped log records."""

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
