"""Record timestamps: epoch ms and their time quality (`tq`), from the kernel's clock state.

The wire contract (docs/wire.md, "time") stamps every record with ms and a time
quality: ntp (the kernel's clock is disciplined), rtc (set, not disciplined) or none
(never set: ms since the agent started). With time_quality = auto the kernel is
asked through adjtimex(2), once a minute.
"""

import ctypes
import ctypes.util
import time

from fieldwatch.wire import codec


class _Timex(ctypes.Structure):
    # struct timex (linux/timex.h), enough of it for adjtimex(2) with modes = 0; padded generously.
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("pad", ctypes.c_byte * 256)]


_STA_UNSYNC = 0x0040   # timex.status: the clock is not synchronised
_TIME_ERROR = 5        # adjtimex(2) return value: clock not synchronised
RECHECK_S = 60.0       # how often `auto` asks the kernel again, s


def kernel_clock_synchronised():
    """True/False from adjtimex(2) (is NTP discipline on?), None when it cannot be asked."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR and not tx.status & _STA_UNSYNC


class Clock:
    """Record timestamps (ms) and their time quality, per the wire contract's `tq`."""

    def __init__(self, mode="auto"):
        """mode: auto (ask the kernel), or a fixed tq: ntp, rtc or none."""
        self.mode = mode
        self._mono0 = time.monotonic()
        self._tq = self._ask_kernel() if mode == "auto" else mode
        self._checked = self._mono0

    @staticmethod
    def _ask_kernel():
        if time.time() * 1000 < codec.MIN_TS_MS:
            return "none"   # never set (a Pi without RTC before NTP): ms since start instead
        return "ntp" if kernel_clock_synchronised() else "rtc"

    def tq(self):
        """Current time quality: the configured one, or (auto) ntp / rtc / none, re-checked each minute."""
        if self.mode != "auto":
            return self.mode
        now = time.monotonic()
        if now - self._checked > RECHECK_S:   # (two threads may both ask: harmless)
            self._tq = self._ask_kernel()
            self._checked = now
        return self._tq

    def stamp(self, mono):
        """(ms, tq) for the moment `mono` (time.monotonic()): epoch ms, or ms since start when tq is none."""
        tq = self.tq()
        if tq == "none":
            return max(0, int(round((mono - self._mono0) * 1000))), tq
        return int(round((time.time() - (time.monotonic() - mono)) * 1000)), tq
