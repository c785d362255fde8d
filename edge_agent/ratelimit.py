"""A token bucket: at most `rate` events per second on average, bursts of up to `burst`.

The agent's one pacing tool: it bounds the log records shipped (logs.ship_per_s,
take() one per record) and paces the backlog behind live data
(outbox.backlog_records_per_s, available() records, spend() what was sent).
"""

import time


class TokenBucket:
    """Tokens come back at `rate` per second, up to `burst`; take() or spend() uses them."""

    def __init__(self, rate, burst, clock=time.monotonic, full=True):
        """rate: tokens per second (> 0); burst: the most tokens held (>= 1); starts full, or empty with full=False."""
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst if full else 0.0
        self._t = clock()

    def _refill(self):
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._t) * self.rate)
        self._t = now

    def take(self, n=1):
        """Spend n tokens if there are that many (True), else spend nothing (False)."""
        self._refill()
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    def available(self):
        """Whole tokens there are now (after the refill since the last call)."""
        self._refill()
        return int(self._tokens)

    def spend(self, n):
        """Spend n tokens (n at most available(): what was used of them)."""
        self._tokens -= n
