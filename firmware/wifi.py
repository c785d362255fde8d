# Wi-Fi station: connect at boot and reconnect with exponential backoff.
#
# ensure() is called from the main loop; it never blocks longer than `wait_ms`
# (association usually takes 2-5 s on an ESP32), so sampling keeps going while
# the access point is away.

import time

import network

from mqtt import backoff_ms


class WiFi:
    """Keeps the station connected: ensure() -> True when it has an address."""

    def __init__(self, ssid, password, backoff_lo_ms=1000, backoff_hi_ms=120000, wait_ms=100):
        self.ssid = ssid
        self.password = password
        self.lo = backoff_lo_ms
        self.hi = backoff_hi_ms
        self.wait_ms = wait_ms
        self.attempts = 0
        self.reconnects = 0
        self._next = time.ticks_ms()
        self._started = None
        self.sta = network.WLAN(network.STA_IF)
        self.sta.active(True)

    def ensure(self):
        """True when connected; otherwise start/continue an attempt and return False."""
        sta = self.sta
        if sta.isconnected():
            if self.attempts:
                self.reconnects += 1
            self.attempts = 0
            self._started = None
            return True
        now = time.ticks_ms()
        if self._started is not None:
            # an attempt is under way: give it 10 s before calling it failed
            if time.ticks_diff(now, self._started) < 10000:
                time.sleep_ms(self.wait_ms)
                return sta.isconnected()
            self._started = None
            self._next = time.ticks_add(now, backoff_ms(self.attempts, self.lo, self.hi))
            self.attempts += 1
            return False
        if time.ticks_diff(now, self._next) < 0:
            return False
        try:
            sta.disconnect()
        except OSError:
            pass
        sta.connect(self.ssid, self.password)
        self._started = now
        return sta.isconnected()

    def rssi(self):
        """Signal strength in dBm, or 0 when unknown."""
        try:
            return self.sta.status("rssi")
        except Exception:
            return 0
