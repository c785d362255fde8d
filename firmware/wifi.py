# Wi-Fi station: connect at boot and reconnect with exponential backoff and jitter.
#
# ensure() is called from the main loop; it never blocks longer than `wait_ms`
# (association usually takes 2-5 s on an ESP32), so sampling keeps going while the
# access point is away. An attempt ends when the station has an address, when its
# status says it failed (ESP32: 200 beacon timeout, 201 no AP found, 202 wrong
# password, 203 association failed, 204 handshake timeout), or after `attempt_ms`;
# then the next one waits backoff_ms(attempts) (uplink.py): lo, 2 lo, 4 lo ... capped
# at hi, the upper half of each random, so a fleet that lost the same access point
# does not come back in lock step.

import time

import network

from uplink import backoff_ms


class WiFi:
    """Keeps the station connected: ensure() -> True when it has an address."""

    def __init__(self, ssid, password, backoff_lo_ms=1000, backoff_hi_ms=120000, wait_ms=100,
                 attempt_ms=10000):
        self.ssid = ssid
        self.password = password
        self.lo = backoff_lo_ms
        self.hi = backoff_hi_ms
        self.wait_ms = wait_ms
        self.attempt_ms = attempt_ms
        self.attempts = 0       # failed attempts since the last success
        self.reconnects = 0     # connections made after the first one
        self.delay_ms = 0       # the last backoff chosen
        self._up = False        # connected at the last call
        self._ever = False
        self._next = time.ticks_ms()
        self._started = None
        self.sta = network.WLAN(network.STA_IF)
        self.sta.active(True)

    def ensure(self):
        """True when connected; otherwise start/continue an attempt and return False."""
        sta = self.sta
        if sta.isconnected():
            if not self._up:
                if self._ever:
                    self.reconnects += 1
                self._ever = True
                self._up = True
                self.attempts = 0
                self._started = None
            return True
        self._up = False
        now = time.ticks_ms()
        if self._started is not None:
            st = sta.status()
            if not 200 <= st < 300 and time.ticks_diff(now, self._started) < self.attempt_ms:
                time.sleep_ms(self.wait_ms)  # under way: give it a moment, then let the loop run
                return sta.isconnected()
            # failed (its status says so, or it took too long): back off
            self._started = None
            self.delay_ms = backoff_ms(self.attempts, self.lo, self.hi)
            self._next = time.ticks_add(now, self.delay_ms)
            self.attempts += 1
            print("wifi: %r not reached (status %d); retry in %d ms" % (self.ssid, st, self.delay_ms))
            return False
        if time.ticks_diff(now, self._next) < 0:
            return False
        try:
            sta.disconnect()
        except OSError:
            pass
        sta.connect(self.ssid, self.password)
        self._started = now
        return False

    def rssi(self):
        """Signal strength in dBm, or 0 when unknown."""
        try:
            return self.sta.status("rssi")
        except Exception:
            return 0
