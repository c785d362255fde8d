# Wall clock with a time-quality flag: none / rtc / ntp / gps (fieldwatch.wire.contract.TIME_QUALITY).
#
# The clock is kept as an offset from time.ticks_ms() (the monotonic ms counter):
# wall_ms = offset + ticks. Until the first NTP answer or GPS fix the offset is
# unknown and now() returns ("none", ms since boot): records are never stamped
# 1970. After a sync the quality is "ntp" or "gps"; when a sync grows older than
# `stale_ms` it degrades to "rtc" (still a wall clock, may drift: ESP32's RC
# oscillator drifts ~ up to several seconds a day).
#
# NTP (SNTP, RFC 4330) is in ntp.py, loaded only while a sync runs.
#
# Times are integers of ms. On a 32-bit port these exceed small-int range and
# become big ints (a few allocations per record, not per sample).

import time

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

# 2020-01-01, the contract's MIN_TS_MS: anything earlier is not a real clock. A copy, because
# const() takes only a literal (tests/unit/test_wire_contract.py checks it equals the contract).
_MIN_VALID_MS = const(1577836800000)


class Clock:
    """now() -> (tq, ms): epoch ms with its quality, or ms since boot with tq 'none'."""

    def __init__(self, stale_ms=6 * 3600 * 1000):
        self._offset = None       # wall ms minus ticks ms
        self._source = "none"
        self._synced_at = 0       # ticks of the last sync
        self.stale_ms = stale_ms
        self.ntp_failures = 0
        self._boot_ticks = time.ticks_ms()

    def quality(self):
        """'none', 'rtc', 'ntp' or 'gps' at this moment."""
        if self._offset is None:
            return "none"
        if time.ticks_diff(time.ticks_ms(), self._synced_at) > self.stale_ms:
            return "rtc"
        return self._source

    def now(self):
        """(tq, ms): epoch ms when the clock is set, else ms since boot with tq 'none'."""
        t = time.ticks_ms()
        if self._offset is None:
            return "none", time.ticks_diff(t, self._boot_ticks)
        return self.quality(), self._offset + t

    def set(self, wall_ms, source):
        """Set from a trusted source ('ntp' or 'gps'); ignores times before 2020."""
        if wall_ms < _MIN_VALID_MS:
            return False
        t = time.ticks_ms()
        self._offset = wall_ms - t
        self._source = source
        self._synced_at = t
        try:  # keep the RTC too, so a soft reset starts from "rtc"
            import machine
            tm = time.gmtime(wall_ms // 1000 - _epoch_shift())
            machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0))
        except Exception:
            pass
        return True

    def from_rtc(self):
        """At boot: trust the RTC as 'rtc' when it holds a plausible time (after a soft reset)."""
        try:
            secs = int(time.time()) + _epoch_shift()
        except Exception:
            return False
        if secs * 1000 < _MIN_VALID_MS:
            return False
        self._offset = secs * 1000 - time.ticks_ms()
        self._source = "rtc"
        self._synced_at = time.ticks_add(time.ticks_ms(), -self.stale_ms - 1)
        return True

    def from_gps(self, fix):
        """Take UTC from a GPS fix dict (nmea.py) when it carries a time."""
        if fix and fix.get("time_ms"):
            return self.set(fix["time_ms"], "gps")
        return False

    def sync_ntp(self, host="pool.ntp.org", port=123, retries=3, timeout_s=1):
        """SNTP query with retries; True when the clock was set ('ntp').

        The SNTP client (ntp.py) is imported for the query and dropped afterwards:
        a sync runs at boot and every few hours, so its code need not stay in the heap.
        """
        import sys
        import ntp
        try:
            for _ in range(retries):
                ms = ntp.time_ms(host, port, timeout_s)
                if ms is not None and self.set(ms, "ntp"):
                    return True
                self.ntp_failures += 1
            return False
        finally:
            del sys.modules["ntp"]


def _epoch_shift():
    # MicroPython ports differ in epoch: the ESP32 counts from 2000-01-01 unless built
    # with 1970 (MICROPY_EPOCH_IS_1970, default since 1.22?); detect it.
    return 946684800 if time.gmtime(0)[0] == 2000 else 0
