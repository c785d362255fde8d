"""A token bucket: at most `rate` events per second on average, bursts of up to `burst`."""

import time


class TokenBucket:
    """take() is True while tokens last; tokens come back at `rate` per second, up to `burst`."""

    def __init__(self, rate, burst, clock=time.monotonic):
        """rate: tokens per second (> 0); burst: the most tokens held (>= 1); starts full."""
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst
        self._t = clock()

    def take(self, n=1):
        """Spend n tokens if there are that many (True), else spend nothing (False)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._t) * self.rate)
        self._t = now
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False
